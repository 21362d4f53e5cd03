"""`remora queue serve` busy-polls while a client streams requests back to back, and not for a sparse one."""

from __future__ import annotations

import time

from tests.support.cluster import Cluster


def stats(cluster: Cluster) -> dict:
    status, body = cluster.queue_http("/stats")
    assert status == 200, body
    return body["server"]


def test_spins_for_a_streaming_client_not_for_a_sparse_one(tmp_path):
    cluster = Cluster(tmp_path, extra_env={"REMORA_QUEUE_BUSY_POLL": "2ms"})
    cluster.queue("--fsync", "never").start(15)
    try:
        assert stats(cluster)["window_us"] == 2000
        with cluster.queue_client() as client:
            for i in range(400):
                assert client.put(f"j{i}", body=b"x" * 100)
            got = client.reserve(["job_queue"], timeout=0)
            while got:
                got = client.ack_reserve(got[0].id, ["job_queue"], timeout=0)
        after_burst = stats(cluster)
        # the client came back within the window most of the time: those requests were caught spinning
        assert after_burst["spin_hits"] >= 200, after_burst
        # a sparse client (a request every 30 ms, well past 5 windows): the server sleeps, it does not spin
        with cluster.queue_client() as client:
            for _ in range(20):
                client.ping()
                time.sleep(0.03)  # the workload's pacing
        sparse = stats(cluster)
        assert sparse["spin_hits"] - after_burst["spin_hits"] <= 6, sparse  # connection set-up: HELLO follows the accept
        assert sparse["spin_misses"] - after_burst["spin_misses"] <= 4, sparse
    finally:
        cluster.stop()
        cluster.close()


def test_busy_poll_flag_zero_turns_it_off(tmp_path):
    cluster = Cluster(tmp_path)
    cluster.queue("--fsync", "never", "--busy-poll", "0").start(15)
    try:
        with cluster.queue_client() as client:
            for i in range(300):
                assert client.put(f"j{i}")
        after = stats(cluster)
        assert (after["window_us"], after["spin_hits"], after["spin_misses"]) == (0, 0, 0)
    finally:
        cluster.stop()
        cluster.close()
