"""The queue engine on its own: a fake clock, no sockets."""

from __future__ import annotations

import pytest

from remora.netqueue.engine import Engine, QueueFullError
from tests.support.clock import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine(clock) -> Engine:
    return Engine(clock=clock, max_size=1000)


def put(
    engine: Engine, job_id: str, queue: str = "q", priority: int = 5, delay: float = 0.0, ttr: float = 10.0, max_attempts: int = 3
) -> bool:
    return engine.put(job_id, queue, priority, delay, ttr, max_attempts, job_id.encode())


def ids(jobs) -> list[str]:
    return [j.id for j in jobs]


def test_reserve_takes_the_best_priority_first_and_fifo_within_it(engine, clock):
    for job_id, prio in [("a", 5), ("b", 1), ("c", 5), ("d", 10), ("e", 1)]:
        put(engine, job_id, priority=prio)
        clock.advance(0.001)
    assert ids(engine.reserve(["q"], count=10)) == ["b", "e", "a", "c", "d"]


def test_fifo_holds_across_several_watched_queues(engine, clock):
    put(engine, "x1", queue="x")
    clock.advance(1)
    put(engine, "y1", queue="y")
    clock.advance(1)
    put(engine, "x2", queue="x")
    put(engine, "y0", queue="y", priority=2)
    assert ids(engine.reserve(["x", "y"], count=4)) == ["y0", "x1", "y1", "x2"]


def test_put_is_idempotent_by_id_in_every_state(engine):
    assert put(engine, "a") is True
    assert put(engine, "a", priority=1) is False
    engine.reserve(["q"])
    assert put(engine, "a") is False
    assert engine.peek("a").priority == 5


def test_delayed_job_becomes_ready_when_its_time_comes(engine, clock):
    put(engine, "later", delay=5)
    assert engine.reserve(["q"]) == []
    assert engine.stats()["delayed"] == 1
    clock.advance(4.9)
    engine.tick()
    assert engine.reserve(["q"]) == []
    clock.advance(0.2)
    engine.tick()
    assert ids(engine.reserve(["q"])) == ["later"]


def test_expired_lease_returns_job_with_next_attempt(engine, clock):
    put(engine, "j", ttr=10)
    (job,) = engine.reserve(["q"], worker="w1")
    assert job.attempt == 1
    clock.advance(9)
    assert engine.touch(["j"], worker="w1") == {"j": "ok"}
    clock.advance(9)
    engine.tick()
    assert engine.peek("j").state == 2  # still reserved: the touch renewed the lease
    clock.advance(1.1)
    engine.tick()
    assert engine.peek("j").state == 0
    (again,) = engine.reserve(["q"], worker="w2")
    assert again.attempt == 2
    assert engine.touch(["j"], worker="w1") == {"j": "ok"}  # the lease is by job id


def test_max_attempts_lease_expiries_dead_letter_the_job(engine, clock):
    put(engine, "j", ttr=1, max_attempts=2)
    for _ in range(2):
        assert ids(engine.reserve(["q"])) == ["j"]
        clock.advance(1.5)
        engine.tick()
    job = engine.peek("j")
    assert job.state == 3 and job.reason == "lease expired" and job.attempt == 2
    assert ids(engine.dlq_list()) == ["j"]
    assert engine.stats()["queues"]["q"]["dead"] == 1
    assert engine.reserve(["q"]) == []


def test_nack_never_dead_letters_and_can_delay(engine, clock):
    put(engine, "j", max_attempts=1)
    for attempt in range(1, 5):
        (job,) = engine.reserve(["q"])
        assert job.attempt == attempt
        assert engine.nack("j") is True
    engine.reserve(["q"])
    assert engine.nack("j", delay=3) is True
    assert engine.reserve(["q"]) == []
    clock.advance(3)
    engine.tick()
    assert ids(engine.reserve(["q"])) == ["j"]
    assert engine.nack("nope") is False


def test_ack_deletes_only_reserved_jobs(engine):
    put(engine, "j")
    assert engine.ack("j") is False
    engine.reserve(["q"])
    assert engine.ack("j") is True
    assert engine.peek("j") is None
    assert put(engine, "j") is True  # a deleted id may come back


