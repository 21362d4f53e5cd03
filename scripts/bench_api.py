#!/usr/bin/env python3
"""Benchmark the REST API on SQLite: job list latency over 100,000 jobs and sustained submissions.

Starts a real NetQueue (`remora queue serve`, no persistence) and a real API
(`remora api`) as subprocesses on free loopback ports, seeds the database,
then measures:
- GET /api/v1/jobs?limit=20 (one keep-alive client): p50 / p99 latency;
- the same with If-None-Match (a dashboard poll that hits its ETag);
- POST /api/v1/jobs from N concurrent keep-alive clients: jobs/s, and the
  CPU the API and queue processes spent per job (robust on a busy machine);
- the API process's RSS when it started, after the submissions, and after
  4 concurrent clients read 400 pages of 100 jobs from all over the table
  (each request thread's database connection keeps a page cache: this is
  where a cache too large per connection shows).

Targets: list p50 < 20 ms, p99 < 60 ms; submissions >= 500 jobs/s with 8 clients.
Everything is bounded (request counts and a duration) and cleaned up.

Usage: python scripts/bench_api.py [--jobs 100000] [--requests 500] [--clients 8] [--duration 5] [--json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open")


def seed(data_dir: Path, count: int) -> tuple[str, str]:
    """Create the schema, the local server, `count` jobs spread over statuses, and an admin token."""
    from remora import models, services
    from remora.models import Job

    models.init_db(f"sqlite:///{data_dir / 'remora.db'}")
    local = services.ensure_local_server()
    statuses = ["completed"] * 7 + ["failed", "canceled", "queued"]  # running jobs with old timestamps would be "lost"
    start = models.utcnow()
    rows = []
    for i in range(count):
        at = start.replace(microsecond=0) - __import__("datetime").timedelta(seconds=count - i)
        rows.append(
            {
                "id": models.new_id(),
                "command": "echo",
                "args": f"job number {i}",
                "server": local.id,
                "status": statuses[i % len(statuses)],
                "priority": 1 + i % 10,
                "stdout_bytes": 12,
                "created_at": at,
                "updated_at": at,
                "created_by": "bench",
            }
        )
    with models.write_transaction():
        for at in range(0, len(rows), 500):
            Job.insert_many(rows[at : at + 500]).execute()
    _, token = services.create_token("bench", "admin")
    models.close_db()
    return local.id, token


def timed_gets(port: int, token: str, n: int, etag: bool) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {token}"}
    if etag:
        conn.request("GET", "/api/v1/jobs?limit=20", headers=headers)
        resp = conn.getresponse()
        resp.read()
        headers["If-None-Match"] = resp.getheader("ETag") or ""
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        conn.request("GET", "/api/v1/jobs?limit=20", headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        samples.append(time.perf_counter() - started)
        expected = 304 if etag else 200
        if resp.status != expected:
            raise RuntimeError(f"GET answered {resp.status}: {body[:200]!r}")
    conn.close()
    return samples


def submit_load(port: int, token: str, server_id: str, clients: int, duration: float) -> dict:
    counts = [0] * clients
    errors = [0] * clients
    latencies: list[list[float]] = [[] for _ in range(clients)]
    body = json.dumps({"command": "echo", "args": "bench", "server_id": server_id}).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    deadline = time.monotonic() + duration

    def client(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < deadline:
            started = time.perf_counter()
            conn.request("POST", "/api/v1/jobs", body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            latencies[index].append(time.perf_counter() - started)
            if resp.status == 201:
                counts[index] += 1
            else:
                errors[index] += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    flat = sorted(x for lst in latencies for x in lst)
    return {
        "clients": clients,
        "seconds": round(elapsed, 3),
        "jobs_created": sum(counts),
        "errors": sum(errors),
        "jobs_per_second": round(sum(counts) / elapsed, 1),
        "p50_ms": round(flat[len(flat) // 2] * 1000, 2) if flat else None,
        "p99_ms": round(flat[int(len(flat) * 0.99)] * 1000, 2) if flat else None,
    }


def read_pages(port: int, token: str, clients: int = 4, per_client: int = 100, pages: int = 300) -> None:
    """``clients`` keep-alive clients at once, each reading ``per_client`` job pages of 100 picked from the first ``pages``."""
    headers = {"Authorization": f"Bearer {token}"}

    def client(index: int) -> None:
        rng = random.Random(index)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for _ in range(per_client):
            conn.request("GET", f"/api/v1/jobs?limit=100&page={rng.randint(1, pages)}", headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"GET answered {resp.status}: {body[:200]!r}")
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentiles(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {
        "requests": len(ordered),
        "p50_ms": round(ordered[len(ordered) // 2] * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="remora-bench-"))
    seed_started = time.monotonic()
    server_id, token = seed(tmp, args.jobs)
    seed_seconds = time.monotonic() - seed_started
    queue_port, api_port = free_port(), free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "REMORA_DATA_DIR": str(tmp),
        "REMORA_QUEUE_ADDR": f"127.0.0.1:{queue_port}",
        "REMORA_LOGGING_LEVEL": "warning",
        "REMORA_SECURITY_SECRET_KEY": "bench",
        "REMORA_CONFIG": "",
    }
    procs = []
    try:
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "remora", "queue", "serve", "--port", str(queue_port), "--no-persistence", "--max-size", "1000000"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_port(queue_port)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "remora", "api", "--host", "127.0.0.1", "--port", str(api_port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_port(api_port)
        timed_gets(api_port, token, 20, etag=False)  # warm up
        rss = {"started": rss_mib(procs[1].pid)}
        lists = percentiles(timed_gets(api_port, token, args.requests, etag=False))
        polls = percentiles(timed_gets(api_port, token, args.requests, etag=True))
        cpu_before = [cpu_seconds(proc.pid) for proc in procs]
        submits = submit_load(api_port, token, server_id, args.clients, args.duration)
        cpu_used = [cpu_seconds(proc.pid) - before for proc, before in zip(procs, cpu_before, strict=True)]
        created = max(1, submits["jobs_created"])
        submits["queue_cpu_ms_per_job"] = round(cpu_used[0] * 1000 / created, 3)
        submits["api_cpu_ms_per_job"] = round(cpu_used[1] * 1000 / created, 3)
        submits["api_cpu_percent_of_one_core"] = round(cpu_used[1] * 100 / submits["seconds"], 1)
        rss["after_submits"] = rss_mib(procs[1].pid)
        read_pages(api_port, token)
        rss["after_reading_pages"] = rss_mib(procs[1].pid)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "database": "sqlite",
        "jobs_in_db": args.jobs,
        "seed_seconds": round(seed_seconds, 2),
        "list_jobs_limit_20": lists,
        "list_jobs_etag_304": polls,
        "submit_jobs": submits,
        "api_rss_mib": rss,
        "targets": {
            "list_p50_ms": 20,
            "list_p99_ms": 60,
            "submit_jobs_per_second": 500,
            "met": lists["p50_ms"] < 20 and lists["p99_ms"] < 60 and submits["jobs_per_second"] >= 500,
        },
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
