"""`remora queue serve` busy-polls while a client streams requests back to back, and not for a sparse one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from remora.netqueue.client import QueueClient
from tests.fixtures.services import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-queue-token"


def stats(port: int) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/stats", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        return json.load(resp)["server"]


def serve(tmp_path: Path, port: int, *extra: str, env_extra: dict[str, str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REMORA_QUEUE_TOKEN": TOKEN, "HOME": str(tmp_path), **(env_extra or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "remora", "queue", "serve", "--port", str(port), "--data-dir", str(tmp_path / "q"), *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    with QueueClient(f"127.0.0.1:{port}", token=TOKEN) as client:
        wait_for(lambda: proc.poll() is not None or client.ping() >= 0, 15, what="queue server")
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    return proc


def test_spins_for_a_streaming_client_not_for_a_sparse_one(tmp_path):
    port = free_port()
    proc = serve(tmp_path, port, "--fsync", "never", env_extra={"REMORA_QUEUE_BUSY_POLL": "2ms"})
    try:
        assert stats(port)["window_us"] == 2000
        with QueueClient(f"127.0.0.1:{port}", token=TOKEN) as client:
            for i in range(400):
                assert client.put(f"j{i}", body=b"x" * 100)
            got = client.reserve(["job_queue"], timeout=0)
            while got:
                got = client.ack_reserve(got[0].id, ["job_queue"], timeout=0)
        after_burst = stats(port)
        # the client came back within the window most of the time: those requests were caught spinning
        assert after_burst["spin_hits"] >= 200, after_burst
        # a sparse client (a request every 30 ms, well past 5 windows): the server sleeps, it does not spin
        with QueueClient(f"127.0.0.1:{port}", token=TOKEN) as client:
            for _ in range(20):
                client.ping()
                time.sleep(0.03)  # the workload's pacing
        sparse = stats(port)
        assert sparse["spin_hits"] - after_burst["spin_hits"] <= 6, sparse  # connection set-up: HELLO follows the accept
        assert sparse["spin_misses"] - after_burst["spin_misses"] <= 4, sparse
    finally:
        proc.terminate()
        proc.wait(15)


def test_busy_poll_flag_zero_turns_it_off(tmp_path):
    port = free_port()
    proc = serve(tmp_path, port, "--fsync", "never", "--busy-poll", "0")
    try:
        with QueueClient(f"127.0.0.1:{port}", token=TOKEN) as client:
            for i in range(300):
                assert client.put(f"j{i}")
        after = stats(port)
        assert (after["window_us"], after["spin_hits"], after["spin_misses"]) == (0, 0, 0)
    finally:
        proc.terminate()
        proc.wait(15)
