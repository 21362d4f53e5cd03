"""``remora up``: queue + workers + API in one process on SQLite."""

from __future__ import annotations

import typer


def up() -> None:
    """Start Remora on this machine: queue, workers and API in one process.

    Example: remora up --port 8080 --workers 4
    """
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("up")(up)
