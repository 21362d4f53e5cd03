"""A worker SIGKILLed in the middle of 10 running jobs, and a host that accepts TCP but never speaks SSH.

Also a graceful stop while a claimed job's start still waits for a free start thread.

What happens to a dead worker's processes: local jobs run in their own
session (and remote ones under sshd), so they outlive the worker.  The worker
that receives the redelivered job (lease expired after queue.worker_timeout)
kills the recorded process group -- only if it is still a session leader
whose environment carries REMORA_JOB_ID=<job id> -- then re-runs the job if it
has retries left, else fails it with ``worker lost``.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from remora import models, output
from remora.crypto import SecretBox
from remora.executor.base import Stream
from remora.models import AuthType, Job, Server
from remora.netqueue.client import QueueClient
from remora.netqueue.server import QueueServer
from remora.worker import Worker
from tests.support.cluster import Cluster
from tests.support.waits import wait_for
from tests.support.workerkit import init_db, local_server, make_settings, submit, wait_status


def job_processes(job_id: str) -> list[int]:
    """Live processes whose environment carries this job's id."""
    marker = f"REMORA_JOB_ID={job_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.slow
def test_sigkill_of_a_worker_running_10_jobs(tmp_path):
    cluster = Cluster(tmp_path / "stack", settings={"queue.worker_timeout": "3s"})
    try:
        cluster.queue().start()
        cluster.api().start()
        doomed = cluster.worker("doomed", concurrency=10)
        doomed.start()
        client = cluster.client()
        local = client.create_server({"name": "here", "hostname": "localhost", "user": "r", "auth_type": "local"})["id"]
        flags = tmp_path / "flags"
        flags.mkdir()
        retry = f"if [ ! -e {flags}/$REMORA_JOB_ID ]; then touch {flags}/$REMORA_JOB_ID; sleep 1061; fi; echo second-run"
        with_retries = [client.submit({"command": retry, "server_id": local, "retries": 1})[0]["id"] for _ in range(5)]
        without = [client.submit({"command": "sleep 1062", "server_id": local})[0]["id"] for _ in range(5)]
        jobs = with_retries + without
        wait_for(lambda: all(Job.get_by_id(j).remote_pid for j in jobs), 15, what="10 jobs running with their pids recorded")
        cluster.worker("rescuer", concurrency=10).start()  # idle: every job is already held by `doomed`
        with cluster.queue_client() as q:
            wait_for(lambda: any(w["id"] == "rescuer" for w in q.workers()), 15, what="the rescuer to heartbeat")
        doomed.kill9()
        killed_at = time.monotonic()
        assert all(job_processes(j) for j in jobs), "the jobs' processes outlive their worker"

        def left_running() -> bool:
            return not Job.select().where(Job.id.in_(jobs), Job.status == "running", Job.worker == "doomed").exists()

        wait_for(left_running, 10, interval=0.05, what="every job to leave `running`")
        elapsed = time.monotonic() - killed_at
        assert elapsed < 3 + 3, f"jobs left running {elapsed:.1f}s after the kill (lease 3 s)"
        for job_id in without:
            row = wait_status(job_id, timeout=10)
            assert (row.status, row.error, row.worker) == ("failed", "worker lost", "doomed")
        for job_id in with_retries:
            row = wait_status(job_id, "completed", timeout=15)
            assert row.attempts == 2 and row.worker == "rescuer"
            assert [e["error"] for e in row.attempt_errors] == ["worker lost"]
        wait_for(lambda: not any(job_processes(j) for j in jobs), 10, what="the dead worker's processes to be killed")
        print(f"\nworker SIGKILL: 10 jobs left `running` {elapsed:.2f}s after the kill (lease 3 s); leftovers killed")
    finally:
        for job_id in Job.select(Job.id).where(Job.command.contains("sleep 106")):
            for pid in job_processes(job_id.id):
                try:
                    import os
                    import signal

                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        cluster.close()


