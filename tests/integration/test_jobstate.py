"""The job state machine's contract (``remora.jobstate``), on SQLite and on a real PostgreSQL.

Every row of the transition table in the module docstring is walked here, with its guard: a
transition whose guard does not hold changes nothing and says so (False / None / ACK).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from typing import Any

import pytest

from remora import jobmessage, jobstate
from remora import models as m
from remora.jobstate import Action, Cancel
from remora.models import Job, JobStatus


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'r.db'}"
    else:
        url = request.getfixturevalue("postgres").new_database(f"jobstate_{abs(hash(str(tmp_path))) % 10**8}")
    database = m.init_db(url)
    yield database
    m.close_db()


@pytest.fixture
def server(db):
    return m.Server.create(name="web-1", hostname="10.0.0.1", user="deploy", max_concurrent_jobs=3)


def new(server: m.Server, **fields: Any) -> Job:
    job = jobstate.new_job(server=server.id, command="true", **fields)
    jobstate.record([job.__data__])
    return row(job.id)


def row(job_id: str) -> Job:
    return Job.get_by_id(job_id)


def snapshot(job_id: str) -> dict[str, Any]:
    return dict(row(job_id).__data__)


def running(server: m.Server, worker: str = "w1", **fields: Any) -> Job:
    job = new(server, **fields)
    outcome = jobstate.claim(job.id, worker)
    assert outcome.action is Action.RUN and outcome.job is not None
    return outcome.job


def test_a_new_job_is_recorded_queued(server):
    job = new(server, retries=2)
    assert (job.status, job.attempts, job.error, job.attempt_errors, job.worker) == ("queued", 0, "", [], None)
    # whatever the caller passed, a new row starts queued
    sneaky = jobstate.new_job(server=server.id, command="true").__data__
    sneaky["status"] = "completed"
    jobstate.record([sneaky])
    assert row(sneaky["id"]).status == "queued"


def test_claim_queued_to_running_and_only_once(server):
    job = new(server)
    first = jobstate.claim(job.id, "w1")
    assert first.action is Action.RUN and first.job is not None
    got = row(job.id)
    assert (got.status, got.attempts, got.worker) == ("running", 1, "w1") and got.started_at is not None
    before = snapshot(job.id)
    second = jobstate.claim(job.id, "w2")  # guard: not queued any more
    assert second.action is Action.TAKE_OVER and snapshot(job.id) == before


def test_claim_of_a_finished_or_missing_job_is_dropped(server):
    job = running(server)
    assert jobstate.finish(job.id, "w1", 1, JobStatus.COMPLETED, exit_code=0)
    before = snapshot(job.id)
    outcome = jobstate.claim(job.id, "w2")
    assert (outcome.action, outcome.reason) == (Action.ACK, "already completed") and snapshot(job.id) == before
    assert jobstate.claim("no-such-job", "w2").action is Action.ACK


def test_claim_of_a_cancel_requested_queued_job_cancels_it_unstarted(server):
    job = running(server, retries=1)
    assert jobstate.cancel(job.id, "alice") is Cancel.REQUESTED
    assert jobstate.requeue(job.id, "w1", 1, "exit code 1")  # back to queued, the request stays
    outcome = jobstate.claim(job.id, "w2")
    assert (outcome.action, outcome.reason) == (Action.ACK, jobstate.CANCELED_UNSTARTED)
    got = row(job.id)
    assert (got.status, got.error, got.attempts) == ("canceled", "canceled before it started", 1) and got.finished_at


def test_cancel_unstarted_guard(server):
    job = new(server)
    before = snapshot(job.id)
    assert not jobstate.cancel_unstarted(job.id)  # no cancel requested: nothing changes
    assert snapshot(job.id) == before


def test_cancel_queued_running_finished_missing(server):
    queued = new(server)
    assert jobstate.cancel(queued.id, "alice") is Cancel.CANCELED
    got = row(queued.id)
    assert (got.status, got.error, got.cancel_requested) == ("canceled", "canceled by alice", True) and got.finished_at
    before = snapshot(queued.id)
    assert jobstate.cancel(queued.id, "bob") is Cancel.FINISHED and snapshot(queued.id) == before

    job = running(server)
    assert jobstate.cancel(job.id, "alice") is Cancel.REQUESTED
    got = row(job.id)
    assert (got.status, got.cancel_requested, got.error) == ("running", True, "")
    assert set(jobstate.cancel_requested([job.id, queued.id, "other"])) == {job.id, queued.id}
    assert jobstate.cancel("no-such-job", "alice") is Cancel.MISSING


@pytest.mark.parametrize(
    ("status", "error"), [(JobStatus.COMPLETED, ""), (JobStatus.FAILED, "exit code 3"), (JobStatus.CANCELED, "canceled")]
)
def test_finish_only_by_the_holder(server, status, error):
    job = running(server)
    before = snapshot(job.id)
    assert not jobstate.finish(job.id, "w2", 1, status, error=error)  # another worker
    assert not jobstate.finish(job.id, "w1", 2, status, error=error)  # another attempt
    assert snapshot(job.id) == before
    with pytest.raises(ValueError):
        jobstate.finish(job.id, "w1", 1, JobStatus.QUEUED)
    assert jobstate.finish(job.id, "w1", 1, status, error=error, exit_code=3 if error else 0)
    got = row(job.id)
    assert (got.status, got.error, got.worker) == (status.value, error, "w1") and got.finished_at
    assert not jobstate.finish(job.id, "w1", 1, status)  # not running any more


def test_requeue_after_a_failed_attempt(server):
    job = running(server, retries=1)
    before = snapshot(job.id)
    assert not jobstate.requeue(job.id, "w2", 1, "exit code 1") and snapshot(job.id) == before
    assert jobstate.requeue(job.id, "w1", 1, "exit code 1", exit_code=1)
    got = row(job.id)
    assert (got.status, got.worker, got.error, got.attempts, got.exit_code) == ("queued", None, "exit code 1", 1, 1)
    assert [(e["attempt"], e["error"]) for e in got.attempt_errors] == [(1, "exit code 1")]
    again = jobstate.claim(job.id, "w2")
    assert again.action is Action.RUN and row(job.id).attempts == 2


def test_release_at_shutdown_does_not_count_the_attempt(server):
    job = running(server)
    jobstate.record_pid(job.id, "w1", 1, 4242)
    assert row(job.id).remote_pid == 4242
    jobstate.record_pid(job.id, "w2", 1, 1)  # not ours: ignored
    assert row(job.id).remote_pid == 4242
    before = snapshot(job.id)
    assert not jobstate.release(job.id, "w2", 1) and snapshot(job.id) == before
    assert jobstate.release(job.id, "w1", 1)
    got = row(job.id)
    assert (got.status, got.attempts, got.worker, got.started_at, got.remote_pid) == ("queued", 0, None, None, None)


def test_worker_lost_with_retries_left_requeues_and_records_the_attempt(server):
    job = running(server, retries=1)
    assert jobstate.worker_lost(row(job.id), detected_by="reconciler") is JobStatus.QUEUED
    got = row(job.id)
    assert (got.status, got.worker, got.error, got.attempts) == ("queued", None, "worker lost; retrying", 1)
    assert [(e["attempt"], e["error"]) for e in got.attempt_errors] == [(1, "worker lost")]


def test_worker_lost_without_retries_fails(server):
    job = running(server, retries=0)
    assert jobstate.worker_lost(row(job.id), detected_by="w2") is JobStatus.FAILED
    got = row(job.id)
    assert (got.status, got.worker, got.error) == ("failed", "w1", "worker lost") and got.finished_at
    assert [(e["attempt"], e["error"]) for e in got.attempt_errors] == [(1, "worker lost")]


def test_worker_lost_with_a_cancel_requested_ends_canceled(server):
    job = running(server, retries=3)  # retries left do not matter: the user asked to stop it
    jobstate.cancel(job.id, "alice")
    assert jobstate.worker_lost(row(job.id), detected_by="reconciler") is JobStatus.CANCELED
    got = row(job.id)
    assert (got.status, got.error, got.attempt_errors) == ("canceled", "canceled (its worker was lost)", []) and got.finished_at


def test_worker_lost_guards(server):
    job = running(server, retries=1)
    stale = row(job.id)
    # the worker was alive after all: its output moved the row on since the reconciler read it
    m.Job.update(updated_at=m.utcnow() + datetime.timedelta(seconds=1)).where(Job.id == job.id).execute()
    before = snapshot(job.id)
    assert jobstate.worker_lost(stale, detected_by="reconciler") is None and snapshot(job.id) == before
    current = row(job.id)
    assert jobstate.worker_lost(current, detected_by="reconciler") is JobStatus.QUEUED
    before = snapshot(job.id)
    assert jobstate.worker_lost(current, detected_by="w2") is None and snapshot(job.id) == before  # not running any more
    # another attempt of the same job: not the one that was lost
    jobstate.claim(job.id, "w2")
    attempt2 = row(job.id)
    older = row(job.id)
    older.__data__["attempts"] = 1
    before = snapshot(job.id)
    assert jobstate.worker_lost(older, detected_by="reconciler") is None and snapshot(job.id) == before
    assert jobstate.worker_lost(attempt2, detected_by="reconciler") is JobStatus.FAILED


def test_take_over_is_worker_lost_then_a_claim(server):
    job = running(server, retries=1)
    outcome = jobstate.take_over(row(job.id), "w2")
    assert outcome.action is Action.RUN and outcome.job is not None
    got = row(job.id)
    assert (got.status, got.worker, got.attempts, got.error) == ("running", "w2", 2, "worker lost; retrying")
    assert [(e["attempt"], e["error"]) for e in got.attempt_errors] == [(1, "worker lost")]
    last = jobstate.take_over(row(job.id), "w3")  # attempt 2 of 2 lost as well
    assert (last.action, last.reason) == (Action.ACK, "worker lost")
    got = row(job.id)
    assert (got.status, got.error) == ("failed", "worker lost")
    assert [(e["attempt"], e["error"]) for e in got.attempt_errors] == [(1, "worker lost"), (2, "worker lost")]
    assert jobstate.take_over(got, "w4").action is Action.ACK  # guard: not running


def test_fresh_attempt_of_a_dead_letter(server):
    job = running(server, retries=0)
    jobstate.record_pid(job.id, "w1", 1, 77)
    assert jobstate.finish(job.id, "w1", 1, JobStatus.FAILED, error="exit code 1", exit_code=1, signal=None)
    assert jobstate.fresh_attempt(job.id, queue_dead=False)
    got = row(job.id)
    assert (got.status, got.attempts, got.worker, got.exit_code, got.signal, got.error, got.remote_pid) == (
        "queued",
        0,
        None,
        None,
        None,
        "",
        None,
    )
    assert (got.started_at, got.finished_at, got.cancel_requested) == (None, None, False)


def test_fresh_attempt_guards(server):
    retrying = running(server, retries=2)
    assert jobstate.finish(retrying.id, "w1", 1, JobStatus.FAILED, error="exit code 1")
    before = snapshot(retrying.id)
    assert not jobstate.fresh_attempt(retrying.id, queue_dead=False)  # retries not exhausted: not a dead letter
    assert snapshot(retrying.id) == before
    done = running(server)
    assert jobstate.finish(done.id, "w1", 1, JobStatus.COMPLETED)
    before = snapshot(done.id)
    assert not jobstate.fresh_attempt(done.id, queue_dead=True) and snapshot(done.id) == before
    stuck = running(server)  # the queue dead-lettered it; its last worker died
    assert not jobstate.fresh_attempt(stuck.id, queue_dead=False)
    assert jobstate.fresh_attempt(stuck.id, queue_dead=True)
    assert (row(stuck.id).status, row(stuck.id).attempts) == ("queued", 0)


def test_queue_message_is_built_once(server):
    job = new(server, retries=2, priority=7, queue="batch")
    message = jobmessage.queue_message(row(job.id), server, ttr=30.0, default_queue="job_queue")
    assert (message.job_id, message.queue, message.priority, message.ttr) == (job.id, "batch", 7, 30.0)
    assert message.max_attempts == 2 + 2 == jobmessage.max_attempts(2)
    assert (message.group, message.limit) == (server.id, 3)
    assert json.loads(message.body) == {"server_id": server.id, "max_concurrent": 3}
    unnamed = row(job.id)
    unnamed.queue = ""
    assert jobmessage.queue_message(unnamed, server, ttr=1.0, default_queue="job_queue").queue == "job_queue"


def test_a_queue_message_becomes_the_put_item_of_its_fields():
    """``put_item`` carries every field: the queue client's ``PutItem`` and ``QueueMessage`` keep the same fields."""
    from remora.netqueue.client import PutItem

    names = [f.name for f in dataclasses.fields(jobmessage.QueueMessage)]
    assert sorted(names) == sorted(f.name for f in dataclasses.fields(PutItem))
    values = {
        "job_id": "j",
        "queue": "q",
        "priority": 7,
        "ttr": 12.5,
        "max_attempts": 4,
        "body": b"{}",
        "group": "s",
        "limit": 3,
        "delay": 2.5,
    }
    item = jobmessage.QueueMessage(**values).put_item()
    assert isinstance(item, PutItem) and dataclasses.asdict(item) == values


