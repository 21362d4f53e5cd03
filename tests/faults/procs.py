"""Remora's services as real subprocesses (queue, API, workers) for fault and load tests.

Each service runs ``python -m remora -c <config> ...`` from this checkout, logs
to its own file and can be killed with SIGKILL and started again on the same
port.  The test process binds the models to the same database to create
tokens and to read job rows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remora import models, services
from remora.client import Client
from remora.netqueue.client import QueueClient
from tests.fixtures.services import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
QUEUE_TOKEN = "faults-queue-token"  # the queue token every service of a Cluster shares


def rss_kib(pid: int) -> int:
    """Resident set size of a live process, in KiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass
class Service:
    """One Remora subprocess that can be started, SIGKILLed and started again."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    ready: Callable[[], bool]
    preexec: Callable[[], None] | None = None
    proc: subprocess.Popen | None = None
    starts: int = 0

    def start(self, timeout: float = 30.0) -> None:
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"--- start {self.starts} ---\n".encode())
        log.flush()
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=log, preexec_fn=self.preexec)
        log.close()
        wait_for(self._ready, timeout, interval=0.05, what=f"{self.name} to be ready")

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited {self.proc.returncode}: {self.logs()[-3000:]}")
        try:
            return self.ready()
        except Exception:
            return False

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL, for real, and reap."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Cluster:
    """A config file, a database, a queue port and an API port shared by every service started from it."""

    base: Path
    db_url: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    queue_port: int = 0
    api_port: int = 0
    services: list[Service] = field(default_factory=list)
    token: str = ""
    queue_token: str = QUEUE_TOKEN

    def __post_init__(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.db_url = self.db_url or f"sqlite:///{self.base / 'remora.db'}"
        self.queue_port = self.queue_port or free_port()
        self.api_port = self.api_port or free_port()
        values = {
            "database.url": self.db_url,
            "database.data_dir": str(self.base),
            "queue.addr": f"127.0.0.1:{self.queue_port}",
            "queue.token": self.queue_token,
            "queue.worker_timeout": "5s",
            "worker.heartbeat_interval": "200ms",
            "worker.kill_grace": "1s",
            "output.flush_interval": "200ms",
            "security.secret_key": "faults-secret-key",
            "logging.level": "info",
            "worker.local_user": "",  # local jobs keep their flags in the test's tmp_path (root's own, 0700)
        }
        values.update(self.settings)
        self.config = self.base / "remora.toml"
        self.config.write_text(_toml(values))
        models.init_db(self.db_url)
        self.token = services.create_token(f"faults-{os.getpid()}-{id(self):x}", "admin", None)[1]

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(self.base), "REMORA_CONFIG": str(self.config)}

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def _service(self, name: str, args: list[str], ready: Callable[[], bool], **kw: Any) -> Service:
        svc = Service(name, [sys.executable, "-m", "remora", *args], self.env, self.base / f"{name}.log", ready, **kw)
        self.services.append(svc)
        return svc

    def queue(self, *extra: str, preexec: Callable[[], None] | None = None) -> Service:
        args = ["queue", "serve", "--port", str(self.queue_port), "--data-dir", str(self.base / "queue"), *extra]
        return self._service("queue", args, self._queue_ready, preexec=preexec)

    def _queue_ready(self) -> bool:
        with QueueClient(f"127.0.0.1:{self.queue_port}", token=self.queue_token, connect_timeout=1) as client:
            return client.ping() >= 0

    def api(self) -> Service:
        return self._service("api", ["api", "--port", str(self.api_port)], self._api_ready)

    def _api_ready(self) -> bool:
        try:
            urllib.request.urlopen(f"{self.api_url}/health", timeout=1).close()
        except urllib.error.HTTPError:
            pass  # 503 (queue or database down) is an answer too
        return True

    def worker(self, worker_id: str, concurrency: int = 4) -> Service:
        args = ["worker", "--id", worker_id, "--concurrency", str(concurrency)]
        return self._service(f"worker-{worker_id}", args, lambda: True)

    def client(self, timeout: float = 30.0) -> Client:
        return Client(self.api_url, self.token, timeout=timeout)

    def queue_client(self, **kw: Any) -> QueueClient:
        return QueueClient(f"127.0.0.1:{self.queue_port}", **{"token": self.queue_token, **kw})

    def close(self) -> None:
        for svc in reversed(self.services):
            if svc.alive():
                svc.proc.kill()  # type: ignore[union-attr]
                svc.proc.wait(10)  # type: ignore[union-attr]
        models.close_db()


def _toml(values: dict[str, Any]) -> str:
    sections: dict[str, list[str]] = {}
    for key, value in values.items():
        section, name = key.split(".", 1)
        text = f'"{value}"' if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else repr(value)
        sections.setdefault(section, []).append(f"{name} = {text}")
    return "".join(f"[{s}]\n" + "\n".join(lines) + "\n" for s, lines in sections.items())


def local_fleet(client: Client, count: int, tag: str) -> list[str]:
    """``count`` servers of auth_type local carrying ``tag``: one POST with ``servers: ["tag:x"]`` makes ``count`` jobs."""
    return [
        client.create_server({"name": f"{tag}-{i}", "hostname": "localhost", "user": "remora", "auth_type": "local", "tags": [tag]})["id"]
        for i in range(count)
    ]


def status_counts(job_ids: list[str] | None = None) -> dict[str, int]:
    """Job rows per status, read straight from the database."""
    query = models.Job.select(models.Job.status, models.fn.COUNT(models.Job.id).alias("n"))
    if job_ids is not None:
        query = query.where(models.Job.id.in_(job_ids))
    return {row.status: row.n for row in query.group_by(models.Job.status)}
