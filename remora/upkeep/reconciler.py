"""The reconciler: keeps NetQueue in step with the database (the source of truth).

Every ``interval`` seconds one API instance (the holder of the ``reconciler``
database lock, see remora.upkeep.dblock):

- re-puts ``queued`` jobs the queue does not hold (PUT is idempotent by id,
  so a job already there is left alone); jobs recorded while the queue was
  down are queued as soon as it is back.  A sweep goes through every queued
  job a page per pass; it starts when the reconciler starts, after a queue
  outage, when the queue restarted (its uptime says so) and every
  ``sweep_every`` seconds as a safety net -- not on every pass, so a large
  backlog costs nothing in steady state;
- re-sends CANCEL for running jobs whose cancel was requested while the
  queue was unreachable;
- steps every running batch (``jobstate.batch_step``): releases the next
  held jobs of a rollout (the reconciler's re-put above never puts a held
  job) or stops it past its threshold, when whoever ended a job of it did
  not (a crash, an outage);
- hands ``running`` jobs whose lease the queue no longer knows and that have
  not been updated for ``2 x queue.worker_timeout`` to ``jobstate.worker_lost``
  (the same transition as a worker's take-over: ``queued`` again when retries
  remain, else ``failed`` / "worker lost"; ``canceled`` when a cancel was
  requested) and puts the requeued ones back on the queue.

It tolerates the queue being down (logged once per outage) and never dies
on one bad row.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

from remora import jobstate, models
from remora.errors import QueueError, QueueUnavailable, RemoraError
from remora.models import Batch, BatchStatus, Job, JobStatus, Server
from remora.services.batches import apply_step
from remora.services.context import Context
from remora.services.jobs import put_items
from remora.upkeep.periodic import PeriodicTask

log = logging.getLogger(__name__)

LOCK_NAME = "reconciler"
QUEUE_ERRORS = (QueueError, QueueUnavailable, OSError)


class Reconciler(PeriodicTask):
    """A background thread (remora.upkeep.periodic); ``run_once()`` does one pass (tests call it directly)."""

    name = LOCK_NAME
    counts = ("requeued", "lost", "cancels", "batches")

    def __init__(
        self,
        ctx: Context,
        *,
        interval: float = 2.0,
        batch: int = 500,
        settle: float = 5.0,
        sweep_every: float = 60.0,
        holder: str | None = None,
    ) -> None:
        super().__init__(interval=interval, min_ttl=5.0, holder=holder)
        self.ctx = ctx
        self.batch = batch
        self.settle = settle  # a job younger than this was just put by the API: leave it
        self._queue_down = False
        self._cursor: tuple[dt.datetime, str] | None = None
        self.sweep_every = sweep_every
        self._sweeping = True
        self._triggered = False
        self._last_sweep = time.monotonic()
        self._queue_started: float | None = None
        self._queue_uptime = 0.0
        self._sweep_again_at: float | None = None

    def ready(self) -> bool:
        return self.ctx.queue is not None

    # -- one pass ------------------------------------------------------------
    def run_pass(self) -> dict[str, int]:
        """One reconciliation pass (the lock is held); counts of what was done."""
        done = dict.fromkeys(self.counts, 0)
        try:
            self._check_queue_restart()
            if self._sweeping:
                done["requeued"] = self._requeue()
                if not self.acquire():  # the sweep outlived the lock: another instance has taken over
                    return done
            done["cancels"] = self._resend_cancels()
            done["lost"] = self._lost_workers()
            done["batches"] = self._step_batches()
        except QUEUE_ERRORS as exc:
            if not self._queue_down:
                log.warning("reconciler: queue unavailable (%s); queued jobs wait until it is back", exc)
                self._queue_down = True
            self._sweeping = False
            self._start_sweep()  # start over once the queue is back
            return done
        if self._queue_down:
            log.info("reconciler: queue is back")
            self._queue_down = False
        if done["requeued"] or done["lost"]:
            log.info("reconciler: put %d job(s) back on the queue, %d lost by their worker", done["requeued"], done["lost"])
        return done

    def _start_sweep(self, *, follow_up: bool = True, triggered: bool = True) -> None:
        """Sweep from the first queued job.

        A sweep triggered by trouble (queue restart, outage, failed PUT) also takes jobs younger than
        ``settle`` -- often the very ones whose PUT failed; PUT is idempotent, so putting a job the API
        has just put costs one round trip and nothing else.  It is repeated once ``settle`` later all the
        same, as a second chance.  The periodic safety sweep leaves young jobs to the API.
        """
        if not self._sweeping:
            self._sweeping, self._cursor = True, None
            self._triggered = triggered
        else:
            self._triggered = self._triggered or triggered
        if follow_up:
            self._sweep_again_at = time.monotonic() + self.settle + self.interval

    def _check_queue_restart(self) -> None:
        """Start a sweep when the queue restarted (it may have lost jobs) or the safety interval passed."""
        uptime = float(self.ctx.queue.stats().get("uptime", 0.0))  # type: ignore[union-attr]
        started = time.time() - uptime
        moved = self._queue_started is not None and abs(started - self._queue_started) > max(5.0, 2 * self.interval)
        if moved or uptime < self._queue_uptime:  # uptime went backwards: a restart, however soon after the last one
            log.info("reconciler: the queue restarted; checking every queued job")
            self._start_sweep()
        self._queue_started, self._queue_uptime = started, uptime
        if self.ctx.put_failed.is_set():
            self.ctx.put_failed.clear()
            self._start_sweep()
        elif time.monotonic() - self._last_sweep >= self.sweep_every:
            self._start_sweep(follow_up=False, triggered=False)
        elif self._sweep_again_at is not None and time.monotonic() >= self._sweep_again_at:
            self._sweep_again_at = None
            self._start_sweep(follow_up=False)

    def _requeue(self) -> int:
        """Put a batch of queued jobs (rotating through them); return how many the queue lacked."""
        cutoff = models.utcnow() - dt.timedelta(seconds=0 if self._triggered else self.settle)
        query = (
            Job.select(Job, Server.id, Server.max_concurrent_jobs)
            .join(Server)
            .where(Job.status == JobStatus.QUEUED.value, Job.held == False, Job.created_at < cutoff)  # noqa: E712
            .order_by(Job.created_at, Job.id)
            .limit(self.batch)
        )
        if self._cursor is not None:
            at, last_id = self._cursor
            query = query.where((Job.created_at > at) | ((Job.created_at == at) & (Job.id > last_id)))
        jobs = list(query)
        self._cursor = (jobs[-1].created_at, jobs[-1].id) if len(jobs) == self.batch else None
        if self._cursor is None:  # this page was the last one: the sweep is done
            self._sweeping = False
            self._last_sweep = time.monotonic()
        if not jobs:
            return 0
        return self._put(jobs)

    def _put(self, jobs: list[Job]) -> int:
        items = put_items(self.ctx, [(job, job.server) for job in jobs])
        inserted = self.ctx.queue.put_many(items)  # type: ignore[union-attr]
        return sum(1 for ok in inserted if ok)

    def _resend_cancels(self) -> int:
        jobs = list(Job.select(Job.id).where(Job.status == JobStatus.RUNNING.value, Job.cancel_requested == True).limit(100))  # noqa: E712
        for job in jobs:
            self.ctx.queue.cancel(job.id)  # type: ignore[union-attr]
        return len(jobs)

    def _lost_workers(self) -> int:
        cutoff = models.utcnow() - dt.timedelta(seconds=2 * self.ctx.settings.queue.worker_timeout)
        stale = list(Job.select().where(Job.status == JobStatus.RUNNING.value, Job.updated_at < cutoff).limit(200))
        lost = 0
        for job in stale:
            if self.ctx.queue.peek(job.id) is not None:  # type: ignore[union-attr]
                continue  # still leased (a quiet job whose worker keeps touching it)
            try:
                lost += self._give_up_or_retry(job)
            except RemoraError as exc:
                log.warning("reconciler: job %s: %s", job.id, exc)
        return lost

    def _step_batches(self) -> int:
        """Step every running batch (``jobstate.batch_step``): a release or stop its last job's ender missed."""
        stepped = 0
        # Read the ids first: a SELECT still open on this connection would make each step's write
        # transaction an upgrade of a stale read snapshot, which SQLite refuses at once ("database is locked").
        running = [row.id for row in Batch.select(Batch.id).where(Batch.status == BatchStatus.RUNNING.value).limit(500)]
        for batch_id in running:
            step = jobstate.batch_step(batch_id)
            if step.released or step.stopped:
                apply_step(self.ctx, step)
                stepped += 1
        return stepped

    def _give_up_or_retry(self, job: Job) -> int:
        """The job's worker is gone: ``jobstate.worker_lost``; a job back in ``queued`` is put again at once."""
        status = jobstate.worker_lost(job, detected_by=LOCK_NAME)
        if status is None:
            return 0
        if status is JobStatus.QUEUED:
            self._put([job])
        return 1


__all__ = ["Reconciler"]
