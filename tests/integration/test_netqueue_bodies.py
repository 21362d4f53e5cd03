"""Job bodies kept in the write-ahead log, not in memory: what clients read back over the wire is byte-exact."""

from __future__ import annotations

import random

from remora.netqueue.client import PutItem
from tests.support.cluster import Cluster


def test_bodies_read_back_from_the_log_survive_reserve_peek_compaction_and_sigkill(tmp_path):
    """Bodies of every size (empty, inline, 200 bytes, the 1 MiB maximum) come back exactly through PEEK, LIST,
    RESERVE and the dead-letter listing: while only in the server's log buffer, once written, after a
    compaction (SNAPSHOT) moved them into the snapshot, and after a SIGKILL and recovery."""
    rng = random.Random(5)
    sizes = [0, 1, 64, 65, 200, 4096, 1024 * 1024]
    bodies = {f"b{n}-{size}": rng.randbytes(size) for n, size in enumerate(sizes * 3)}
    cluster = Cluster(tmp_path)
    queue = cluster.queue("--fsync", "always").start(15)
    try:
        with cluster.queue_client() as client:
            client.put_many([PutItem(job_id, queue="big", body=body, max_attempts=1, ttr=0.2) for job_id, body in bodies.items()][:7])
            for job_id, body in list(bodies.items())[7:]:
                assert client.put(job_id, queue="big", body=body, max_attempts=1, ttr=0.2)
            for job_id, body in bodies.items():
                peeked = client.peek(job_id)
                assert peeked is not None and peeked.body == body
            assert {j.id: j.body for j in client.list_jobs(queue="big", limit=100)} == bodies
            got = client.reserve(["big"], timeout=0, count=3)  # leases of 0.2 s, max_attempts 1: dead letters
            assert {r.id: r.body for r in got} == {r.id: bodies[r.id] for r in got} and len(got) == 3
            client.snapshot()  # compaction: every live body now lies in snapshot.N
            dead: dict[str, bytes] = {}
            for _ in range(100):
                dead = {j.id: j.body for j in client.dlq_list(queue="big")}
                if len(dead) == 3:
                    break
                client.reserve(["nothing"], timeout=0.05)  # a server-side wait, not a sleep here
            assert dead == {r.id: bodies[r.id] for r in got}
            client.put("after-snapshot", queue="big", body=b"z" * 300)
        bodies["after-snapshot"] = b"z" * 300
        queue.kill9()
        queue.start(15)
        with cluster.queue_client() as client:
            for job_id, body in bodies.items():
                peeked = client.peek(job_id)
                assert peeked is not None and peeked.body == body, job_id
            assert client.dlq_kick() == 3
            out: dict[str, bytes] = {}
            while reserved := client.reserve(["big"], timeout=0, count=50):
                out.update((r.id, r.body) for r in reserved)
            assert out == bodies
    finally:
        cluster.close()
