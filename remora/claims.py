"""A job's state transitions in the database, as the worker makes them.

Every transition is a conditional update, so two workers holding the same
job id (a redelivered duplicate) can never both run it:

- ``claim``: ``queued`` -> ``running`` (attempt number +1, worker id,
  started_at) only while the row is still ``queued`` and not cancel-requested.
  The per-server limit (``Server.max_concurrent_jobs``) is not counted here:
  the queue never hands out more of a server's jobs at once than its limit
  (the job's concurrency group, docs/dispatch.md), so a job never has to be
  put back and lose its place.
- A redelivered job whose row is still ``running`` belongs to a worker that
  died (its lease expired): it is run again if retries remain, else it ends
  ``failed`` with error ``worker lost`` (``take_over``).
- ``finish`` / ``requeue`` / ``release`` only touch a row this worker holds
  (status ``running``, ``worker`` = us, same attempt number).

``Job.attempt_errors`` is a list of ``{"attempt": n, "error": "...", "at": rfc3339}``.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from remora import models
from remora.models import Job, JobStatus

WORKER_LOST = "worker lost"
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
)


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


def attempt_error(attempt: int, error: str) -> dict[str, Any]:
    return {"attempt": attempt, "error": error, "at": models.to_rfc3339(models.utcnow())}


def _running_values(worker_id: str, now: Any) -> dict:
    return {
        Job.status: JobStatus.RUNNING.value,
        Job.attempts: Job.attempts + 1,
        Job.worker: worker_id,
        Job.started_at: now,
        Job.finished_at: None,
        Job.exit_code: None,
        Job.signal: None,
        Job.remote_pid: None,
        Job.updated_at: now,
    }


def claim(job_id: str, worker_id: str) -> Claim:
    """Try to move ``queued`` -> ``running`` for this worker; say what to do with the message otherwise."""
    now = models.utcnow()
    with models.write_transaction():
        updated, job = models.claim_job(job_id, worker_id, now, RUN_FIELDS)
    if updated:
        return Claim(Action.RUN, "claimed", job)
    job = models.select_job(job_id, RUN_FIELDS)
    if job is None:
        return Claim(Action.ACK, "job no longer exists")
    status = JobStatus(job.status)
    if status.finished:
        return Claim(Action.ACK, f"already {status.value}", job)
    if status is JobStatus.QUEUED:  # cancel requested while it waited
        cancel_queued(job_id)
        return Claim(Action.ACK, "canceled before it started", job)
    return Claim(Action.TAKE_OVER, f"running on {job.worker or 'an unknown worker'}", job)


def cancel_queued(job_id: str) -> bool:
    now = models.utcnow()
    with models.write_transaction():
        return bool(
            Job.update(status=JobStatus.CANCELED.value, error="canceled before it started", finished_at=now, updated_at=now)
            .where(Job.id == job_id, Job.status == JobStatus.QUEUED.value)
            .execute()
        )


def take_over(job: Job, worker_id: str) -> Claim:
    """The row is ``running`` but its worker is gone: run it again if retries remain, else fail it."""
    with models.write_transaction():
        return _take_over(job, worker_id)


def _take_over(job: Job, worker_id: str) -> Claim:
    now = models.utcnow()
    errors = [*(job.attempt_errors or []), attempt_error(job.attempts, WORKER_LOST)]
    guard = (Job.id == job.id, Job.status == JobStatus.RUNNING.value, Job.attempts == job.attempts)
    if job.cancel_requested:
        values: dict = {Job.status: JobStatus.CANCELED.value, Job.error: "canceled", Job.finished_at: now, Job.updated_at: now}
        Job.update(values).where(*guard).execute()
        return Claim(Action.ACK, "canceled while its worker was lost", job)
    if job.attempts <= job.retries:
        values = {**_running_values(worker_id, now), Job.attempt_errors: errors, Job.error: ""}
        if Job.update(values).where(*guard).execute():
            return Claim(Action.RUN, "retrying after a lost worker", models.select_job(job.id, RUN_FIELDS))
        return Claim(Action.ACK, "taken over by another worker", job)
    values = {
        Job.status: JobStatus.FAILED.value,
        Job.error: WORKER_LOST,
        Job.finished_at: now,
        Job.updated_at: now,
        Job.attempt_errors: errors,
    }
    Job.update(values).where(*guard).execute()
    return Claim(Action.ACK, WORKER_LOST, job)


def _mine(job_id: str, worker_id: str, attempt: int) -> tuple:
    return (Job.id == job_id, Job.status == JobStatus.RUNNING.value, Job.worker == worker_id, Job.attempts == attempt)


def record_pid(job_id: str, worker_id: str, attempt: int, pid: int) -> None:
    with models.write_transaction():
        models.update_held_job(job_id, worker_id, attempt, {"remote_pid": pid})


def finish(job_id: str, worker_id: str, attempt: int, status: JobStatus, *, in_transaction: bool = False, **values: Any) -> bool:
    """Record the final state of our attempt (False when the row is no longer ours).

    ``in_transaction``: the caller holds a write transaction (e.g. the job's last output write).
    """
    now = models.utcnow()
    values = {"status": status.value, "finished_at": now, "updated_at": now, **values}
    if in_transaction:
        return models.update_held_job(job_id, worker_id, attempt, values)
    with models.write_transaction():
        return models.update_held_job(job_id, worker_id, attempt, values)


def requeue(job_id: str, worker_id: str, attempt: int, error: str, **values: Any) -> bool:
    """A failed attempt with retries left: back to ``queued`` (attempt count and its error kept)."""
    with models.write_transaction():
        job = Job.select(Job.attempt_errors).where(Job.id == job_id).first()
        errors = [*((job.attempt_errors if job else None) or []), attempt_error(attempt, error)]
        now = models.utcnow()
        values = {"status": JobStatus.QUEUED.value, "worker": None, "error": error, "attempt_errors": errors, "updated_at": now, **values}
        return models.update_held_job(job_id, worker_id, attempt, values)


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
    with models.write_transaction():
        return bool(Job.update(values).where(*_mine(job_id, worker_id, attempt)).execute())


def cancel_requested(job_ids: list[str]) -> list[str]:
    if not job_ids:
        return []
    return [row.id for row in Job.select(Job.id).where(Job.id.in_(job_ids), Job.cancel_requested == True)]  # noqa: E712
