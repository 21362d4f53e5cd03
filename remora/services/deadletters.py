"""Dead letters: jobs that ended for good, with the reason, and a fresh attempt on request.

Two kinds, one view (API ``GET /api/v1/queue/dlq``, ``remora queue dlq list``,
the dashboard's queue page):

- ``retries exhausted``: the row ended ``failed`` after its last allowed
  attempt (``attempts > retries``), e.g. a non-zero exit on every try, or
  ``worker lost`` with no retry left;
- ``worker died too often``: the queue dead-lettered the message because
  its lease expired ``max_attempts`` times (the workers holding it died).

Kicking one (``kick``) writes a fresh attempt to its row
(``remora.jobstate.fresh_attempt``) and puts it back on the queue.
"""

from __future__ import annotations

import logging
from typing import Any

from remora import jobstate, models
from remora.errors import Conflict, QueueError, QueueUnavailable
from remora.models import Job, JobStatus, Server
from remora.services.context import Context

log = logging.getLogger(__name__)

QUEUE_ERRORS = (QueueError, QueueUnavailable, OSError)
RETRIES_EXHAUSTED = "retries exhausted"
WORKER_DIED = "worker died too often"


def _entry(job: Job | None, job_id: str, kind: str, reason: str, **queue_fields: Any) -> dict[str, Any]:
    return {
        "id": job_id,
        "kind": kind,
        "reason": reason,
        "status": job.status if job else None,
        "name": job.name if job else None,
        "command": (job.command or "") if job else None,
        "server_id": job.server_id if job else None,
        "queue": queue_fields.get("queue") or (job.queue if job else None),
        "priority": queue_fields.get("priority") or (job.priority if job else None),
        "attempt": job.attempts if job else queue_fields.get("attempt"),
        "retries": job.retries if job else None,
        "error": job.error if job else None,
        "finished_at": models.to_rfc3339(job.finished_at) if job and job.finished_at else None,
        "age": queue_fields.get("age"),
        "worker": queue_fields.get("worker") or (job.worker if job else None),
    }


def list_dead(ctx: Context, limit: int = 100, *, database_missing: str = "") -> dict[str, Any]:
    """Dead letters, the queue's first (workers died), then rows whose retries ran out, newest first.

    ``database_missing``: there is no database here (why, in words): the queue's view alone.
    """
    out: list[dict[str, Any]] = []
    queue_error = None
    dead = []
    if ctx.queue is not None:
        try:
            dead = ctx.queue.dlq_list(limit=limit)
        except QUEUE_ERRORS as exc:
            queue_error = str(exc)
    database_error = database_missing or None
    rows: dict[str, Job] = {}
    try:
        if dead and database_error is None:
            rows = {j.id: j for j in Job.select().where(Job.id.in_([d.id for d in dead]))}
    except models.DatabaseError as exc:  # the queue's view alone is still worth showing
        database_error = str(exc)
    for d in dead:
        reason = f"{WORKER_DIED}: {d.reason or 'lease expired'} after {d.attempt} deliveries"
        out.append(_entry(rows.get(d.id), d.id, WORKER_DIED, reason, queue=d.queue, priority=d.priority, attempt=d.attempt, age=d.age))
    seen = set(rows) | {d.id for d in dead}
    failed: list[Job] = []
    if database_error is None:
        try:
            failed = list(
                Job.select()
                .where(Job.status == JobStatus.FAILED.value, Job.attempts > Job.retries)
                .order_by(Job.finished_at.desc(), Job.id)
                .limit(max(0, limit - len(out)))
            )
        except models.DatabaseError as exc:
            database_error = str(exc)
    for job in failed:
        if job.id in seen:
            continue
        reason = f"{RETRIES_EXHAUSTED}: {job.error or 'failed'} (attempt {job.attempts} of {job.retries + 1})"
        out.append(_entry(job, job.id, RETRIES_EXHAUSTED, reason))
    result: dict[str, Any] = {"jobs": out, "total": len(out)}
    if queue_error:
        result["queue_error"] = queue_error
    if database_error:
        result["database_error"] = database_error
    return result


def kick(ctx: Context, job_id: str) -> Job:
    """A fresh attempt of a dead letter: its row back to ``queued``, its message back on the queue."""
    from remora.services.jobs import get_job, put_jobs

    job = get_job(job_id)
    in_queue_dlq = False
    if ctx.queue is not None:
        try:
            held = ctx.queue.peek(job_id)
        except QUEUE_ERRORS as exc:
            raise QueueUnavailable(f"the queue is unavailable: {exc}", retry_after=5) from None
        in_queue_dlq = held is not None and held.state == "dead"
    # a queue dead letter's row may still say running (its last worker died) or queued (none claimed it)
    if not in_queue_dlq and not (job.status == JobStatus.FAILED.value and job.attempts > job.retries):
        raise Conflict(f"job is {job.status}: not a dead letter", details={"status": job.status})
    if not jobstate.fresh_attempt(job_id, queue_dead=in_queue_dlq):
        raise Conflict("the job changed meanwhile: not a dead letter any more", details={"status": get_job(job_id).status})
    if in_queue_dlq:
        try:
            ctx.queue.dlq_kick([job_id])  # type: ignore[union-attr]
            return get_job(job_id)
        except QUEUE_ERRORS as exc:
            log.warning("cannot kick job %s in the queue (%s): the reconciler queues it", job_id, exc)
            return get_job(job_id)
    job = get_job(job_id)
    put_jobs(ctx, [(job, Server.get_by_id(job.server_id))])  # unreachable queue: the reconciler puts it later
    return job
