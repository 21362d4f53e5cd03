"""SIGKILL of the queue server (fsync always) while 2,000 jobs are submitted and run: each runs exactly once.

Queue, API and worker are separate processes.  Submissions go through the API
in fan-outs of 20 (a tag of 20 ``local`` servers) and keep going while the
queue is dead: the API records them and its reconciler queues them once the
queue is back.  Every job appends its id to a file when it runs, so "ran
exactly once" is checked on what really ran, not on what the database says.
"""

from __future__ import annotations

import collections
import threading
import time

import pytest

from remora.errors import RemoraError
from tests.support.cluster import Cluster, local_fleet, status_counts
from tests.support.http import request
from tests.support.waits import wait_for

pytestmark = pytest.mark.slow

TOTAL = 2000
FANOUT = 20


def api_healthy(cluster: Cluster) -> bool:
    try:
        return request("127.0.0.1", cluster.api_port, "GET", "/health", timeout=1).status == 200
    except OSError:
        return False


def worker_registered(cluster: Cluster, worker_id: str) -> bool:
    with cluster.queue_client(connect_timeout=0.5) as q:
        return any(w["id"] == worker_id and w["heartbeat_age"] < 1.0 for w in q.workers())


def reconnect_times(cluster: Cluster, limit: float = 5.0) -> dict[str, float]:
    """Seconds after the queue is listening again until the worker heartbeats and the API's /health is 200."""
    started = time.monotonic()
    back: dict[str, float] = {}
    while time.monotonic() - started < limit + 1 and len(back) < 2:
        if "worker" not in back and worker_registered(cluster, "w1"):
            back["worker"] = time.monotonic() - started
        if "api" not in back and api_healthy(cluster):
            back["api"] = time.monotonic() - started
        time.sleep(0.05)
    return {"worker": back.get("worker", float("inf")), "api": back.get("api", float("inf"))}


def test_sigkill_of_the_queue_under_load_loses_nothing_and_everyone_reconnects(tmp_path):
    cluster = Cluster(tmp_path / "stack")
    runs = tmp_path / "runs.log"
    try:
        queue = cluster.queue("--fsync", "always")
        queue.start()
        cluster.api().start()
        cluster.worker("w1", concurrency=8).start()
        client = cluster.client()
        local_fleet(client, FANOUT, "fleet")
        accepted: list[str] = []
        failures: list[str] = []
        spec = {"command": f"echo $REMORA_JOB_ID >> {runs}", "servers": ["tag:fleet"], "timeout": 60}

        def submit() -> None:
            with cluster.client() as c:
                while len(accepted) < TOTAL:
                    try:
                        accepted.extend(job["id"] for job in c.submit(spec))
                    except RemoraError as exc:  # the API must keep accepting while the queue is down
                        failures.append(str(exc))
                        time.sleep(0.05)

        submitter = threading.Thread(target=submit)
        submitter.start()
        wait_for(lambda: len(accepted) >= TOTAL // 3, 60, interval=0.01, what="a third of the jobs submitted")
        queue.kill9()
        during = len(accepted)
        wait_for(lambda: len(accepted) >= during + 5 * FANOUT, 30, interval=0.01, what="submissions accepted while the queue is down")
        queue.start()
        back = reconnect_times(cluster)
        assert back["worker"] < 5 and back["api"] < 5, back
        submitter.join(120)
        assert not failures, failures[:3]
        assert len(accepted) == TOTAL == len(set(accepted))

        wait_for(lambda: status_counts(accepted).get("completed") == TOTAL, 150, interval=0.5, what="every job completed")
        counts = collections.Counter(runs.read_text().split())
        assert set(counts) == set(accepted), "a job ran that was never accepted, or an accepted one never ran"
        assert max(counts.values()) == 1, [jid for jid, n in counts.items() if n > 1][:5]
        with cluster.queue_client() as q:
            wait_for(lambda: q.stats()["queue_depth"] == 0 and not q.list_jobs(limit=10), 30, what="the queue to drain")
        print(f"\nqueue SIGKILL: worker back in {back['worker']:.2f}s, API back in {back['api']:.2f}s, {TOTAL} jobs each ran once")
    finally:
        cluster.close()
