"""The job state machine: the only code that writes ``Job.status``.

Every transition below is one conditional UPDATE (or the INSERT of a new
row): when its guard no longer holds -- another worker, the reconciler or a
user got there first -- nothing changes and the function says so (False /
None / ``Action.ACK``).  Statuses: ``queued``, ``running``, ``completed``,
``failed``, ``canceled`` (the last three are final).  ``n`` is the row's
``attempts`` when the transition is made; an ``attempt_errors`` entry is
``{"attempt": n, "error": "...", "at": rfc3339}``, appended, never removed.

=================  ===========  ==========================================  ==========  ==============================  ==========================
transition         from         guard                                       to          ``error``                       ``attempt_errors``
=================  ===========  ==========================================  ==========  ==============================  ==========================
new_job/record     (none)       --                                          queued      ""                              []
claim              queued       not cancel_requested                        running     kept                            kept (attempts + 1)
cancel_unstarted   queued       (claim found cancel_requested)              canceled    "canceled before it started"    kept
cancel             queued       --                                          canceled    "canceled by <actor>"           kept (cancel_requested)
cancel             running      -- (sets cancel_requested only)             running     kept                            kept
finish             running      worker = us, attempts = n                   completed,  "" / "exit code N" /            + the attempt's SSH errors
                                                                            failed,     "timeout after Ns" / ... /
                                                                            canceled    "canceled"
requeue            running      worker = us, attempts = n, retries left     queued      the attempt's error             + {n, the attempt's error}
release            running      worker = us, attempts = n (shutdown)        queued      kept                            kept (attempts - 1)
worker_lost        running      same attempts, worker, updated_at;          canceled    "canceled (its worker was       kept
                                cancel_requested                                        lost)"
worker_lost        running      same as above; attempts <= retries          queued      "worker lost; retrying"         + {n, "worker lost"}
worker_lost        running      same as above; attempts > retries           failed      "worker lost"                   + {n, "worker lost"}
fresh_attempt      failed       attempts > retries (a row dead letter)      queued      ""                              kept (attempts = 0)
fresh_attempt      failed,      the queue holds the message as dead         queued      ""                              kept (attempts = 0)
                   running,
                   queued
record_batch       (none)       -- (hosts past the rollout's concurrency    queued      ""                              []
                                are recorded ``held``: not on the queue)
batch_step         queued       held; the batch is running, below its       queued      kept                            kept (``held`` cleared:
(release)                       threshold, fewer than ``concurrency`` of                                                    the caller puts it)
                                its jobs queued-and-released or running
batch_step (stop)  queued       the batch has more failed hosts than its    canceled    "not started: batch stopped     kept
                                ``max_failures``                                        after N failed hosts
                                                                                        (max_failures M)"
=================  ===========  ==========================================  ==========  ==============================  ==========================

``claim_many`` and ``finish_many`` are the list forms of ``claim`` and ``finish``: the same guard and
outcome per job, one write transaction for all of them (the worker claims what one RESERVE brought,
and finishes the jobs that ended together).

Decisions behind the table:

- A lost worker is one transition, ``worker_lost``, whoever notices it: the
  worker that receives the redelivered message (``take_over``: then it claims
  the job like any other, queued -> running, so a retry after a lost worker
  is always two steps) or the reconciler (then it puts the job's message
  back, built by ``queue_message``).  It always records the lost attempt in
  ``attempt_errors`` and its ``error`` says what happened; a job whose cancel
  was requested ends ``canceled`` whoever noticed.  ``worker`` is cleared
  when the job goes back to ``queued`` and kept on a final status (it names
  the worker that was lost).
- ``fresh_attempt`` (a dead letter kicked) starts the job over: ``attempts``
  back to 0 so it has all its retries again, ``worker``, ``exit_code``,
  ``signal``, ``error``, ``remote_pid``, ``started_at``, ``finished_at`` and
  ``cancel_requested`` reset; earlier attempts' errors stay in
  ``attempt_errors``.
- Rerun and duplicate are not transitions of the old row: they record a new
  ``queued`` row through ``new_job`` / ``record``.
- A batch (``Batch``, a fan-out) changes status only in ``batch_step``, in the
  same transaction as its jobs' rollout transitions: ``running`` until every
  job is final, then ``aborted`` (its threshold canceled hosts), ``canceled``
  (a user canceled the batch, or some host was canceled), ``failed`` (a host
  failed) or ``completed``.  ``batch_step`` looks at the rows only (it is
  idempotent): whoever ended one of its jobs calls it (the worker, the API's
  cancel) and the reconciler calls it for every running batch, which makes a
  rollout survive a crash between a job's end and the release of the next.
  It first updates the batch row, so concurrent steps of one batch take turns
  (PostgreSQL's row lock; SQLite's write lock).
- Every transition that changes a job's status, and every new status of a
  batch, is recorded as a change row (``remora.models.changes``, the feed of
  ``/api/v1/events``) in the transition's own transaction, and a final one
  also writes its notifications to the outbox (``remora.models.outbox``):
  ``_changed`` is the one hook; a transition whose guard missed records nothing.
- ``claim``, ``finish``, ``requeue`` and ``record_pid`` (and their list forms) run for every job, so
  they use the compiled statements of ``remora.models.hot``; only this
  module calls them.

A batch's final status writes its ``batch.finished`` notifications the same way.

This module imports only the models.  A job's queue message is built from its
row by ``remora.jobmessage`` (a plain ``QueueMessage`` the caller turns into a PUT).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from typing import Any, cast

from remora import models
from remora.models import Batch, BatchStatus, Job, JobStatus, changes

log = logging.getLogger(__name__)

WORKER_LOST = "worker lost"
WORKER_LOST_RETRYING = "worker lost; retrying"
CANCELED_WORKER_LOST = "canceled (its worker was lost)"
CANCELED_UNSTARTED = "canceled before it started"
# What running a job and deciding about it need: selecting fewer columns makes the per-job query cheaper.
RUN_FIELDS = (
    "id",
    "server",
    "command",
    "args",
    "script",
    "shell",
    "env",
    "secret_env",
    "workdir",
    "pty",
    "timeout",
    "retries",
    "attempts",
    "status",
    "worker",
    "remote_pid",
    "cancel_requested",
    "attempt_errors",
    "stdout_bytes",
    "stderr_bytes",
    "batch_id",
)
# A message whose job was not claimed (rare): also what ``worker_lost`` guards on.
LOOK_FIELDS = (*RUN_FIELDS, "updated_at")


def _changed(done: Any, job_ids: list[str], now: Any, final: JobStatus | None = None) -> Any:
    """In a transition's transaction, when it changed rows: the jobs' new status to the change feed and,
    for a ``final`` status, their notifications to the outbox (``remora.models.outbox``)."""
    if done:
        changes.job_changes(job_ids, now)
        if final is not None:
            models.outbox.emit_jobs(job_ids, final.value)
    return done


def attempt_error(attempt: int, error: str) -> dict[str, Any]:
    return {"attempt": attempt, "error": error, "at": models.to_rfc3339(models.utcnow())}


# -- a new job ---------------------------------------------------------------------------------


def new_job(**fields: Any) -> Job:
    """A new, not yet recorded job row: ``queued``, no attempt made (``record`` stores it)."""
    now = fields.pop("created_at", None) or models.utcnow()
    return Job(**fields, status=JobStatus.QUEUED.value, attempts=0, created_at=now, updated_at=now)


def record(rows: list[dict[str, Any]]) -> None:
    """Insert new job rows (``new_job(...).__data__``) in one transaction; each one ``queued``."""
    for row in rows:
        row["status"] = JobStatus.QUEUED.value
    with models.write_transaction():
        models.insert_rows(Job, rows)
        _changed(rows, [row["id"] for row in rows], models.utcnow())


# -- the worker's claim --------------------------------------------------------------------------


class Action(str, enum.Enum):
    RUN = "run"  # claimed: run it
    ACK = "ack"  # nothing to run (finished, canceled, deleted, held by a live worker): drop the message
    TAKE_OVER = "take_over"  # running row of a lost worker: caller kills leftovers, then calls take_over()


@dataclasses.dataclass
class Claim:
    action: Action
    reason: str = ""
    job: Job | None = None
    delay: float = 0.0


def claim(job_id: str, worker_id: str) -> Claim:
    """Try ``queued`` -> ``running`` for this worker; say what to do with the message otherwise.

    The per-server limit (``Server.max_concurrent_jobs``) is not counted here: the queue never hands
    out more of a server's jobs at once than its limit (the job's concurrency group).
    """
    now = models.utcnow()
    with models.write_transaction():
        updated, job = models.claim_job(job_id, worker_id, now, RUN_FIELDS)
        if updated and job is not None:
            changes.job_rows([(job_id, job.batch_id, JobStatus.RUNNING.value, None)], now)
    if updated:
        return Claim(Action.RUN, "claimed", job)
    return _unclaimed(job_id)


def claim_many(job_ids: list[str], worker_id: str) -> list[Claim]:
    """``claim`` for several jobs: one write transaction (one conditional UPDATE, one change insert) for all.

    One ``Claim`` per job, in the order given, each what ``claim`` would have said: the rows the
    UPDATE did not claim get ``claim``'s own look (ACK, ``cancel_unstarted``, TAKE_OVER).
    """
    if not job_ids:
        return []
    now = models.utcnow()
    with models.write_transaction():
        claimed = {job.id: job for job in models.claim_jobs(job_ids, worker_id, now, RUN_FIELDS)}
        changes.job_rows([(job.id, job.batch_id, JobStatus.RUNNING.value, None) for job in claimed.values()], now)
    return [Claim(Action.RUN, "claimed", claimed[job_id]) if job_id in claimed else _unclaimed(job_id) for job_id in job_ids]


def _unclaimed(job_id: str) -> Claim:
    """What to do with the message of a job the claim's UPDATE did not take."""
    job = models.select_job(job_id, LOOK_FIELDS)
    if job is None:
        return Claim(Action.ACK, "job no longer exists")
    status = JobStatus(job.status)
    if status.finished:
        return Claim(Action.ACK, f"already {status.value}", job)
    if status is JobStatus.QUEUED:  # cancel requested while it waited
        cancel_unstarted(job_id)
        return Claim(Action.ACK, CANCELED_UNSTARTED, job)
    return Claim(Action.TAKE_OVER, f"running on {job.worker or 'an unknown worker'}", job)


