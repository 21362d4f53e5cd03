"""``remora jobs``: list, inspect, follow, cancel, re-prioritise and re-run jobs.

Job ids may be abbreviated to a unique prefix, as git does with hashes.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from remora.cli.common import print_json
from remora.cli.connect import ApiUrlOpt, JsonOpt, TokenOpt, make_client
from remora.cli.render import err, fmt_duration, fmt_time, job_command, out, server_name, short, styled_status
from remora.errors import ExitCode, RemoraError

jobs_app = typer.Typer(help="List, inspect, follow, cancel and re-run jobs.", no_args_is_help=True)

IdArg = Annotated[str, typer.Argument(help="Job id or a unique prefix of it.", show_default=False)]
IdsArg = Annotated[list[str], typer.Argument(help="Job ids or unique prefixes.", show_default=False)]


@jobs_app.command("list")
def list_jobs(
    status: Annotated[str | None, typer.Option("--status", help="queued, running, completed, failed or canceled.")] = None,
    server: Annotated[str | None, typer.Option("--server", "-s", help="Only jobs on this server (name or id).")] = None,
    batch: Annotated[str | None, typer.Option("--batch", help="Only jobs of this batch id.")] = None,
    search: Annotated[str | None, typer.Option("--search", help="Text in command, args, server name or job name.")] = None,
    search_output: Annotated[
        bool, typer.Option("--search-output", help="With --search: also match the first 16 KiB of output of the 500 newest jobs.")
    ] = False,
    created_after: Annotated[str | None, typer.Option("--created-after", help="Only jobs created at/after this RFC 3339 time.")] = None,
    created_before: Annotated[str | None, typer.Option("--created-before", help="Only jobs created before this RFC 3339 time.")] = None,
    exit_code: Annotated[int | None, typer.Option("--exit-code", help="Only jobs that exited with this code.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=100, help="Jobs per page.")] = 20,
    page: Annotated[int, typer.Option("--page", min=1, help="Page number.")] = 1,
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """List jobs, newest first.

    Example: remora jobs list --status failed --server web-1 --created-after 2026-01-31T00:00:00Z
    """
    client = make_client(api_url, token)
    server_id = client.resolve_server(server)["id"] if server else None
    data = client.list_jobs(
        status=status, server_id=server_id, batch_id=batch, search=search, limit=limit, page=page, sort_by="created_at", sort_order="desc",
        search_output="true" if search_output else None, created_after=created_after, created_before=created_before, exit_code=exit_code,
    )  # fmt: skip
    if as_json:
        print_json(data)
        return
    jobs = data.get("jobs") or []
    if not jobs:
        err("no jobs")
        return
    from rich.table import Table

    from remora.cli.common import console

    rows = []
    for job in jobs:
        exit_code = job.get("exit_code")
        rows.append((
            short(job["id"]), job.get("name") or "", server_name(job), str(job.get("status")),
            "" if exit_code is None else str(exit_code), str(job.get("priority", "")), fmt_time(job.get("created_at")),
            fmt_duration(job.get("duration")), " ".join(job_command(job).split()),
        ))  # fmt: skip
    headers = ("ID", "NAME", "SERVER", "STATUS", "EXIT", "PRI", "CREATED", "TOOK", "COMMAND")
    table = Table(box=None, pad_edge=False)
    for index, column in enumerate(headers):
        if column == "COMMAND":  # the one column that gives way on a narrow terminal
            table.add_column(column, no_wrap=True, overflow="ellipsis", ratio=1)
        else:
            widest = max(len(column), *(len(row[index]) for row in rows))
            table.add_column(column, no_wrap=True, overflow="ellipsis", min_width=min(widest, 24), max_width=24)
    for row in rows:
        table.add_row(*row[:3], styled_status(row[3]), *row[4:])
    console().print(table)
    pages = data.get("pagination") or {}
    if pages.get("has_next"):
        err(f"[dim]page {pages.get('page')} of {pages.get('total_pages')} ({pages.get('total')} jobs): --page {page + 1} for more[/]")


@jobs_app.command("show")
def show(job_id: IdArg, as_json: JsonOpt = False, api_url: ApiUrlOpt = None, token: TokenOpt = None) -> None:
    """Show one job: spec, status, timing and the tail of its output.

    Example: remora jobs show 3f2a1b
    """
    client = make_client(api_url, token)
    job = client.job(client.resolve_job_id(job_id))
    if as_json:
        print_json(job)
        return
    from rich.markup import escape
    from rich.table import Table

    from remora.cli.common import console

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    rows: list[tuple[str, Any]] = [
        ("id", job["id"]), ("name", job.get("name")), ("status", styled_status(str(job.get("status")))),
        ("exit code", job.get("exit_code")), ("error", job.get("error")), ("server", server_name(job)),
        ("command", job_command(job)), ("shell", job.get("shell")), ("priority", job.get("priority")),
        ("timeout", f"{job.get('timeout')}s" if job.get("timeout") else None), ("retries", job.get("retries")),
        ("attempts", job.get("attempts")), ("batch", job.get("batch_id")), ("parent", job.get("parent_id")),
        ("template", job.get("template")), ("params", escape(" ".join(f"{k}={v}" for k, v in (job.get("params") or {}).items()))),
        ("created", fmt_time(job.get("created_at"))), ("started", fmt_time(job.get("started_at"))),
        ("finished", fmt_time(job.get("finished_at"))), ("took", fmt_duration(job.get("duration"))), ("worker", job.get("worker")),
        ("output", f"{job.get('stdout_bytes', 0)} bytes stdout, {job.get('stderr_bytes', 0)} bytes stderr"),
    ]  # fmt: skip
    for key, value in rows:
        if value not in (None, ""):
            table.add_row(key, str(value))
    console().print(table)
    for stream in ("stdout", "stderr"):
        text = job.get(stream) or ""
        if text:
            lines = text.splitlines()
            tail = lines[-20:]
            more = f" (last 20 of {len(lines)} lines: remora jobs logs {short(job['id'])})" if len(lines) > 20 else ""
            out(f"[bold]{stream}[/]{more}")
            console().print("\n".join(tail), markup=False, highlight=False)


@jobs_app.command("logs")
def logs(
    job_id: IdArg,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming until the job finishes.")] = False,
    stdout_only: Annotated[bool, typer.Option("--stdout", help="Only stdout.")] = False,
    stderr_only: Annotated[bool, typer.Option("--stderr", help="Only stderr.")] = False,
    api_url: ApiUrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Print a job's output: stdout to stdout, stderr to stderr, byte for byte.

    With --follow it streams until the job finishes (from the API's change feed,
    or by polling its log on an API without live output) and exits with the
    job's exit code.

    Example: remora jobs logs 3f2a1b --follow
    """
    streams = ("stdout",) if stdout_only and not stderr_only else ("stderr",) if stderr_only and not stdout_only else ("stdout", "stderr")
    client = make_client(api_url, token)
    full_id = client.resolve_job_id(job_id)
    if follow:
        from remora.cli.follow import Watcher, exit_code_of

        final = Watcher(client, [{"id": full_id}], follow=True, streams=streams, prefix=False).run()
        raise typer.Exit(exit_code_of(final[0]))
    for stream in streams:
        data = client.job_stream(full_id, stream)
        sink = sys.stdout.buffer if stream == "stdout" else sys.stderr.buffer
        sink.write(data)
        sink.flush()


