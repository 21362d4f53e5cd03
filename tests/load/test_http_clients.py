"""200 concurrent HTTP clients polling job logs and listing jobs while jobs run.

`remora up` runs as its own process (so the clients' threads do not share its
interpreter); 200 client threads each keep one HTTP/1.1 connection and poll
every 1 s (as an open dashboard does) for 8 s, alternating an incremental log read of a running job and
a job listing.  Every answer must be a 200 with the expected shape; the p50 /
p99 latencies are printed.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time

import pytest

from remora.client import Client
from tests.support.cluster import make_remora

pytestmark = pytest.mark.slow

CLIENTS = 200
DURATION = 8.0
INTERVAL = 1.0  # like an open dashboard: it polls logs and the job list about once a second


def test_200_clients_poll_logs_and_list_jobs_without_errors(tmp_path):
    remora = make_remora("checkout", tmp_path, None)
    remora.start(workers=4)
    try:
        token = (remora.data_dir / "admin.token").read_text().strip()
        client = Client(remora.url, token)
        local = next(s["id"] for s in client.servers() if s["name"] == "local")
        chatty = "for i in $(seq 1 400); do echo line-$i; sleep 0.05; done"
        running = [client.submit({"command": chatty, "server_id": local})[0]["id"] for _ in range(4)]
        for _ in range(20):
            client.submit({"command": "echo done", "server_id": local})
        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        start_gate = threading.Barrier(CLIENTS)

        def poll(n: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", remora.port, timeout=30)
            headers = {"Authorization": f"Bearer {token}"}
            job_id = running[n % len(running)]
            offset = 0
            start_gate.wait()
            time.sleep(random.random() * INTERVAL)  # spread the clients over the interval
            end = time.monotonic() + DURATION
            while time.monotonic() < end:
                logs = random.random() < 0.5
                path = f"/api/v1/jobs/{job_id}/logs?stdout_offset={offset}&stderr_offset=0" if logs else "/api/v1/jobs?limit=20"
                t0 = time.perf_counter()
                try:
                    conn.request("GET", path, headers=headers)
                    resp = conn.getresponse()
                    body = resp.read()
                    took = time.perf_counter() - t0
                    data = json.loads(body)
                    if resp.status != 200:
                        raise AssertionError(f"{resp.status} {body[:200]!r}")
                    if logs:
                        offset = data["next_stdout_offset"]
                    elif "jobs" not in data:
                        raise AssertionError(f"no jobs in {body[:200]!r}")
                except Exception as exc:
                    with lock:
                        errors.append(f"{path}: {type(exc).__name__}: {exc}")
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", remora.port, timeout=30)
                    continue
                with lock:
                    latencies.append(took)
                time.sleep(max(0.0, INTERVAL - took))
            conn.close()

        threads = [threading.Thread(target=poll, args=(n,)) for n in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(DURATION + 60)
        for job_id in running:
            client.cancel(job_id)
        assert not errors, errors[:5]
        latencies.sort()
        p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
        rate = len(latencies) / DURATION
        print(
            f"\n{CLIENTS} clients, {len(latencies)} requests in {DURATION:.0f}s ({rate:.0f}/s): p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
        )
        assert len(latencies) > CLIENTS * DURATION / INTERVAL / 4  # the server kept up with the polling, roughly
        assert p99 < 5.0
    finally:
        remora.stop(timeout=30)
