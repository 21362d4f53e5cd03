"""``remora queue``: serve NetQueue and look into it."""

from __future__ import annotations

import typer

queue_app = typer.Typer(help="NetQueue: the durable priority work queue (serve, stats, workers, dead letters).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(queue_app, name="queue")
