"""``remora api`` and ``remora token``: the REST API server and its tokens."""

from __future__ import annotations

from typing import Annotated

import typer

from remora.cli.common import STATE, console, info, print_json

token_app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)


def _init_db() -> None:
    from remora import models

    settings = STATE.settings()
    models.init_db(
        settings.database_url,
        busy_timeout=settings.database.busy_timeout,
        pool_size=settings.database.pool_size,
        data_dir=settings.data_dir,
    )


def api(
    host: Annotated[str | None, typer.Option("--host", help="Address to bind (default: from api.addr).")] = None,
    port: Annotated[int | None, typer.Option("--port", "-p", help="Port to listen on (default: from api.addr, 8080).")] = None,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Serve without tokens (accepted only on a loopback address).")] = False,
    queue_addr: Annotated[str | None, typer.Option("--queue", help="NetQueue address (default: queue.addr).")] = None,
) -> None:
    """Serve the REST API and the dashboard (waitress), with the reconciler that keeps the queue in step.

    Example: remora api --host 127.0.0.1 --port 8080
    """
    import signal
    import threading

    from remora.config import split_addr
    from remora.errors import ConfigError
    from remora.netaddr import no_auth_refusal

    settings = STATE.settings({"queue.addr": queue_addr})
    STATE.setup_logging(settings)
    cur_host, cur_port = split_addr(settings.api.addr, 8080)
    bind_host = host or cur_host
    bind_port = port if port is not None else cur_port
    auth = settings.api.auth and not no_auth
    refusal = None if auth else no_auth_refusal(bind_host)
    if refusal:
        raise ConfigError(refusal)
    if not auth:
        info("[yellow]warning:[/] authentication is OFF: anyone on this machine can use the API")
    _init_db()
    from remora.api.server import APIServer

    server = APIServer(settings, host=bind_host, port=bind_port, auth=auth)
    server.start()
    info(f"Remora API on {server.url}  (queue {settings.queue.addr}; Ctrl-C stops)")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="A name for the token (who or what uses it).")],
    role: Annotated[str, typer.Option("--role", "-r", help="admin, operator or viewer.")] = "viewer",
    expires: Annotated[str | None, typer.Option("--expires", help="Lifetime such as 30d, 12h (default: never).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create an API token and print it once (only its SHA-256 is stored).

    Example: remora token create ci --role operator --expires 30d
    """
    from remora.config import parse_duration
    from remora.errors import ValidationError
    from remora.services import tokens

    seconds = None
    if expires:
        try:
            seconds = parse_duration(expires)
        except ValueError as exc:
            raise ValidationError(f"--expires {expires!r}: expected {exc}") from None
    _init_db()
    row, plaintext = tokens.issue_token(name, role, seconds)
    if as_json:
        print_json({**row, "token": plaintext})
        return
    info(f"token [bold]{row['name']}[/] ({row['role']}) created; it is shown only now:")
    typer.echo(plaintext)


@token_app.command("list")
def token_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List API tokens (names, roles, prefixes, expiry; never the tokens).

    Example: remora token list
    """
    from remora.services import tokens

    _init_db()
    rows = tokens.list_tokens()
    if as_json:
        print_json({"tokens": rows})
        return
    from rich.table import Table

    table = Table()
    for column in ("name", "role", "prefix", "created_at", "expires_at", "last_used_at", "revoked"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            *[
                str(row[c] if row[c] is not None else "-")
                for c in ("name", "role", "prefix", "created_at", "expires_at", "last_used_at", "revoked")
            ]
        )
    console().print(table)


@token_app.command("revoke")
def token_revoke(name: Annotated[str, typer.Argument(help="Name (or id) of the token.")]) -> None:
    """Revoke an API token (it stops working at once on this host, within seconds elsewhere).

    Example: remora token revoke ci
    """
    from remora.services import tokens

    _init_db()
    row = tokens.revoke_token(name)
    info(f"token {row['name']} revoked")


def register(app: typer.Typer) -> None:
    app.command("api")(api)
    app.add_typer(token_app, name="token")
