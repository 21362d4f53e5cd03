"""``remora debug dump``: the API's debug report, for bug reports."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from remora.cli.common import print_json
from remora.cli.connect import ApiUrlOpt, TokenOpt, make_client
from remora.cli.render import out

debug_app = typer.Typer(help="Diagnostics for bug reports (admin token).", no_args_is_help=True)


@debug_app.command("dump")
def dump(
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole report as JSON (attach it to a bug report).")] = False,
    api_url: ApiUrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Version, configuration (secrets masked), database, queue, workers, recent API requests and errors.

    Read from GET /api/v1/debug (an admin token). Without --json: a summary.

    Example: remora debug dump --json > remora-debug.json
    """
    client = make_client(api_url, token)
    data = client.get("/api/v1/debug")
    if as_json:
        print_json(data)
        return
    out(summary(data))


def summary(data: dict[str, Any]) -> str:
    from rich.markup import escape

    build, db, queue = data.get("build") or {}, data.get("database") or {}, data.get("queue") or {}
    lines = [
        f"[bold]Remora {escape(str(build.get('version')))}[/] (commit {escape(str(build.get('commit') or 'unknown'))}, "
        f"Python {escape(str(build.get('python')))})",
        f"database: {db.get('kind')}, {db.get('size_bytes')} bytes, schema {db.get('schema_version')}, "
        + ", ".join(f"{k} {v}" for k, v in (db.get("rows") or {}).items()),
    ]
    if queue.get("available"):
        lines.append(
            f"queue: depth {queue.get('depth')}, connections {queue.get('connections')}, WAL {queue.get('wal_bytes')} bytes, "
            f"fsync {queue.get('fsync')}"
        )
    else:
        lines.append("queue: unavailable")
    for w in data.get("workers") or []:
        lines.append(f"worker {escape(str(w.get('id')))}: {w.get('threads')} threads, {len(w.get('held_jobs') or [])} held jobs")
    errors = data.get("errors") or []
    lines.append(f"recent requests: {len(data.get('requests') or [])}, recent errors: {len(errors)}")
    for e in errors[:10]:
        lines.append(
            f"  {e.get('status')} {escape(str(e.get('method')))} {escape(str(e.get('path')))} [req {e.get('request_id')}] {escape(str(e.get('error') or ''))}"
        )
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    app.add_typer(debug_app, name="debug")