@jobs_app.command("cancel")
def cancel(job_ids: IdsArg, as_json: JsonOpt = False, api_url: ApiUrlOpt = None, token: TokenOpt = None) -> None:
    """Cancel jobs: queued ones leave the queue, running ones are killed.

    Exits 1 when any could not be canceled (for example: already finished).

    Example: remora jobs cancel 3f2a1b 9c0d4e
    """
    client = make_client(api_url, token)
    results, failed = [], 0
    for ref in job_ids:
        try:
            full_id = client.resolve_job_id(ref)
            data = client.cancel(full_id)
            job = data.get("job", data) if isinstance(data, dict) else {}
            results.append({"id": full_id, "canceled": True, "status": job.get("status"), "message": data.get("message", "")})
            if not as_json:
                err(f"[magenta]canceled[/] {short(full_id)}" + (f": {data['message']}" if data.get("message") else ""))
        except RemoraError as exc:
            failed += 1
            results.append({"id": ref, "canceled": False, "error": exc.message, "code": exc.code})
            if not as_json:
                err(f"[red]not canceled[/] {ref}: {exc.message}")
    if as_json:
        print_json(results)
    if failed:
        raise typer.Exit(ExitCode.FAILURE)


@jobs_app.command("rerun")
def rerun(
    job_id: IdArg,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Wait for the new job; exit with its exit code.")] = False,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream the new job's output (implies --wait).")] = False,
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Run a finished job again: same spec, same server, a new job.

    Example: remora jobs rerun 3f2a1b --wait
    """
    from remora.cli.submit import finish
    from remora.client import jobs_of

    client = make_client(api_url, token)
    jobs = jobs_of(client.rerun(client.resolve_job_id(job_id)))
    finish(client, jobs, wait=wait, follow=follow, as_json=as_json)


@jobs_app.command("duplicate")
def duplicate(
    job_id: IdArg,
    server: Annotated[str | None, typer.Option("--server", "-s", help="Run the copy on this server instead (name or id).")] = None,
    timeout: Annotated[str | None, typer.Option("--timeout", "-t", help="New timeout: seconds or 90s, 10m.")] = None,
    priority: Annotated[int | None, typer.Option("--priority", "-p", min=1, max=10, help="New priority 1…10.")] = None,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Wait for the copy; exit with its exit code.")] = False,
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Copy a job (any status) into a new one, optionally elsewhere or with other limits.

    Example: remora jobs duplicate 3f2a1b --server web-2 --priority 1
    """
    from remora.cli.submit import finish, parse_timeout
    from remora.client import jobs_of

    client = make_client(api_url, token)
    body: dict[str, Any] = {}
    if server:
        body["server_id"] = client.resolve_server(server)["id"]
    if timeout:
        body["timeout"] = parse_timeout(timeout)
    if priority is not None:
        body["priority"] = priority
    jobs = jobs_of(client.duplicate(client.resolve_job_id(job_id), body))
    finish(client, jobs, wait=wait, follow=False, as_json=as_json)