def batch_of(server: m.Server, hosts: int, *, concurrency: int | None, max_failures: int | None = None) -> tuple[str, list[str]]:
    """A batch recorded like a fan-out: the first ``concurrency`` jobs released, the rest ``held``."""
    batch_id = m.new_id()
    now = m.utcnow()
    jobs = [
        jobstate.new_job(server=server.id, command="true", batch_id=batch_id, created_at=now + datetime.timedelta(microseconds=n))
        for n in range(hosts)
    ]
    for n, job in enumerate(jobs):
        job.held = concurrency is not None and n >= concurrency
    rollout = {"concurrency": concurrency, "max_failures": max_failures}
    batch = {"id": batch_id, "command": "true", "status": "running", "total": hosts, "rollout": rollout, "concurrency": concurrency,
             "max_failures": max_failures, "error": "", "parent_id": None, "cancel_requested": False, "created_by": "t",
             "created_at": now, "updated_at": now, "finished_at": None}  # fmt: skip
    jobstate.record_batch(batch, [job.__data__ for job in jobs])
    return batch_id, [job.id for job in jobs]


def end(job_id: str, status: JobStatus) -> None:
    claimed = jobstate.claim(job_id, "w1")
    assert claimed.action is Action.RUN, claimed
    assert jobstate.finish(job_id, "w1", 1, status, exit_code=0 if status is JobStatus.COMPLETED else 1)


