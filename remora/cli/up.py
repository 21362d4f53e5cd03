"""``remora up``: queue + workers + API in one process on SQLite.

Start order: database, NetQueue, the built-in ``local`` server and the admin
token, worker threads, API.  Stop order on Ctrl-C / SIGTERM: the worker stops
reserving and lets running jobs finish (``worker.graceful_shutdown``; a second
Ctrl-C stops them at once), then the API, then the queue; exit 0.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from remora.cli.common import STATE

TOKEN_NAME = "remora-up-admin"
DRAIN_NOTICEABLE = 0.2  # a worker stop longer than this had running jobs to drain
LINGER = 2.0  # seconds the API stays up after a drain (4x the clients' longest poll interval, for loaded hosts)


def up(
    data_dir: Annotated[Path | None, typer.Option("--data-dir", "-d", help="Where the database, queue log, keys and token live.")] = None,
    host: Annotated[str, typer.Option("--host", help="Address the API and queue listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", min=0, max=65535, help="API and dashboard port (0: any free port).")] = 8080,
    queue_port: Annotated[int, typer.Option("--queue-port", min=0, max=65535, help="NetQueue port (0: any free port).")] = 9000,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers", "-w", min=1, max=65535, help="Jobs run at once (a running job holds no thread). Default: worker.concurrency."
        ),
    ] = None,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Serve the API without tokens (accepted only on a loopback address).")] = False,
) -> None:
    """Start Remora on this machine: queue, workers and API in one process.

    Uses SQLite in the data directory, creates the built-in `local` server and,
    on first start, an admin token saved to a 0600 file that client commands
    read. Prints the dashboard URL (carrying the token) and the API URL.
    Ctrl-C or SIGTERM stops gracefully: running jobs finish first.

    Only admins may run on `local` (security.local_server_role), and as root its
    jobs run as worker.local_user (default nobody), not as root.

    Example: remora up --port 8080 --workers 4
    """
    from remora.errors import ConfigError
    from remora.netaddr import no_auth_refusal

    overrides: dict[str, Any] = {
        "database.data_dir": str(data_dir.expanduser().resolve()) if data_dir else None,
        "queue.addr": f"{host}:{queue_port}",
        "api.addr": f"{host}:{port}",
        "worker.concurrency": workers,
    }
    settings = STATE.settings(overrides)
    STATE.setup_logging(settings)
    refusal = no_auth_refusal(host) if no_auth else None
    if refusal:
        raise ConfigError(refusal)
    stack = Stack(settings, host=host, port=port, queue_port=queue_port, auth=not no_auth)
    stack.start()
    stack.announce()
    stack.wait_for_signal()
    stack.stop()
    raise typer.Exit(0)


class Stack:
    """The three services of ``remora up`` and their lifecycle."""

    def __init__(self, settings: Any, *, host: str, port: int, queue_port: int, auth: bool) -> None:
        self.settings = settings
        self.host = host
        self.port = port
        self.queue_port = queue_port
        self.auth = auth
        self.queue: Any = None
        self.worker: Any = None
        self.api: Any = None
        self.token = ""
        self.stop_requested = threading.Event()
        self.signals = 0

    def start(self) -> None:
        from remora import models
        from remora.api.server import APIServer
        from remora.netqueue.server import QueueServer
        from remora.worker import Worker

        data_dir = self.settings.data_dir
        models.init_db(self.settings.database_url, busy_timeout=self.settings.database.busy_timeout, data_dir=data_dir)
        self.queue = QueueServer.from_settings(
            self.settings,
            token=self.settings.queue_token(create=True),  # made on first start; the worker and API read the same file
            host=self.host,
            port=self.queue_port,
            busy_poll=0.0,  # no spinning: the workers and API share this GIL
        )
        self.queue.start()
        qhost, qport = self.queue.address
        # The worker and the API reach the queue where it really listens (port 0 -> the chosen port).
        self.settings = _with(self.settings, {"queue.addr": f"{_connect_host(qhost)}:{qport}"})
        self._local_server_and_token()
        self.worker = Worker(self.settings, concurrency=self.settings.worker.concurrency)
        self.worker.start()
        self.api = APIServer(self.settings, host=self.host, port=self.port, auth=self.auth)
        self.api.start()

    def _local_server_and_token(self) -> None:
        from remora import services

        services.ensure_local_server()
        self.token = ensure_admin_token(self.settings.token_file)

    @property
    def api_url(self) -> str:
        host, port = self.api.address
        return f"http://{_url_host(_connect_host(host))}:{port}"

    def announce(self) -> None:
        """What a person needs: where to click, where clients connect, how to stop."""
        from remora import __version__

        url = self.api_url
        qhost, qport = self.queue.address
        dashboard = f"{url}/#token={self.token}" if self.auth else f"{url}/"
        lines = [
            f"Remora {__version__} is up (data: {self.settings.data_dir})",
            f"  Dashboard: {dashboard}",
            f"  API:       {url}" + ("" if url == "http://127.0.0.1:8080" else f"   (clients: export REMORA_API_URL={url})"),
            f"  Queue:     {_connect_host(qhost)}:{qport}",
            f"  Workers:   {self.settings.worker.concurrency} jobs at once",
            f"  Token:     {self.settings.token_file} " + self._token_hint(),
            "Press Ctrl-C to stop (running jobs finish first; press it twice to stop them at once).",
        ]
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()

    def _token_hint(self) -> str:
        from remora.config import default_data_dir

        if self.settings.data_dir == default_data_dir():
            return "(client commands on this machine read it)"
        return f"(clients: export REMORA_DATA_DIR={self.settings.data_dir}, or REMORA_TOKEN)"

    def wait_for_signal(self) -> None:
        def handler(signum: int, frame: Any) -> None:
            self.signals += 1
            if self.signals == 1:
                self.stop_requested.set()
            elif self.worker is not None:
                threading.Thread(target=self._force, daemon=True).start()

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, handler)
        while not self.stop_requested.wait(0.5):
            pass

    def _force(self) -> None:
        sys.stderr.write("stopping running jobs now\n")
        self.worker.stop(graceful=False, timeout=0)

    def stop(self) -> None:
        sys.stderr.write("stopping: waiting for running jobs to finish (Ctrl-C again to stop them now)\n")
        sys.stderr.flush()
        if self.worker is not None:
            started = time.monotonic()
            self.worker.stop(graceful=True, timeout=self.settings.worker.graceful_shutdown)
            if time.monotonic() - started > DRAIN_NOTICEABLE and self.signals < 2:
                # Jobs were draining: clients waiting on them (submit --wait, jobs wait)
                # poll at most every 0.5 s; let them read the final state before the API goes.
                time.sleep(LINGER)
        if self.api is not None:
            self.api.stop()
        if self.queue is not None:
            self.queue.stop()
        sys.stderr.write("stopped\n")


def ensure_admin_token(token_file: Path) -> str:
    """The admin token in ``token_file`` if it is still valid, else a new one written there (0600)."""
    from remora.services import tokens

    try:
        existing = token_file.read_text(encoding="utf-8").strip()
    except OSError:
        existing = ""
    if existing and tokens.token_is_valid(existing):
        return existing
    _, plaintext = tokens.create_token(tokens.unused_token_name(TOKEN_NAME), "admin", None)
    write_private(token_file, plaintext + "\n")
    return plaintext


def write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only (created 0600, never briefly wider)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _with(settings: Any, overrides: dict[str, Any]) -> Any:
    from remora.config import with_overrides

    return with_overrides(settings, overrides)


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def register(app: typer.Typer) -> None:
    app.command("up")(up)
