"""``remora schedules``: list, show, add, edit, pause, resume, delete and run schedules (templates on a cron calendar)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from remora.cli.common import parse_kv, print_json
from remora.cli.connect import ApiUrlOpt, JsonOpt, TokenOpt, make_client
from remora.cli.render import err, out
from remora.cli.submit import finish
from remora.errors import ValidationError

schedules_app = typer.Typer(
    help="Run templates on a cron calendar: list, show, add, edit, pause, resume, delete, run.", no_args_is_help=True
)

NameArg = Annotated[str, typer.Argument(help="Schedule name.", show_default=False)]
CronOpt = Annotated[
    str | None,
    typer.Option("--cron", help="5 fields (minute hour day-of-month month day-of-week) or @hourly/@daily/@weekly/@monthly/@yearly."),
]
TzOpt = Annotated[str | None, typer.Option("--tz", help="IANA timezone of the calendar (default UTC), e.g. Europe/Berlin.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="A template parameter: NAME=VALUE (repeatable).")]
OverlapOpt = Annotated[
    str | None, typer.Option("--overlap", help="While the previous run is queued/running: skip (default), queue or allow.")
]
CatchUpOpt = Annotated[
    str | None, typer.Option("--catch-up", help="After downtime: none (default) or last (run the last missed slot once).")
]


def _body(
    template: str | None, cron: str | None, tz: str | None, set_: list[str] | None, overlap: str | None, catch_up: str | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"template": template, "cron": cron, "timezone": tz, "overlap": overlap, "catch_up": catch_up}
    body = {k: v for k, v in body.items() if v is not None}
    if set_:
        body["params"] = parse_kv(set_, "--set")
    return body


def _when(text: str | None) -> str:
    if not text:
        return "-"
    import datetime as dt

    when = dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone()
    return when.strftime("%Y-%m-%d %H:%M %Z")


def _last(row: dict[str, Any]) -> str:
    last = row.get("last_run")
    if not last:
        return "-"
    target = last.get("job_id") or last.get("batch_id") or ""
    return f"{last.get('status') or '?'} {target[:8]} ({_when(last.get('at'))})"


@schedules_app.command("list")
def list_schedules(as_json: JsonOpt = False, api_url: ApiUrlOpt = None, token: TokenOpt = None) -> None:
    """List the schedules with their next run and last result.

    Example: remora schedules list
    """
    rows = make_client(api_url, token).list_schedules()
    if as_json:
        print_json(rows)
        return
    if not rows:
        err("no schedules")
        return
    from rich.markup import escape
    from rich.table import Table

    from remora.cli.common import console

    table = Table(box=None, pad_edge=False)
    for column in ("NAME", "TEMPLATE", "CRON", "TZ", "STATE", "NEXT RUN", "LAST RUN"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        state = "enabled" if row["enabled"] else "[yellow]paused[/]"
        upcoming = row.get("next_runs") or []
        table.add_row(
            escape(row["name"]), escape(row["template"]), escape(row["cron"]), escape(row["timezone"]), state,
            _when(upcoming[0] if upcoming else None), escape(_last(row)),
        )  # fmt: skip
    console().print(table)


@schedules_app.command("show")
def show(
    name: NameArg,
    runs: Annotated[int, typer.Option("--runs", min=0, max=500, help="How many recent slots to list.")] = 10,
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Show a schedule: its calendar, next runs and recent slots (fired, skipped, missed).

    Example: remora schedules show nightly-backup
    """
    client = make_client(api_url, token)
    row = client.get_schedule(name)
    recent = client.schedule_runs(name, runs) if runs else []
    if as_json:
        print_json({**row, "runs": recent})
        return
    from rich.markup import escape

    lines = [
        f"schedule [bold]{escape(row['name'])}[/] ({'enabled' if row['enabled'] else '[yellow]paused[/]'})",
        f"  template  {escape(row['template'])}  {escape(' '.join(f'{k}={v}' for k, v in (row.get('params') or {}).items()))}",
        f"  cron      {escape(row['cron'])}  ({escape(row['timezone'])})",
        f"  overlap   {row['overlap']}   catch-up {row['catch_up']}",
        f"  last run  {escape(_last(row))}",
    ]
    lines += [f"  next      {_when(t)}" for t in row.get("next_runs") or []]
    for run in recent:
        target = run.get("job_id") or run.get("batch_id") or ""
        what = f"{run['status']}{' (manual)' if run.get('manual') else ''}"
        detail = f"{target[:8]} {run.get('job_status') or ''}".strip() or run.get("reason") or ""
        lines.append(f"  {_when(run['slot'])}  {what:<16} {escape(detail)}")
    out("\n".join(lines))