def cancel_unstarted(job_id: str) -> bool:
    """``queued`` with its cancel requested -> ``canceled`` (the worker that received it will not run it)."""
    now = models.utcnow()
    values = {Job.status: JobStatus.CANCELED.value, Job.error: CANCELED_UNSTARTED, Job.finished_at: now, Job.updated_at: now}
    with models.write_transaction():
        guard = (Job.id == job_id, Job.status == JobStatus.QUEUED.value, Job.cancel_requested == True)  # noqa: E712
        return bool(_changed(Job.update(values).where(*guard).execute(), [job_id], now, JobStatus.CANCELED))


def take_over(job: Job, worker_id: str) -> Claim:
    """A redelivered job still ``running`` whose worker is gone: ``worker_lost``, then claim it if it was requeued."""
    status = worker_lost(job, detected_by=worker_id)
    if status is None:
        return Claim(Action.ACK, "taken over by another worker", job)
    if status is JobStatus.QUEUED:
        outcome = claim(job.id, worker_id)
        if outcome.action is Action.RUN:
            return Claim(Action.RUN, "retrying after a lost worker", outcome.job)
        return Claim(Action.ACK, outcome.reason, outcome.job or job)
    reason = CANCELED_WORKER_LOST if status is JobStatus.CANCELED else WORKER_LOST
    return Claim(Action.ACK, reason, job)