def test_cancel_removes_waiting_and_flags_reserved(engine, clock):
    put(engine, "ready")
    put(engine, "delayed", delay=60)
    put(engine, "held")
    assert engine.cancel("ready") == "removed"
    assert engine.cancel("delayed") == "removed"
    assert ids(engine.reserve(["q"])) == ["held"]
    assert engine.cancel("held") == "flagged"
    assert engine.touch(["held"]) == {"held": "canceled"}
    assert engine.cancel("ghost") == "not_found"
    assert engine.nack("held") is True  # a canceled job is not requeued
    assert engine.peek("held") is None
    clock.advance(61)
    engine.tick()
    assert engine.reserve(["q"]) == []
    stats = engine.stats()
    assert stats["queue_depth"] == 0 and stats["queues"]["q"] == {"ready": 0, "delayed": 0, "reserved": 0, "dead": 0}


def test_reprioritize_reorders_a_waiting_job(engine, clock):
    for job_id in "abc":
        put(engine, job_id)
        clock.advance(0.01)
    assert engine.set_priority("c", 1) is True
    assert engine.set_priority("ghost", 1) is False
    assert engine.stats()["priority_distribution"]["1"] == 1
    assert ids(engine.reserve(["q"], count=3)) == ["c", "a", "b"]
    assert engine.set_priority("a", 2) is True  # a reserved job keeps its new priority if it is handed back
    assert engine.nack("a")
    assert engine.peek("a").priority == 2


def test_max_size_refuses_puts_beyond_it_all_or_nothing(clock):
    engine = Engine(clock=clock, max_size=3)
    put(engine, "1")
    put(engine, "2")
    with pytest.raises(QueueFullError):
        engine.put_many([("3", "q", 5, 0.0, 1.0, 1, b""), ("4", "q", 5, 0.0, 1.0, 1, b"")])
    assert engine.peek("3") is None
    put(engine, "3")
    with pytest.raises(QueueFullError):
        put(engine, "4")
    assert put(engine, "1") is False  # a duplicate is not refused: it adds nothing
    put(engine, "other", queue="r")  # the limit is per queue
    engine.reserve(["q"])
    put(engine, "4")  # reserved jobs do not count as waiting


def test_dlq_kick_and_purge(engine, clock):
    for job_id in ("a", "b", "c"):
        put(engine, job_id, ttr=1, max_attempts=1)
    engine.reserve(["q"], count=3)
    clock.advance(2)
    engine.tick()
    assert len(engine.dlq_list()) == 3
    assert engine.dlq_kick(["a", "ghost"]) == 1
    (job,) = engine.reserve(["q"])
    assert (job.id, job.attempt) == ("a", 2)
    assert engine.dlq_purge(["b"]) == 1
    assert engine.dlq_purge() == 1
    assert engine.dlq_list() == [] and engine.peek("c") is None


def test_workers_registry_and_seed_stats(engine, clock):
    engine.register_worker("w1", "host1", 4)
    put(engine, "a")
    put(engine, "b")
    clock.advance(2)
    engine.reserve(["q"], count=2, worker="w1")
    engine.ack("a")
    engine.nack("b")
    (w,) = engine.worker_list()
    assert (w["host"], w["concurrency"], w["done"], w["failed"], w["jobs"]) == ("host1", 4, 1, 1, [])
    stats = engine.stats()
    assert stats["active_workers"] == 1
    assert stats["average_wait_time"] == pytest.approx(2.0)
    assert stats["processing_rate"] > 0
    clock.advance(31)
    assert engine.stats()["active_workers"] == 0


def test_workers_go_inactive_then_are_forgotten_unless_they_hold_a_lease_and_deregister_drops_at_once(engine, clock):
    engine.workers.active_window = 2.0
    engine.register_worker("idle", "h1", 1, {"cpu_seconds": 1.0, "rss_bytes": 1e6, "threads": 2, "open_files": 5, "ssh_connections": 0})
    engine.register_worker("busy", "h2", 1)
    engine.put("j1", "q", 5, 0, 30, 3, b"")
    assert [j.id for j in engine.reserve(["q"], 1, "busy")] == ["j1"]
    engine.register_worker("leaving", "h3", 1)
    engine.deregister_worker("leaving")
    engine.deregister_worker("never-seen")  # not an error
    assert {w["id"] for w in engine.worker_list()} == {"idle", "busy"}
    assert next(w for w in engine.worker_list() if w["id"] == "idle")["resources"]["rss_bytes"] == 1e6
    clock.advance(2.5)
    assert engine.stats()["active_workers"] == 0 and engine.stats()["workers"] == 2
    clock.advance(20 - 2.5 + 0.1)  # past ten windows: the idle one is forgotten, the one holding a lease stays
    assert engine.stats()["workers"] == 1
    assert [w["id"] for w in engine.worker_list()] == ["busy"]
