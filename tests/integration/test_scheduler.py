"""The scheduler's decisions with a hand-moved clock, on a real SQLite database: fire once, overlap, catch-up, misses, claims.

No queue is attached, so a fired job stays ``queued`` -- exactly "the previous run is still
queued or running" the overlap rules look at.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from remora import jobstate, models
from remora.models import Job, Schedule, ScheduleRun
from remora.services import schedules, templates
from remora.services.context import Context
from remora.services.servers import ensure_local_server
from remora.upkeep.scheduler import Scheduler
from tests.support.api import make_settings

T0 = dt.datetime(2030, 1, 1, 0, 0, 0)


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def ctx(tmp_path) -> Iterator[Context]:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'remora.db'}")
    models.init_db(settings.database_url)
    ensure_local_server()
    context = Context(settings)
    templates.create_template(context, {"name": "t", "command": "echo", "args": "{{ who }}", "servers": ["local"],
                                        "parameters": [{"name": "who", "default": "x"}, {"name": "pw", "secret": True, "required": False}]}, "test")  # fmt: skip
    yield context
    models.close_db()


def make(
    ctx: Context, name: str = "s", cron: str = "*/5 * * * *", next_slot: dt.datetime = T0 + dt.timedelta(minutes=5), **fields
) -> Schedule:
    row = schedules.create_schedule(ctx, {"name": name, "template": "t", "cron": cron, **fields}, "test", role="admin")
    Schedule.update(next_slot=next_slot).where(Schedule.id == row.id).execute()
    return Schedule.get_by_id(row.id)


def runs(schedule: Schedule) -> list[tuple[dt.datetime, str]]:
    return [(r.slot, r.status) for r in ScheduleRun.select().where(ScheduleRun.schedule == schedule.id).order_by(ScheduleRun.slot)]


def minute(n: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=n)


def test_a_due_slot_fires_once_and_next_slot_moves_on(ctx):
    schedule = make(ctx)
    clock = Clock(minute(4.9))
    scheduler = Scheduler(ctx, clock=clock, holder="a")
    assert scheduler.run_once()["fired"] == 0
    clock.now = minute(5) + dt.timedelta(seconds=1)
    assert scheduler.run_once()["fired"] == 1
    assert scheduler.run_once()["fired"] == 0
    (run,) = ScheduleRun.select().where(ScheduleRun.schedule == schedule.id)
    assert (run.slot, run.status) == (minute(5), "fired")
    job = Job.get_by_id(run.job_id)
    assert job.template == "t" and job.created_by == "schedule:s" and job.params["who"] == "x"
    assert Schedule.get_by_id(schedule.id).next_slot == minute(10)


def test_overlap_skip_skips_a_slot_while_the_previous_run_is_queued(ctx):
    schedule = make(ctx)
    clock = Clock(minute(5))
    scheduler = Scheduler(ctx, clock=clock, holder="a")
    assert scheduler.run_once()["fired"] == 1
    clock.now = minute(10)
    assert scheduler.run_once()["skipped"] == 1
    assert runs(schedule) == [(minute(5), "fired"), (minute(10), "skipped")]
    first = ScheduleRun.get(ScheduleRun.slot == minute(5))
    assert jobstate.cancel(first.job_id, "test") is jobstate.Cancel.CANCELED
    clock.now = minute(15)
    assert scheduler.run_once()["fired"] == 1
    assert [s for _, s in runs(schedule)] == ["fired", "skipped", "fired"]


def test_overlap_allow_fires_while_the_previous_run_is_queued(ctx):
    schedule = make(ctx, overlap="allow")
    clock = Clock(minute(5))
    scheduler = Scheduler(ctx, clock=clock, holder="a")
    scheduler.run_once()
    clock.now = minute(10)
    assert scheduler.run_once()["fired"] == 1
    assert runs(schedule) == [(minute(5), "fired"), (minute(10), "fired")]


def test_overlap_queue_fires_the_waiting_slot_when_the_previous_run_ends(ctx):
    schedule = make(ctx, overlap="queue")
    clock = Clock(minute(5))
    scheduler = Scheduler(ctx, clock=clock, holder="a")
    scheduler.run_once()
    clock.now = minute(10)
    assert scheduler.run_once()["pending"] == 1
    assert scheduler.run_once()["fired"] == 0
    jobstate.cancel(ScheduleRun.get(ScheduleRun.slot == minute(5)).job_id, "test")
    assert scheduler.run_once()["fired"] == 1
    assert runs(schedule) == [(minute(5), "fired"), (minute(10), "fired")]


@pytest.fixture
def missed(monkeypatch) -> list[tuple[str, dt.datetime, str]]:
    calls: list[tuple[str, dt.datetime, str]] = []

    def record(schedule, slot, reason, **_):
        assert models.get_database().in_transaction()  # called inside the transaction that records the miss
        calls.append((schedule.name, slot, reason))

    monkeypatch.setattr(schedules, "on_missed", record)
    return calls


def test_catch_up_last_runs_the_most_recent_missed_slot_once(ctx, missed):
    schedule = make(ctx, catch_up="last")
    scheduler = Scheduler(ctx, clock=Clock(minute(17)), holder="a", grace=30)  # down across 05, 10 and 15
    done = scheduler.run_once()
    assert (done["fired"], done["missed"]) == (1, 2)
    assert runs(schedule) == [(minute(5), "missed"), (minute(10), "missed"), (minute(15), "fired")]
    assert "catch-up" in ScheduleRun.get(ScheduleRun.slot == minute(15)).reason
    assert [(n, s) for n, s, _ in missed] == [("s", minute(5)), ("s", minute(10))]
    assert scheduler.run_once() == dict.fromkeys(scheduler.counts, 0)
    assert Schedule.get_by_id(schedule.id).next_slot == minute(20)


def test_catch_up_none_runs_nothing_and_records_every_miss(ctx, missed):
    schedule = make(ctx)
    done = Scheduler(ctx, clock=Clock(minute(17)), holder="a", grace=30).run_once()
    assert (done["fired"], done["missed"]) == (0, 3)
    assert runs(schedule) == [(minute(5), "missed"), (minute(10), "missed"), (minute(15), "missed")]
    assert len(missed) == 3 and all("not running" in reason for _, _, reason in missed)
    assert Job.select().count() == 0


def test_a_slot_within_the_grace_period_still_fires_after_a_short_outage(ctx, missed):
    schedule = make(ctx)
    done = Scheduler(ctx, clock=Clock(minute(10) + dt.timedelta(seconds=20)), holder="a", grace=30).run_once()
    assert (done["fired"], done["missed"]) == (1, 1)
    assert runs(schedule) == [(minute(5), "missed"), (minute(10), "fired")]


def test_a_slot_is_claimed_once_by_two_schedulers(ctx):
    """Two API processes' schedulers: the lock lets one run at a time, and the claim row keeps a stale second one from firing again."""
    schedule = make(ctx)
    clock = Clock(minute(5))
    first, second = Scheduler(ctx, clock=clock, holder="a"), Scheduler(ctx, clock=clock, holder="b")
    assert first.run_once()["fired"] == 1
    assert second.run_once()["fired"] == 0  # the lock is a's
    first.release()
    Schedule.update(next_slot=minute(5)).where(Schedule.id == schedule.id).execute()  # b read the schedule before a moved it on
    assert second.run_once()["fired"] == 0
    assert runs(schedule) == [(minute(5), "fired")] and Job.select().count() == 1


