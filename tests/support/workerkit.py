"""Shared helpers for the executor and worker tests: settings, DB, server rows, sshd session kills."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from remora import jobmessage, models
from remora.config import Settings, with_overrides
from remora.crypto import SecretBox
from remora.executor.target import AuthKind, Target
from remora.models import AuthType, Server
from tests.support.sshd import SSHServer


def make_settings(tmp_path: Path, overrides: dict[str, Any] | None = None) -> Settings:
    base = {
        "database.data_dir": str(tmp_path),
        "security.secret_key": "test-secret-key",
        "worker.kill_grace": 1.0,
        "ssh.max_retries": 1,
        "ssh.connection_timeout": 5.0,
        "output.flush_interval": 0.2,
    }
    base.update(overrides or {})
    return with_overrides(Settings(), base)


def init_db(tmp_path: Path) -> None:
    models.init_db(f"sqlite:///{tmp_path / 'remora.db'}")


@contextmanager
def worker_stack(
    tmp_path: Path, concurrency: int, overrides: dict[str, Any] | None = None
) -> Iterator[tuple[Settings, Any, Any, SecretBox]]:
    """An in-memory queue, a client of it and a started worker on a fresh SQLite database (``overrides``: settings).

    Yields (settings, queue client, worker, secret box); stops all three after.
    """
    from remora.netqueue.client import QueueClient
    from remora.netqueue.server import QueueServer
    from remora.worker import Worker

    init_db(tmp_path)
    qs = QueueServer(host="127.0.0.1", port=0, persistence=False)
    qs.start()
    host, port = qs.address
    settings = make_settings(
        tmp_path, {"queue.addr": f"{host}:{port}", "queue.worker_timeout": 5.0, "worker.heartbeat_interval": 0.2, **(overrides or {})}
    )
    client = QueueClient(settings.queue.addr)
    worker = Worker(settings, concurrency=concurrency)
    worker.start()
    try:
        yield settings, client, worker, SecretBox.from_settings(settings)
    finally:
        worker.stop(graceful=False)
        client.close()
        qs.stop()


def add_server(box: SecretBox, srv: SSHServer, name: str | None = None, **fields: Any) -> Server:
    values: dict[str, Any] = {
        "name": name or f"{srv.host}:{srv.port}",
        "hostname": srv.host,
        "port": srv.port,
        "user": srv.user,
        "auth_type": AuthType.KEY.value,
        "private_key": box.encrypt(srv.private_key),
    }
    values.update(fields)
    return Server.create(**values)


def ssh_target(srv: SSHServer, **fields: Any) -> Target:
    """A plain connection target for the test sshd (key auth), no database involved."""
    values: dict[str, Any] = {"host": srv.host, "port": srv.port, "user": srv.user, "auth": AuthKind.KEY, "private_key": srv.private_key}
    values.update(fields)
    return Target(**values)


def local_server(name: str = "local") -> Server:
    return Server.create(name=name, hostname="localhost", port=0, user="", auth_type=AuthType.LOCAL.value)


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out.append(int(entry.name))
    return out


def _sessions(srv: SSHServer) -> list[int]:
    assert srv.proc is not None
    victims = []
    todo = _children(srv.proc.pid)
    while todo:
        pid = todo.pop()
        victims.append(pid)
        todo.extend(_children(pid))
    return victims


def stop_and_drop(srv: SSHServer) -> None:
    """Stop the test sshd and kill its established sessions too: the server is gone."""
    victims = _sessions(srv)
    srv.stop()
    _kill(victims)


def kill_sessions(srv: SSHServer) -> int:
    """SIGKILL every per-connection process of the test sshd (its established sessions): a dropped link."""
    return _kill(_sessions(srv))


def _kill(victims: list[int]) -> int:
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(victims)


def submit(queue: Any, server: Server, settings: Settings, **fields: Any) -> models.Job:
    """Create a queued job row and put its id on the queue the way the API does (``jobmessage.queue_message``)."""
    import dataclasses

    from remora import jobstate

    job = jobstate.new_job(server=server, **fields)
    jobstate.record([job.__data__])
    message = jobmessage.queue_message(job, server, ttr=settings.queue.worker_timeout, default_queue=settings.queue.name)
    fields_ = dataclasses.asdict(message)
    queue.put(fields_.pop("job_id"), **fields_)
    return job


def job_row(job_id: str) -> models.Job:
    return models.Job.get_by_id(job_id)


def wait_status(job_id: str, *statuses: str, timeout: float = 15.0) -> models.Job:
    from tests.support.waits import wait_for

    wanted = set(statuses) or {"completed", "failed", "canceled"}
    wait_for(lambda: job_row(job_id).status in wanted, timeout, what=f"job {job_id} to be {'/'.join(sorted(wanted))}")
    return job_row(job_id)


def pooled(pool: Any) -> list[Any]:
    """Every connection an ``SSHPool`` holds, paramiko's and its libssh2 sessions'."""
    pools = [pool] + ([pool._libssh2] if pool._libssh2 is not None else [])
    return [c for p in pools for conns in p._conns.values() for c in conns]


def pool_opened(pool: Any) -> int:
    """How many connections an ``SSHPool`` opened, paramiko's and libssh2's."""
    return pool.opened + (pool._libssh2.opened if pool._libssh2 is not None else 0)
