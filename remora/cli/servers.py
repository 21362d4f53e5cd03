"""``remora servers`` and ``remora keys``: the hosts jobs run on and their keys."""

from __future__ import annotations

import typer

servers_app = typer.Typer(help="Manage the servers jobs run on.", no_args_is_help=True)
keys_app = typer.Typer(help="Upload, list and remove PEM private keys.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(servers_app, name="servers")
    app.add_typer(keys_app, name="keys")
