"""The change feed's rows: each status transition of ``remora.jobstate`` records one change in its own transaction.

On SQLite and on a real PostgreSQL (whose writers take an advisory lock so change ids commit in order).
"""

from __future__ import annotations

import datetime
import threading
import time
from typing import Any

import pytest

from remora import jobstate
from remora import models as m
from remora.errors import Gone
from remora.jobstate import Cancel
from remora.models import Change, JobStatus
from remora.services import events
from tests.support.waits import wait_for


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'r.db'}"
    else:
        url = request.getfixturevalue("postgres").new_database(f"changes_{abs(hash(str(tmp_path))) % 10**8}")
    database = m.init_db(url)
    yield database
    m.close_db()


@pytest.fixture
def server(db):
    return m.Server.create(name="web-1", hostname="10.0.0.1", user="deploy")


def changes(after: int = 0) -> list[tuple[Any, ...]]:
    return [(c.kind, c.job_id, c.batch_id, c.status, c.exit_code) for c in Change.select().where(Change.id > after).order_by(Change.id)]


def last() -> int:
    return events.latest()


def new(server: m.Server, **fields: Any) -> str:
    job = jobstate.new_job(server=server.id, command="true", **fields)
    jobstate.record([job.__data__])
    return str(job.id)


def test_every_status_transition_records_one_change_and_a_miss_records_none(server):
    job = new(server, retries=1)
    assert changes() == [("job", job, None, "queued", None)]
    mark = last()
    assert jobstate.claim(job, "w1").action is jobstate.Action.RUN
    assert jobstate.claim(job, "w2").action is not jobstate.Action.RUN  # a miss: nothing recorded
    assert jobstate.requeue(job, "w1", 1, "ssh error")
    assert jobstate.claim(job, "w1").action is jobstate.Action.RUN
    assert jobstate.release(job, "w1", 2)
    assert jobstate.claim(job, "w1").action is jobstate.Action.RUN
    assert not jobstate.finish(job, "other", 2, JobStatus.COMPLETED)
    assert jobstate.finish(job, "w1", 2, JobStatus.FAILED, exit_code=4, error="exit code 4")
    assert [c[3:] for c in changes(mark)] == [
        ("running", None), ("queued", None), ("running", None), ("queued", None), ("running", None), ("failed", 4),
    ]  # fmt: skip
    mark = last()
    assert jobstate.fresh_attempt(job, queue_dead=False)
    assert jobstate.cancel(job, "alice") is Cancel.CANCELED
    assert jobstate.cancel(job, "alice") is Cancel.FINISHED
    assert [c[3] for c in changes(mark)] == ["queued", "canceled"]


def test_a_lost_worker_and_a_cancel_of_a_running_job(server):
    job = new(server)
    jobstate.claim(job, "w1")
    mark = last()
    assert jobstate.cancel(job, "bob") is Cancel.REQUESTED  # the flag only: no status change, no change row
    assert changes(mark) == []
    row = m.Job.get_by_id(job)
    assert jobstate.worker_lost(row, detected_by="reconciler") is JobStatus.CANCELED
    assert changes(mark) == [("job", job, None, "canceled", None)]


def test_a_batch_records_its_start_its_stopped_hosts_and_its_end(server):
    batch_id = m.new_id()
    rows = [jobstate.new_job(server=server.id, command="false", batch_id=batch_id).__data__ for _ in range(3)]
    rows[1]["held"] = rows[2]["held"] = True
    jobstate.record_batch({"id": batch_id, "command": "false", "total": 3, "concurrency": 1, "max_failures": 0}, rows)
    ids = [r["id"] for r in rows]
    assert changes() == [("batch", None, batch_id, "running", None)] + [("job", i, batch_id, "queued", None) for i in sorted(ids)]
    mark = last()
    jobstate.claim(ids[0], "w1")
    jobstate.finish(ids[0], "w1", 1, JobStatus.FAILED, exit_code=1)
    step = jobstate.batch_step(batch_id)
    assert step.status == "aborted" and sorted(step.stopped) == sorted(ids[1:])
    after = changes(mark)
    assert after[:2] == [("job", ids[0], batch_id, "running", None), ("job", ids[0], batch_id, "failed", 1)]
    assert sorted(after[2:4]) == sorted(("job", i, batch_id, "canceled", None) for i in ids[1:])
    assert after[4:] == [("batch", None, batch_id, "aborted", None)]
    assert jobstate.batch_step(batch_id).status == "aborted" and len(changes(mark)) == 5  # an idempotent step records nothing