# -- a lost worker ---------------------------------------------------------------------------------


def worker_lost(job: Job, *, detected_by: str) -> JobStatus | None:
    """The worker running ``job`` (loaded with at least ``LOOK_FIELDS``) is gone: ``canceled``, ``queued`` or ``failed``.

    None when the row moved on (another attempt, worker or update since it was read): nothing changed.

    ``detected_by`` (a worker id or ``reconciler``) is only logged; the row does not keep it.
    """
    now = models.utcnow()
    guard = [Job.id == job.id, Job.status == JobStatus.RUNNING.value, Job.attempts == job.attempts, Job.updated_at == job.updated_at]
    guard.append(Job.worker.is_null() if job.worker is None else Job.worker == job.worker)
    errors = [*(job.attempt_errors or []), attempt_error(job.attempts, WORKER_LOST)]
    values: dict[Any, Any]
    if job.cancel_requested:
        status = JobStatus.CANCELED
        values = {Job.error: CANCELED_WORKER_LOST, Job.finished_at: now}
    elif job.attempts <= job.retries:
        status = JobStatus.QUEUED
        values = {Job.worker: None, Job.error: WORKER_LOST_RETRYING, Job.attempt_errors: errors}
    else:
        status = JobStatus.FAILED
        values = {Job.error: WORKER_LOST, Job.finished_at: now, Job.attempt_errors: errors}
    values.update({Job.status: status.value, Job.updated_at: now})
    with models.write_transaction():
        changed = _changed(Job.update(values).where(*guard).execute(), [job.id], now, status if status.finished else None)
    if changed:
        log.warning("job %s: worker %s lost at attempt %d (noticed by %s): %s", job.id, job.worker, job.attempts, detected_by, status.value)
    return status if changed else None


