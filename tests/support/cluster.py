"""Remora as real subprocesses: the one harness for tests that start `remora ...` processes.

``Service`` is one subprocess (``python -m remora ...`` from this checkout, or
the zipapp): started, waited for until ready, SIGKILLed and started again on
the same port, stopped by PID; its output goes to its own log file.

``Cluster`` is separate services sharing one config file: a queue server
(``queue serve``), any number of ``api`` and ``worker`` processes, on free
loopback ports, with one database.  ``queue()``/``api()``/``worker()`` build a
service (call ``.start()``); ``start_queue()``/``start_api()``/``start_worker()``
build and start one.  The test process binds the models to the same database
to create tokens and read job rows.

``Remora`` is ``remora up`` (everything in one process) plus the CLI run
against it, from the checkout or the built zipapp (``make_remora``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remora import models, services
from remora.client import Client
from remora.netqueue.client import QueueClient
from tests.support.http import Reply, request
from tests.support.waits import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
QUEUE_TOKEN = "cluster-queue-token"
SECRET_KEY = "cluster-secret-key"


def rss_kib(pid: int) -> int:
    """Resident set size of a live process, in KiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def connected_to(pid: int, port: int) -> bool:
    """True when process ``pid`` holds an established TCP connection to loopback ``port`` (read from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                cols = line.split()
                remote_port = int(cols[2].rsplit(":", 1)[1], 16)
                if remote_port == port and cols[3] == "01" and cols[9] in inodes:  # 01: ESTABLISHED
                    return True
    return False


@dataclass
class Service:
    """One Remora subprocess that can be started, SIGKILLed and started again."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    ready: Callable[[], bool] | None = None  # None: running is ready
    preexec: Callable[[], None] | None = None
    cwd: Path | None = None
    stdout_path: Path | None = None  # stdout apart from the log (stderr), e.g. for a banner
    proc: subprocess.Popen | None = None
    starts: int = 0

    def start(self, timeout: float = 30.0) -> Service:
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"--- start {self.starts} ---\n".encode())
        log.flush()
        out = self.stdout_path.open("ab") if self.stdout_path else log
        try:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=out, stderr=log, preexec_fn=self.preexec)
        finally:
            log.close()
            out.close()
        if self.ready is not None:
            wait_for(self._ready, timeout, interval=0.05, what=f"{self.name} to be ready")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited {self.proc.returncode}: {self.logs()[-3000:]}")
        assert self.ready is not None
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

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Send ``sig`` and wait (SIGKILL after ``timeout``); the exit code, None if never started."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
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
    """A config file, a database, a queue port and API ports shared by every service started from it.

    ``settings`` override the config written to ``base/remora.toml`` (dotted
    keys); ``extra_env`` is added to every service's environment (REMORA_* from
    the test's own environment is dropped).  The queue requires ``queue_token``
    and every service and client here sends it (``""``: a queue without one).
    Local jobs run as this account (``worker.local_user = ""``): they write
    into the test's tmp_path, root's own and 0700.
    """

    base: Path
    db_url: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    queue_port: int = 0
    api_port: int = 0  # the first API's port; more APIs get their own
    queue_token: str = QUEUE_TOKEN
    extra_env: dict[str, str] = field(default_factory=dict)
    services: list[Service] = field(default_factory=list)
    api_ports: list[int] = field(default_factory=list)  # of the APIs built so far, in order
    _token: str = field(default="", init=False, repr=False)

    def __post_init__(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.db_url = self.db_url or f"sqlite:///{self.base / 'remora.db'}"
        self.queue_port = self.queue_port or free_port()
        self.api_port = self.api_port or free_port()
        self.queue_data = self.base / "queue"
        values: dict[str, Any] = {
            "database.url": self.db_url,
            "database.data_dir": str(self.base),
            "queue.addr": self.queue_addr,
            "queue.worker_timeout": "5s",
            "worker.heartbeat_interval": "200ms",
            "worker.kill_grace": "1s",
            "output.flush_interval": "200ms",
            "security.secret_key": SECRET_KEY,
            "logging.level": os.environ.get("REMORA_TEST_CLUSTER_LOG_LEVEL", "info"),
            "queue.token": self.queue_token,
            "worker.local_user": "",
        }
        values.update(self.settings)
        self.config = self.base / "remora.toml"
        self.config.write_text(_toml(values))
        models.init_db(self.db_url)

    @property
    def queue_addr(self) -> str:
        return f"127.0.0.1:{self.queue_port}"

    @property
    def api_url(self) -> str:
        """The first API's URL."""
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def token(self) -> str:
        """An admin API token (created in the shared database on first use)."""
        if not self._token:
            self._token = services.create_token(f"cluster-{os.getpid()}-{id(self):x}", "admin", None)[1]
        return self._token

    @property
    def env(self) -> dict[str, str]:
        home = self.base / "home"
        home.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("REMORA_")}
        env.update(
            {
                "PYTHONPATH": str(ROOT),
                "HOME": str(home),
                "XDG_CONFIG_HOME": str(home / ".config"),
                "REMORA_CONFIG": str(self.config),
                **self.extra_env,
            }
        )
        return env

    # -- building services ---------------------------------------------------
    def _service(self, name: str, args: list[str], ready: Callable[[], bool] | None, **kw: Any) -> Service:
        svc = Service(name, [sys.executable, "-m", "remora", *args], self.env, self.base / f"{name}.log", ready, cwd=self.base, **kw)
        self.services.append(svc)
        return svc

    def spawn(self, name: str, *args: str) -> Service:
        """Start ``remora <args>`` now, without waiting for anything."""
        return self._service(name, list(args), None).start()

    def queue(self, *extra: str, preexec: Callable[[], None] | None = None, data_dir: Path | None = None, name: str = "queue") -> Service:
        """``remora queue serve`` on the cluster's queue port; ``extra`` arguments, e.g. ``"--fsync", "always"``."""
        self.queue_data = data_dir or self.queue_data
        args = ["queue", "serve", "--port", str(self.queue_port), "--data-dir", str(self.queue_data), *extra]
        return self._service(name, args, self._queue_ready, preexec=preexec)

    def start_queue(self, data_dir: Path | None = None, name: str = "queue", fsync: str = "never") -> Service:
        return self.queue("--fsync", fsync, data_dir=data_dir, name=name).start(20)

    def _queue_ready(self) -> bool:
        with self.queue_client(connect_timeout=1) as client:
            return client.ping() >= 0

    def api(self, name: str = "api") -> Service:
        """``remora api``: the first on ``api_port``, each later one on a port of its own (see ``api_ports``)."""
        port = free_port() if self.api_ports else self.api_port
        self.api_ports.append(port)
        return self._service(name, ["api", "--host", "127.0.0.1", "--port", str(port)], lambda: self._api_answers(port))

    def _api_answers(self, port: int) -> bool:
        request("127.0.0.1", port, "GET", "/health", timeout=1)  # 503 (queue or database down) is an answer too
        return True

    def start_api(self, name: str | None = None) -> Service:
        """An API started and healthy (200 on /health)."""
        svc = self.api(name or f"api{len(self.api_ports) + 1}").start()
        port = self.api_ports[-1]
        wait_for(lambda: request("127.0.0.1", port, "GET", "/health", timeout=2).status == 200, 30, 0.1, f"API on port {port}")
        return svc

    def worker(self, worker_id: str, concurrency: int = 4, name: str | None = None) -> Service:
        args = ["worker", "--id", worker_id, "--concurrency", str(concurrency)]
        return self._service(name or f"worker-{worker_id}", args, None)

    def start_worker(self, name: str, concurrency: int = 4) -> Service:
        """A worker with id ``name``, logging to ``name``.log."""
        return self.worker(name, concurrency, name=name).start()

    def wait_workers(self, count: int, timeout: float = 30) -> None:
        def registered() -> bool:
            with self.queue_client(connect_timeout=1) as q:
                return sum(1 for w in q.workers() if w.get("active")) >= count

        wait_for(registered, timeout, interval=0.1, what=f"{count} workers to register with the queue")

    # -- talking to it -------------------------------------------------------
    def client(self, timeout: float = 30.0) -> Client:
        """The product's API client on the first API, with the admin token."""
        return Client(self.api_url, self.token, timeout=timeout)

    def queue_client(self, **kw: Any) -> QueueClient:
        kw.setdefault("token", self.queue_token)
        return QueueClient(self.queue_addr, **kw)

    def queue_http(self, path: str, token: str | None = "") -> tuple[int, Any]:
        """GET on the queue server's HTTP side: ``(status, decoded body)``; ``token`` "" is the cluster's."""
        reply: Reply = request(
            "127.0.0.1", self.queue_port, "GET", path, token=(self.queue_token or None) if token == "" else token, timeout=5
        )
        return reply.status, reply.data

    def queue_health(self) -> dict | None:
        try:
            status, body = self.queue_http("/health")
        except OSError:
            return None
        return body if status == 200 else None

    # -- ending it -----------------------------------------------------------
    def stop(self) -> None:
        """SIGTERM every service, newest first, and wait for each."""
        for svc in reversed(self.services):
            svc.stop()

    def close(self) -> None:
        """SIGKILL whatever still runs and unbind the test's database."""
        for svc in reversed(self.services):
            if svc.alive():
                svc.kill9()
        models.close_db()

    def logs(self) -> str:
        """The tail of every service's log, for assertion messages."""
        return "\n".join(f"--- {s.name} (rc={s.proc.poll() if s.proc else None})\n{s.logs()[-2000:]}" for s in self.services)