@jobs_app.command("priority")
def set_priority(
    job_id: IdArg,
    priority: Annotated[int, typer.Argument(min=1, max=10, help="New priority: 1 (runs first) ... 10 (runs last).", show_default=False)],
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Change the priority of a queued job: it takes its new place in the queue at once.

    A job that already started (or finished) keeps its place: the command fails (exit 1).

    Example: remora jobs priority 3f2a1b 1
    """
    client = make_client(api_url, token)
    job = client.set_priority(client.resolve_job_id(job_id), priority)
    if as_json:
        print_json(job)
    else:
        err(f"[magenta]priority {job.get('priority', priority)}[/] {short(job.get('id', job_id))}")


@jobs_app.command("wait")
def wait_jobs(
    job_ids: IdsArg,
    timeout: Annotated[str | None, typer.Option("--timeout", "-t", help="Give up after this long (exit 75): seconds or 90s, 10m.")] = None,
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Block until jobs finish; exit with the first failing job's exit code (0 when all succeeded).

    Example: remora jobs wait 3f2a1b 9c0d4e --timeout 10m
    """
    from remora.cli.follow import Watcher, combined_exit_code, summary_line
    from remora.cli.render import stderr_tty
    from remora.cli.submit import parse_timeout

    client = make_client(api_url, token)
    jobs = [{"id": client.resolve_job_id(ref)} for ref in job_ids]
    limit = parse_timeout(timeout)
    jobs = [client.job(j["id"]) for j in jobs]
    final = Watcher(client, jobs, timeout=float(limit) if limit else None, progress=len(jobs) > 1 and stderr_tty()).run()
    if as_json:
        print_json(final[0] if len(final) == 1 else final)
    else:
        for job in final:
            err(summary_line(job))
    raise typer.Exit(combined_exit_code(final))


@jobs_app.command("prune")
def prune(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Delete finished jobs older than this: 30d, 12h, 90m.", show_default=False)
    ],
    status: Annotated[
        list[str] | None, typer.Option("--status", help="Only jobs in this status (completed, failed, canceled); repeatable.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count the jobs that would be deleted.")] = False,
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Delete finished jobs older than a cut-off, with their output (admin token; recorded in the audit log).

    Queued and running jobs are never deleted.  For automatic pruning set api.retention.

    Example: remora jobs prune --older-than 30d --status completed --status canceled
    """
    client = make_client(api_url, token, timeout=600.0)
    result = client.prune_jobs(older_than, list(status) if status else None, dry_run=dry_run)
    if as_json:
        print_json(result)
        return
    verb = "would delete" if result.get("dry_run") else "deleted"
    err(f"{verb} {result['deleted']} {'/'.join(result['status'])} job(s) finished before {result['cutoff']}")


def register(app: typer.Typer) -> None:
    app.add_typer(jobs_app, name="jobs")