# -- the running attempt's end --------------------------------------------------------------------


def record_pid(job_id: str, worker_id: str, attempt: int, pid: int) -> None:
    with models.write_transaction():
        models.update_held_job(job_id, worker_id, attempt, {"remote_pid": pid})


def finish(job_id: str, worker_id: str, attempt: int, status: JobStatus, *, in_transaction: bool = False, **values: Any) -> bool:
    """``running`` -> ``completed`` / ``failed`` / ``canceled`` for our attempt (False when the row is no longer ours).

    ``in_transaction``: the caller holds a write transaction (e.g. the job's last output write).
    """
    if not status.finished:
        raise ValueError(f"finish() needs a final status, not {status.value}")
    now = models.utcnow()
    values = {"status": status.value, "finished_at": now, "updated_at": now, **values}
    if in_transaction:
        return bool(_changed(models.update_held_job(job_id, worker_id, attempt, values), [job_id], now, status))
    with models.write_transaction():
        return bool(_changed(models.update_held_job(job_id, worker_id, attempt, values), [job_id], now, status))


@dataclasses.dataclass
class Finish:
    """One attempt's end for ``finish_many``: ``finish(job_id, worker_id, attempt, status, **values)``."""

    job_id: str
    worker_id: str
    attempt: int
    status: JobStatus
    batch_id: str | None = None  # the job's batch (its change row carries it)
    values: dict[str, Any] = dataclasses.field(default_factory=dict)


def finish_many(ends: list[Finish], *, in_transaction: bool = False) -> list[bool]:
    """``finish`` for several attempts in one write transaction: one change insert and one outbox emit for all.

    One flag per attempt, in the order given: False when that row is no longer ours (nothing recorded
    for it).  ``in_transaction``: the caller holds a write transaction (e.g. the jobs' last output).
    """
    for end in ends:
        if not end.status.finished:
            raise ValueError(f"finish_many() needs final statuses, not {end.status.value}")
    if not in_transaction:
        with models.write_transaction():
            return finish_many(ends, in_transaction=True)
    now = models.utcnow()
    done: list[bool] = []
    rows: list[tuple[str, str | None, str, int | None]] = []
    finals: dict[str, list[str]] = {}
    for end in ends:
        values = {"status": end.status.value, "finished_at": now, "updated_at": now, **end.values}
        ok = models.update_held_job(end.job_id, end.worker_id, end.attempt, values)
        done.append(ok)
        if ok:
            rows.append((end.job_id, end.batch_id, end.status.value, values.get("exit_code")))
            finals.setdefault(end.status.value, []).append(end.job_id)
    changes.job_rows(rows, now)
    models.outbox.emit_finals(finals)
    return done


def requeue(job_id: str, worker_id: str, attempt: int, error: str, **values: Any) -> bool:
    """A failed attempt with retries left: back to ``queued`` (attempt count and its error kept)."""
    with models.write_transaction():
        job = Job.select(Job.attempt_errors).where(Job.id == job_id).first()
        errors = [*((job.attempt_errors if job else None) or []), attempt_error(attempt, error)]
        now = models.utcnow()
        values = {"status": JobStatus.QUEUED.value, "worker": None, "error": error, "attempt_errors": errors, "updated_at": now, **values}
        return bool(_changed(models.update_held_job(job_id, worker_id, attempt, values), [job_id], now))


