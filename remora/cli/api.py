"""``remora api`` and ``remora token``: the REST API server and its tokens."""

from __future__ import annotations

import typer

token_app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)


def api() -> None:
    """Serve the REST API and the dashboard.

    Example: remora api --port 8080
    """
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("api")(api)
    app.add_typer(token_app, name="token")
