"""``remora worker`` as a real process: SIGTERM drains and exits 0; SIGKILL mid-job ends in ``worker lost``.

What happens to a SIGKILLed worker's remote processes: its SSH connection
drops, and OpenSSH does not kill a non-pty command (it would only die on its
next write).  The worker that receives the redelivered job finds the row still
``running`` and kills the recorded process group (``Job.remote_pid``) on the
server before it fails the job with ``worker lost`` -- checked below with a
second SSH command.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from remora.crypto import SecretBox
from remora.models import Job
from remora.netqueue.client import QueueClient
from remora.netqueue.server import QueueServer
from remora.worker import Worker
from tests.support.sshd import wait_no_process
from tests.support.waits import wait_for
from tests.support.workerkit import add_server, init_db, local_server, make_settings, submit, wait_status

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(tmp_path):
    init_db(tmp_path)
    qs = QueueServer(host="127.0.0.1", port=0, persistence=False)
    qs.start()
    host, port = qs.address
    overrides = {
        "queue.addr": f"{host}:{port}",
        "queue.worker_timeout": 2.0,
        "worker.heartbeat_interval": 0.2,
        "worker.graceful_shutdown": 10.0,
        "worker.local_user": "",  # local jobs keep flags in tmp_path (the test's own, 0700): run them as this account
    }
    settings = make_settings(tmp_path, overrides)
    config = tmp_path / "remora.toml"
    config.write_text(
        "\n".join(
            [
                "[database]",
                f'url = "sqlite:///{tmp_path / "remora.db"}"',
                f'data_dir = "{tmp_path}"',
                "[queue]",
                f'addr = "{host}:{port}"',
                'worker_timeout = "2s"',
                "[worker]",
                'heartbeat_interval = "200ms"',
                'graceful_shutdown = "10s"',
                'kill_grace = "1s"',
                'local_user = ""',
                "[security]",
                'secret_key = "test-secret-key"',
                "",
            ]
        )
    )
    client = QueueClient(settings.queue.addr)
    procs: list[subprocess.Popen] = []

    def spawn(*args: str) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "remora", "-c", str(config), "worker", "--concurrency", "2", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        procs.append(proc)
        return proc

    yield settings, client, spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    client.close()
    qs.stop()


def test_sigterm_lets_running_jobs_finish_and_exits_0(env):
    settings, q, spawn = env
    local = local_server()
    proc = spawn("--id", "drainer")
    job = submit(q, local, settings, command="sleep 1; echo finished")
    wait_status(job.id, "running")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    row = Job.get_by_id(job.id)
    assert row.status == "completed" and row.worker == "drainer"
    assert b"waiting up to" in proc.stderr.read()


@pytest.mark.ssh
@pytest.mark.slow
def test_sigkill_mid_job_ends_failed_worker_lost_and_kills_the_remote_process(env, sshd):
    settings, q, spawn = env
    box = SecretBox.from_settings(settings)
    server = add_server(box, sshd)
    proc = spawn("--id", "doomed")
    job = submit(q, server, settings, command="sleep 1051")
    wait_for(lambda: Job.get_by_id(job.id).remote_pid, 10, what="job running with its remote pid recorded")
    proc.kill()
    proc.wait()
    killed_at = time.monotonic()
    rescuer = Worker(settings, concurrency=1, worker_id="rescuer")
    rescuer.start()
    try:
        row = wait_status(job.id, timeout=15)
        assert row.status == "failed" and row.error == "worker lost" and row.worker == "doomed"
        assert time.monotonic() - killed_at < 8
        assert [e["error"] for e in row.attempt_errors] == ["worker lost"]
        assert wait_no_process(sshd, "sleep 1051", timeout=3)
        wait_for(lambda: q.peek(job.id) is None, 5, what="message acked")
    finally:
        rescuer.stop(graceful=False)


@pytest.mark.slow
def test_sigkill_with_retries_left_kills_the_leftover_and_runs_the_job_again(env, tmp_path):
    settings, q, spawn = env
    local = local_server()
    proc = spawn("--id", "doomed-local")
    flag = tmp_path / "first-attempt"
    job = submit(q, local, settings, command=f"if [ ! -e {flag} ]; then touch {flag}; sleep 1052; fi; echo ok", retries=1)
    wait_for(lambda: Job.get_by_id(job.id).remote_pid, 10, what="job running with its pid recorded")
    proc.kill()
    proc.wait()
    rescuer = Worker(settings, concurrency=1, worker_id="rescuer-local")
    rescuer.start()
    try:
        row = wait_status(job.id, "completed", timeout=15)
        assert row.attempts == 2 and row.worker == "rescuer-local"
        assert subprocess.run(["pgrep", "-f", "[s]leep 1052"], capture_output=True).returncode == 1
    finally:
        rescuer.stop(graceful=False)