def release(job_id: str, worker_id: str, attempt: int) -> bool:
    """Worker shutdown: the attempt did not count; back to ``queued`` for another worker."""
    now = models.utcnow()
    values = {
        Job.status: JobStatus.QUEUED.value,
        Job.attempts: Job.attempts - 1,
        Job.worker: None,
        Job.started_at: None,
        Job.remote_pid: None,
        Job.updated_at: now,
    }
    mine = (Job.id == job_id, Job.status == JobStatus.RUNNING.value, Job.worker == worker_id, Job.attempts == attempt)
    with models.write_transaction():
        return bool(_changed(Job.update(values).where(*mine).execute(), [job_id], now))


def cancel_requested(job_ids: list[str]) -> list[str]:
    """Which of these jobs have a cancel request (the worker's second source besides the queue)."""
    if not job_ids:
        return []
    return [row.id for row in Job.select(Job.id).where(Job.id.in_(job_ids), Job.cancel_requested == True)]  # noqa: E712


# -- a user's cancel --------------------------------------------------------------------------------


class Cancel(str, enum.Enum):
    CANCELED = "canceled"  # it was queued: canceled at once
    REQUESTED = "requested"  # it is running: cancel_requested set, the worker ends it ``canceled``
    FINISHED = "finished"  # already final: nothing changed
    MISSING = "missing"  # no such job


def cancel(job_id: str, actor: str) -> Cancel:
    """A user's cancel: a ``queued`` job -> ``canceled`` (error ``canceled by <actor>``); a running one gets the flag."""
    for _ in range(5):  # each miss means the row moved on (claimed, requeued): look again
        now = models.utcnow()
        with models.write_transaction():
            if (
                Job.update(
                    {
                        Job.status: JobStatus.CANCELED.value,
                        Job.error: f"canceled by {actor}",
                        Job.finished_at: now,
                        Job.updated_at: now,
                        Job.cancel_requested: True,
                    }
                )
                .where(Job.id == job_id, Job.status == JobStatus.QUEUED.value)
                .execute()
            ):
                _changed(True, [job_id], now, JobStatus.CANCELED)
                return Cancel.CANCELED
            if (
                Job.update({Job.cancel_requested: True, Job.updated_at: now})
                .where(Job.id == job_id, Job.status == JobStatus.RUNNING.value)
                .execute()
            ):
                return Cancel.REQUESTED
        row = Job.select(Job.status).where(Job.id == job_id).first()
        if row is None:
            return Cancel.MISSING
        if JobStatus(row.status).finished:
            return Cancel.FINISHED
    return Cancel.FINISHED  # pragma: no cover - a row changing state five times during one cancel


# -- a dead letter's fresh attempt ----------------------------------------------------------------


def fresh_attempt(job_id: str, *, queue_dead: bool) -> bool:
    """A dead letter back to ``queued`` for a fresh attempt (False: not a dead letter, or it moved on).

    A row dead letter is ``failed`` with ``attempts > retries``; when the queue holds the message as
    dead (``queue_dead``) the row may also still say ``running`` (its last worker died) or ``queued``.
    """
    now = models.utcnow()
    values = {
        Job.status: JobStatus.QUEUED.value,
        Job.attempts: 0,
        Job.worker: None,
        Job.exit_code: None,
        Job.signal: None,
        Job.error: "",
        Job.remote_pid: None,
        Job.started_at: None,
        Job.finished_at: None,
        Job.cancel_requested: False,
        Job.updated_at: now,
    }
    if queue_dead:
        guard = Job.status.in_((JobStatus.FAILED.value, JobStatus.RUNNING.value, JobStatus.QUEUED.value))
    else:
        guard = (Job.status == JobStatus.FAILED.value) & (Job.attempts > Job.retries)
    with models.write_transaction():
        return bool(_changed(Job.update(values).where(Job.id == job_id, guard).execute(), [job_id], now))


# -- a batch and its rollout -------------------------------------------------------------------------


