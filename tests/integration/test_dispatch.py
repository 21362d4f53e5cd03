"""Dispatch with real processes (``remora queue serve``, ``remora api``, ``remora worker``): jobs start in queue order.

A worker holds no more reserved-but-unstarted jobs than it can start now, so:
(a) with every slot busy, jobs queued later but with a better priority start
first; (b) a job never waits behind a busy worker while another worker has a
free slot; (c) the unstarted reservations of a SIGKILLed worker go back to the
queue the moment its connection closes, not after the lease; (d) changing the
priority of a waiting job changes when it starts.  See docs/dispatch.md.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from remora.jobmessage import message_body
from remora.models import Job, Server
from remora.netqueue.client import PutItem
from tests.support.cluster import Cluster
from tests.support.waits import wait_for
from tests.support.workerkit import wait_status

pytestmark = pytest.mark.slow

# A job that runs until its flag file appears: the test decides when a slot frees.
HOLD = "while [ ! -e {flag} ]; do sleep 0.02; done"


@pytest.fixture
def cluster(tmp_path):
    made: list[Cluster] = []

    def make(**settings: str) -> Cluster:
        c = Cluster(tmp_path / f"stack{len(made)}", settings={"queue.worker_timeout": "30s", **settings})
        made.append(c)
        c.queue().start()
        c.api().start()
        return c

    yield make
    for c in made:
        c.close()


def _local(client) -> str:  # type: ignore[no-untyped-def]
    return client.create_server({"name": "here", "hostname": "localhost", "user": "r", "auth_type": "local"})["id"]


def _submit(client, server: str, command: str, **fields) -> str:  # type: ignore[no-untyped-def]
    return client.submit({"command": command, "server_id": server, **fields})[0]["id"]


def _wait_registered(c: Cluster, *workers: str) -> None:
    with c.queue_client() as q:
        wait_for(lambda: {w["id"] for w in q.workers()} >= set(workers), 20, what=f"workers {workers} to heartbeat")


def _started(job_id: str):  # type: ignore[no-untyped-def]
    return Job.get_by_id(job_id).started_at


def test_a_better_priority_queued_later_starts_first_when_slots_free(cluster, tmp_path):
    c = cluster()
    c.worker("busy", concurrency=4).start()
    client = c.client()
    local = _local(client)
    flags = [tmp_path / f"free-{i}" for i in range(4)]
    long_jobs = [_submit(client, local, HOLD.format(flag=f)) for f in flags]
    wait_for(lambda: all(Job.get_by_id(j).status == "running" for j in long_jobs), 20, what="four slots busy")
    low = _submit(client, local, "true", priority=10)
    time.sleep(0.3)  # the priority-10 job waits a while before the better ones arrive
    high = [_submit(client, local, "sleep 0.3", priority=1) for _ in range(5)]
    for flag in flags:  # the slots free one by one
        flag.touch()
        time.sleep(0.15)
    for job_id in [low, *high]:
        assert wait_status(job_id, timeout=20).status == "completed"
    low_start = _started(low)
    late = [j for j in high if _started(j) >= low_start]
    assert not late, f"{len(late)} priority-1 job(s) started after the priority-10 job queued before them"


def test_a_second_worker_runs_the_jobs_a_busy_worker_would_hold(cluster, tmp_path):
    c = cluster()
    c.worker("first", concurrency=1).start()
    client = c.client()
    local = _local(client)
    flag = tmp_path / "free"
    long_job = _submit(client, local, HOLD.format(flag=flag))
    wait_status(long_job, "running", timeout=20)
    quick = [_submit(client, local, "true") for _ in range(3)]
    time.sleep(0.5)  # the busy worker has every chance to take them
    c.worker("second", concurrency=2).start()
    try:
        for job_id in quick:
            row = wait_status(job_id, timeout=20)
            assert (row.status, row.worker) == ("completed", "second")
        assert Job.get_by_id(long_job).status == "running"
    finally:
        flag.touch()
    assert wait_status(long_job, timeout=20).status == "completed"


def test_unstarted_jobs_of_a_killed_worker_run_elsewhere_within_seconds(cluster):
    # A long busy timeout: the worker waits on the database lock instead of handing the jobs back.
    c = cluster(**{"database.busy_timeout": "60s"})
    client = c.client()
    local = _local(client)
    doomed = c.worker("doomed", concurrency=2)
    doomed.start()
    _wait_registered(c, "doomed")
    server = Server.get_by_id(local)
    rows = [Job.create(server=server, command="true") for _ in range(2)]
    lock = sqlite3.connect(Path(c.db_url[len("sqlite:///") :]), timeout=30, isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")  # no job can start now: `doomed` reserves them and waits to claim them
        with c.queue_client() as q:
            q.put_many([PutItem(job_id=r.id, ttr=30.0, max_attempts=2, body=message_body(server)) for r in rows])

            def held_by_doomed() -> bool:
                views = [q.peek(r.id) for r in rows]
                return all(v is not None and v.state == "reserved" and v.worker == "doomed" for v in views)

            wait_for(held_by_doomed, 15, what="`doomed` to hold both jobs, unstarted")
        c.worker("rescuer", concurrency=2).start()
        _wait_registered(c, "rescuer")
        doomed.kill9()
        killed = time.monotonic()
        lock.execute("ROLLBACK")
        for r in rows:
            row = wait_status(r.id, timeout=40)
            assert (row.status, row.worker) == ("completed", "rescuer")
        elapsed = time.monotonic() - killed
        assert elapsed < 5, f"the killed worker's unstarted jobs ran {elapsed:.1f}s after the kill (lease 30 s)"
    finally:
        if lock.in_transaction:
            lock.execute("ROLLBACK")
        lock.close()


def test_reprioritising_a_waiting_job_changes_when_it_starts(cluster, tmp_path):
    c = cluster()
    c.worker("busy", concurrency=1).start()
    client = c.client()
    local = _local(client)
    flag = tmp_path / "free"
    long_job = _submit(client, local, HOLD.format(flag=flag))
    wait_status(long_job, "running", timeout=20)
    waiting = [_submit(client, local, "true", priority=5) for _ in range(4)]
    time.sleep(0.3)
    last = waiting[-1]
    assert client.set_priority(last, 1)["priority"] == 1
    flag.touch()
    for job_id in waiting:
        assert wait_status(job_id, timeout=20).status == "completed"
    first = min(waiting, key=_started)
    assert first == last, "the job moved to priority 1 did not start first"


def test_jobs_for_a_full_server_keep_their_order_and_other_servers_go_ahead(cluster, tmp_path):
    c = cluster()
    c.worker("busy", concurrency=4).start()
    client = c.client()
    limited = client.create_server(
        {"name": "one-at-a-time", "hostname": "localhost", "user": "r", "auth_type": "local", "max_concurrent_jobs": 1}
    )["id"]
    other = _local(client)
    flag = tmp_path / "free"
    long_job = _submit(client, limited, HOLD.format(flag=flag))
    wait_status(long_job, "running", timeout=20)
    waiting = [_submit(client, limited, "true") for _ in range(5)]
    elsewhere = [_submit(client, other, "true") for _ in range(3)]
    for job_id in elsewhere:  # the full server holds up nobody else
        assert wait_status(job_id, timeout=20).status == "completed"
    assert all(Job.get_by_id(j).status == "queued" for j in waiting)
    freed = time.monotonic()
    flag.touch()
    for job_id in waiting:
        assert wait_status(job_id, timeout=20).status == "completed"
    took = time.monotonic() - freed
    starts = [_started(j) for j in waiting]
    assert starts == sorted(starts), "jobs for the same server started out of their queue order"
    assert took < 3, f"five quick jobs for a server with one place took {took:.1f}s (a retry-with-delay loop?)"
