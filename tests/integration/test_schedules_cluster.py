"""Schedules in real time with two API processes on PostgreSQL: each minute slot fires exactly once, a running job makes the next slot skip.

Three real minute slots (about 3 minutes): one API process holds the scheduler's lock and is
killed (SIGKILL) after the first slot; the other takes over, and still no slot fires twice or
is lost.
"""

from __future__ import annotations

import datetime as dt
import time

import pytest

from remora import models
from remora.client import Client
from tests.support.cluster import postgres_cluster
from tests.support.waits import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.wallclock]


def runs_of(name: str) -> list[models.ScheduleRun]:
    schedule = models.Schedule.get(models.Schedule.name == name)
    return list(models.ScheduleRun.select().where(models.ScheduleRun.schedule == schedule.id).order_by(models.ScheduleRun.slot))


def wait_until_utc(when: dt.datetime) -> None:
    wait_for(lambda: models.utcnow() >= when, (when - models.utcnow()).total_seconds() + 10, 0.5, f"{when} to come")


@pytest.mark.timeout(300)
def test_two_api_processes_fire_every_slot_exactly_once(tmp_path, postgres):
    with postgres_cluster(tmp_path, postgres, f"sched_once_{int(time.time())}") as cluster:
        cluster.start_queue()
        apis = [cluster.start_api("api1"), cluster.start_api("api2")]
        cluster.start_worker("w1", concurrency=4)
        cluster.wait_workers(1)
        client = cluster.client()
        client.create_server({"name": "sched-local", "hostname": "localhost", "user": "", "auth_type": "local"})
        client.create_template({"name": "tick", "command": "echo", "args": "tick", "servers": ["sched-local"]})
        client.create_template({"name": "long", "command": "sleep", "args": "75", "servers": ["sched-local"]})
        every = client.create_schedule({"name": "every-minute", "template": "tick", "cron": "* * * * *", "overlap": "allow"})
        client.create_schedule({"name": "long-job", "template": "long", "cron": "* * * * *"})  # overlap: skip
        first = models.Schedule.get(models.Schedule.name == "every-minute").next_slot
        assert models.to_rfc3339(first) == every["next_runs"][0]
        slots = [first + dt.timedelta(minutes=n) for n in range(2)]  # fire, skip, fire again: tests/integration/test_scheduler.py

        wait_until_utc(slots[0] + dt.timedelta(seconds=3))
        wait_for(lambda: [r.status for r in runs_of("every-minute")] == ["fired"], 15, 0.2, "the first slot to fire")
        holder = models.Lock.get(models.Lock.name == "scheduler").holder
        victim = next(api for api in apis if f"-{api.pid}-" in holder)
        victim.kill9()  # the scheduler's lock holder dies; the other API process takes over

        wait_until_utc(slots[1] + dt.timedelta(seconds=15))
        every_runs = [(r.slot, r.status) for r in runs_of("every-minute")]
        assert every_runs == [(slot, "fired") for slot in slots], (every_runs, cluster.logs())
        jobs = list(models.Job.select().where(models.Job.created_by == "schedule:every-minute"))
        assert len(jobs) == 2 and {j.id for j in jobs} == {r.job_id for r in runs_of("every-minute")}
        wait_for(lambda: all(models.Job.get_by_id(j.id).status == "completed" for j in jobs), 30, 0.5, "the ticks to complete")

        long_runs = [(r.slot, r.status) for r in runs_of("long-job")]
        assert long_runs == [(slots[0], "fired"), (slots[1], "skipped")], long_runs
        assert "still queued or running" in runs_of("long-job")[1].reason
        assert models.Job.select().where(models.Job.created_by == "schedule:long-job").count() == 1
        survivor = cluster.api_ports[1 - apis.index(victim)]
        shown = Client(f"http://127.0.0.1:{survivor}", cluster.token).get_schedule("every-minute")
        assert shown["last_run"]["at"] == models.to_rfc3339(slots[1]) and shown["last_run"]["job_id"] == runs_of("every-minute")[-1].job_id
