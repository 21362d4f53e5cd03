"""The write-ahead log: replay equals the live state, torn tails are cut, compaction keeps the live set."""

from __future__ import annotations

import os
import random

import pytest

from remora.netqueue import wal as wal_mod
from remora.netqueue.engine import Engine
from remora.netqueue.wal import WriteAheadLog
from tests.support.clock import Clock


def open_engine(path, clock, fsync="never"):
    engine = Engine(clock=clock, max_size=100000)
    wal = WriteAheadLog(path, fsync=fsync)
    report = wal.recover(engine)
    engine.journal = wal.record
    return engine, wal, report


def snapshot(engine: Engine) -> dict:
    return {
        j.id: (j.queue, j.priority, j.state, j.attempt, j.expired, j.max_attempts, engine.body(j), j.cancel, j.reason)
        for j in engine.jobs.values()
    }


def drain_order(engine: Engine, queues) -> list[str]:
    return [j.id for j in engine.reserve(queues, count=100000)]


def churn(engine: Engine, clock: Clock, rng: random.Random, steps: int) -> None:
    for step in range(steps):
        op = rng.random()
        if op < 0.45:
            engine.put(
                f"j{step}",
                rng.choice("ab"),
                rng.randint(1, 10),
                rng.choice([0, 0, 0, 5]),
                3.0,
                2,
                rng.randbytes(rng.choice([8, 8, 64, 65, 300])),  # bodies over INLINE_BODY are read back from the log
            )
        elif op < 0.6:
            for job in engine.reserve([rng.choice("ab")], count=rng.randint(1, 3), worker="w"):
                if rng.random() < 0.5:
                    engine.ack(job.id)
        elif op < 0.7 and engine.jobs:
            engine.nack(rng.choice(list(engine.jobs)), delay=rng.choice([0, 2]))
        elif op < 0.78 and engine.jobs:
            engine.cancel(rng.choice(list(engine.jobs)))
        elif op < 0.85 and engine.jobs:
            engine.set_priority(rng.choice(list(engine.jobs)), rng.randint(1, 10))
        elif op < 0.9:
            engine.dlq_kick(list(engine.dead)[:1])
        else:
            clock.advance(rng.choice([0.5, 2.0, 4.0]))
            engine.tick()


def assert_same_delivery(again, engine, clock) -> None:
    """The recovered engine hands out ready jobs in exactly the original's order, and the same expired ones."""
    assert drain_order(again, ["a", "b"]) == drain_order(engine, ["a", "b"])  # exact FIFO order of ready jobs
    clock.advance(10)  # leases restart at recovery, so expired jobs come back as a set, not in order
    engine.tick()
    again.tick()
    assert sorted(drain_order(again, ["a", "b"])) == sorted(drain_order(engine, ["a", "b"]))


def test_recovery_replays_to_exactly_the_state_before(tmp_path):
    clock = Clock()
    engine, wal, _ = open_engine(tmp_path, clock)
    churn(engine, clock, random.Random(7), 3000)
    wal.flush()
    before = snapshot(engine)
    assert any(v[2] == 3 for v in before.values()) and any(v[2] == 2 for v in before.values())
    wal.close()
    again, wal2, report = open_engine(tmp_path, clock)
    assert report["dropped_bytes"] == 0
    assert snapshot(again) == before
    assert again.stats()["queues"] == engine.stats()["queues"]
    assert_same_delivery(again, engine, clock)
    wal2.close()


def test_torn_tail_is_truncated_and_reported(tmp_path):
    clock = Clock()
    engine, wal, _ = open_engine(tmp_path, clock)
    for i in range(100):
        engine.put(f"j{i}", "q", 5, 0, 30, 3, b"x" * 50)
    wal.flush()
    wal.close()
    log_file = tmp_path / "wal.0"
    size = log_file.stat().st_size
    with open(log_file, "r+b") as fh:
        fh.truncate(size - 7)  # the last record is cut in half, as by a crash mid-write
    engine, wal, report = open_engine(tmp_path, clock)
    assert len(engine.jobs) == 99 and "j99" not in engine.jobs
    assert report["dropped_bytes"] > 0 and report["dropped_at"] == log_file.stat().st_size
    engine.put("after", "q", 5, 0, 30, 3, b"")
    wal.flush()
    wal.close()
    with open(log_file, "ab") as fh:
        fh.write(b"\x00\x00\x00\x10garbage-garbage!")  # a record whose CRC cannot match
    engine, wal, report = open_engine(tmp_path, clock)
    assert len(engine.jobs) == 100 and "after" in engine.jobs
    assert report["dropped_bytes"] == 20
    wal.close()


