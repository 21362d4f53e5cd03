"""``remora queue``: serve NetQueue and look into it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from remora.cli.common import STATE, console, info, print_json
from remora.errors import ValidationError

if TYPE_CHECKING:
    from remora.netqueue.client import QueueClient

queue_app = typer.Typer(help="NetQueue: the durable priority work queue (serve, stats, workers, dead letters).", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead letters: jobs whose retries ran out or whose workers died too often.", no_args_is_help=True)

AddrOpt = Annotated[str | None, typer.Option("--addr", help="NetQueue address host:port (default: queue.addr).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _client(addr: str | None) -> QueueClient:
    from remora.netqueue.client import QueueClient

    settings = STATE.settings({"queue.addr": addr})
    return QueueClient(settings.queue.addr, token=settings.queue_token(), name="remora-cli", connect_timeout=3.0)


@queue_app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option("--host", help="Address to bind (default: from queue.addr, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option("--port", "-p", help="Port to listen on (default: from queue.addr, 9000).")] = None,
    data_dir: Annotated[str | None, typer.Option("--data-dir", help="Directory of the log and snapshots (queue.data_dir).")] = None,
    fsync: Annotated[str | None, typer.Option("--fsync", help="always (group commit) | interval | never.")] = None,
    max_size: Annotated[int | None, typer.Option("--max-size", help="Most waiting jobs per queue (QUEUE_FULL beyond).")] = None,
    token_file: Annotated[
        str | None,
        typer.Option(
            "--token-file", help="File holding the client token (queue.token_file; created 0600 if missing). Or env REMORA_QUEUE_TOKEN."
        ),
    ] = None,
    persistence: Annotated[bool | None, typer.Option("--persistence/--no-persistence", help="Keep the queue on disk.")] = None,
    busy_poll: Annotated[
        str | None,
        typer.Option(
            "--busy-poll", help="Poll this long for a client's next request before sleeping, e.g. 100us; 0: off (queue.busy_poll)."
        ),
    ] = None,
) -> None:
    """Serve NetQueue on TCP (binary protocol) with HTTP /health, /stats, /workers, /monitor, /metrics on the same port.

    Logs go to stderr; SIGTERM or Ctrl-C flushes the log and exits cleanly.
    After checking its settings the command re-executes itself as a lean
    server process (same PID) so the CLI's libraries do not stay resident.
    While a client sends requests back to back the I/O thread polls for the
    next one (--busy-poll) instead of sleeping: one busy core for up to 1.5x
    the round trips; it stops by itself when requests come further apart.

    Clients need the queue's token: REMORA_QUEUE_TOKEN or queue.token if set,
    else the token file (--token-file, default <data_dir>/queue.token), made
    0600 with a random token on first start. Remora's own clients on this
    machine read the same file. queue.token = "" in the config file serves
    without a token (loopback only).

    Example: remora queue serve --port 9000 --data-dir /var/lib/remora/queue --fsync always
    """
    import os
    import sys

    from remora.config import split_addr

    base = STATE.settings()
    cur_host, cur_port = split_addr(base.queue.addr, 9000)
    addr = None
    if host or port is not None:
        bind = host or cur_host
        addr = f"[{bind}]:{port if port is not None else cur_port}" if ":" in bind else f"{bind}:{port if port is not None else cur_port}"
    flags = {
        "queue.addr": addr,
        "queue.data_dir": data_dir,
        "queue.fsync": fsync,
        "queue.max_size": max_size,
        "queue.token_file": token_file,
        "queue.persistence": persistence,
        "queue.busy_poll": busy_poll,
    }
    STATE.settings(flags)  # a bad value fails here, before the exec
    # The lean process loads the same settings (file < env < these flags) and checks the rest (token, data dir).
    argv = [sys.executable, "-m", "remora.netqueue"]
    if STATE.config_path:
        argv += ["--config", STATE.config_path]
    for key, value in {**STATE.flags(), **flags}.items():
        if value is not None:
            argv += ["--set", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)


def _render_stats(data: dict[str, Any]) -> None:
    from rich.table import Table

    out = console()
    out.print(
        f"depth [bold]{data['queue_depth']}[/]  reserved {data['reserved']}  dead {data['dead']}  "
        f"workers {data['active_workers']} active  rate {data['processing_rate']:.1f} jobs/s  "
        f"wait {data['average_wait_time']:.3f}s  connections {data.get('connections', 0)}"
    )
    table = Table("queue", "ready", "delayed", "reserved", "dead")
    for name, counts in data["queues"].items():
        table.add_row(name, *(str(counts[k]) for k in ("ready", "delayed", "reserved", "dead")))
    out.print(table)
    dist = "  ".join(f"p{p}:{n}" for p, n in data["priority_distribution"].items() if n)
    out.print(f"priorities  {dist or '(empty)'}")


@queue_app.command("stats")
def stats(
    addr: AddrOpt = None,
    as_json: JsonOpt = False,
    watch: Annotated[float | None, typer.Option("--watch", "-w", help="Refresh every N seconds until Ctrl-C.")] = None,
) -> None:
    """Show queue depth per queue and priority, reserved and dead jobs, rates and workers.

    Example: remora queue stats --watch 2
    """
    with _client(addr) as client:
        while True:
            data = client.stats()
            if as_json:
                print_json(data)
            else:
                if watch:
                    console().clear()
                _render_stats(data)
            if not watch:
                return
            time.sleep(max(0.2, watch))


@queue_app.command("health")
def health(addr: AddrOpt = None, as_json: JsonOpt = False) -> None:
    """Check that NetQueue answers (exit 0) or not (exit 69).

    Example: remora queue health --addr 127.0.0.1:9000
    """
    with _client(addr) as client:
        rtt = client.ping()
        data = client.stats()
    result = {"status": "ok", "addr": client.addr, "rtt_ms": round(rtt * 1000, 3), "jobs": data["jobs"], "uptime": data.get("uptime")}
    if as_json:
        print_json(result)
    else:
        typer.echo(f"ok  {client.addr}  rtt {result['rtt_ms']} ms  jobs {result['jobs']}  uptime {result['uptime']}s")


@queue_app.command("workers")
def workers(addr: AddrOpt = None, as_json: JsonOpt = False) -> None:
    """List the workers the queue has heard from: host, concurrency, heartbeat age, jobs held.

    Example: remora queue workers --json
    """
    from rich.table import Table

    with _client(addr) as client:
        rows = client.workers()
    if as_json:
        print_json(rows)
        return
    table = Table("id", "host", "concurrency", "heartbeat", "held", "done", "failed", "cpu", "rss", "ssh")
    for w in rows:
        res = w.get("resources") or {}
        table.add_row(
            w["id"],
            w["host"],
            str(w["concurrency"]),
            f"{w['heartbeat_age']:.1f}s ago",
            str(len(w["jobs"])),
            str(w["done"]),
            str(w["failed"]),
            f"{res['cpu_seconds']:.1f}s" if res else "-",
            f"{res['rss_bytes'] / 2**20:.0f} MiB" if res else "-",
            str(int(res["ssh_connections"])) if res else "-",
        )
    console().print(table if rows else "no workers")


def _dead_letters(addr: str | None, *, queue_only_without_database: bool = False) -> tuple[Any, str]:
    """The services' view of dead letters: the database as well as the queue.

    With ``queue_only_without_database``, a missing database is not an error
    (the queue's own view still answers); the reason comes back instead.  No
    database is ever created here.
    """
    from remora.cli.common import open_database
    from remora.errors import ConfigError
    from remora.services.context import Context

    settings = STATE.settings({"queue.addr": addr})
    missing = ""
    try:
        open_database(settings, upgrade=False)
    except ConfigError as exc:
        if not queue_only_without_database:
            raise
        missing = exc.message
    return Context(settings=settings, queue=_client(addr)), missing


@dlq_app.command("list")
def dlq_list(
    addr: AddrOpt = None,
    limit: Annotated[int, typer.Option("--limit", help="Most jobs shown.")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """List dead letters with the reason: jobs whose retries ran out, jobs whose workers died too often.

    Example: remora queue dlq list --limit 20
    """
    from rich.table import Table

    from remora.services import deadletters

    ctx, missing = _dead_letters(addr, queue_only_without_database=True)
    if missing:
        info(escape(f"{missing} Showing the queue's dead letters only."))
    try:
        data = deadletters.list_dead(ctx, limit=limit, database_missing=missing)
    finally:
        ctx.queue.close()  # type: ignore[union-attr]
    jobs = data["jobs"]
    if as_json:
        print_json(jobs)
        return
    if data.get("queue_error"):
        info(f"the queue is unavailable ({data['queue_error']}): showing failed jobs only")
    if data.get("database_error"):
        info(f"the database is unavailable ({data['database_error']}): showing the queue's dead letters only")
    table = Table("id", "status", "priority", "attempts", "reason")
    for j in jobs:
        table.add_row(j["id"], j["status"] or "", str(j["priority"] or ""), str(j["attempt"] or ""), j["reason"])
    console().print(table if jobs else "no dead letters")


def _targets(ids: list[str] | None, everything: bool) -> list[str] | None:
    if everything and ids:
        raise ValidationError("give job ids or --all, not both")
    if not everything and not ids:
        raise ValidationError("give job ids, or --all for every dead letter")
    return None if everything else list(ids or [])


@dlq_app.command("kick")
def dlq_kick(
    ids: Annotated[list[str] | None, typer.Argument(help="Job ids to requeue.")] = None,
    everything: Annotated[bool, typer.Option("--all", help="Requeue every dead letter.")] = False,
    addr: AddrOpt = None,
) -> None:
    """Queue a fresh attempt of dead letters (attempts, worker, exit code, error and times reset).

    Example: remora queue dlq kick --all
    """
    from remora.services import deadletters

    targets = _targets(ids, everything)
    ctx, _ = _dead_letters(addr)
    try:
        if targets is None:
            targets = [j["id"] for j in deadletters.list_dead(ctx, limit=10000)["jobs"]]
        for job_id in targets:
            deadletters.kick(ctx, job_id)
    finally:
        ctx.queue.close()  # type: ignore[union-attr]
    info(f"requeued {len(targets)} job(s)")


@dlq_app.command("purge")
def dlq_purge(
    ids: Annotated[list[str] | None, typer.Argument(help="Job ids to delete.")] = None,
    everything: Annotated[bool, typer.Option("--all", help="Delete every dead letter.")] = False,
    addr: AddrOpt = None,
) -> None:
    """Delete the queue's dead letters (workers died too often) for good; their rows stay as they are.

    Example: remora queue dlq purge 0f1e2d3c
    """
    with _client(addr) as client:
        count = client.dlq_purge(_targets(ids, everything))
    info(f"purged {count} job(s)")


@queue_app.command("snapshot")
def snapshot(addr: AddrOpt = None, as_json: JsonOpt = False) -> None:
    """Make the server snapshot its live jobs and start a fresh log (compaction now).

    Example: remora queue snapshot --addr 127.0.0.1:9000
    """
    with _client(addr) as client:
        result = client.snapshot()
    if as_json:
        print_json(result)
    elif result.get("persistence"):
        info(f"snapshot written: generation {result['generation']}, {result['jobs']} live job(s)")
    else:
        info(f"persistence is off: nothing to write ({result['jobs']} job(s) in memory)")


def register(app: typer.Typer) -> None:
    queue_app.add_typer(dlq_app, name="dlq")
    app.add_typer(queue_app, name="queue")