@pytest.fixture
def silent_host():
    """A TCP port that completes the handshake (kernel backlog) and then never says a word."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock.getsockname()[1]
    sock.close()


@contextmanager
def silent_host_worker(
    tmp_path: Path, port: int, settings: dict[str, object], concurrency: int
) -> Iterator[tuple[Any, QueueClient, Worker, Server]]:
    """A queue, a started worker and the server ``mute`` at the silent host's ``port``; stopped and closed after."""
    init_db(tmp_path)
    qs = QueueServer(host="127.0.0.1", port=0, persistence=False)
    qs.start()
    qhost, qport = qs.address
    config = make_settings(tmp_path, {"queue.addr": f"{qhost}:{qport}", **settings})
    box = SecretBox.from_settings(config)
    q = QueueClient(config.queue.addr)
    worker = Worker(config, concurrency=concurrency)
    worker.start()
    try:
        mute = Server.create(
            name="mute",
            hostname="127.0.0.1",
            port=port,
            user="nobody",
            auth_type=AuthType.PASSWORD.value,
            password=box.encrypt("pw"),
        )
        yield config, q, worker, mute
    finally:
        worker.stop(graceful=False)
        q.close()
        qs.stop()
        models.close_db()


def test_a_host_that_accepts_tcp_but_never_speaks_ssh_times_out(tmp_path, silent_host):
    timeout = 1.5
    overrides = {"ssh.connection_timeout": timeout, "ssh.max_retries": 1, "worker.heartbeat_interval": 0.2}
    with silent_host_worker(tmp_path, silent_host, overrides, concurrency=2) as (settings, q, _worker, mute):
        started = time.monotonic()
        job = submit(q, mute, settings, command="true")
        other = submit(q, local_server(), settings, command="echo meanwhile")
        assert wait_status(other.id, timeout=10).status == "completed"  # the worker is not stuck
        assert time.monotonic() - started < timeout, "a job on a healthy server waited for the silent host"
        row = wait_status(job.id, timeout=20)
        elapsed = time.monotonic() - started
        assert row.status == "failed" and f"no SSH greeting within {timeout:g}s" in row.error, row.error
        assert len(row.attempt_errors) == 2  # one retry (ssh.max_retries = 1), each attempt recorded
        assert elapsed < 2 * timeout + 4, f"connection timeout of {timeout}s not honoured: {elapsed:.1f}s"
        print(f"\nsilent host: failed after {elapsed:.2f}s (2 attempts x {timeout}s timeout): {row.error}")


def test_a_graceful_stop_runs_a_claimed_job_whose_start_waited_for_a_start_thread(tmp_path, silent_host):
    """A job shows ``running`` once claimed; a graceful stop lets it run even when its start had to wait.

    Both start threads (``worker.threads = 2``) are busy connecting to a host that never answers
    when the local job is claimed, so its start waits in line.  The stop comes in that wait: the
    job must still run and complete within ``worker.graceful_shutdown``, not go back to the queue.
    """
    timeout = 3.0
    overrides = {"ssh.connection_timeout": timeout, "ssh.max_retries": 0, "worker.threads": 2}
    with silent_host_worker(tmp_path, silent_host, overrides, concurrency=3) as (settings, q, worker, mute):
        blockers = [submit(q, mute, settings, command="true") for _ in range(2)]
        for blocker in blockers:
            wait_status(blocker.id, "running", timeout=10)
        started = time.monotonic()
        job = submit(q, local_server(), settings, command="sleep 0.3; echo finished")
        wait_status(job.id, "running", timeout=10)
        assert time.monotonic() - started < timeout, "the premise: the job was claimed while both start threads still waited"
        worker.stop(graceful=True, timeout=20)
        row = Job.get_by_id(job.id)
        assert (row.status, row.worker) == ("completed", worker.id), (row.status, row.error)
        assert output.read_stream(job.id, Stream.STDOUT) == b"finished\n"