def test_a_flipped_bit_ends_the_log_at_the_bad_record(tmp_path):
    clock = Clock()
    engine, wal, _ = open_engine(tmp_path, clock)
    for i in range(10):
        engine.put(f"j{i}", "q", 5, 0, 30, 3, b"y" * 20)
    wal.flush()
    wal.close()
    data = bytearray((tmp_path / "wal.0").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "wal.0").write_bytes(bytes(data))
    engine, wal, report = open_engine(tmp_path, clock)
    assert 0 < len(engine.jobs) < 10 and report["dropped_bytes"] > 0
    assert list(engine.jobs) == [f"j{i}" for i in range(len(engine.jobs))]
    wal.close()


def test_compaction_keeps_exactly_the_live_set(tmp_path, monkeypatch):
    monkeypatch.setattr(wal_mod, "COMPACT_MIN_RECORDS", 500)
    clock = Clock()
    engine, wal, _ = open_engine(tmp_path, clock)
    rng = random.Random(3)
    churn(engine, clock, rng, 2000)
    wal.flush()
    assert wal.should_compact(len(engine.jobs))
    records_before = wal.records
    wal.compact(engine)
    assert wal.gen == 1 and wal.records == len(engine.jobs) < records_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snapshot.1", "wal.1"]
    churn(engine, clock, rng, 300)  # more changes after the snapshot land in wal.1
    wal.flush()
    before = snapshot(engine)
    wal.close()
    again, wal2, report = open_engine(tmp_path, clock)
    assert report["generation"] == 1 and report["snapshot_jobs"] > 0
    assert snapshot(again) == before
    assert_same_delivery(again, engine, clock)
    wal2.close()


def test_an_interrupted_compaction_leaves_the_old_generation_in_charge(tmp_path):
    clock = Clock()
    engine, wal, _ = open_engine(tmp_path, clock)
    engine.put("keep", "q", 5, 0, 30, 3, b"")
    wal.flush()
    wal.close()
    (tmp_path / "snapshot.1.tmp").write_bytes(b"half a snapshot")
    engine, wal, report = open_engine(tmp_path, clock)
    assert list(engine.jobs) == ["keep"] and report["generation"] == 0
    assert not (tmp_path / "snapshot.1.tmp").exists()
    wal.close()


@pytest.mark.parametrize("mode", ["always", "interval"])
def test_sync_modes_make_writes_durable(tmp_path, mode):
    clock = Clock()
    engine, wal, _ = open_engine(tmp_path, clock, fsync=mode)
    wal.start()
    engine.put("a", "q", 5, 0, 30, 3, b"")
    lsn = wal.flush()
    wal.request_sync()
    from tests.support.waits import wait_for

    wait_for(lambda: wal.synced >= lsn, 5, what="fdatasync")
    assert wal.durable >= lsn and wal.fsyncs >= 1
    wal.close()


def test_the_log_is_preallocated_and_its_zero_tail_is_no_damage(tmp_path):
    """Appending inside preallocated space keeps the file's size fixed, so an fdatasync has no size
    change to commit; after a crash the unused (zero) tail is cut silently and a clean close leaves none."""
    clock = Clock()
    engine, wal, _ = open_engine(tmp_path, clock)
    for i in range(20):
        engine.put(f"j{i}", "q", 5, 0, 30, 3, b"x" * 50)
        wal.flush()
    log_file = tmp_path / "wal.0"
    assert log_file.stat().st_size >= wal_mod.PREALLOCATE > wal.log_bytes  # preallocated ahead of the records
    crashed = log_file.read_bytes()  # as a crash leaves it: the records, then zeros
    wal.close()
    assert log_file.stat().st_size == wal.log_bytes  # a clean close gives the unused space back
    log_file.write_bytes(crashed)
    engine, wal, report = open_engine(tmp_path, clock)
    assert len(engine.jobs) == 20 and report["dropped_bytes"] == 0 and report["dropped_at"] is None
    engine.put("after", "q", 5, 0, 30, 3, b"")  # appended right after the last record, not after the zeros
    wal.flush()
    wal.close()
    engine, wal, report = open_engine(tmp_path, clock)
    assert len(engine.jobs) == 21 and "after" in engine.jobs and report["dropped_bytes"] == 0
    wal.close()


