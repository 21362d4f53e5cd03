"""``remora jobs``: list, inspect, follow, cancel and re-run jobs."""

from __future__ import annotations

import typer

jobs_app = typer.Typer(help="List, inspect, follow, cancel and re-run jobs.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(jobs_app, name="jobs")