def test_record_batch_holds_the_jobs_past_concurrency(server):
    batch_id, ids = batch_of(server, 4, concurrency=2)
    assert [row(i).held for i in ids] == [False, False, True, True]
    assert all(row(i).status == "queued" for i in ids)
    assert m.Batch.get_by_id(batch_id).status == "running"


def test_batch_step_releases_held_jobs_as_hosts_finish(server):
    batch_id, ids = batch_of(server, 4, concurrency=2)
    before = [snapshot(i) for i in ids]
    assert jobstate.batch_step(batch_id).released == []  # guard: two released jobs still unfinished
    assert [snapshot(i) for i in ids] == before
    end(ids[0], JobStatus.COMPLETED)
    step = jobstate.batch_step(batch_id)
    assert step.released == [ids[2]] and not row(ids[2]).held and row(ids[3]).held
    assert jobstate.batch_step(batch_id).released == []  # idempotent
    for job_id in ids[1:3]:
        end(job_id, JobStatus.COMPLETED)
    assert jobstate.batch_step(batch_id).released == [ids[3]]
    end(ids[3], JobStatus.COMPLETED)
    assert jobstate.batch_step(batch_id).status == "completed"
    assert m.Batch.get_by_id(batch_id).finished_at is not None


def test_batch_step_stops_the_batch_past_max_failures(server):
    batch_id, ids = batch_of(server, 5, concurrency=2, max_failures=1)
    end(ids[0], JobStatus.FAILED)
    assert jobstate.batch_step(batch_id).released == [ids[2]]  # one failure: not past the threshold
    end(ids[1], JobStatus.FAILED)
    step = jobstate.batch_step(batch_id)
    assert sorted(step.stopped) == sorted(ids[2:]) and step.released == []
    for job_id in ids[2:]:
        got = row(job_id)
        assert got.status == "canceled" and got.error == "not started: batch stopped after 2 failed hosts (max_failures 1)"
        assert got.attempts == 0 and got.started_at is None
    assert step.status == "aborted" and m.Batch.get_by_id(batch_id).status == "aborted"
    assert jobstate.claim(ids[2], "w1").action is Action.ACK  # a message of a stopped job is dropped


