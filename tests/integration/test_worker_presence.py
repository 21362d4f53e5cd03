"""The queue's workers list follows real worker processes: a clean stop leaves at once, a killed worker ages out.

A worker stopped with SIGTERM sends DEREGISTER as its last word, so ``remora queue workers`` no longer
lists it within a second or two.  A SIGKILLed worker says nothing: it shows inactive once it has been
silent for ``queue.health_check_interval`` and is forgotten after ``WORKER_FORGET_FACTOR`` such windows.
Every heartbeat carries the worker's resource figures (CPU seconds, RSS, threads, open files, SSH
connections), shown by WORKERS.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from remora.netqueue.entries import WORKER_FORGET_FACTOR
from tests.support.cluster import Cluster
from tests.support.waits import wait_for

HEALTH = 0.5  # queue.health_check_interval in these tests


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path / "cluster", settings={"queue.health_check_interval": "500ms"})
    c.start_queue()
    yield c
    c.stop()
    c.close()


def listed(cluster: Cluster) -> dict[str, dict]:
    """``remora queue workers --json`` as the CLI prints it, by worker id."""
    out = subprocess.run(
        [sys.executable, "-m", "remora", "queue", "workers", "--json"],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return {w["id"]: w for w in json.loads(out.stdout)}


def test_a_cleanly_stopped_worker_leaves_the_list_at_once(cluster):
    worker = cluster.start_worker("w-clean", concurrency=2)
    cluster.wait_workers(1)
    row = listed(cluster)["w-clean"]
    assert row["active"] and row["concurrency"] == 2
    res = row["resources"]
    assert res["rss_bytes"] > 1_000_000 and res["threads"] >= 2 and res["open_files"] >= 3 and res["cpu_seconds"] > 0
    assert res["ssh_connections"] == 0
    assert worker.stop() == 0
    stopped = time.monotonic()
    with cluster.queue_client() as q:
        wait_for(lambda: not any(w["id"] == "w-clean" for w in q.workers()), 2.0, 0.05, "the stopped worker to leave the list")
        assert q.stats()["workers"] == 0
    assert "w-clean" not in listed(cluster)
    assert time.monotonic() - stopped < 5


def test_a_killed_worker_shows_inactive_then_ages_out(cluster):
    worker = cluster.start_worker("w-killed", concurrency=1)
    cluster.wait_workers(1)
    worker.kill9()
    killed = time.monotonic()
    with cluster.queue_client() as q:

        def state() -> dict | None:
            return next((w for w in q.workers() if w["id"] == "w-killed"), None)

        wait_for(lambda: (state() or {}).get("active") is False, 5, 0.05, "the killed worker to show inactive")
        assert state() is not None  # inactive, still listed
        assert q.stats()["active_workers"] == 0
        assert time.monotonic() - killed < WORKER_FORGET_FACTOR * HEALTH
        wait_for(lambda: state() is None, WORKER_FORGET_FACTOR * HEALTH + 5, 0.1, "the killed worker to be forgotten")
        assert time.monotonic() - killed >= WORKER_FORGET_FACTOR * HEALTH - 0.5
        assert q.stats()["workers"] == 0
