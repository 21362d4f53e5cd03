"""1,000 idle client connections to NetQueue plus normal traffic.

The server (`remora queue serve`, fsync always) is one selector-driven I/O
thread plus one fsync thread: an idle connection costs a file descriptor and
a small buffer, never a thread.  With 1,000 idle connections open (each has
said HELLO), a producer and two consumers move 2,000 jobs; the round-trip
latency of the traffic and the server's thread count are checked.
(tests/integration/test_netqueue_server.py also checks the thread count of
an in-process server with 1,000 raw idle sockets.)
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from remora.netqueue.client import QueueClient
from tests.support.cluster import QUEUE_TOKEN, Cluster, rss_kib

pytestmark = pytest.mark.slow

IDLE = 1000
JOBS = 2000


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def traffic(addr: str) -> list[float]:
    """Producer puts JOBS jobs one by one; two consumers reserve+ack them. Returns PUT round trips."""
    put_times: list[float] = []
    done = threading.Event()
    acked = [0]
    lock = threading.Lock()

    def consume() -> None:
        with QueueClient(addr, token=QUEUE_TOKEN) as c:
            while not done.is_set():
                for r in c.reserve(["load"], timeout=0.2, count=10):
                    c.ack(r.id)
                    with lock:
                        acked[0] += 1
                        if acked[0] == JOBS:
                            done.set()

    consumers = [threading.Thread(target=consume) for _ in range(2)]
    for t in consumers:
        t.start()
    with QueueClient(addr, token=QUEUE_TOKEN) as c:
        for i in range(JOBS):
            t0 = time.perf_counter()
            c.put(f"job-{i}-{time.monotonic_ns()}", queue="load", body=b"x" * 100)
            put_times.append(time.perf_counter() - t0)
    assert done.wait(60), f"only {acked[0]} of {JOBS} acked"
    for t in consumers:
        t.join()
    return sorted(put_times)


def test_1000_idle_connections_do_not_slow_normal_traffic(tmp_path):
    cluster = Cluster(tmp_path / "stack")
    try:
        queue = cluster.queue("--fsync", "always")
        queue.start()
        addr = f"127.0.0.1:{cluster.queue_port}"
        quiet = traffic(addr)
        threads_before = threads_of(queue.pid)
        idle = [QueueClient(addr, token=QUEUE_TOKEN, name=f"idle-{i}") for i in range(IDLE)]
        try:
            for c in idle:
                c.ping()  # connected and past HELLO, then idle
            with QueueClient(addr, token=QUEUE_TOKEN) as c:
                assert c.stats()["connections"] >= IDLE
            busy = traffic(addr)
            assert threads_of(queue.pid) == threads_before
            assert all(c.ping() < 1 for c in idle[:: IDLE // 10])  # the idle ones are still served
            rss = rss_kib(queue.pid) / 1024
        finally:
            for c in idle:
                c.close()
        p99_quiet, p99_busy = quiet[int(len(quiet) * 0.99)], busy[int(len(busy) * 0.99)]
        print(
            f"\nNetQueue: PUT p99 {p99_quiet * 1000:.2f} ms alone, {p99_busy * 1000:.2f} ms with {IDLE} idle connections; "
            f"server threads {threads_before}; RSS {rss:.0f} MiB"
        )
        assert p99_busy < max(0.05, 5 * p99_quiet)
    finally:
        cluster.close()