def record_batch(batch: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Insert a batch and its jobs in one transaction: each job ``queued``; those past the rollout's concurrency ``held``."""
    for row in rows:
        row["status"] = JobStatus.QUEUED.value
    with models.write_transaction():
        models.insert_rows(Batch, [batch])
        models.insert_rows(Job, rows)
        now = models.utcnow()
        changes.batch_change(batch["id"], batch.get("status") or BatchStatus.RUNNING.value, now)
        _changed(rows, [row["id"] for row in rows], now)


@dataclasses.dataclass
class Step:
    released: list[str] = dataclasses.field(default_factory=list)  # held -> released: the caller puts them on the queue
    stopped: list[str] = dataclasses.field(default_factory=list)  # canceled by the threshold: the caller cancels their messages
    status: str = ""  # the batch's status after the step ("" when there is no such batch)


def stop_error(failed: int, rollout_value: Any) -> str:
    return f"not started: batch stopped after {failed} failed hosts (max_failures {rollout_value})"


def _batch_state(batch_id: str) -> tuple[str, bool]:
    """The batch's status, and whether a step would change anything now -- reads only.

    Every job's end asks this, so a batch that needs nothing (no held job
    with room to start, no threshold crossed, jobs still unfinished) costs
    one compiled statement (``models.batch_state``) and no write transaction;
    the write below checks everything again.
    """
    state = models.batch_state(batch_id)
    if state is None:
        return "", False
    status = state.status
    if status != BatchStatus.RUNNING.value:
        return status, False
    if state.max_failures is not None and state.failed > state.max_failures and state.queued:
        return status, True
    if not state.cancel_requested and state.held:
        active = (
            Job.select()
            .where(
                Job.batch_id == batch_id,
                Job.status.in_((JobStatus.QUEUED.value, JobStatus.RUNNING.value)),
                Job.held == False,  # noqa: E712
            )
            .count()
        )
        if (state.concurrency or state.total) - active > 0:
            return status, True
    return status, not state.unfinished


def batch_step(batch_id: str) -> Step:
    """Release the batch's next held jobs, or stop it past its threshold, and settle its status (see the table)."""
    status, needed = _batch_state(batch_id)
    if not needed:
        return Step(status=status)
    now = models.utcnow()
    step = Step()
    unfinished = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
    with models.write_transaction():
        if not Batch.update({Batch.updated_at: now}).where(Batch.id == batch_id).execute():
            return step
        batch = Batch.get_by_id(batch_id)
        step.status = batch.status
        if batch.status != BatchStatus.RUNNING.value:
            return step
        mine = Job.batch_id == batch_id
        failed = Job.select().where(mine, Job.status == JobStatus.FAILED.value).count()
        if batch.max_failures is not None and failed > batch.max_failures:
            queued = [row.id for row in Job.select(Job.id).where(mine, Job.status == JobStatus.QUEUED.value)]
            if queued:
                error = stop_error(failed, (batch.rollout or {}).get("max_failures", batch.max_failures))
                values = {Job.status: JobStatus.CANCELED.value, Job.error: error, Job.finished_at: now, Job.updated_at: now}
                Job.update(values).where(Job.id.in_(queued), Job.status == JobStatus.QUEUED.value).execute()
                _changed(True, queued, now, JobStatus.CANCELED)
                step.stopped = queued
                Batch.update({Batch.error: error.removeprefix("not started: ")}).where(Batch.id == batch_id).execute()
                batch.error = error
        elif not batch.cancel_requested:
            active = Job.select().where(mine, Job.status.in_(unfinished), Job.held == False).count()  # noqa: E712
            room = (batch.concurrency or batch.total) - active
            if room > 0:
                held = Job.select(Job.id).where(mine, Job.status == JobStatus.QUEUED.value, Job.held == True)  # noqa: E712
                ids = [row.id for row in held.order_by(Job.created_at, Job.id).limit(room)]
                if ids:
                    Job.update({Job.held: False, Job.updated_at: now}).where(Job.id.in_(ids), Job.held == True).execute()  # noqa: E712
                    step.released = ids
        by_status = Job.select(Job.status, models.fn.COUNT(Job.id)).where(mine).group_by(Job.status).tuples()
        counts = {str(status): int(n) for status, n in cast(list[tuple[str, int]], list(by_status))}  # counted by the database
        if not any(counts.get(status) for status in unfinished):
            if batch.error:
                final = BatchStatus.ABORTED
            elif batch.cancel_requested or (counts.get(JobStatus.CANCELED.value) and not counts.get(JobStatus.FAILED.value)):
                final = BatchStatus.CANCELED
            elif counts.get(JobStatus.FAILED.value):
                final = BatchStatus.FAILED
            else:
                final = BatchStatus.COMPLETED
            Batch.update({Batch.status: final.value, Batch.finished_at: now}).where(Batch.id == batch_id).execute()
            changes.batch_change(batch_id, final.value, now)
            models.outbox.emit_batch(batch_id)
            step.status = final.value
    return step
