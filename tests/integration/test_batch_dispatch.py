"""A worker reserves, claims, starts and finishes jobs in batches: few round trips and transactions for many jobs.

Real NetQueue (in memory), real local jobs, SQLite in tmp_path.  Statements are counted with
SQLite's own trace hook on every connection the worker opens; requests with a counting
subclass of the real queue client.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from remora import jobstate, models, output
from remora.executor.base import Stream
from remora.jobstate import Action
from remora.models import Change, Delivery, Job, JobStatus, Webhook
from remora.netqueue.client import QueueClient
from remora.netqueue.server import QueueServer
from remora.worker import Worker
from tests.support.waits import wait_for
from tests.support.workerkit import init_db, local_server, make_settings, submit, wait_status

CLAIM = '"attempts" = ("attempts" + 1)'  # the claim's UPDATE


class CountingClient(QueueClient):
    """The real client, counting the RESERVE requests that brought jobs and the START frames sent."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.reserved: list[int] = []  # jobs per RESERVE that brought any
        self.starts: list[int] = []  # jobs per START frame

    def reserve(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        got = super().reserve(*args, **kwargs)
        if got:
            self.reserved.append(len(got))
        return got

    def start_nowait(self, job_ids, **kwargs):  # type: ignore[no-untyped-def]
        if job_ids:
            self.starts.append(len(job_ids))
        return super().start_nowait(job_ids, **kwargs)


@contextmanager
def traced() -> Iterator[list[tuple[str, str]]]:
    """(thread name, SQL) of every statement on the database connections opened from now on."""
    database = models.database_proxy.obj
    seen: list[tuple[str, str]] = []
    original = database._add_conn_hooks

    def hooks(conn) -> None:  # type: ignore[no-untyped-def]
        original(conn)
        conn.set_trace_callback(lambda sql: seen.append((threading.current_thread().name, sql)))

    database._add_conn_hooks = hooks
    try:
        yield seen
    finally:
        database._add_conn_hooks = original


@pytest.fixture
def stack(tmp_path: Path):
    init_db(tmp_path)
    qs = QueueServer(host="127.0.0.1", port=0, persistence=False)
    qs.start()
    host, port = qs.address
    settings = make_settings(tmp_path, {"queue.addr": f"{host}:{port}", "queue.worker_timeout": 5.0, "worker.heartbeat_interval": 0.2})
    client = QueueClient(settings.queue.addr)
    workers: list[Worker] = []
    yield settings, client, workers
    for worker in workers:
        worker.stop(graceful=False)
    client.close()
    qs.stop()


def start_worker(settings, workers: list[Worker], concurrency: int, worker_id: str = "w1") -> tuple[Worker, CountingClient]:  # type: ignore[no-untyped-def]
    counting = CountingClient(settings.queue.addr, name=f"worker {worker_id}")
    worker = Worker(settings, worker_id=worker_id, concurrency=concurrency, queue_client=counting)
    worker.start()
    workers.append(worker)
    return worker, counting


def test_jobs_waiting_together_are_reserved_claimed_and_started_in_a_few_requests(stack):
    settings, client, workers = stack
    local = local_server()
    jobs = [submit(client, local, settings, command=f"echo {n}") for n in range(40)]  # queued before the worker starts
    with traced() as seen:
        worker, counting = start_worker(settings, workers, concurrency=64)
        for job in jobs:
            assert wait_status(job.id).status == "completed"
    claims = [sql for _, sql in seen if sql.startswith('UPDATE "job"') and CLAIM in sql]
    assert sum(counting.reserved) == 40 and len(counting.reserved) < 10, counting.reserved
    assert sum(counting.starts) == 40 and len(counting.starts) < 10, counting.starts
    assert 1 <= len(claims) < 10, len(claims)
    for n, job in enumerate(jobs):
        assert output.read_stream(job.id, Stream.STDOUT) == f"{n}\n".encode()
    # the change feed has one running and one completed row per job, the claims' rows written in one go each
    rows = Change.select().where(Change.job_id.in_([j.id for j in jobs]))
    assert sorted((c.job_id, c.status) for c in rows) == sorted((j.id, s) for j in jobs for s in ("queued", "running", "completed"))
    assert worker.stats["completed"] == 40


def test_a_lone_job_starts_at_once_and_never_more_jobs_are_held_than_slots(stack):
    settings, client, workers = stack
    local = local_server()
    worker, counting = start_worker(settings, workers, concurrency=3)
    lone = submit(client, local, settings, command="true")
    assert wait_status(lone.id, timeout=5).status == "completed"
    blockers = [submit(client, local, settings, command="sleep 1") for _ in range(5)]
    wait_for(lambda: len(worker.running_jobs()) == 3, 5, what="three jobs running")
    assert len(worker.held.held) <= 3  # the other two wait in the queue, for any worker
    assert client.stats()["ready"] == 2
    for job in blockers:
        assert wait_status(job.id).status == "completed"
    assert max(counting.reserved) <= 3


def test_jobs_ending_together_get_their_final_states_in_one_transaction(stack):
    settings, client, workers = stack
    local = local_server()
    mark = f"ends-together-{uuid.uuid4().hex}"
    jobs = [submit(client, local, settings, command=f"sleep 2; exit 3 # {mark}") for _ in range(20)]
    worker, _ = start_worker(settings, workers, concurrency=32)  # they start together, so they end together
    wait_for(lambda: len(worker.running_jobs()) == 20, 10, what="20 jobs running")
    with traced() as seen:
        with models.write_transaction():  # the database is busy while the jobs end: their ends wait together
            wait_for(lambda: not _processes_with(mark), 10, what="the 20 jobs' processes to exit")
            # each end reaches the finishers (two of them may already hold some, blocked on the database)
            sizes: list[int] = []
            wait_for(lambda: sizes.append(worker.ends.waiting.qsize()) or sizes[-5:] == [sizes[-1]] * 5, 10, 0.05, "the ends to settle")
        for job in jobs:
            assert wait_status(job.id).status == "failed"
    finals = [sql for name, sql in seen if "-finish-" in name and sql.startswith("BEGIN")]
    # two finishers: each took one end before the database was free, then the rest went together
    assert len(finals) <= 3, len(finals)
    for job in jobs:
        row = Job.get_by_id(job.id)
        assert (row.exit_code, row.error) == (3, "exit code 3")
    rows = Change.select().where(Change.job_id.in_([j.id for j in jobs]), Change.status == "failed")
    assert sorted(c.job_id for c in rows) == sorted(j.id for j in jobs)


def _processes_with(mark: str) -> list[int]:
    """Pids of the processes whose command line holds ``mark``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if mark.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_output_of_many_jobs_is_flushed_in_one_transaction_per_interval(stack):
    settings, client, workers = stack
    local = local_server()
    start_worker(settings, workers, concurrency=32)
    command = "for i in 1 2 3 4 5 6; do echo line $i; sleep 0.3; done"
    jobs = [submit(client, local, settings, command=command) for _ in range(10)]
    with traced() as seen:
        for job in jobs:
            assert wait_status(job.id).status == "completed"
    chunk_txns = set()
    begun = 0
    for name, sql in seen:
        if "-output" not in name:
            continue
        if sql.startswith("BEGIN"):
            begun += 1
        elif sql.startswith('INSERT INTO "output_chunk"'):
            chunk_txns.add(begun)
    inserts = sum(1 for name, sql in seen if "-output" in name and sql.startswith('INSERT INTO "output_chunk"'))
    assert len(chunk_txns) < inserts, (len(chunk_txns), inserts)  # several jobs' chunks per transaction
    for job in jobs:
        text = output.read_stream(job.id, Stream.STDOUT)
        assert text == b"".join(f"line {i}\n".encode() for i in range(1, 7))


def test_claim_many_says_per_job_what_claim_would(stack):
    local = local_server()
    queued = jobstate.new_job(server=local.id, command="true")
    canceled_while_queued = jobstate.new_job(server=local.id, command="true", cancel_requested=True)
    finished = jobstate.new_job(server=local.id, command="true")
    running = jobstate.new_job(server=local.id, command="true")
    jobstate.record([j.__data__ for j in (queued, canceled_while_queued, finished, running)])
    assert jobstate.claim(finished.id, "other").action is Action.RUN
    assert jobstate.finish(finished.id, "other", 1, JobStatus.COMPLETED)
    assert jobstate.claim(running.id, "other").action is Action.RUN
    ids = [queued.id, canceled_while_queued.id, finished.id, running.id, "no-such-job"]
    claims = jobstate.claim_many(ids, "w1")
    assert [c.action for c in claims] == [Action.RUN, Action.ACK, Action.ACK, Action.TAKE_OVER, Action.ACK]
    assert claims[0].job is not None and claims[0].job.attempts == 1 and claims[0].job.worker == "w1"
    assert claims[1].reason == jobstate.CANCELED_UNSTARTED
    assert Job.get_by_id(canceled_while_queued.id).status == "canceled"
    # a duplicate delivery never runs twice: a second claim of the same jobs claims none
    assert [c.action for c in jobstate.claim_many(ids[:1], "w2")] == [Action.TAKE_OVER]
    assert Job.get_by_id(queued.id).worker == "w1"


def test_finish_many_records_only_the_attempts_still_ours(stack):
    local = local_server()
    Webhook.create(name="all", url="http://127.0.0.1:9/", events=["job.completed", "job.failed"], secret="s", created_by="t")
    rows = [jobstate.new_job(server=local.id, command="true") for _ in range(3)]
    jobstate.record([r.__data__ for r in rows])
    assert [c.action for c in jobstate.claim_many([r.id for r in rows], "w1")] == [Action.RUN] * 3
    assert jobstate.release(rows[2].id, "w1", 1)  # no longer ours
    mark = Change.select(models.fn.MAX(Change.id)).scalar()
    ends = [
        jobstate.Finish(rows[0].id, "w1", 1, JobStatus.COMPLETED, None, {"exit_code": 0}),
        jobstate.Finish(rows[1].id, "w1", 1, JobStatus.FAILED, None, {"exit_code": 3, "error": "exit code 3"}),
        jobstate.Finish(rows[2].id, "w1", 1, JobStatus.COMPLETED, None, {"exit_code": 0}),
    ]
    assert jobstate.finish_many(ends) == [True, True, False]
    assert [(r.status, r.exit_code) for r in (Job.get_by_id(x.id) for x in rows)] == [("completed", 0), ("failed", 3), ("queued", None)]
    new = [(c.job_id, c.status, c.exit_code) for c in Change.select().where(Change.id > mark).order_by(Change.id)]
    assert sorted(new) == sorted([(rows[0].id, "completed", 0), (rows[1].id, "failed", 3)])
    events = sorted((d.subject, d.event) for d in Delivery.select())
    assert events == sorted([(f"job:{rows[0].id}", "job.completed"), (f"job:{rows[1].id}", "job.failed")])


def test_a_cancel_between_reserve_and_claim_and_a_shutdown_release_still_hold(stack):
    settings, client, workers = stack
    local = local_server()
    job = submit(client, local, settings, command="sleep 30")
    jobstate.cancel(job.id, "tester")  # canceled while queued: the worker that gets it does not run it
    worker, _ = start_worker(settings, workers, concurrency=4)
    assert wait_status(job.id).status == "canceled"
    long = submit(client, local, settings, command="sleep 30")
    wait_for(lambda: [a.job_id for a in worker.running_jobs()] == [long.id], 10, what="the long job running on the worker")
    worker.stop(graceful=False)
    row = Job.get_by_id(long.id)
    assert (row.status, row.attempts, row.worker) == ("queued", 0, None)  # released at shutdown: the attempt did not count
