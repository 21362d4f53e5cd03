"""The worker end to end with a real NetQueue and the local executor (SQLite in tmp_path)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest

from remora import jobmessage, jobstate, models, output
from remora.executor.base import Stream
from remora.models import Job
from remora.netqueue.client import QueueClient
from remora.netqueue.server import QueueServer
from remora.worker import Worker
from tests.support.waits import wait_for
from tests.support.workerkit import init_db, local_server, make_settings, submit, wait_status


@pytest.fixture
def env(tmp_path):
    init_db(tmp_path)
    server = QueueServer(host="127.0.0.1", port=0, persistence=False)
    server.start()
    host, port = server.address
    # jobs keep state in tmp_path (the test's own, 0700): they run as this account, not worker.local_user
    overrides = {"queue.addr": f"{host}:{port}", "queue.worker_timeout": 5.0, "worker.heartbeat_interval": 0.2, "worker.local_user": ""}
    settings = make_settings(tmp_path, overrides)
    client = QueueClient(settings.queue.addr)
    workers: list[Worker] = []

    def start_worker(**kw) -> Worker:
        w = Worker(settings, **{"concurrency": 4, **kw})
        w.start()
        workers.append(w)
        return w

    yield settings, client, start_worker, local_server()
    for w in workers:
        w.stop(graceful=False)
    client.close()
    server.stop()


def test_exit_codes_and_output(env):
    settings, q, start_worker, local = env
    start_worker()
    ok = submit(q, local, settings, command=r"printf 'out\n\377'; printf 'err\n' >&2")
    bad = submit(q, local, settings, command="exit 7")
    job = wait_status(ok.id)
    assert job.status == "completed" and job.exit_code == 0 and job.error == "" and job.attempts == 1
    assert output.read_stream(ok.id, Stream.STDOUT) == b"out\n\xff" and output.read_stream(ok.id, Stream.STDERR) == b"err\n"
    assert job.worker and job.started_at and job.finished_at and job.remote_pid
    job = wait_status(bad.id)
    assert job.status == "failed" and job.exit_code == 7 and job.error == "exit code 7"


def test_timeout_and_cancel(env):
    settings, q, start_worker, local = env
    start_worker()
    slow = submit(q, local, settings, command="sleep 30", timeout=1)
    victim = submit(q, local, settings, command="sleep 31")
    wait_status(victim.id, "running")
    started = time.monotonic()
    Job.update(cancel_requested=True).where(Job.id == victim.id).execute()
    assert q.cancel(victim.id) == "flagged"
    job = wait_status(victim.id, "canceled", timeout=5)
    assert time.monotonic() - started < 2.5 and job.error == "canceled"
    job = wait_status(slow.id)
    assert job.status == "failed" and job.error == "timeout after 1s"


def test_canceled_while_queued_is_skipped(env):
    settings, q, start_worker, local = env
    job = submit(q, local, settings, command="echo never")
    Job.update(cancel_requested=True).where(Job.id == job.id).execute()
    start_worker()
    row = wait_status(job.id)
    assert row.status == "canceled" and row.attempts == 0 and output.read_stream(job.id, Stream.STDOUT) == b""
    wait_for(lambda: q.peek(job.id) is None, 5, what="message acked")


def test_retries_requeue_until_success_and_keep_attempts(env, tmp_path):
    settings, q, start_worker, local = env
    start_worker()
    marker = tmp_path / "count"
    script = f"n=$(cat {marker} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {marker}; echo try $n; [ $n -ge 3 ]"
    job = submit(q, local, settings, command=script, retries=2)
    row = wait_status(job.id, timeout=20)
    assert row.status == "completed" and row.attempts == 3
    assert [e["attempt"] for e in row.attempt_errors] == [1, 2] and row.attempt_errors[0]["error"] == "exit code 1"
    assert output.read_stream(job.id, Stream.STDOUT) == b"try 1\ntry 2\ntry 3\n"


def test_without_retries_a_failure_stays_failed(env):
    settings, q, start_worker, local = env
    start_worker()
    row = wait_status(submit(q, local, settings, command="false").id)
    assert row.status == "failed" and row.attempts == 1
    wait_for(lambda: q.peek(row.id) is None, 5, what="message acked")


def test_output_is_visible_while_the_job_runs(env):
    settings, q, start_worker, local = env
    start_worker()
    job = submit(q, local, settings, command="echo first; sleep 3; echo second")
    wait_for(lambda: output.read_stream(job.id, Stream.STDOUT) == b"first\n", 1.5, what="first line in the database")
    assert Job.get_by_id(job.id).status == "running"
    wait_status(job.id)
    assert output.read_stream(job.id, Stream.STDOUT) == b"first\nsecond\n"


def test_per_server_limit_is_respected(env):
    settings, q, start_worker, local = env
    local.max_concurrent_jobs = 2
    local.save()
    start_worker(concurrency=6)
    jobs = [submit(q, local, settings, command="sleep 0.4") for _ in range(6)]
    ids = [j.id for j in jobs]
    peak = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        # one query, one snapshot: read job by job, a job that ended after it was read and the one
        # that took its place would both count as running
        statuses = [row.status for row in Job.select(Job.status).where(Job.id.in_(ids))]
        peak = max(peak, statuses.count("running"))
        if all(s == "completed" for s in statuses):
            break
        time.sleep(0.02)
    assert all(Job.get_by_id(j.id).status == "completed" for j in jobs)
    assert peak == 2


def test_graceful_stop_lets_short_jobs_finish_and_hands_back_long_ones(env):
    settings, q, start_worker, local = env
    w = start_worker()
    short = submit(q, local, settings, command="sleep 0.5; echo done")
    long = submit(q, local, settings, command="sleep 60")
    wait_status(short.id, "running")
    wait_status(long.id, "running")
    stopper = threading.Thread(target=w.stop, kwargs={"timeout": 1.5})
    stopper.start()
    stopper.join(20)
    assert Job.get_by_id(short.id).status == "completed"
    row = Job.get_by_id(long.id)
    assert row.status == "queued" and row.attempts == 0 and row.worker is None
    assert q.peek(long.id).state == "ready"
    w2 = start_worker()
    wait_status(long.id, "running")
    assert Job.get_by_id(long.id).worker == w2.id


def test_queue_outage_is_logged_once_and_the_worker_carries_on(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="remora")
    init_db(tmp_path)
    data = tmp_path / "queue"
    qs = QueueServer(host="127.0.0.1", port=0, data_dir=data, fsync="never")
    qs.start()
    host, port = qs.address
    settings = make_settings(tmp_path, {"queue.addr": f"{host}:{port}", "worker.heartbeat_interval": 0.1})
    local = local_server()
    client = QueueClient(settings.queue.addr, retry_for=10.0)
    w = Worker(settings, concurrency=2)
    w.start()
    try:
        assert wait_status(submit(client, local, settings, command="echo one").id).status == "completed"
        caplog.clear()
        qs.stop()
        time.sleep(1.5)  # the worker's reserves and heartbeats fail meanwhile
        qs = QueueServer(host=host, port=port, data_dir=data, fsync="never")
        qs.start()
        job = submit(client, local, settings, command="echo two")
        assert wait_status(job.id, timeout=20).status == "completed"
        outage_logs = [r for r in caplog.records if "unavailable" in r.getMessage() and "NetQueue" in r.getMessage()]
        assert len(outage_logs) == 1
        assert any("reachable again" in r.getMessage() for r in caplog.records)
    finally:
        w.stop(graceful=False)
        client.close()
        qs.stop()


def test_a_fan_out_reads_its_servers_rows_in_one_query(env):
    """Jobs claimed together on many servers: one query for their rows, not one per job."""
    settings, q, start_worker, _ = env
    servers = [local_server(f"fan-{n}") for n in range(12)]
    jobs = [submit(q, server, settings, command="echo $REMORA_JOB_ID") for server in servers]
    database = models.get_database()
    original = database.execute_sql
    reads: list[str] = []

    def counting(sql: str, *args: Any, **kw: Any) -> Any:
        if 'FROM "server"' in sql:
            reads.append(sql)
        return original(sql, *args, **kw)

    database.execute_sql = counting
    try:
        start_worker(concurrency=16)
        finished = [wait_status(job.id) for job in jobs]
    finally:
        database.execute_sql = original
    assert all(job.status == "completed" for job in finished)
    assert [output.read_stream(job.id, Stream.STDOUT) for job in jobs] == [f"{job.id}\n".encode() for job in jobs]
    assert len(reads) <= 2, reads  # the claim's batch (a reserve may bring the first job alone)


def test_jobs_that_come_while_a_reserve_waits_for_fewer_slots_are_claimed_together(env, monkeypatch):
    """A RESERVE parked while jobs held slots asks for fewer than are free once they ended: the rest is
    reserved at once and every job of the burst is claimed in one transaction (one started_at)."""
    import remora.worker.core as core

    settings, q, start_worker, local = env
    monkeypatch.setattr(core, "RESERVE_WAIT", 1.0)  # the parked RESERVE keeps its count while the first jobs end
    worker = start_worker(concurrency=4)
    first = [submit(q, local, settings, command="true") for _ in range(2)]
    for job in first:
        wait_status(job.id)
    wait_for(lambda: worker.running_jobs() == [], 5, what="the first jobs' slots freed")
    burst = [jobstate.new_job(server=local, command="echo burst") for _ in range(4)]
    jobstate.record([job.__data__ for job in burst])
    messages = [jobmessage.queue_message(job, local, ttr=settings.queue.worker_timeout, default_queue=settings.queue.name) for job in burst]
    q.put_many([m.put_item() for m in messages])  # one frame: all four ready at once
    rows = [wait_status(job.id) for job in burst]
    assert [row.status for row in rows] == ["completed"] * 4
    assert len({row.started_at for row in rows}) == 1, [row.started_at for row in rows]
