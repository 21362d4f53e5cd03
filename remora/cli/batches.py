"""``remora batches``: list, show, cancel and re-run fan-outs (batches) and their rollouts."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from remora.cli.common import print_json
from remora.cli.connect import ApiUrlOpt, JsonOpt, TokenOpt, make_client
from remora.cli.render import err, fmt_duration, fmt_time, out, short, styled_status
from remora.errors import ExitCode

batches_app = typer.Typer(help="List, inspect, cancel and re-run batches (a command sent to several servers).", no_args_is_help=True)

IdArg = Annotated[str, typer.Argument(help="Batch id or a unique prefix of it.", show_default=False)]
BATCH_STYLE = {"aborted": "red", "failed": "red", "completed": "green", "running": "cyan", "canceled": "magenta"}


def _status(status: str) -> str:
    style = BATCH_STYLE.get(status, "")
    return f"[{style}]{status}[/]" if style else status


def _counts(batch: dict[str, Any]) -> str:
    counts = batch.get("counts") or {}
    return " ".join(f"{name} {counts[name]}" for name in ("completed", "failed", "canceled", "running", "queued") if counts.get(name))


def _rollout(batch: dict[str, Any]) -> str:
    rollout = batch.get("rollout") or {}
    parts = []
    if rollout.get("concurrency") is not None:
        parts.append(f"{rollout['concurrency']} at a time")
    if rollout.get("max_failures") is not None:
        parts.append(f"max failures {rollout['max_failures']}")
    return ", ".join(parts)


@batches_app.command("list")
def list_batches(
    status: Annotated[str | None, typer.Option("--status", help="running, completed, failed, aborted or canceled.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=500, help="Batches per page.")] = 20,
    page: Annotated[int, typer.Option("--page", min=1, help="Page number.")] = 1,
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """List batches, newest first.

    Example: remora batches list --status aborted
    """
    data = make_client(api_url, token).batches(status=status, limit=limit, page=page)
    if as_json:
        print_json(data)
        return
    batches = data.get("batches") or []
    if not batches:
        err("no batches")
        return
    from rich.table import Table

    from remora.cli.common import console

    table = Table(box=None, pad_edge=False)
    for column in ("ID", "STATUS", "HOSTS", "COUNTS", "ROLLOUT", "CREATED", "BY", "COMMAND"):
        table.add_column(column, no_wrap=True, overflow="ellipsis", ratio=1 if column == "COMMAND" else None)
    for batch in batches:
        table.add_row(
            short(batch["id"]), _status(str(batch["status"])), str(batch.get("total", "")), _counts(batch), _rollout(batch),
            fmt_time(batch.get("created_at")), str(batch.get("created_by") or ""), " ".join(str(batch.get("command") or "").split()),
        )  # fmt: skip
    console().print(table)
    pages = data.get("pagination") or {}
    if pages.get("has_next"):
        err(f"[dim]page {pages.get('page')} of {pages.get('total_pages')}: --page {page + 1} for more[/]")


def print_batch(batch: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from remora.cli.common import console

    lines = [
        f"batch [bold]{batch['id']}[/]: {_status(str(batch['status']))}" + (f" ({escape(batch['error'])})" if batch.get("error") else ""),
        f"  command  {escape(str(batch.get('command') or ''))}",
        f"  hosts    {batch.get('total')}: {_counts(batch)}",
    ]
    if _rollout(batch):
        lines.append(f"  rollout  {_rollout(batch)}")
    if batch.get("parent_id"):
        lines.append(f"  rerun of {batch['parent_id']}")
    lines.append(f"  created  {fmt_time(batch.get('created_at'))} by {escape(str(batch.get('created_by') or '?'))}")
    out("\n".join(lines))
    table = Table(box=None, pad_edge=False)
    for column in ("HOST", "STATUS", "EXIT", "TOOK", "JOB", "ERROR"):
        table.add_column(column, no_wrap=column != "ERROR")
    for host in batch.get("hosts") or []:
        exit_code = host.get("exit_code")
        error = str(host.get("error") or "")
        table.add_row(
            escape(str(host.get("server_name") or "?")), styled_status(str(host.get("status"))), "" if exit_code is None else str(exit_code),
            fmt_duration(host.get("duration")), short(host.get("job_id")), escape("" if error.startswith("exit code") else error),
        )  # fmt: skip
    console().print(table)


@batches_app.command("show")
def show(
    batch_id: IdArg,
    output: Annotated[bool, typer.Option("--output", help="Also print each host's stdout and stderr (bounded per host).")] = False,
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Show a batch: its status, rollout and each host's job.

    Example: remora batches show 3f2a1b --output
    """
    client = make_client(api_url, token)
    batch = client.batch(client.resolve_batch_id(batch_id), output=output)
    if as_json:
        print_json(batch)
        return
    print_batch(batch)
    if output:
        from rich.markup import escape

        for host in batch.get("hosts") or []:
            for stream in ("stdout", "stderr"):
                text = str(host.get(stream) or "")
                if text:
                    out(
                        f"\n[bold]{escape(str(host.get('server_name')))}[/] [dim]{stream}[/]"
                        + (" [dim](truncated)[/]" if host.get("output_truncated") else "")
                    )
                    out(escape(text.rstrip("\n")))


@batches_app.command("cancel")
def cancel(batch_id: IdArg, as_json: JsonOpt = False, api_url: ApiUrlOpt = None, token: TokenOpt = None) -> None:
    """Cancel every unfinished job of a batch (its held hosts never start).

    Example: remora batches cancel 3f2a1b
    """
    client = make_client(api_url, token)
    batch = client.cancel_batch(client.resolve_batch_id(batch_id))
    if as_json:
        print_json(batch)
        return
    out(f"[green]✓[/] batch {batch['id']}: cancel sent ({_counts(batch)})")


@batches_app.command("rerun")
def rerun(
    batch_id: IdArg,
    failed: Annotated[bool, typer.Option("--failed", help="Only the failed and canceled hosts (the default).")] = False,
    all_hosts: Annotated[bool, typer.Option("--all", help="Every host of the batch.")] = False,
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Run a finished batch again as a new batch (same command and rollout): its failed hosts, or --all.

    Example: remora batches rerun 3f2a1b --failed
    """
    if failed and all_hosts:
        err("[red]--failed and --all exclude each other[/]")
        raise typer.Exit(int(ExitCode.USAGE))
    client = make_client(api_url, token)
    batch = client.rerun_batch(client.resolve_batch_id(batch_id), "all" if all_hosts else "failed")
    if as_json:
        print_json(batch)
        return
    out(f"[green]✓[/] batch [bold]{batch['id']}[/] queued on {batch.get('total')} host(s): remora batches show {short(batch['id'])}")


def register(app: typer.Typer) -> None:
    app.add_typer(batches_app, name="batches")
