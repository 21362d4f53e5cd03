"""``remora webhooks``: list, add, test, deliveries, delete -- where job, batch and schedule events are announced."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from remora.cli.common import print_json
from remora.cli.connect import ApiUrlOpt, JsonOpt, TokenOpt, make_client
from remora.cli.render import err, out
from remora.errors import ValidationError

webhooks_app = typer.Typer(
    help="Notifications of job, batch and schedule events: webhooks (JSON, Slack) and email (admin).", no_args_is_help=True
)

NameArg = Annotated[str, typer.Argument(help="Webhook name.", show_default=False)]
EVENTS = ("job.completed", "job.failed", "job.canceled", "batch.finished", "schedule.missed")


def _table(columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from remora.cli.common import console

    table = Table(box=None, pad_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=column not in ("URL", "ERROR"))
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    console().print(table)


@webhooks_app.command("list")
def list_webhooks(as_json: JsonOpt = False, api_url: ApiUrlOpt = None, token: TokenOpt = None) -> None:
    """List the webhooks (secrets are never shown: SIGNED says whether one is set).

    Example: remora webhooks list
    """
    rows = make_client(api_url, token).webhooks()
    if as_json:
        print_json(rows)
        return
    if not rows:
        err("no webhooks")
        return
    table = []
    for row in rows:
        filter_ = " ".join(f"{k}={v}" for k, v in sorted((row.get("filter") or {}).items()))
        table.append(
            (
                row["name"],
                row["format"],
                ",".join(row["events"]),
                filter_ or "-",
                "yes" if row.get("has_secret") else "no",
                "yes" if row.get("enabled") else "no",
                row["url"],
            )
        )
    _table(("NAME", "FORMAT", "EVENTS", "FILTER", "SIGNED", "ENABLED", "URL"), table)


def _read_secret(secret_file: Path | None, secret_stdin: bool) -> str | None:
    if secret_file is not None and secret_stdin:
        raise ValidationError("give --secret-file or --secret-stdin, not both")
    if secret_stdin:
        value = sys.stdin.readline().rstrip("\r\n")
    elif secret_file is not None:
        try:
            value = secret_file.expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValidationError(f"cannot read --secret-file {secret_file}: {exc.strerror or exc}") from None
    else:
        return None
    if not value:
        raise ValidationError("the secret is empty")
    return value


@webhooks_app.command("add")
def add(
    name: Annotated[str, typer.Option("--name", help="A name for the webhook (letters, digits, _ . -).", show_default=False)],
    url: Annotated[str, typer.Option("--url", help="http(s):// URL to POST to, or mailto:a@x,b@y to email.", show_default=False)],
    event: Annotated[
        list[str], typer.Option("--event", "-e", help=f"An event to announce (repeatable): {', '.join(EVENTS)}.", show_default=False)
    ],
    format_: Annotated[
        str | None, typer.Option("--format", help='json (default), slack ({"text": ...}), email (implied by mailto:).')
    ] = None,
    secret_file: Annotated[
        Path | None, typer.Option("--secret-file", help="File holding the secret that signs each body (X-Remora-Signature).")
    ] = None,
    secret_stdin: Annotated[bool, typer.Option("--secret-stdin", help="Read the signing secret from the first line of stdin.")] = False,
    template: Annotated[str | None, typer.Option("--template", help="Only events of jobs run from this template.")] = None,
    tag: Annotated[str | None, typer.Option("--tag", help="Only events of jobs on servers with this tag.")] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Create it disabled (no deliveries until enabled).")] = False,
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Add a webhook: the events it announces are POSTed to its URL (or emailed), retried until answered.

    Example: remora webhooks add --name ops --url https://hooks.slack.com/services/T/B/X --format slack --event job.failed
    """
    body: dict[str, Any] = {"name": name, "url": url, "events": list(event)}
    if format_:
        body["format"] = format_
    secret = _read_secret(secret_file, secret_stdin)
    if secret is not None:
        body["secret"] = secret
    filter_ = {k: v for k, v in (("template", template), ("tag", tag)) if v}
    if filter_:
        body["filter"] = filter_
    if disabled:
        body["enabled"] = False
    row = make_client(api_url, token).create_webhook(body)
    if as_json:
        print_json(row)
        return
    out(f"[green]✓[/] webhook [bold]{row['name']}[/] added ({row['format']}: {', '.join(row['events'])})")


@webhooks_app.command("test")
def test(name: NameArg, as_json: JsonOpt = False, api_url: ApiUrlOpt = None, token: TokenOpt = None) -> None:
    """Send a ping event now and show how the receiver answered (exit 1 when it was not delivered).

    Example: remora webhooks test ops
    """
    delivery = make_client(api_url, token).test_webhook(name)
    if as_json:
        print_json(delivery)
    elif delivery["status"] == "delivered":
        out(f"[green]✓[/] ping delivered to [bold]{name}[/] (HTTP {delivery['status_code']}, delivery {delivery['id']})")
    else:
        err(f"ping not delivered to {name}: {delivery['error'] or delivery['status']} (retried until {delivery['next_attempt_at']})")
    if delivery["status"] != "delivered":
        raise typer.Exit(1)


@webhooks_app.command("deliveries")
def deliveries(
    name: NameArg,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many, newest first (1..100).")] = 20,
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Show a webhook's latest deliveries: event, status, attempts, HTTP status, error.

    Example: remora webhooks deliveries ops -n 50
    """
    rows = make_client(api_url, token).webhook_deliveries(name, limit)
    if as_json:
        print_json(rows)
        return
    if not rows:
        err("no deliveries yet")
        return
    table = [
        (
            r["created_at"] or "",
            r["event"],
            r["status"],
            str(r["attempts"]),
            str(r["status_code"] or "-"),
            r["error"] or (r["next_attempt_at"] and f"next at {r['next_attempt_at']}") or "",
            r["id"],
        )
        for r in rows
    ]
    _table(("CREATED", "EVENT", "STATUS", "ATTEMPTS", "HTTP", "ERROR", "ID"), table)


@webhooks_app.command("delete")
def delete(name: NameArg, api_url: ApiUrlOpt = None, token: TokenOpt = None) -> None:
    """Delete a webhook and its delivery log (pending deliveries are dropped).

    Example: remora webhooks delete ops
    """
    make_client(api_url, token).delete_webhook(name)
    out(f"[green]✓[/] webhook [bold]{name}[/] deleted")


def register(app: typer.Typer) -> None:
    app.add_typer(webhooks_app, name="webhooks")