def test_a_claim_without_a_job_is_recorded_missed_never_fired_twice(ctx, missed):
    """A process that stopped between claiming a slot and recording its job: the slot ends missed with that reason."""
    schedule = make(ctx)
    run = schedules.claim(schedule, minute(5), "crashed-api")
    assert run is not None
    old = models.utcnow() - dt.timedelta(minutes=5)
    ScheduleRun.update(updated_at=old, created_at=old).where(ScheduleRun.id == run.id).execute()
    done = Scheduler(ctx, clock=Clock(minute(5) + dt.timedelta(seconds=1)), holder="a").run_once()
    assert (done["fired"], done["missed"]) == (0, 1)
    row = ScheduleRun.get_by_id(run.id)
    assert row.status == "missed" and "crashed-api" in row.reason and "between the claim and the job" in row.reason
    assert missed and missed[0][1] == minute(5)
    assert Job.select().count() == 0


def test_a_paused_schedule_does_not_fire_and_resumes_from_now(ctx):
    schedule = make(ctx)
    schedules.set_enabled(ctx, "s", False)
    assert Scheduler(ctx, clock=Clock(minute(5)), holder="a").run_once()["fired"] == 0
    resumed = schedules.set_enabled(ctx, "s", True)
    assert resumed.next_slot > models.utcnow() and runs(schedule) == []
    assert (
        schedules.schedule_dict(resumed)["next_runs"] and schedules.schedule_dict(schedules.set_enabled(ctx, "s", False))["next_runs"] == []
    )


