"""Delayed jobs (``run_at``) over separate queue, API and worker processes: never started early, cancelable, checked at the edge."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from remora import jobmessage, models
from remora.errors import RemoraError
from tests.support.cluster import Cluster
from tests.support.waits import wait_for

DELAY = 4.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    stack = Cluster(tmp_path_factory.mktemp("delayed"))
    stack.start_queue()
    stack.start_api()
    stack.start_worker("w1", concurrency=4)
    stack.wait_workers(1)
    client = stack.client()
    client.create_server({"name": "dl-local", "hostname": "localhost", "user": "", "auth_type": "local", "tags": ["dlfleet"]})
    client.create_server({"name": "dl-local2", "hostname": "localhost", "user": "", "auth_type": "local", "tags": ["dlfleet"]})
    yield stack
    stack.stop()
    stack.close()


def rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_delayed_job_waits_queued_until_run_at_then_runs(cluster):
    client = cluster.client()
    run_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=DELAY)
    job = client.submit({"command": "echo", "args": "later", "servers": ["dl-local"], "run_at": rfc3339(run_at)})[0]
    assert job["status"] == "queued" and parse(job["run_at"]) == run_at.replace(microsecond=run_at.microsecond // 1000 * 1000)
    # While the delay lasts the job stays queued: no worker has it (checked until just before run_at).
    while dt.datetime.now(dt.UTC) < run_at - dt.timedelta(seconds=0.5):
        seen = client.job(job["id"])
        assert seen["status"] == "queued" and seen["started_at"] is None, seen
        wait_for(lambda: True, 1, 0.2)  # re-check a few times a second
    done = wait_for(lambda: (j := client.job(job["id"]))["status"] in ("completed", "failed") and j, 20, 0.1, "the delayed job to run")
    assert done["status"] == "completed", cluster.logs()
    started = parse(done["started_at"])
    assert started >= run_at - dt.timedelta(milliseconds=50), (started, run_at)
    assert started <= run_at + dt.timedelta(seconds=5), (started, run_at)
    assert client.job_stream(job["id"], "stdout") == b"later\n"


def test_canceling_a_delayed_job_means_it_never_runs(cluster):
    client = cluster.client()
    run_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    job = client.submit({"command": "echo", "args": "never", "servers": ["dl-local"], "run_at": rfc3339(run_at)})[0]
    canceled = client.cancel(job["id"])
    assert canceled["job"]["status"] == "canceled"
    with cluster.queue_client() as queue:
        assert queue.peek(job["id"]) is None  # the delayed message is gone from the queue
    wait_for(lambda: dt.datetime.now(dt.UTC) > run_at + dt.timedelta(seconds=2), 10, 0.2, "run_at to pass")
    after = client.job(job["id"])
    assert after["status"] == "canceled" and after["started_at"] is None and after["attempts"] == 0


@pytest.mark.parametrize(
    "run_at",
    ["2001-01-01T00:00:00Z", "tomorrow", "2030-13-01T00:00:00Z", "2030-01-01T00:00:00", "", 17],
)
def test_a_past_or_malformed_run_at_is_a_400_naming_run_at(cluster, run_at):
    client = cluster.client()
    with pytest.raises(RemoraError) as info:
        client.submit({"command": "true", "servers": ["dl-local"], "run_at": run_at})
    assert info.value.status == 400 and "run_at" in str(info.value), info.value


def test_a_delayed_batch_and_a_delayed_template_run_delay_every_job(cluster):
    client = cluster.client()
    run_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)
    reply = client.post("/api/v1/jobs", {"command": "true", "servers": ["tag:dlfleet"], "run_at": rfc3339(run_at)})
    assert len(reply["jobs"]) == 2 and all(j["run_at"] and j["status"] == "queued" for j in reply["jobs"])
    template = {"name": "dl-tpl", "command": "echo", "args": "{{ who }}", "servers": ["dl-local"], "parameters": [{"name": "who"}]}
    client.create_template(template)
    run = client.post("/api/v1/templates/dl-tpl/run", {"params": {"who": "x"}, "run_at": rfc3339(run_at)})
    assert run["run_at"] and run["template"] == "dl-tpl"
    ids = [j["id"] for j in reply["jobs"]] + [run["id"]]
    with cluster.queue_client() as queue:
        for job_id in ids:
            held = queue.peek(job_id)
            assert held is not None and held.state == "delayed", held
    for job_id in ids:
        assert models.Job.get_by_id(job_id).run_at is not None
        client.cancel(job_id)


def test_a_re_put_keeps_the_remaining_delay(cluster):
    """The reconciler and the dead-letter kick build their PUT with ``jobmessage.queue_message``: it carries what is left of the delay."""

    client = cluster.client()
    run_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    job = client.submit({"command": "true", "servers": ["dl-local"], "run_at": rfc3339(run_at)})[0]
    row = models.Job.get_by_id(job["id"])
    message = jobmessage.queue_message(row, models.Server.get_by_id(row.server_id), ttr=5, default_queue="job_queue")
    assert 25 < message.delay <= 30
    row.run_at = models.utcnow() - dt.timedelta(seconds=10)
    assert jobmessage.queue_message(row, models.Server.get_by_id(row.server_id), ttr=5, default_queue="job_queue").delay == 0
    client.cancel(job["id"])


def test_the_reconciler_puts_a_lost_delayed_job_back_still_delayed(tmp_path):
    """The queue lost a delayed job's message: the reconciler's re-PUT carries the delay that remains (no early start)."""
    from tests.support.api import running_api

    with running_api(tmp_path) as api:
        server_id = api.local_server_id()
        run_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120)
        reply = api.post("/api/v1/jobs", {"command": "true", "server_id": server_id, "run_at": rfc3339(run_at)})
        assert reply.status == 201, reply
        job_id = reply.json()["id"]
        assert api.queue.peek(job_id).state == "delayed"
        assert api.queue.cancel(job_id)  # the message is lost; the database still says queued
        assert api.queue.peek(job_id) is None
        api.server.app.ctx.put_failed.set()  # what a failed PUT does: the reconciler sweeps queued jobs
        back = wait_for(lambda: api.queue.peek(job_id), 10, 0.1, "the reconciler to put the job back")
        assert back.state == "delayed", back
        assert models.Job.get_by_id(job_id).status == "queued"