def test_a_torn_record_in_preallocated_space_reports_only_its_own_bytes(tmp_path):
    clock = Clock()
    engine, wal, _ = open_engine(tmp_path, clock)
    for i in range(10):
        engine.put(f"j{i}", "q", 5, 0, 30, 3, b"x" * 50)
    wal.flush()
    end = wal.log_bytes
    with open(tmp_path / "wal.0", "r+b") as fh:
        fh.seek(end)
        fh.write(b"\x00\x00\x00\x40half")  # a record cut short by a crash, zeros after it
    os.close(wal.fd)  # the process "died": nothing more is written or cut
    wal.fd = -1
    engine, wal, report = open_engine(tmp_path, clock)
    assert len(engine.jobs) == 10 and report["dropped_bytes"] == 8 and report["dropped_at"] == end
    wal.close()


def test_bodies_over_the_inline_size_live_in_the_log_and_read_back_everywhere(tmp_path, monkeypatch):
    """A big body leaves memory once logged (the entry keeps its place): reserve, peek, dead letters, compaction
    and recovery all read the same bytes back, from the buffer before the write, the log or the snapshot."""
    monkeypatch.setattr(wal_mod, "COMPACT_MIN_RECORDS", 1)
    clock = Clock()
    engine, wal, _ = open_engine(tmp_path, clock)
    bodies = {f"j{i}": bytes([i]) * (wal_mod.INLINE_BODY + 1 + 50 * i) for i in range(20)}
    bodies["small"] = b"s" * wal_mod.INLINE_BODY
    bodies["grouped"] = b"g" * 500
    for job_id, body in bodies.items():
        engine.put(job_id, "q", 5, 0, 10, 1, body, "srv" if job_id == "grouped" else "", 2)
    assert isinstance(engine.jobs["small"].body, bytes)
    assert all(isinstance(engine.jobs[j].body, int) for j in bodies if j != "small")
    assert wal.buffered and {j: engine.body(engine.jobs[j]) for j in bodies} == bodies  # not yet written: from the buffer
    wal.flush()
    assert not wal.buffered and {j: engine.body(engine.jobs[j]) for j in bodies} == bodies  # from wal.0
    got = engine.reserve(["q"], count=2)
    assert [engine.body(j) for j in got] == [bodies["j0"], bodies["j1"]]
    clock.advance(11)
    engine.tick()  # max_attempts=1: both leases expire into the dead letters
    assert {j.id: engine.body(j) for j in engine.dlq_list()} == {"j0": bodies["j0"], "j1": bodies["j1"]}
    wal.flush()
    wal.compact(engine)
    assert {j: engine.body(engine.jobs[j]) for j in bodies} == bodies  # from snapshot.1
    assert engine.jobs["j5"].body & wal_mod.IN_SNAPSHOT
    engine.put("after", "q", 5, 0, 10, 1, b"a" * 1000)
    bodies["after"] = b"a" * 1000
    wal.flush()
    wal.close()
    again, wal2, report = open_engine(tmp_path, clock)
    assert report["snapshot_jobs"] == len(bodies) - 1 and report["log_records"] == 1
    assert {j: again.body(again.jobs[j]) for j in bodies} == bodies
    assert again.jobs["grouped"].group is not None and again.jobs["grouped"].group.limit == 2
    assert {j.id for j in again.dlq_list()} == {"j0", "j1"}
    wal2.close()


def test_a_synchronous_write_counts_as_durable_only_when_everything_before_it_was(tmp_path):
    """``flush(dsync=True)`` (the I/O thread's lone-writer path) writes with RWF_DSYNC and so makes its records
    durable; after records written without a sync it must not claim them durable (an fdatasync is still owed)."""
    clock = Clock()
    engine, wal, _ = open_engine(tmp_path, clock, fsync="always")
    engine.put("a", "q", 5, 0, 30, 3, b"x" * 100)
    lsn = wal.flush(dsync=True)
    assert wal.durable == wal.synced == lsn and wal.inline_fsyncs == 1
    engine.put("b", "q", 5, 0, 30, 3, b"y")
    lsn = wal.flush()  # written, not synced
    assert wal.durable < lsn
    engine.put("c", "q", 5, 0, 30, 3, b"z")
    lsn = wal.flush(dsync=True)
    assert wal.durable < lsn and wal.inline_fsyncs == 1  # "b" was not synced: the write alone proves nothing for it
    wal.sync_inline()
    assert wal.durable == lsn
    wal.close()
    again, wal2, _ = open_engine(tmp_path, clock)
    assert {j: again.body(again.jobs[j]) for j in "abc"} == {"a": b"x" * 100, "b": b"y", "c": b"z"}
    wal2.close()