def test_secret_parameters_are_stored_encrypted_and_reach_the_job(ctx):
    schedule = make(ctx, params={"who": "me", "pw": "hunter2-secret"})
    assert schedule.params == {"who": "me", "pw": "***"} and b"hunter2" not in bytes(schedule.secret_params)
    assert schedules.schedule_dict(schedule)["params"]["pw"] == "***"
    Scheduler(ctx, clock=Clock(minute(5)), holder="a").run_once()
    job = Job.get_by_id(ScheduleRun.get().job_id)
    assert job.params == {"who": "me", "pw": "***"}
    from remora.services.jobs import job_env

    assert job_env(job, ctx.secrets)[1]["REMORA_PARAM_PW"] == "hunter2-secret"
    kept = schedules.update_schedule(ctx, "s", {"params": {"who": "you", "pw": "***"}}, role="admin")  # "***" keeps the stored value
    assert schedules.stored_params(ctx, kept) == {"who": "you", "pw": "hunter2-secret"}


def test_an_operator_may_pause_an_admins_local_schedule_but_not_change_what_it_runs(ctx):
    """Runs have the role of whoever defined the schedule: a weaker role cannot redefine a ``local`` one, only pause/resume it."""
    from remora.errors import Forbidden

    make(ctx)  # created by an admin, runs on ``local`` (security.local_server_role = admin)
    assert schedules.update_schedule(ctx, "s", {"enabled": False}, role="operator").enabled is False
    assert schedules.update_schedule(ctx, "s", {"enabled": True}, role="operator").role == "admin"
    with pytest.raises(Forbidden):
        schedules.update_schedule(ctx, "s", {"cron": "@daily"}, role="operator")
    with pytest.raises(Forbidden):
        schedules.create_schedule(ctx, {"name": "op", "template": "t", "cron": "@daily"}, "op", role="operator")


def test_missed_and_skipped_slots_queue_a_schedule_missed_notification(ctx):
    from remora.models import Delivery
    from remora.services import webhooks

    hook = webhooks.create_webhook(ctx, {"name": "misses", "url": "http://127.0.0.1:9/x", "events": ["schedule.missed"]}, "admin")
    schedule = make(ctx)
    Scheduler(ctx, clock=Clock(minute(12)), holder="a", grace=30).run_once()  # down across 05 and 10
    clock = Clock(minute(15))
    scheduler = Scheduler(ctx, clock=clock, holder="a", grace=30)
    assert scheduler.run_once()["fired"] == 1
    clock.now = minute(20)
    assert scheduler.run_once()["skipped"] == 1  # the 15 run is still queued
    sent = [d.payload["schedule"] for d in Delivery.select().where(Delivery.webhook == hook.id).order_by(Delivery.seq)]
    assert [(s["slot"], s["status"]) for s in sent] == [
        (models.to_rfc3339(minute(5)), "missed"), (models.to_rfc3339(minute(10)), "missed"), (models.to_rfc3339(minute(20)), "skipped")
    ]  # fmt: skip
    assert all(s["name"] == schedule.name and s["reason"] for s in sent)
    assert {d.subject for d in Delivery.select()} == {f"schedule:{schedule.name}"}
