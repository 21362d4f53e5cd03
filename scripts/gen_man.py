#!/usr/bin/env python3
"""Generate man/remora.1 (roff) from the typer command tree.

Run ``make man``; ``tests/unit/test_docs.py`` fails when the committed page
differs from what this prints, so the page cannot drift from the CLI.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import typer

try:  # typer >= 0.17 carries its own copy of click
    from typer._click import Context
except ImportError:  # pragma: no cover
    from click import Context  # type: ignore[no-redef]

from remora import __version__
from remora.cli import app
from remora.errors import ExitCode

EXIT_DOC = {
    ExitCode.OK: "success; with --wait/--follow, the job exited 0",
    ExitCode.FAILURE: "an error, or a job that failed without an exit code of its own (lost worker, SSH error)",
    ExitCode.USAGE: "bad command line, job file or input",
    ExitCode.API_UNAVAILABLE: "the API, queue or database could not be reached",
    ExitCode.SOFTWARE: "an internal error (a bug; run with --debug)",
    ExitCode.WAIT_TIMEOUT: "gave up waiting (--timeout of jobs wait / submit --wait)",
    ExitCode.AUTH: "missing, wrong or too weak an API token",
    ExitCode.CONFIG: "the configuration cannot be used",
    ExitCode.JOB_TIMEOUT: "the job hit its timeout",
    ExitCode.JOB_CANCELED: "the job was canceled",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
}


def esc(text: str) -> str:
    text = text.replace("\\", "\\\\").replace("-", "\\-")
    lines = []
    for line in text.splitlines():
        if line.startswith((".", "'")):
            line = "\\&" + line
        lines.append(line)
    return "\n".join(lines)


def walk(cmd: typer.core.TyperCommand, path: list[str], out: list[str]) -> None:
    if hasattr(cmd, "commands"):
        for name in sorted(cmd.commands):
            sub = cmd.commands[name]
            if sub.hidden:
                continue
            walk(sub, [*path, name], out)
        return
    ctx = Context(cmd, info_name=" ".join(path))
    usage = " ".join(cmd.collect_usage_pieces(ctx))
    out.append(f".SS {esc(' '.join(path))}")
    out.append(f".B {esc(' '.join(path))}")
    out.append(esc(usage))
    out.append(".PP")
    help_text = (cmd.help or "").strip()
    paras = [p.strip() for p in help_text.split("\n\n") if p.strip()]
    for para in paras:
        if para.startswith("Example:"):
            out.append(".PP\nExample:\n.RS\n.nf")
            out.append(esc(para[len("Example:") :].strip()))
            out.append(".fi\n.RE")
        else:
            out.append(esc(" ".join(para.split())))
            out.append(".PP")
    for param in cmd.params:
        if getattr(param, "param_type_name", "") == "option":
            names = ", ".join(param.opts + param.secondary_opts)
            if param.hidden:
                continue
            out.append(f".TP\n.B {esc(names)}")
            out.append(esc(param.help or ""))
        elif getattr(param, "param_type_name", "") == "argument":
            out.append(f".TP\n.I {esc((param.name or 'ARG').upper())}")
            out.append(esc(getattr(param, "help", "") or "argument"))


def main() -> None:
    root = typer.main.get_command(app)
    out = [
        f'.TH REMORA 1 "" "remora {__version__}" "Remora manual"',
        ".SH NAME",
        "remora \\- run shell commands and scripts on fleets of servers through a durable priority queue",
        ".SH SYNOPSIS",
        ".B remora",
        "[\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
        ".SH DESCRIPTION",
        esc(
            "Remora runs shell commands and scripts on remote servers over SSH (or locally), through "
            "NetQueue, a durable priority work queue, and keeps every job's output, status and history. "
            "The services (queue serve, worker, api, or all three with up) and the client commands are "
            "subcommands of this one program."
        ),
        ".SH GLOBAL OPTIONS",
    ]
    for param in root.params:
        if getattr(param, "param_type_name", "") == "option" and not param.hidden:
            out.append(f".TP\n.B {esc(', '.join(param.opts))}")
            out.append(esc(param.help or ""))
    out.append(".SH COMMANDS")
    walk(root, ["remora"], out)
    out.append(".SH EXIT STATUS")
    out.append(
        esc("With --wait or --follow a client command exits with the job's own exit code (0-255) when the job ran and exited; otherwise:")
    )
    for code in sorted(EXIT_DOC, key=int):
        out.append(f".TP\n.B {int(code)}\n{esc(EXIT_DOC[code])}")
    out.append(".SH ENVIRONMENT")
    out.append(
        esc(
            "Every setting can be given as REMORA_<SECTION>_<KEY> (e.g. REMORA_QUEUE_ADDR). The seed names are accepted too: "
            "DATABASE_URL, NETQUEUE_ADDR, SERVER_ADDR, QUEUE_NAME, WORKER_CONCURRENCY, SSH_CONNECTION_TIMEOUT and the others listed in config.example.toml. "
            "REMORA_API_URL and REMORA_TOKEN tell client commands where the API is and how to sign in. REMORA_CONFIG names the config file. "
            "Messages for people are styled on a terminal only: NO_COLOR turns the colours off there, FORCE_COLOR styles them "
            "off a terminal too. SHIV_ROOT is where the single-file build unpacks its libraries (default ~/.shiv)."
        )
    )
    out.append(".SH FILES")
    out.append(".TP\n.I ~/.config/remora/config.toml\nuser configuration (see config.example.toml)")
    out.append(".TP\n.I $XDG_DATA_HOME/remora/\ndata directory: SQLite database, queue log, secret key, admin token")
    out.append(".SH SEE ALSO")
    out.append(".BR remora-jobfile (5),")
    out.append(".BR remora-protocol (7)")
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