@schedules_app.command("add")
def add(
    name: Annotated[str, typer.Option("--name", help="Schedule name (letters, digits, '_', '.', '-').")],
    template: Annotated[str, typer.Option("--template", help="The template to run.")],
    cron: Annotated[str, typer.Option("--cron", help="5 fields or @hourly/@daily/@weekly/@monthly/@yearly.")],
    tz: TzOpt = None,
    set_: SetOpt = None,
    overlap: OverlapOpt = None,
    catch_up: CatchUpOpt = None,
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused (resume it later).")] = False,
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Schedule a template: parameters are checked against it now, as a run would.

    Example: remora schedules add --name nightly-backup --template backup --cron "30 2 * * *" --tz Europe/Berlin --set target=db
    """
    body = {"name": name, **_body(template, cron, tz, set_, overlap, catch_up), "enabled": not paused}
    row = make_client(api_url, token).create_schedule(body)
    if as_json:
        print_json(row)
        return
    upcoming = row.get("next_runs") or []
    out(f"[green]✓[/] schedule [bold]{row['name']}[/] created; next run {_when(upcoming[0] if upcoming else None)}")


@schedules_app.command("edit")
def edit(
    name: NameArg,
    template: Annotated[str | None, typer.Option("--template", help="Run this template instead.")] = None,
    cron: CronOpt = None,
    tz: TzOpt = None,
    set_: SetOpt = None,
    overlap: OverlapOpt = None,
    catch_up: CatchUpOpt = None,
    rename: Annotated[str | None, typer.Option("--rename", help="A new name.")] = None,
    api_url: ApiUrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Change a schedule; options left out keep their value (--set replaces every parameter value).

    Example: remora schedules edit nightly-backup --cron "0 3 * * *"
    """
    body = _body(template, cron, tz, set_, overlap, catch_up)
    if rename:
        body["name"] = rename
    if not body:
        raise ValidationError("nothing to change: give --cron, --tz, --template, --set, --overlap, --catch-up or --rename")
    row = make_client(api_url, token).update_schedule(name, body)
    out(f"[green]✓[/] schedule [bold]{row['name']}[/] updated")


@schedules_app.command("pause")
def pause(name: NameArg, api_url: ApiUrlOpt = None, token: TokenOpt = None) -> None:
    """Pause a schedule: no slot fires (and none is recorded missed) until it is resumed.

    Example: remora schedules pause nightly-backup
    """
    make_client(api_url, token).update_schedule(name, {"enabled": False})
    out(f"[green]✓[/] schedule [bold]{name}[/] paused")


@schedules_app.command("resume")
def resume(name: NameArg, api_url: ApiUrlOpt = None, token: TokenOpt = None) -> None:
    """Resume a paused schedule from its next slot after now.

    Example: remora schedules resume nightly-backup
    """
    row = make_client(api_url, token).update_schedule(name, {"enabled": True})
    upcoming = row.get("next_runs") or []
    out(f"[green]✓[/] schedule [bold]{name}[/] resumed; next run {_when(upcoming[0] if upcoming else None)}")


@schedules_app.command("delete")
def delete(name: NameArg, api_url: ApiUrlOpt = None, token: TokenOpt = None) -> None:
    """Delete a schedule (jobs it ran keep their record).

    Example: remora schedules delete nightly-backup
    """
    make_client(api_url, token).delete_schedule(name)
    out(f"[green]✓[/] schedule [bold]{name}[/] deleted")


@schedules_app.command("run")
def run(
    name: NameArg,
    wait: Annotated[
        bool, typer.Option("--wait", "-w", help="Block until the job(s) finish, print their output; exit with their code.")
    ] = False,
    follow: Annotated[bool, typer.Option("--follow", help="Stream output live (implies --wait).")] = False,
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Run a schedule now, outside its calendar (recorded among its runs as manual).

    Example: remora schedules run nightly-backup --wait
    """
    client = make_client(api_url, token)
    jobs = client.run_schedule(name)
    finish(client, jobs, wait=wait, follow=follow, as_json=as_json, quiet=False)


def register(app: typer.Typer) -> None:
    app.add_typer(schedules_app, name="schedules")