def test_batch_status_failed_when_a_host_failed_below_the_threshold(server):
    batch_id, ids = batch_of(server, 2, concurrency=None, max_failures=1)
    end(ids[0], JobStatus.FAILED)
    end(ids[1], JobStatus.COMPLETED)
    assert jobstate.batch_step(batch_id).status == "failed"
    assert jobstate.batch_step("no-such-batch").status == ""


def test_batch_state_reads_what_a_step_needs_in_one_statement(server):
    """``models.batch_state``: the compiled statement every job end of a fan-out asks, on both databases."""
    assert m.batch_state("no-such-batch") is None
    batch_id, ids = batch_of(server, 4, concurrency=2, max_failures=1)
    assert m.batch_state(batch_id) == ("running", 2, 1, 4, False, 0, True, True, True)
    end(ids[0], JobStatus.FAILED)
    assert m.batch_state(batch_id)[5:] == (1, True, True, True)
    jobstate.batch_step(batch_id)  # room for one more: ids[2] released
    assert m.batch_state(batch_id)[5:] == (1, True, True, True)
    end(ids[1], JobStatus.FAILED)  # past the threshold: the step stops the rest
    assert jobstate.batch_step(batch_id).status == "aborted"
    assert m.batch_state(batch_id) == ("aborted", 2, 1, 4, False, 2, False, False, False)
    plain_id, plain = batch_of(server, 2, concurrency=None, max_failures=None)
    assert m.batch_state(plain_id) == ("running", None, None, 2, False, 0, True, False, True)  # failures not counted
    for job_id in plain:
        end(job_id, JobStatus.COMPLETED)
    assert m.batch_state(plain_id)[5:] == (0, False, False, False)
    assert jobstate.batch_step(plain_id).status == "completed"
