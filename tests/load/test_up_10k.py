"""10,000 jobs (local executor, `true`) through `remora up` with 8 worker threads plus two separate
`remora worker` processes, all on one SQLite database.

Submission uses fan-outs: 100 servers of auth_type local share a tag, so one
POST makes 100 jobs.  Checked: every job completes, the queue drains, no
process logs `database is locked`, and the peak RSS of each process (sampled
every 0.5 s from /proc) stays bounded; the figures are printed.
"""

from __future__ import annotations

import threading
import time

import pytest

from remora.client import Client
from remora.netqueue.client import QueueClient
from tests.support.cluster import local_fleet, make_remora, rss_kib
from tests.support.waits import wait_for

pytestmark = pytest.mark.slow

TOTAL = 10_000
FANOUT = 100
RSS_LIMIT_MIB = 400


def test_10000_jobs_through_remora_up_and_two_more_workers_on_sqlite(tmp_path):
    remora = make_remora("checkout", tmp_path, None)
    remora.env["REMORA_LOGGING_LEVEL"] = "info"
    remora.start(workers=8)
    try:
        token = (remora.data_dir / "admin.token").read_text().strip()
        client = Client(remora.url, token, timeout=60)
        local_fleet(client, FANOUT, "fleet")
        workers = [remora.worker(f"extra-{n}", concurrency=4) for n in range(2)]
        pids = {"remora up": remora.proc.pid, "worker extra-0": workers[0].pid, "worker extra-1": workers[1].pid}  # type: ignore[union-attr]
        peak = dict.fromkeys(pids, 0)
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.wait(0.5):
                for name, pid in pids.items():
                    peak[name] = max(peak[name], rss_kib(pid))

        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.monotonic()
        submitted = 0
        for _ in range(TOTAL // FANOUT):
            submitted += len(client.submit({"command": "true", "servers": ["tag:fleet"], "timeout": 60}))
        submit_s = time.monotonic() - started
        assert submitted == TOTAL

        def finished() -> dict | None:
            info = client.system_info()
            return info if info["completed_jobs"] + info["failed_jobs"] + info["canceled_jobs"] >= TOTAL else None

        info = wait_for(finished, 240, interval=1.0, what=f"{TOTAL} jobs to finish")
        total_s = time.monotonic() - started
        sampling.set()
        sampler.join()
        assert info["completed_jobs"] == TOTAL, info
        queue_token = (remora.data_dir / "queue.token").read_text().strip()
        with QueueClient(f"127.0.0.1:{remora.queue_port}", token=queue_token) as q:
            wait_for(lambda: q.stats()["queue_depth"] == 0 and not q.list_jobs(limit=1), 20, what="the queue to drain")
            by_worker = {w["id"]: w["done"] for w in q.workers()}
        assert all(by_worker.get(f"extra-{n}", 0) > 0 for n in range(2)), by_worker  # the separate processes really worked
        logs = remora.logs() + "".join(w.logs() for w in workers)
        assert "database is locked" not in logs.lower()
        assert all(kib / 1024 < RSS_LIMIT_MIB for kib in peak.values()), peak
        print(
            f"\n{TOTAL} jobs: submitted in {submit_s:.1f}s, all completed in {total_s:.1f}s ({TOTAL / total_s:.0f} jobs/s); "
            f"done per worker {by_worker}; peak RSS MiB " + ", ".join(f"{name} {kib / 1024:.0f}" for name, kib in peak.items())
        )
    finally:
        remora.stop()  # the extra workers first