def _toml(values: dict[str, Any]) -> str:
    sections: dict[str, list[str]] = {}
    for key, value in values.items():
        section, name = key.split(".", 1)
        text = json.dumps(value) if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else repr(value)
        sections.setdefault(section, []).append(f"{name} = {text}")
    return "".join(f"[{s}]\n" + "\n".join(lines) + "\n" for s, lines in sections.items())


@contextlib.contextmanager
def postgres_cluster(tmp_path: Path, postgres: Any, database: str) -> Iterator[Cluster]:
    """A Cluster on a fresh PostgreSQL database (queue token required); stopped and unbound afterwards."""
    cluster = Cluster(tmp_path, postgres.new_database(database), queue_token=QUEUE_TOKEN)
    try:
        yield cluster
    finally:
        cluster.stop()
        cluster.close()


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


# -- `remora up` and the CLI --------------------------------------------------
def system_python() -> str:
    """A python3 that is not the test venv's (the zipapp must run on a bare interpreter)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if Path(candidate).exists():
            return candidate
    return sys.executable


@dataclass
class Remora:
    """A running `remora up` plus a way to run client commands against it."""

    argv: list[str]  # how to start remora: [python, -m, remora] or [python3, dist.pyz]
    env: dict[str, str]
    cwd: Path
    data_dir: Path
    port: int
    queue_port: int
    service: Service | None = None
    log: Path | None = None
    banner: list[str] = field(default_factory=list)
    workers: list[Service] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def proc(self) -> subprocess.Popen | None:
        return self.service.proc if self.service else None

    def start(self, workers: int = 4) -> None:
        """`remora up` with ``workers`` worker threads; waits for /health, then reads the banner it printed."""
        self.log = self.data_dir.parent / "up.log"
        out = self.data_dir.parent / "up.out"
        seen = out.stat().st_size if out.exists() else 0
        argv = [*self.argv, "up", "--data-dir", str(self.data_dir), "--port", str(self.port), "--queue-port", str(self.queue_port)]
        self.service = Service(
            "remora up", [*argv, "--workers", str(workers)], self.env, self.log, self._healthy, cwd=self.cwd, stdout_path=out
        )
        self.service.start(timeout=60)
        self.banner = out.read_bytes()[seen:].decode(errors="replace").splitlines()

    def _healthy(self) -> bool:
        return request("127.0.0.1", self.port, "GET", "/health", timeout=1).status == 200

    def worker(self, worker_id: str, concurrency: int = 4, queue: str | None = None) -> Service:
        """A separate `remora worker` process on this `remora up`'s queue (started; stopped by ``stop``); ``queue``: reserve only from it."""
        env = {**self.env, "REMORA_QUEUE_ADDR": f"127.0.0.1:{self.queue_port}"}
        args = ["worker", "--id", worker_id, "--concurrency", str(concurrency), *(["--queue", queue] if queue else [])]
        svc = Service(f"worker-{worker_id}", [*self.argv, *args], env, self.data_dir.parent / f"worker-{worker_id}.log", cwd=self.cwd)
        self.workers.append(svc.start())
        return svc

    def run(
        self, *args: str, input: bytes | str | None = None, timeout: float = 60, env: dict | None = None
    ) -> subprocess.CompletedProcess:
        """A client command; stdout/stderr as bytes."""
        data = input.encode() if isinstance(input, str) else input
        return subprocess.run(
            [*self.argv, *args], input=data, capture_output=True, cwd=self.cwd, env={**self.env, **(env or {})}, timeout=timeout
        )

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([*self.argv, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=self.cwd, env=self.env)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> int:
        """Stop the extra workers (SIGTERM), then `remora up` with ``sig``; its exit code (0 if not running)."""
        for svc in self.workers:
            svc.stop()
        self.workers.clear()
        if self.service is None:
            return 0
        code = self.service.stop(sig, timeout)
        self.service = None
        return code or 0

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""


def make_remora(kind: str, base: Path, zipapp_path: Path | None) -> Remora:
    """A `remora up` (not started) from the "checkout" or the "zipapp", with its files under ``base``."""
    cwd = base / "cwd"  # an empty directory outside the checkout
    cwd.mkdir(parents=True, exist_ok=True)
    data_dir = base / "data"
    port, qport = free_port(), free_port()
    env = {
        "HOME": str(base),
        "PATH": "/usr/local/bin:/usr/bin:/bin",  # no venv on PATH
        "LANG": "C.UTF-8",
        "REMORA_API_URL": f"http://127.0.0.1:{port}",
        "REMORA_DATA_DIR": str(data_dir),
        "SHIV_ROOT": str(base / "shiv"),
        "REMORA_WORKER_HEARTBEAT_INTERVAL": "0.2",
        "REMORA_OUTPUT_FLUSH_INTERVAL": "0.1",
    }
    if kind == "checkout":
        argv = [sys.executable, "-m", "remora"]
        env["PYTHONPATH"] = str(ROOT)
    else:
        assert zipapp_path is not None
        argv = [system_python(), str(zipapp_path)]
    return Remora(argv=argv, env=env, cwd=cwd, data_dir=data_dir, port=port, queue_port=qport)


def add_ssh_servers(remora: Remora, sshd: Any, names: list[str], tag: str = "e2e") -> None:
    for name in names:
        res = remora.run(
            "servers", "add", name, "--host", sshd.host, "--port", str(sshd.port), "--user", sshd.user,
            "--key-file", str(sshd.key_path), "--tag", tag,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr.decode()


def wait_status(remora: Remora, job_id: str, status: str, timeout: float = 20) -> None:
    """Poll `remora jobs show` until the job has ``status``."""

    def reached() -> bool:
        res = remora.run("jobs", "show", job_id, "--json")
        return res.returncode == 0 and json.loads(res.stdout)["status"] == status

    wait_for(reached, timeout=timeout, interval=0.1, what=f"job {job_id} to be {status}")
