"""Docs are tested: the man page is generated from the CLI and must be current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_man_page_is_current():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_man.py")], capture_output=True, text=True, check=True).stdout
    assert (ROOT / "man" / "remora.1").read_text() == out, "man/remora.1 is stale: run `make man`"


def test_every_leaf_command_has_an_example():
    import typer

    from remora.cli import app

    missing = []

    def walk(cmd, path):
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])
        elif "Example:" not in (cmd.help or ""):
            missing.append(" ".join(path))

    walk(typer.main.get_command(app), ["remora"])
    assert not missing, f"commands without an Example: in their help: {missing}"


def test_package_version_matches_pyproject():
    import tomllib

    from remora import __version__

    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"] == __version__


def test_jobfile_page_names_every_variable_a_local_job_does_not_inherit():
    from remora.config import secret_env_names

    page = (ROOT / "man" / "remora-jobfile.5").read_text().replace("\\fB", "").replace("\\fR", "")
    assert [name for name in sorted(secret_env_names()) if name not in page] == []
