"""``remora api`` and ``remora token``: the REST API server and its tokens."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from remora.cli.common import STATE, console, info, open_database, print_json
from remora.cli.connect import ApiUrlOpt, TokenOpt, make_client

if TYPE_CHECKING:
    from remora.client import Client

token_app = typer.Typer(
    help="Create, list and revoke API tokens: through the API when one is configured, else in this machine's database.",
    no_args_is_help=True,
)
LocalOpt = Annotated[
    bool,
    typer.Option(
        "--local",
        help="Open this machine's database directly, even when an API is configured (e.g. the first admin token).",
        rich_help_panel="Connection",
    ),
]
ApiOpt = Annotated[
    bool,
    typer.Option("--api", help="Go through the API (api.url) even when none is configured.", rich_help_panel="Connection"),
]


def _token_client(local: bool, api: bool, api_url: str | None, token: str | None) -> Client | None:
    """The API client for a token command, or None for the local database.

    The API when --api is given or an API is configured: api.url or api.token set
    anywhere but the defaults (flag, environment, config file); else the local
    database, which must exist.
    """
    from remora.errors import ValidationError

    if local and (api or api_url or token):
        raise ValidationError("--local excludes --api, --api-url and --token: it opens this machine's database, not an API")
    if local:
        return None
    settings = STATE.settings({"api.url": api_url, "api.token": token})
    configured = any(settings.sources.get(key, "default") != "default" for key in ("api.url", "api.token"))
    if not (api or configured):
        return None
    return make_client(api_url, token)


def _open_local() -> None:
    open_database(
        STATE.settings(),
        hint="To manage the tokens of a running API instead, give its URL and an admin token "
        "(REMORA_API_URL and REMORA_TOKEN, or --api-url and --token).",
    )


@contextmanager
def _through_api(client: Client) -> Iterator[Client]:
    """Errors of token management over the API, with what to do about them."""
    from remora.errors import Forbidden, Unauthorized

    try:
        with client:
            yield client
    except Unauthorized as exc:
        raise Unauthorized(
            f"the API at {client.base_url} refused: {exc.message}. Token management needs an admin token "
            "(--token, REMORA_TOKEN or api.token); on the API's own machine, --local uses its database directly."
        ) from None
    except Forbidden as exc:
        raise Forbidden(f"the API at {client.base_url} refused: {exc.message}. Token management needs an admin token.") from None


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
    open_database(settings, new=True, data_dir=True)  # the API makes the database when there is none
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
    role: Annotated[str, typer.Option("--role", "-r", help="admin, operator, runner or viewer.")] = "viewer",
    expires: Annotated[str | None, typer.Option("--expires", help="Lifetime such as 30d, 12h (default: never).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    local: LocalOpt = False,
    api: ApiOpt = False,
    api_url: ApiUrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Create an API token and print it once (only its SHA-256 is stored).

    Where: through the API when one is configured (--api-url or --token,
    REMORA_API_URL or REMORA_TOKEN, api.url or api.token in a config file),
    with an admin token; else directly in this machine's database, which must
    exist (how the first admin token is made where the API runs). --api or
    --local forces either; token list and token revoke choose the same way.

    Example: remora token create ci --role operator --expires 30d

    Example: remora token create ops --role admin --local
    """
    from remora.services import tokens

    seconds = tokens.parse_lifetime(expires, "--expires") if expires else None
    client = _token_client(local, api, api_url, token)
    if client is not None:
        with _through_api(client):
            created = client.create_token(name, role, seconds)
        row, plaintext = {k: v for k, v in created.items() if k != "token"}, str(created["token"])
    else:
        _open_local()
        row, plaintext = tokens.issue_token(name, role, seconds)
    if as_json:
        print_json({**row, "token": plaintext})
        return
    info(f"token [bold]{row['name']}[/] ({row['role']}) created; it is shown only now:")
    typer.echo(plaintext)


@token_app.command("list")
def token_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    local: LocalOpt = False,
    api: ApiOpt = False,
    api_url: ApiUrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """List API tokens (names, roles, prefixes, expiry; never the tokens).

    Through the API when one is configured, else this machine's database
    (as token create; --api or --local forces either).

    Example: remora token list --local
    """
    from remora.services import tokens

    client = _token_client(local, api, api_url, token)
    if client is not None:
        with _through_api(client):
            rows = client.tokens()
    else:
        _open_local()
        rows = tokens.list_tokens()
    if as_json:
        print_json({"tokens": rows})
        return
    from rich.table import Table

    columns = ("name", "role", "prefix", "created_at", "expires_at", "last_used_at", "revoked")
    table = Table()
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*[str(row.get(c) if row.get(c) is not None else "-") for c in columns])
    console().print(table)


@token_app.command("revoke")
def token_revoke(
    name: Annotated[str, typer.Argument(help="Name (or id) of the token.")],
    local: LocalOpt = False,
    api: ApiOpt = False,
    api_url: ApiUrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Revoke an API token (it stops working at once on the API that revoked it, within seconds on others).

    Through the API when one is configured, else this machine's database
    (as token create; --api or --local forces either).

    Example: remora token revoke ci --api-url https://remora.example.com
    """
    from remora.services import tokens

    client = _token_client(local, api, api_url, token)
    if client is not None:
        with _through_api(client):
            row = client.revoke_token(name)
    else:
        _open_local()
        row = tokens.revoke_token(name)
    info(f"token {row['name']} revoked")


def register(app: typer.Typer) -> None:
    app.command("api")(api)
    app.add_typer(token_app, name="token")
