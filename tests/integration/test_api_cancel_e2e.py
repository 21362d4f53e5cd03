"""End to end through the API: canceling a running job kills its process; the reconciler settles lost workers.

A real NetQueue, the API (waitress) and an in-process Worker with the local
executor on SQLite.  The running command is ``sh -c 'sleep N; :'`` with a
random N, so its processes can be found in /proc by their command line.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
from pathlib import Path

import pytest

from remora import models
from remora.models import Job
from remora.worker import Worker
from tests.support.api import running_api
from tests.support.waits import wait_for


def processes_with(marker: str) -> list[int]:
    """PIDs whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(entry.name))
    return found


@pytest.fixture
def stack(tmp_path):
    overrides = {"worker.heartbeat_interval": 0.2, "worker.kill_grace": 1.0, "output.flush_interval": 0.1}
    with running_api(tmp_path, **overrides) as api:
        worker = Worker(api.settings, concurrency=2)
        worker.start()
        try:
            yield api
        finally:
            worker.stop(graceful=False, timeout=5)


def test_cancel_of_a_running_job_kills_its_process(stack):
    api = stack
    seconds = random.randint(100_000, 999_999)
    marker = f"sleep {seconds}"
    job = api.post("/api/v1/jobs", {"command": f"sh -c '{marker}; :'", "server_id": api.local_server_id(), "timeout": 3600})
    assert job.status == 201, job
    job_id = job.json()["id"]
    try:
        wait_for(lambda: api.get(f"/api/v1/jobs/{job_id}?output=false").json()["status"] == "running", timeout=15)
        wait_for(lambda: processes_with(marker), timeout=10)
        reply = api.post(f"/api/v1/jobs/{job_id}/cancel", token="operator")
        assert reply.status == 200, reply
        wait_for(lambda: api.get(f"/api/v1/jobs/{job_id}?output=false").json()["status"] == "canceled", timeout=5)
        wait_for(lambda: not processes_with(marker), timeout=5)
        final = api.get(f"/api/v1/jobs/{job_id}?output=false").json()
        assert final["finished_at"] is not None and final["exit_code"] != 0
        assert api.queue.peek(job_id) is None  # acknowledged, not left leased or requeued
        assert api.post(f"/api/v1/jobs/{job_id}/cancel").status == 409
    finally:
        for pid in processes_with(marker):  # never leave a stray sleep behind, whatever failed
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


# -- the reconciler's "worker lost" path ------------------------------------------


def _running(api, *, age: float, retries: int = 0, cancel: bool = False) -> str:
    at = models.utcnow() - dt.timedelta(seconds=age)
    job_id = models.new_id()
    Job.insert(
        id=job_id,
        command="lost",
        server=api.local_server_id(),
        status="running",
        attempts=1,
        retries=retries,
        cancel_requested=cancel,
        worker="gone-worker",
        created_at=at,
        updated_at=at,
        started_at=at,
    ).execute()
    return job_id


def _status(job_id: str) -> tuple[str, str]:
    job = Job.get_by_id(job_id)
    return job.status, job.error


def test_reconciler_fails_or_requeues_jobs_of_a_lost_worker(tmp_path):
    with running_api(tmp_path, **{"queue.worker_timeout": 2.0}) as api:  # lost after 4 s without an update
        lost = _running(api, age=30)
        retry = _running(api, age=30, retries=1)
        canceled = _running(api, age=30, cancel=True)
        fresh = _running(api, age=0)  # updated recently: its worker may be fine
        leased = _running(api, age=30)  # stale row, but the queue still holds its lease
        api.queue.put(leased, queue=api.settings.queue.name, ttr=60)
        reserved = api.queue.reserve([api.settings.queue.name], timeout=2, worker_id="alive")
        assert [r.id for r in reserved] == [leased]

        wait_for(lambda: _status(lost)[0] != "running" and _status(retry)[0] != "running" and _status(canceled)[0] != "running", timeout=10)
        assert _status(lost) == ("failed", "worker lost")
        assert Job.get_by_id(lost).finished_at is not None
        assert _status(canceled) == ("canceled", "canceled (its worker was lost)")
        assert _status(retry) == ("queued", "worker lost; retrying")
        # the same transition as a worker's take-over: the lost attempt is recorded either way
        for job_id in (lost, retry):
            assert [(e["attempt"], e["error"]) for e in Job.get_by_id(job_id).attempt_errors] == [(1, "worker lost")]
        assert Job.get_by_id(canceled).attempt_errors == []
        assert api.queue.peek(retry) is not None  # back on the queue for another attempt
        assert api.get(f"/api/v1/jobs/{lost}").json()["status"] == "failed"

        passes = api.server.reconciler.passes
        wait_for(lambda: api.server.reconciler.passes >= passes + 3, timeout=10)
        assert _status(fresh)[0] == "running"
        assert _status(leased)[0] == "running"
