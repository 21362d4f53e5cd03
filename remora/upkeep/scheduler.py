"""The scheduler: runs schedules' slots, in the API process, under the ``scheduler`` database lock.

Every ``interval`` seconds (1 s) the holder of the lock looks at every enabled
schedule whose ``next_slot`` has come (``services.schedules`` explains the
claim, the overlap rules and the records):

- a slot at most ``grace`` seconds old is claimed and fired (or skipped, or
  left pending, by the schedule's ``overlap``);
- an older slot was passed while no scheduler ran: it is recorded ``missed``
  -- and with ``catch_up: last``, when no slot is on time, the most recent of
  them is fired once all the same;
- then ``next_slot`` moves to the first slot after now.

Besides, pending slots (overlap ``queue``) are fired once the previous run
ended, and ``claimed`` rows left without a job by a process that stopped
between the claim and the job are settled: ``fired`` when the job exists
after all, else ``missed`` naming what happened.  The clock is injectable
(``clock``: naive UTC now), so tests move time by hand.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from remora import cron, models
from remora.models import Job, Schedule, ScheduleRun
from remora.services import schedules
from remora.services.context import Context
from remora.services.schedules import RunStatus
from remora.upkeep.periodic import PeriodicTask

log = logging.getLogger(__name__)

LOCK_NAME = "scheduler"
MAX_MISSED = 100  # missed slots recorded one by one after a long outage (older ones are only logged)
MAX_DUE = 10_000  # slots looked at in one pass for one schedule


class Scheduler(PeriodicTask):
    """A background thread (remora.upkeep.periodic); ``run_once()`` does one pass (tests call it directly)."""

    name = LOCK_NAME
    counts = ("fired", "skipped", "pending", "missed", "failed")

    def __init__(
        self,
        ctx: Context,
        *,
        interval: float = 1.0,
        grace: float = 30.0,
        stale_claim: float = 60.0,
        clock: Callable[[], dt.datetime] | None = None,
        holder: str | None = None,
    ) -> None:
        super().__init__(interval=interval, min_ttl=5.0, holder=holder)
        self.ctx = ctx
        self.grace = dt.timedelta(seconds=grace)
        self.stale_claim = dt.timedelta(seconds=stale_claim)
        self.clock = clock or models.utcnow

    def run_pass(self) -> dict[str, int]:
        """One pass (the lock is held): settle stale claims, fire pending slots, handle due slots."""
        done = dict.fromkeys(self.counts, 0)
        now = self.clock()
        self._settle_claims(done)
        enabled = list(Schedule.select().where(Schedule.enabled == True))  # noqa: E712 - read before writing (SQLite)
        for schedule in enabled:
            if self.stopping:
                break
            try:
                self._release_pending(schedule, done)
                self._handle(schedule, now, done)
            except Exception:  # one broken schedule must not stop the others
                log.exception("scheduler: schedule %s failed this pass", schedule.name)
        return done

    # -- one schedule ------------------------------------------------------------------------------
    def _handle(self, schedule: Schedule, now: dt.datetime, done: dict[str, int]) -> None:
        if schedule.next_slot is None:
            self._advance(schedule, schedule.next_slot, now)
            return
        if schedule.next_slot > now:
            return
        due = cron.slots_between(schedule.cron, schedule.timezone, schedule.next_slot, now, limit=MAX_DUE)
        on_time = [slot for slot in due if now - slot <= self.grace]
        late = [slot for slot in due if now - slot > self.grace]
        catch_up = late[-1] if late and not on_time and schedule.catch_up == "last" else None
        missed = [slot for slot in late if slot != catch_up]
        if len(missed) > MAX_MISSED:
            log.warning("scheduler: schedule %s missed %d slots; recording the last %d", schedule.name, len(missed), MAX_MISSED)
            missed = missed[-MAX_MISSED:]
        for slot in missed:
            if schedules.record_missed(schedule, slot, "the scheduler was not running at this time (no API process was up)"):
                done["missed"] += 1
        for slot in ([catch_up] if catch_up else []) + on_time:
            reason = "catch-up: run late, the scheduler was not running at this time" if slot == catch_up else ""
            self._fire_slot(schedule, slot, reason, done)
        self._advance(schedule, schedule.next_slot, max([now, *due]))

    def _advance(self, schedule: Schedule, seen: dt.datetime | None, after: dt.datetime) -> None:
        """Move ``next_slot`` past ``after`` -- unless another scheduler moved it meanwhile."""
        nxt = schedules.first_slot(schedule.cron, schedule.timezone, after)
        query = Schedule.update(next_slot=nxt).where(Schedule.id == schedule.id)
        query = query.where(Schedule.next_slot.is_null() if seen is None else Schedule.next_slot == seen)
        with models.write_transaction():
            query.execute()

    def _fire_slot(self, schedule: Schedule, slot: dt.datetime, reason: str, done: dict[str, int]) -> None:
        run = schedules.claim(schedule, slot, self.holder)
        if run is None:
            return  # handled already (another API process, or an earlier pass)
        if schedule.overlap != "allow" and schedules.busy(schedule, before=run):
            if schedule.overlap == "skip":
                schedules.record_skipped(schedule, run, "the previous run is still queued or running (overlap: skip)")
                done["skipped"] += 1
                log.info("schedule %s: slot %s skipped: the previous run is still going", schedule.name, models.to_rfc3339(slot))
            else:
                schedules.record(run, RunStatus.PENDING, reason="waits for the previous run to end (overlap: queue)")
                done["pending"] += 1
            return
        self._fire(schedule, run, reason, done)

    def _fire(self, schedule: Schedule, run: ScheduleRun, reason: str, done: dict[str, int]) -> None:
        schedules.fire(self.ctx, schedule, run, reason=reason)
        done["fired" if run.status == RunStatus.FIRED else "failed"] += 1

    def _release_pending(self, schedule: Schedule, done: dict[str, int]) -> None:
        """Overlap ``queue``: fire the oldest pending slot once nothing before it is queued or running."""
        run = (
            ScheduleRun.select()
            .where(ScheduleRun.schedule == schedule.id, ScheduleRun.status == RunStatus.PENDING)
            .order_by(ScheduleRun.slot)
            .first()
        )
        if run is None or schedules.busy(schedule, before=run):
            return
        with models.write_transaction():
            taken = (
                ScheduleRun.update(status=RunStatus.CLAIMED, claimed_by=self.holder, updated_at=models.utcnow())
                .where(ScheduleRun.id == run.id, ScheduleRun.status == RunStatus.PENDING)
                .execute()
            )
        if taken:
            self._fire(schedule, run, "run after the previous run ended (overlap: queue)", done)

    # -- crash recovery ----------------------------------------------------------------------------
    def _settle_claims(self, done: dict[str, int]) -> None:
        """Claims older than ``stale_claim`` never got their outcome: find their job, else record them missed."""
        cutoff = models.utcnow() - self.stale_claim
        stale = list(ScheduleRun.select().where(ScheduleRun.status == RunStatus.CLAIMED, ScheduleRun.updated_at < cutoff).limit(100))
        for run in stale:
            schedule = Schedule.get_or_none(Schedule.id == run.schedule_id)
            if schedule is None:
                continue
            job = (
                Job.select(Job.id, Job.batch_id)
                .where(
                    Job.created_by.in_([schedules.actor_of(schedule), run.claimed_by]),
                    Job.created_at >= run.updated_at,
                    Job.created_at <= run.updated_at + self.stale_claim,
                    Job.template == schedule.template,
                )
                .order_by(Job.created_at)
                .first()
            )
            if job is not None:
                schedules.record(run, RunStatus.FIRED, job_id=None if job.batch_id else job.id, batch_id=job.batch_id)
                continue
            reason = f"claimed by {run.claimed_by or 'a scheduler'} but no job was recorded: it stopped between the claim and the job"
            if schedules.record_missed(schedule, run.slot, reason, run=run):
                done["missed"] += 1


__all__ = ["Scheduler"]
