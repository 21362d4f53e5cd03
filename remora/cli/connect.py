"""Connecting to the API: the --api-url/--token/--json options and the client they make (``make_client``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from remora.cli.common import STATE

if TYPE_CHECKING:
    from remora.client import Client

ApiUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--api-url", help="Remora API URL. Default: $REMORA_API_URL, config api.url, http://127.0.0.1:8080.", rich_help_panel="Connection"
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="API token. Default: $REMORA_TOKEN, config api.token, or the token file `remora up` wrote.",
        rich_help_panel="Connection",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (data only) on stdout.")]


def make_client(api_url: str | None = None, token: str | None = None, *, timeout: float = 30.0) -> Client:
    """A client for the API: flag > environment > config file; the token file of `remora up` last."""
    from remora.client import Client

    settings = STATE.settings({"api.url": api_url, "api.token": token})
    secret = settings.api.token
    if not secret:
        try:
            secret = settings.token_file.read_text(encoding="utf-8").strip()
        except OSError:
            secret = ""
    return Client(settings.api.url, secret, timeout=timeout)
