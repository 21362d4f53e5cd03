"""The engine's dispatch rules on their own: concurrency groups (per-server limits) and unstarted reservations handed back."""

from __future__ import annotations

from remora.netqueue import protocol as p
from remora.netqueue.engine import READY, Engine
from remora.netqueue.wal import WriteAheadLog
from tests.unit.test_netqueue_engine import Clock, ids


def gput(engine: Engine, job_id: str, group: str = "", limit: int = 0, priority: int = 5) -> bool:
    return engine.put(job_id, "q", priority, 0.0, 10.0, 3, b"", group, limit)


def test_a_full_group_keeps_its_jobs_in_place_and_others_go_ahead():
    clock = Clock()
    engine = Engine(clock=clock)
    for job_id, group in [("s1", "s"), ("s2", "s"), ("t1", "t"), ("s3", "s"), ("t2", "t")]:
        gput(engine, job_id, group, limit=1)
        clock.advance(0.01)
    assert ids(engine.reserve(["q"], count=10)) == ["s1", "t1"]  # s2, s3 and t2 wait for their group
    assert engine.reserve(["q"], count=10) == []
    gput(engine, "s4", "s", limit=1)  # a later job of the same server never overtakes s2, s3
    assert engine.ack("s1")
    assert ids(engine.reserve(["q"], count=10)) == ["s2"]
    assert engine.nack("t1")  # a NACKed job goes to the back (the holder's choice), after t2
    assert ids(engine.reserve(["q"], count=10)) == ["t2"]
    assert engine.ack("s2") and engine.ack("t2")
    assert ids(engine.reserve(["q"], count=10)) == ["s3", "t1"]  # s3 waited longer than the NACKed t1
    assert engine.stats()["ready"] == 1  # s4: set aside, still ready


def test_better_priority_of_a_full_group_runs_first_when_it_frees():
    clock = Clock()
    engine = Engine(clock=clock)
    gput(engine, "a", "s", limit=1)
    clock.advance(0.01)
    gput(engine, "low", "s", limit=1, priority=9)
    clock.advance(0.01)
    gput(engine, "high", "s", limit=1, priority=1)
    assert ids(engine.reserve(["q"])) == ["high"]
    assert engine.reserve(["q"], count=5) == []
    assert engine.ack("high")
    assert ids(engine.reserve(["q"], count=5)) == ["a"]


def test_raising_a_groups_limit_releases_waiting_jobs_and_zero_means_no_limit():
    clock = Clock()
    engine = Engine(clock=clock)
    for n in range(4):
        gput(engine, f"j{n}", "s", limit=1)
        clock.advance(0.01)
    assert ids(engine.reserve(["q"], count=10)) == ["j0"]
    gput(engine, "j0", "s", limit=3)  # a repeated PUT (the reconciler's) carries the server's new limit
    assert ids(engine.reserve(["q"], count=10)) == ["j1", "j2"]
    gput(engine, "j9", "s", limit=0)
    assert ids(engine.reserve(["q"], count=10)) == ["j3", "j9"]


def test_an_unstarted_reservation_handed_back_takes_its_old_place_without_an_expiry():
    clock = Clock()
    engine = Engine(clock=clock)
    for job_id in "abc":
        gput(engine, job_id)
        clock.advance(0.01)
    (a,) = engine.reserve(["q"], worker="w1")
    assert not engine.unreserve("a", a.attempt + 1)  # another reservation of the job: left alone
    assert engine.unreserve("a", a.attempt)
    job = engine.peek("a")
    assert (job.state, job.expired, job.worker) == (READY, 0, None)
    assert ids(engine.reserve(["q"], count=3)) == ["a", "b", "c"]
    assert not engine.unreserve("zzz", 1)


def test_an_unstarted_reservation_frees_its_group_place():
    clock = Clock()
    engine = Engine(clock=clock)
    gput(engine, "a", "s", limit=1)
    clock.advance(0.01)
    gput(engine, "b", "s", limit=1)
    (a,) = engine.reserve(["q"], count=2)
    assert engine.unreserve("a", a.attempt)
    assert ids(engine.reserve(["q"], count=1)) == ["a"]


def test_groups_survive_a_restart(tmp_path):
    clock = Clock()
    engine = Engine(clock=clock)
    wal = WriteAheadLog(tmp_path, fsync="never")
    wal.recover(engine)
    engine.journal = wal.record
    for n in range(3):
        gput(engine, f"j{n}", "s", limit=1)
        clock.advance(0.01)
    assert ids(engine.reserve(["q"], count=10)) == ["j0"]
    wal.flush()
    wal.close()
    again = Engine(clock=clock)
    WriteAheadLog(tmp_path, fsync="never").recover(again)
    assert again.reserve(["q"], count=10) == []  # j0 is still reserved: the group is full
    assert again.ack("j0")
    assert ids(again.reserve(["q"], count=10)) == ["j1"]


def test_put_carries_the_group_on_the_wire_and_old_items_stay_ungrouped():
    grouped = p.encode_put("id", "q", 3, 0.0, 10.0, 2, b"body", "server-1", 4)
    plain = p.encode_put("id2", "q", 3, 0.0, 10.0, 2, b"body")
    assert p.put_fields(grouped) == ("id", "q", 3, 0.0, 10.0, 2, b"body", "server-1", 4)
    assert p.put_fields(plain)[7:] == ("", 0)
    batch = p.put_batch_fields(p.encode_put_batch([grouped, plain, grouped]))
    assert [f[7] for f in batch] == ["server-1", "", "server-1"]
    try:
        p.put_fields(grouped[:-3])
    except p.ProtocolError as exc:
        assert exc.code == "BAD_FRAME"
    else:
        raise AssertionError("a truncated group was accepted")