def test_the_feed_reads_each_filter_and_pages_in_id_order(server):
    """``events.read`` with every filter the API takes, alone and together, against the rows themselves."""
    batch_id = m.new_id()
    rows = [jobstate.new_job(server=server.id, command="true", batch_id=batch_id).__data__ for _ in range(3)]
    jobstate.record_batch({"id": batch_id, "command": "true", "total": 3}, rows)
    ids = sorted(r["id"] for r in rows)
    other = new(server)
    for job in (*ids, other):
        jobstate.claim(job, "w1")
        jobstate.finish(job, "w1", 1, JobStatus.FAILED if job == ids[1] else JobStatus.COMPLETED, exit_code=3 if job == ids[1] else 0)
    assert jobstate.batch_step(batch_id).status == "failed"
    everything = list(Change.select().order_by(Change.id))

    def expected(keep: Any) -> list[dict[str, Any]]:
        out = []
        for c in everything:
            if keep(c):
                event = {"id": str(c.id), "at": m.to_rfc3339(c.at), "kind": c.kind, "status": c.status}
                if c.kind == "job":
                    event |= {"job_id": c.job_id, "exit_code": c.exit_code}
                out.append(event | {"batch_id": c.batch_id})
        return out

    cases = [
        (events.Filters(), lambda c: True),
        (events.Filters(kind="batch"), lambda c: c.kind == "batch"),
        (events.Filters(kind="job"), lambda c: c.kind == "job"),
        (events.Filters(batch_id=batch_id), lambda c: c.batch_id == batch_id),
        (events.Filters(batch_id=batch_id, kind="batch"), lambda c: c.batch_id == batch_id and c.kind == "batch"),
        (events.Filters(job_ids=(ids[1], other)), lambda c: c.job_id in (ids[1], other)),
        (events.Filters(batch_id=batch_id, job_ids=(ids[0], other)), lambda c: c.batch_id == batch_id and c.job_id == ids[0]),
    ]
    for filters, keep in cases:
        found, cursor = events.read(0, filters)
        assert found == expected(keep), filters
        assert cursor == last()  # the end of the feed, whatever matched
        assert found[-1]["at"].endswith("Z") and found[-1]["id"].isdigit()
        start = int(found[0]["id"])
        assert events.read(start, filters)[0] == expected(keep)[1:]  # after a cursor: only newer changes
    pages, cursor = [], 0
    while True:
        page, cursor = events.read(cursor, events.Filters(kind="job"), limit=4)
        if not page:
            break
        assert len(page) <= 4
        pages += page
    assert pages == expected(lambda c: c.kind == "job")  # paged: every change once, in id order
    assert events.read(last(), events.Filters()) == ([], last())


def test_a_watcher_of_batch_ends_sleeps_through_job_changes_and_wakes_on_its_batch(server):
    """Job changes written in this process do not wake a ``kind=batch`` wait: it reads the feed only on its timer, then its batch's end."""
    batch_id = m.new_id()
    rows = [jobstate.new_job(server=server.id, command="true", batch_id=batch_id).__data__ for _ in range(3)]
    jobstate.record_batch({"id": batch_id, "command": "true", "total": len(rows)}, rows)
    busy = new(server)  # another job: its changes are a wake-up for every watcher of jobs
    reads: list[float] = []
    result: list[Any] = []

    def read(cursor: int, filters: events.Filters) -> tuple[list[dict[str, Any]], int]:
        reads.append(time.monotonic())
        return events.read(cursor, filters)

    watcher = threading.Thread(
        target=lambda: result.append(events.wait(last(), events.Filters(batch_id=batch_id, kind="batch"), 60, reader=read))
    )
    watcher.start()
    wait_for(lambda: reads, 10)  # its first read: nothing yet, it sleeps
    began = time.monotonic()
    attempt = 0
    while time.monotonic() < began + 0.5:  # job changes for half a second
        attempt += 1
        assert jobstate.claim(busy, "w1").action is jobstate.Action.RUN
        assert jobstate.release(busy, "w1", 1)  # back to queued, the attempt not counted
    during = time.monotonic() - began
    woken_reads = len(reads)
    for row in rows:
        jobstate.claim(row["id"], "w1")
        jobstate.finish(row["id"], "w1", 1, JobStatus.COMPLETED, exit_code=0)
    assert jobstate.batch_step(batch_id).status == "completed"
    watcher.join(30)
    assert [e["status"] for e in result[0][0]] == ["completed"]
    # the first read, then one per POLL_INTERVAL at most while the other job changed (woken by each of
    # its changes, it read every MIN_GAP: about 25 times in the half second)
    assert attempt > 10 and woken_reads <= 2 + during / events.POLL_INTERVAL, (attempt, woken_reads, during)


def test_concurrent_writers_never_make_a_reader_skip_a_change(server):
    """Transitions in many threads while a reader follows by cursor: it sees every change exactly once."""
    jobs = [new(server) for _ in range(40)]
    start = last()
    seen: list[str] = []
    done = threading.Event()

    def follow() -> None:
        cursor = start
        while True:
            finished = done.is_set()
            found, cursor = events.read(cursor, events.Filters())
            seen.extend(e["job_id"] for e in found)
            m.release_connection()
            if finished and not found:
                return
            if not found:
                done.wait(0.002)  # a follower's poll interval: a spinning reader would starve SQLite's writers

    def work(part: list[str]) -> None:
        for job in part:
            jobstate.claim(job, "w")
            jobstate.finish(job, "w", 1, JobStatus.COMPLETED)
        m.release_connection()

    reader = threading.Thread(target=follow)
    reader.start()
    writers = [threading.Thread(target=work, args=(jobs[i::4],)) for i in range(4)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    done.set()
    reader.join(30)
    assert sorted(seen) == sorted(jobs * 2)


def test_prune_keeps_recent_changes_and_always_the_newest(server):
    jobs = [new(server) for _ in range(5)]
    ids = [c.id for c in Change.select().order_by(Change.id)]
    old = m.utcnow() - datetime.timedelta(hours=2)
    Change.update(at=old).where(Change.id.in_(ids[:3])).execute()
    assert events.prune(3600) == 3
    assert [c.job_id for c in Change.select().order_by(Change.id)] == jobs[3:]
    with pytest.raises(Gone):
        events.check_cursor(ids[1])
    events.check_cursor(ids[3])  # kept: no error
    Change.update(at=old).execute()
    assert events.prune(3600) == 1 and [c.id for c in Change.select()] == [ids[-1]]  # the newest stays: "from now" still works
