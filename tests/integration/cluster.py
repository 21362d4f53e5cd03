"""A Remora cluster as separate processes: one queue server, N `remora api`, M `remora worker`.

Every process is ``python -m remora ...`` from this checkout, configured only
through the environment (shared database URL, queue address, queue token and
secret key), on distinct free loopback ports.  ``Cluster.stop()`` ends every
process it started, by PID.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fixtures.services import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
QUEUE_TOKEN = "cluster-queue-token"
SECRET_KEY = "cluster-secret-key"


@dataclass
class Proc:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen | None = None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return self.popen.returncode

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Http:
    """A tiny keep-alive HTTP client for one API process (not thread-safe: one per thread)."""

    port: int
    token: str
    conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.token}"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
                kind = resp.getheader("Content-Type", "")
                return resp.status, (json.loads(raw) if kind.startswith("application/json") else raw.decode())
            except (http.client.HTTPException, ConnectionError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@dataclass
class Cluster:
    root: Path
    database_url: str
    queue_port: int = field(default_factory=free_port)
    queue_data: Path | None = None
    procs: list[Proc] = field(default_factory=list)
    api_ports: list[int] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def queue_addr(self) -> str:
        return f"127.0.0.1:{self.queue_port}"

    def env(self) -> dict[str, str]:
        home = self.root / "home"
        home.mkdir(exist_ok=True)
        # local jobs of these tests write logs into tmp_path (root's own, 0700): they run as this account
        config = self.root / "remora.toml"
        config.write_text('[worker]\nlocal_user = ""\n')
        env = {k: v for k, v in os.environ.items() if not k.startswith("REMORA_")}
        env.update(
            {
                "PYTHONPATH": str(REPO),
                "REMORA_CONFIG": str(config),
                "HOME": str(home),
                "XDG_CONFIG_HOME": str(home / ".config"),
                "REMORA_DATABASE_URL": self.database_url,
                "REMORA_DATABASE_DATA_DIR": str(self.root / "data"),
                "REMORA_QUEUE_ADDR": self.queue_addr,
                "REMORA_QUEUE_TOKEN": QUEUE_TOKEN,
                "REMORA_SECURITY_SECRET_KEY": SECRET_KEY,
                "REMORA_LOGGING_LEVEL": os.environ.get("REMORA_TEST_CLUSTER_LOG_LEVEL", "warning"),
                **self.extra_env,
            }
        )
        return env

    def spawn(self, name: str, *args: str) -> Proc:
        log = self.root / f"{name}.log"
        proc = Proc(name, [sys.executable, "-m", "remora", *args], log)
        with open(log, "ab") as fh:
            proc.popen = subprocess.Popen(proc.argv, env=self.env(), cwd=self.root, stdout=fh, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    # -- the parts ---------------------------------------------------------
    def start_queue(self, data_dir: Path | None = None, name: str = "queue", fsync: str = "never") -> Proc:
        self.queue_data = data_dir or self.queue_data or self.root / "queue"
        proc = self.spawn(name, "queue", "serve", "--port", str(self.queue_port), "--data-dir", str(self.queue_data), "--fsync", fsync)
        wait_for(lambda: self.queue_health() is not None, 20, what="the queue server")
        return proc

    def queue_health(self) -> dict | None:
        try:
            status, body = self.queue_http("/health")
        except OSError:
            return None
        return body if status == 200 else None

    def queue_http(self, path: str, token: str | None = QUEUE_TOKEN) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.queue_port, timeout=5)
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
            resp = conn.getresponse()
            raw = resp.read()
            kind = resp.getheader("Content-Type", "")
            return resp.status, (json.loads(raw) if "json" in kind else raw.decode())
        finally:
            conn.close()

    def start_api(self, name: str | None = None) -> Proc:
        port = free_port()
        proc = self.spawn(name or f"api{len(self.api_ports) + 1}", "api", "--host", "127.0.0.1", "--port", str(port))
        self.api_ports.append(port)
        wait_for(lambda: self._api_healthy(port, proc), 30, interval=0.1, what=f"API on port {port}")
        return proc

    def _api_healthy(self, port: int, proc: Proc) -> bool:
        if not proc.alive():
            raise AssertionError(f"{proc.name} exited:\n{proc.text()[-3000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            return conn.getresponse().status == 200
        except OSError:
            return False

    def start_worker(self, name: str, concurrency: int = 4) -> Proc:
        return self.spawn(name, "worker", "--concurrency", str(concurrency), "--id", name)

    def wait_workers(self, count: int, timeout: float = 30) -> None:
        def registered() -> bool:
            status, body = self.queue_http("/workers")
            return status == 200 and sum(1 for w in body if w.get("active")) >= count

        wait_for(registered, timeout, interval=0.1, what=f"{count} workers to register with the queue")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} (rc={p.popen.poll() if p.popen else None})\n{p.text()[-2000:]}" for p in self.procs)


@contextlib.contextmanager
def postgres_cluster(tmp_path: Path, postgres: Any, database: str) -> Iterator[Cluster]:
    """A Cluster on a fresh PostgreSQL database; stopped (and the test's connection closed) afterwards."""
    from remora import models

    url = postgres.new_database(database)
    models.init_db(url)
    cluster = Cluster(tmp_path, url)
    try:
        yield cluster
    finally:
        cluster.stop()
        models.close_db()


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    """``wait_for`` with a slower poll, for conditions that query the database."""
    return wait_for(predicate, timeout, interval=interval, what=what)


def monotonic() -> float:
    return time.monotonic()
