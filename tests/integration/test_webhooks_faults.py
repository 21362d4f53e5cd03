"""Webhook deliveries across API crashes and several API processes (real processes, tests/support/cluster.py).

- The API is SIGKILLed while a job's delivery waits for a receiver that is
  down; the receiver comes up, the API is started again: the delivery arrives.
- Two API processes on one PostgreSQL database: every delivery is sent once,
  also after the one that was sending is SIGKILLed and the other takes over.
"""

from __future__ import annotations

import collections

import pytest

from remora import models
from remora.models import Delivery, Lock
from remora.services import notify
from tests.support.cluster import Cluster, local_fleet
from tests.support.receiver import Receiver
from tests.support.waits import wait_for

pytestmark = pytest.mark.slow

FAST = {"webhooks.interval": "100ms", "webhooks.backoff": "200ms", "webhooks.max_backoff": "500ms", "webhooks.timeout": "2s"}


def test_a_delivery_pending_when_the_api_is_killed_is_sent_after_its_restart(tmp_path):
    cluster = Cluster(tmp_path / "stack", settings=FAST)
    receiver = Receiver()  # its port is chosen, nothing listens there yet
    try:
        cluster.start_queue()
        api = cluster.start_api()
        cluster.start_worker("w1", concurrency=2)
        [server_id] = local_fleet(cluster.client(), 1, "crash")
        hook = cluster.client().post("/api/v1/webhooks", {"name": "ops", "url": receiver.url, "events": ["job.failed"]})
        [job] = cluster.client().submit({"command": "exit 1", "server_id": server_id, "timeout": 60})

        def tried() -> Delivery | None:
            row = Delivery.get_or_none(Delivery.webhook == hook["id"])
            return row if row is not None and row.attempts >= 2 else None

        row = wait_for(tried, 30, 0.1, "the API to try the delivery while the receiver is down")
        assert row.status == "pending" and "refused" in row.error.lower(), row.error
        api.kill9()
        receiver.start()
        api.start()
        [got] = receiver.wait(1, "job.failed", timeout=60)
        assert got.headers["x-remora-delivery"] == row.uid and got.json()["job"]["id"] == job["id"]
        wait_for(lambda: Delivery.get(Delivery.uid == row.uid).status == "delivered", 10, 0.1, "the delivery to be recorded")
        assert len(receiver.requests) == 1
    finally:
        receiver.stop()
        cluster.stop()
        cluster.close()


@pytest.mark.postgres
def test_two_api_processes_send_each_delivery_once(tmp_path, postgres):
    cluster = Cluster(tmp_path / "stack", postgres.new_database("remora_webhooks"), settings=FAST)
    try:
        with Receiver() as receiver:
            cluster.start_queue()
            apis = [cluster.start_api("api1"), cluster.start_api("api2")]
            cluster.client().post("/api/v1/webhooks", {"name": "ops", "url": receiver.url, "events": ["schedule.missed"]})

            def emit(first: int, count: int) -> None:
                for n in range(first, first + count):
                    with models.write_transaction():
                        notify.emit("schedule.missed", {"schedule": {"name": f"s{n % 7}", "n": n}}, subject=f"schedule:s{n % 7}")

            emit(0, 40)
            receiver.wait(40, timeout=60)
            holder = Lock.get(Lock.name == "webhook-deliveries").holder
            [sending] = [api for api in apis if f"-{api.pid}-" in holder]
            sending.kill9()
            emit(40, 20)
            receiver.wait(60, timeout=90)  # the other API takes the lock over once the dead one's expires
            wait_for(lambda: Delivery.select().where(Delivery.status == "delivered").count() == 60, 20, 0.2, "60 delivered")
            ids = collections.Counter(r.headers["x-remora-delivery"] for r in receiver.requests)
            assert len(ids) == 60 and set(ids.values()) == {1}, [i for i, n in ids.items() if n > 1]
            by_subject: dict[str, list[int]] = collections.defaultdict(list)
            for r in receiver.requests:
                by_subject[r.json()["schedule"]["name"]].append(r.json()["schedule"]["n"])
            assert all(ns == sorted(ns) for ns in by_subject.values()), by_subject  # in order per subject
            assert Lock.get(Lock.name == "webhook-deliveries").holder != holder
    finally:
        cluster.stop()
        cluster.close()
