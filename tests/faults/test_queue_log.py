"""The queue's log on a full disk, and a torn tail, with `remora queue serve` as a real process.

Disk full: the server runs under a small RLIMIT_FSIZE (soft limit; the hard
limit stays open so the test can lift it with prlimit(2) -- "space returns").
Python ignores SIGXFSZ, so a write past the limit fails with EFBIG just as a
full disk fails with ENOSPC.
"""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from remora.errors import QueueError
from remora.netqueue.wal import REC
from tests.support.cluster import Cluster
from tests.support.waits import wait_for

LIMIT = 64 * 1024


def small_files() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, resource.RLIM_INFINITY))


def health(cluster: Cluster) -> dict:
    status, body = cluster.queue_http("/health")
    assert status == 200, body
    return body


def test_disk_full_refuses_puts_clearly_stays_up_and_recovers(tmp_path):
    cluster = Cluster(tmp_path / "stack")
    try:
        queue = cluster.queue("--fsync", "always", preexec=small_files)
        queue.start()
        acked: list[str] = []
        with cluster.queue_client() as q:
            with pytest.raises(QueueError) as full:
                for i in range(10000):
                    q.put(f"job-{i}", body=b"x" * 200)
                    acked.append(f"job-{i}")
            assert full.value.code == "STORAGE" and "File too large" in str(full.value)
            assert 100 < len(acked) < 1000
            with pytest.raises(QueueError, match="STORAGE"):  # still refused, answered at once
                q.put("while-full")
            assert q.ping() < 1 and q.stats()["server"]["log_error"]  # the server is up and says why
            assert health(cluster)["status"] == "degraded"
            assert q.peek(acked[0]) is not None and queue.alive()
            wal = next((cluster.base / "queue").glob("wal.*"))
            assert wal.stat().st_size <= LIMIT

            resource.prlimit(queue.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))  # space returns
            wait_for(lambda: _put_ok(q, "after-space"), 5, interval=0.1, what="PUT to succeed once space returns")
            assert health(cluster)["status"] == "ok" and q.stats()["server"]["log_error"] is None
            # the PUT that met the full disk was kept in memory and logged once space returned: retrying it is idempotent
            q.put(f"job-{len(acked)}")

        queue.kill9()
        queue.start()
        with cluster.queue_client() as q:
            for job_id in [*acked, f"job-{len(acked)}", "after-space"]:
                assert q.peek(job_id) is not None, f"{job_id} lost"
        assert "cannot write the log" in queue.logs() and "writable again" in queue.logs()
    finally:
        cluster.close()


def _put_ok(q, job_id: str) -> bool:
    try:
        q.put(job_id)
        return True
    except QueueError:
        return False


def record_starts(data: bytes) -> list[int]:
    """Offsets where each log record starts (u32 length, u32 crc, then length bytes), and where the
    last one ends: the file is preallocated, so zeros (length 0) may follow the records."""
    starts, pos = [], 0
    while pos + REC.size <= len(data) and REC.unpack_from(data, pos)[0]:
        starts.append(pos)
        pos += REC.size + REC.unpack_from(data, pos)[0]
    return [*starts, pos]


def test_torn_tail_keeps_every_complete_record_and_says_what_it_dropped(tmp_path):
    cluster = Cluster(tmp_path / "stack")
    try:
        queue = cluster.queue("--fsync", "always")
        queue.start()
        with cluster.queue_client() as q:
            for i in range(50):
                q.put(f"job-{i}", body=b"payload")
        queue.kill9()
        wal: Path = next((cluster.base / "queue").glob("wal.*"))
        data = wal.read_bytes()
        *_, last, end = record_starts(data)  # job-49's PUT, and where it ends (preallocated zeros after it)
        wal.write_bytes(data[: end - 3])  # torn: its last 3 bytes never reached the disk
        queue.start()
        with cluster.queue_client() as q:
            assert all(q.peek(f"job-{i}") is not None for i in range(49))
            assert q.peek("job-49") is None
            assert q.put("job-49") is True  # appended after the cut, cleanly
        assert f"dropped {end - 3 - last} bytes at offset {last}" in queue.logs()
        queue.kill9()
        queue.start()
        with cluster.queue_client() as q:
            assert all(q.peek(f"job-{i}") is not None for i in range(50))
    finally:
        cluster.close()
