"""``remora worker``: run jobs from NetQueue over SSH or locally."""

from __future__ import annotations

import typer


def worker() -> None:
    """Run jobs from the queue on their servers.

    Example: remora worker --concurrency 8
    """
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
