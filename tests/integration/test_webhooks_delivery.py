"""Webhook and email deliveries from real processes: queue, API and worker (tests/support/cluster.py), receivers on 127.0.0.1.

Jobs run on ``local`` servers; the API process sends the deliveries the
worker's final transitions wrote to the outbox.  Receivers are real HTTP
servers (tests/support/receiver.py) and an aiosmtpd sink.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections.abc import Iterator

import pytest

from remora import models
from remora.models import Delivery, Job
from remora.services import notify
from tests.support.cluster import Cluster, local_fleet
from tests.support.receiver import Receiver, SmtpSink
from tests.support.waits import wait_for

pytestmark = pytest.mark.slow

SECRET = "hmac-key-for-tests"
FAST = {
    "webhooks.interval": "100ms",
    "webhooks.backoff": "300ms",
    "webhooks.max_backoff": "1s",
    "webhooks.timeout": "2s",
    "api.public_url": "https://remora.example.com",
}


@pytest.fixture(scope="module")
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as smtp:
        yield smtp


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, sink) -> Iterator[Cluster]:
    settings = {**FAST, "smtp.host": "127.0.0.1", "smtp.port": sink.port, "smtp.from": "remora@example.com"}
    stack = Cluster(tmp_path_factory.mktemp("webhooks"), settings=settings)
    stack.start_queue()
    stack.start_api()
    stack.start_worker("w1", concurrency=4)
    stack.wait_workers(1)
    yield stack
    stack.stop()
    stack.close()


def tagged_server(cluster: Cluster) -> tuple[str, str]:
    """A fresh local server with a fresh tag: (server id, tag); filters keep other tests' jobs out."""
    tag = "t" + uuid.uuid4().hex[:8]
    [server_id] = local_fleet(cluster.client(), 1, tag)
    return server_id, tag


def add_webhook(cluster: Cluster, **body) -> dict:
    body.setdefault("name", "w" + uuid.uuid4().hex[:8])
    return cluster.client().post("/api/v1/webhooks", body)


def run_job(cluster: Cluster, server_id: str, command: str, name: str | None = None) -> str:
    [job] = cluster.client().submit({"command": command, "server_id": server_id, "name": name, "timeout": 60})
    return job["id"]


def wait_final(job_ids: list[str], timeout: float = 60) -> None:
    def final() -> bool:
        rows = Job.select(Job.status).where(Job.id.in_(job_ids))
        return len(rows) == len(job_ids) and all(models.JobStatus(r.status).finished for r in rows)

    wait_for(final, timeout, 0.1, f"jobs {job_ids} to finish")


def test_a_failed_job_is_posted_signed_and_to_slack_with_status_host_duration_and_link(cluster):
    server_id, tag = tagged_server(cluster)
    with Receiver() as plain, Receiver() as slack:
        add_webhook(cluster, url=plain.url, events=["job.failed"], secret=SECRET, filter={"tag": tag})
        add_webhook(cluster, url=slack.url, events=["job.failed", "job.completed"], format="slack", filter={"tag": tag})
        job_id = run_job(cluster, server_id, "exit 3", name="nightly-backup")
        [got] = plain.wait(1, "job.failed")
        expected = "sha256=" + hmac.new(SECRET.encode(), got.body, hashlib.sha256).hexdigest()
        assert got.headers["x-remora-signature"] == expected
        assert got.headers["content-type"] == "application/json" and got.headers["user-agent"].startswith("Remora/")
        body = got.json()
        assert body["event"] == "job.failed" and body["delivery"] == got.headers["x-remora-delivery"]
        job = body["job"]
        assert (job["id"], job["status"], job["exit_code"], job["name"]) == (job_id, "failed", 3, "nightly-backup")
        assert job["server"]["name"] == f"{tag}-0" and job["duration"] is not None
        [note] = slack.wait(1, "job.failed")
        assert "x-remora-signature" not in note.headers  # no secret, no signature
        text = note.json()["text"]
        assert set(note.json()) == {"text"}
        assert "failed" in text and f"{tag}-0" in text and "nightly-backup" in text and "duration:" in text
        assert f"https://remora.example.com/#/jobs?job={job_id}" in text
        completed = run_job(cluster, server_id, "true", name="fine")
        [done] = slack.wait(1, "job.completed")
        assert "completed" in done.json()["text"] and completed in done.json()["text"]
        assert len(plain.requests) == 1  # job.completed is not among its events


