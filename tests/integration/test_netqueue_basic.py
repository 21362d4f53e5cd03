"""NetQueue end to end on a real server (loopback, port 0): the client contract of interfaces.md."""

from __future__ import annotations

import threading
import time

import pytest

from remora.errors import QueueError, QueueFull
from remora.netqueue.client import PutItem, QueueClient
from remora.netqueue.server import QueueServer
from tests.support.waits import wait_for


@pytest.fixture
def server():
    srv = QueueServer(port=0, persistence=False, max_size=50)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    host, port = server.address
    with QueueClient(f"{host}:{port}", name="test") as c:
        yield c


def test_put_is_idempotent_and_reserve_follows_priority_then_fifo(client):
    assert client.put("a", priority=5, body=b"A") is True
    assert client.put("a", priority=1) is False
    assert client.put_many([PutItem("b", priority=1), PutItem("c", priority=5), PutItem("a")]) == [True, True, False]
    got = client.reserve(["job_queue"], timeout=0, count=3, worker_id="w1")
    assert [(r.id, r.priority, r.attempt) for r in got] == [("b", 1, 1), ("a", 5, 1), ("c", 5, 1)]
    assert got[1].body == b"A"


def test_ack_nack_touch_and_cancel(client):
    client.put("j1", ttr=5)
    client.put("j2")
    (r1,) = client.reserve(["job_queue"], timeout=0, worker_id="w")
    assert client.touch([r1.id, "ghost"], worker_id="w") == {"j1": "ok", "ghost": "lost"}
    assert client.cancel("j1") == "flagged"
    assert client.touch(["j1"])["j1"] == "canceled"
    assert client.ack("j1") is True
    assert client.ack("j1") is False
    (r2,) = client.reserve(["job_queue"], timeout=0)
    assert client.nack(r2.id) is True
    (again,) = client.reserve(["job_queue"], timeout=0)
    assert again.id == "j2" and again.attempt == 2
    client.put("j3")
    assert client.cancel("j3") == "removed"
    assert client.cancel("j3") == "not_found"
    assert client.peek("j3") is None


def test_blocking_reserve_wakes_on_put_and_times_out_empty(client):
    started = time.monotonic()
    assert client.reserve(["empty"], timeout=0.2) == []
    assert time.monotonic() - started >= 0.19
    got: list = []
    waiter = threading.Thread(target=lambda: got.append(client.reserve(["later"], timeout=10)))
    waiter.start()
    # The put must wake the parked reserve, not its timeout: wait until the server counts it parked.
    wait_for(lambda: client.stats()["server"]["parked_reserves"] == 1, 5, what="the reserve to park")
    assert client.ping() < 1.0  # other calls go on while a reserve is parked on the same connection
    client.put("x", queue="later")
    waiter.join(5)
    assert [r.id for r in got[0]] == ["x"]


def test_queue_full_is_a_typed_error_and_stats_carry_the_seed_names(client):
    client.put_many([PutItem(f"f{i}", priority=1 + i % 10) for i in range(50)])
    with pytest.raises(QueueFull):
        client.put("one-too-many")
    with pytest.raises(QueueFull):
        client.put_many([PutItem("x1"), PutItem("x2")])
    stats = client.stats()
    for key in ("queue_depth", "active_workers", "processing_rate", "average_wait_time", "priority_distribution"):
        assert key in stats
    assert stats["queue_depth"] == 50
    assert stats["priority_distribution"]["1"] == 5
    assert stats["queues"]["job_queue"]["ready"] == 50


def test_workers_registry_tracks_heartbeats_and_leases(client):
    client.register_worker("w9", host="box", concurrency=4)
    client.put("held")
    client.reserve(["job_queue"], timeout=0, worker_id="w9")
    (w,) = client.workers()
    assert (w["id"], w["host"], w["concurrency"], w["jobs"]) == ("w9", "box", 4, ["held"])
    assert w["heartbeat_age"] < 5


def test_bad_arguments_are_error_replies(client):
    with pytest.raises(QueueError) as err:
        client.put("bad", priority=11)
    assert err.value.code == "BAD_ARGUMENT"
    assert client.ping() >= 0


def test_put_many_pipelines_frames_and_keeps_order(server):
    host, port = server.address
    server.engine.max_size = 10000
    with QueueClient(f"{host}:{port}") as c:
        items = [PutItem(f"m{i}", priority=1 + i % 10, body=b"b") for i in range(1050)]
        assert c.put_many(items, per_frame=100) == [True] * 1050
        assert c.put_many([*items[:5], PutItem("new")], per_frame=2) == [False] * 5 + [True]
        assert c.stats()["jobs"] == 1051


def test_one_client_shared_by_many_threads_with_parked_reserves(client):
    results: dict[str, list] = {"parked": [], "errors": []}

    def parked() -> None:
        try:
            results["parked"].extend(client.reserve(["slow"], timeout=10))
        except Exception as exc:
            results["errors"].append(exc)

    def busy(n: int) -> None:
        try:
            for i in range(40):
                assert client.put(f"t{n}-{i}", queue=f"q{n}")
                (r,) = client.reserve([f"q{n}"], timeout=1)
                assert client.ack(r.id)
        except Exception as exc:
            results["errors"].append(exc)

    waiters = [threading.Thread(target=parked) for _ in range(2)]
    workers = [threading.Thread(target=busy, args=(n,)) for n in range(8)]
    for t in waiters + workers:
        t.start()
    for t in workers:
        t.join(30)
    client.put_many([PutItem("s1", queue="slow"), PutItem("s2", queue="slow")])
    for t in waiters:
        t.join(10)
    assert not results["errors"], results["errors"][:3]
    assert sorted(r.id for r in results["parked"]) == ["s1", "s2"]
