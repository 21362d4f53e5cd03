"""``remora worker``: run jobs from NetQueue over SSH or locally."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from remora.cli.common import STATE, open_database


def worker(
    concurrency: Annotated[int | None, typer.Option("--concurrency", "-n", min=1, help="Jobs run at once (worker.concurrency).")] = None,
    queue: Annotated[list[str] | None, typer.Option("--queue", "-Q", help="Queue to reserve from; repeatable (worker.queues).")] = None,
    worker_id: Annotated[str | None, typer.Option("--id", help="Worker id shown in stats (default: <hostname>-<pid>).")] = None,
    addr: Annotated[str | None, typer.Option("--addr", help="NetQueue address host:port (queue.addr).")] = None,
) -> None:
    """Run jobs from the queue on their servers, streaming output into the database.

    Logs go to stderr. SIGTERM or Ctrl-C stops reserving, lets running jobs finish
    within worker.graceful_shutdown, hands the rest back to the queue, and exits 0;
    a second signal stops at once (running jobs are killed and handed back).

    Jobs on the built-in `local` server run on this machine: as worker.local_user
    (default nobody, who cannot read the data directory) when the worker runs as
    root, else as the worker's own account, with everything it can read.

    SSH: a server reached directly runs over libssh2 sessions that this process's
    one event loop drives (no thread per connection); one behind jump hosts over
    paramiko. ssh.transport (auto, libssh2, paramiko) chooses.

    The worker needs an existing database (made by `remora api`, `remora up` or
    `remora db upgrade`): with none there it exits 78 and creates nothing.

    Example: remora worker --concurrency 8 --queue job_queue --id web-worker-1
    """
    import signal
    import threading

    from remora import models
    from remora.worker import Worker

    settings = STATE.settings(
        {"worker.concurrency": concurrency, "worker.queues": list(queue) if queue else None, "worker.id": worker_id, "queue.addr": addr}
    )
    STATE.setup_logging(settings)
    open_database(settings, data_dir=True)  # the API's database: a worker never makes one of its own
    runner = Worker(settings)
    signals_seen = []

    def on_signal(signum: int, _frame: Any) -> None:
        signals_seen.append(signum)
        graceful = len(signals_seen) == 1
        threading.Thread(target=runner.stop, kwargs={"graceful": graceful}, name="worker-stop", daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    runner.start()
    while not runner.wait(0.5):  # wake up regularly so signal handlers run promptly
        pass
    models.close_db()


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