def test_a_500_then_200_is_delivered_exactly_once_more_with_the_same_delivery_id(cluster):
    server_id, tag = tagged_server(cluster)
    with Receiver(answers=[500]) as receiver:
        hook = add_webhook(cluster, url=receiver.url, events=["job.failed"], filter={"tag": tag})
        run_job(cluster, server_id, "false")
        first, second = receiver.wait(2)
        assert first.headers["x-remora-delivery"] == second.headers["x-remora-delivery"]
        assert first.body == second.body

        def logged() -> list[dict] | None:
            rows = cluster.client().get(f"/api/v1/webhooks/{hook['name']}/deliveries")["deliveries"]
            return rows if rows and rows[0]["status"] == "delivered" else None

        [row] = wait_for(logged, 10, 0.1, "the delivery to be logged as delivered")
        assert (row["id"], row["attempts"], row["status_code"], row["error"]) == (first.headers["x-remora-delivery"], 2, 200, "")
        time.sleep(1.5)  # longer than the largest backoff: a third POST would have come by now
        assert len(receiver.requests) == 2


def test_a_hanging_receiver_delays_neither_jobs_nor_other_webhooks(cluster):
    server_id, tag = tagged_server(cluster)
    with Receiver(hang=True) as stuck, Receiver() as healthy:
        add_webhook(cluster, url=stuck.url, events=["job.completed"], filter={"tag": tag})
        add_webhook(cluster, url=healthy.url, events=["job.completed"], filter={"tag": tag})
        started = time.monotonic()
        job_ids = [run_job(cluster, server_id, "true") for _ in range(6)]
        wait_final(job_ids, 30)
        got = healthy.wait(6, "job.completed", timeout=20)
        assert sorted(r.json()["job"]["id"] for r in got) == sorted(job_ids)
        assert time.monotonic() - started < 20  # not 6 x the stuck receiver's timeout
        assert stuck.requests  # it is being tried, one attempt at a time in its own lane
        stuck.release()


def test_deliveries_of_one_subject_keep_their_order_while_others_pass(cluster):
    def answer(got, earlier) -> int:  # a/1 fails twice, everything else is accepted at once
        same = [r for r in earlier if r.body == got.body]
        return 500 if got.json()["schedule"] == {"name": "a", "n": 1} and len(same) < 2 else 200

    with Receiver(answer=answer) as receiver:
        hook = add_webhook(cluster, url=receiver.url, events=["schedule.missed"])
        with models.write_transaction():
            notify.emit("schedule.missed", {"schedule": {"name": "a", "n": 1}}, subject="schedule:a")
        with models.write_transaction():
            notify.emit("schedule.missed", {"schedule": {"name": "a", "n": 2}}, subject="schedule:a")
            notify.emit("schedule.missed", {"schedule": {"name": "b", "n": 1}}, subject="schedule:b")
        got = receiver.wait(5, timeout=30)
        time.sleep(0.5)  # nothing more may come
        got = list(receiver.requests)
        order = [(r.json()["schedule"]["name"], r.json()["schedule"]["n"]) for r in got]
        a_deliveries = [n for name, n in order if name == "a"]
        assert a_deliveries == [1, 1, 1, 2], order  # a/2 waited until a/1 was delivered (third attempt)
        assert order.index(("b", 1)) < order.index(("a", 2)), order  # b was not held up by a's retries
        statuses = {d["status"] for d in cluster.client().get(f"/api/v1/webhooks/{hook['name']}/deliveries")["deliveries"]}
        assert statuses == {"delivered"}


def test_a_failed_job_is_emailed_with_status_and_host(cluster, sink):
    server_id, tag = tagged_server(cluster)
    before = len(sink.messages)
    hook = add_webhook(cluster, url="mailto:ops@example.com,oncall@example.org", events=["job.failed"], filter={"tag": tag})
    assert hook["format"] == "email"
    job_id = run_job(cluster, server_id, "exit 7", name="db-dump")
    message = sink.wait(before + 1)[before]
    assert message["Subject"] == f"[Remora] job failed: db-dump on {tag}-0"
    assert message["From"] == "remora@example.com"
    assert set(message["X-Envelope-To"].split(", ")) == {"ops@example.com", "oncall@example.org"}
    text = message.get_content()
    assert "status: failed" in text and f"host: {tag}-0" in text and "exit code: 7" in text
    assert f"https://remora.example.com/#/jobs?job={job_id}" in text
    row = wait_for(lambda: Delivery.get_or_none((Delivery.webhook == hook["id"]) & (Delivery.status == "delivered")), 10, 0.1, "delivered")
    assert row.attempts == 1


def test_a_finished_batch_is_announced_once(cluster):
    tag = "b" + uuid.uuid4().hex[:8]
    local_fleet(cluster.client(), 3, tag)
    with Receiver() as receiver:
        add_webhook(cluster, url=receiver.url, events=["batch.finished"], filter={"tag": tag})
        jobs = cluster.client().submit({"command": "test $REMORA_JOB_ID != x", "servers": [f"tag:{tag}"], "timeout": 60})
        [got] = receiver.wait(1, "batch.finished")
        batch = got.json()["batch"]
        assert batch["id"] == jobs[0]["batch_id"] and batch["status"] == "completed" and batch["total"] == 3
        assert batch["counts"] == {"completed": 3}
        time.sleep(0.5)
        assert len(receiver.requests) == 1
