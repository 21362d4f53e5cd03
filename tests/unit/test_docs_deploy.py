"""Every `remora …` command shown in docs/deploy.md and docs/scaling.md exists, with the flags it uses."""

from __future__ import annotations

import shlex
from pathlib import Path

import click
import pytest
import typer

from remora.cli import app

DOCS = Path(__file__).resolve().parents[2] / "docs"


def shown_commands(text: str) -> list[str]:
    """`remora …` lines inside fenced code blocks (comments after two spaces and a # dropped)."""
    lines, fenced = [], False
    for raw in text.splitlines():
        if raw.startswith("```"):
            fenced = not fenced
            continue
        line = raw.split("  #")[0].strip()
        if fenced and line.startswith("remora "):
            lines.append(line)
    return lines


@pytest.mark.parametrize("doc", ["deploy.md", "scaling.md"])
def test_commands_in_docs_exist_with_their_flags(doc):
    root = typer.main.get_command(app)
    commands = shown_commands((DOCS / doc).read_text())
    if doc == "deploy.md":
        assert len(commands) >= 8
    for line in commands:
        words = shlex.split(line)[1:]
        command: click.Command = root
        ctx = click.Context(root)
        while hasattr(command, "commands") and words and not words[0].startswith("-"):
            sub = command.get_command(ctx, words[0])
            assert sub is not None, f"{doc}: no command {line!r}"
            command, words = sub, words[1:]
        assert not hasattr(command, "commands"), f"{doc}: {line!r} names a group"
        options = {opt for param in command.params for opt in [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]}
        for word in words:
            if word.startswith("--"):
                assert word.split("=")[0] in options, f"{doc}: {line!r}: no option {word}"
