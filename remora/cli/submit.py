"""``remora submit`` and ``remora run -f``: send jobs to the API."""

from __future__ import annotations

import typer


def submit() -> None:
    """Submit a command or script to one or more servers.

    Example: remora submit -s web-1 --wait -- uptime
    """
    raise typer.Exit(1)


def run() -> None:
    """Submit the jobs described in a YAML job file.

    Example: remora run -f deploy.yaml --follow
    """
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("submit")(submit)
    app.command("run")(run)
