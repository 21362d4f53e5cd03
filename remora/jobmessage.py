"""A job's NetQueue message, built from its row: the one place a PUT's fields are decided.

Submit, the reconciler, the dead-letter kick, a rollout's released hosts and
the tests all build a job's message here; what is built is a plain
``QueueMessage`` (the fields of the queue client's ``PutItem``) that the
caller turns into a PUT (``put_item``).  Reads only: job state changes are
``remora.jobstate``'s.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING

from remora import models
from remora.models import Job, JobStatus, Server

if TYPE_CHECKING:
    from remora.netqueue.client import PutItem

# The queue dead-letters a message after this many expired leases beyond the job's own retries: a job
# runs at most ``retries + 1`` times, and one more delivery lets the worker that receives it after the
# last lost attempt record ``failed`` / ``worker lost`` (docs/dispatch.md).
EXTRA_DELIVERIES = 1


@dataclasses.dataclass(frozen=True)
class QueueMessage:
    """The fields of a job's PUT (the same names as the queue client's ``PutItem``)."""

    job_id: str
    queue: str
    priority: int
    ttr: float
    max_attempts: int
    body: bytes
    group: str  # the server: at most ``limit`` of its jobs are reserved at once (docs/dispatch.md)
    limit: int
    delay: float = 0.0  # seconds until the job's ``run_at``: the queue keeps it delayed until then

    def put_item(self) -> PutItem:
        """The queue client's ``PutItem`` of this message (field by field: ``dataclasses.asdict`` deep-copies each)."""
        from remora.netqueue.client import PutItem

        return PutItem(
            job_id=self.job_id, queue=self.queue, priority=self.priority, delay=self.delay, ttr=self.ttr,
            max_attempts=self.max_attempts, body=self.body, group=self.group, limit=self.limit,
        )  # fmt: skip


def max_attempts(retries: int) -> int:
    """Expired leases of a job's message before the queue dead-letters it."""
    return retries + 1 + EXTRA_DELIVERIES


def message_body(server: Server) -> bytes:
    """The message body: the job's server and its limit (the PUT also carries them as the concurrency group)."""
    return json.dumps({"server_id": server.id, "max_concurrent": server.max_concurrent_jobs}, separators=(",", ":")).encode()


def run_delay(job: Job) -> float:
    """Seconds until a delayed job's ``run_at`` (0 when it has none or it has passed): every PUT keeps the remaining delay."""
    run_at = getattr(job, "run_at", None)
    if run_at is None:
        return 0.0
    return max(0.0, (run_at - models.utcnow()).total_seconds())


def queue_message(job: Job, server: Server, *, ttr: float, default_queue: str) -> QueueMessage:
    """The one place a job's queue message is built (submit, reconciler, dead-letter kick, tests)."""
    return QueueMessage(
        job_id=job.id,
        queue=job.queue or default_queue,
        priority=job.priority,
        ttr=ttr,
        max_attempts=max_attempts(job.retries),
        body=message_body(server),
        group=server.id,
        limit=server.max_concurrent_jobs or 0,
        delay=run_delay(job),
    )


def released_messages(job_ids: list[str], *, ttr: float, default_queue: str) -> list[QueueMessage]:
    """The queue messages of released jobs (still ``queued``), built by ``queue_message``."""
    if not job_ids:
        return []
    query = (
        Job.select(Job, Server).join(Server).where(Job.id.in_(job_ids), Job.status == JobStatus.QUEUED.value, Job.held == False)  # noqa: E712
    )
    return [queue_message(job, job.server, ttr=ttr, default_queue=default_queue) for job in query]
