#!/usr/bin/env python3
"""Measure per-job costs of the whole path on this machine, for scripts/sim_scale.py.

Starts a real cluster as separate processes (``remora queue serve`` with
fsync always, one ``remora api``, K ``remora worker`` processes x T threads)
on SQLite or a throw-away PostgreSQL, then:

1. submit phase: N trivial jobs (``echo``) through the API with 4 keep-alive
   clients, no worker running -> submissions/s and CPU seconds per job of the
   API, the queue and the database server;
2. run phase: start the K workers and drain -> jobs/s from the first job's
   start to the last job's finish (database timestamps, so process start-up
   is excluded), CPU seconds per job of the workers (start-up CPU of an idle
   worker subtracted), of the jobs' own processes, of the queue and of the
   database, and the mean wall time of one job.

Every process is started and stopped here (by PID); run time is bounded by
``--timeout``.  Prints one JSON object with ``--json``.

Example:
    python scripts/bench_cluster.py --workers 2 --threads 4 --jobs 600 --database postgres --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, children: bool = True) -> float:
    """utime+stime (+ reaped children's) of one process, in seconds; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + ((int(fields[13]) + int(fields[14])) if children else 0)
    return ticks / TICK


def children_cpu(pid: int) -> float:
    """Reaped children's CPU (the jobs' processes for a local-executor worker)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[13]) + int(fields[14])) / TICK


def tree_cpu(root_pid: int) -> float:
    """CPU of a process and its live children (PostgreSQL: postmaster + backends; exited ones are in cutime)."""
    total = cpu_seconds(root_pid)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == root_pid:
                total += cpu_seconds(int(entry.name))
    return total


def start_database(kind: str, root: Path) -> tuple[str, int | None, object]:
    if kind == "sqlite":
        return f"sqlite:///{root / 'remora.db'}", None, None
    from tests.support.postgres import start_postgres

    gen = start_postgres()
    server = next(gen)
    url = server.new_database("remora_bench")
    pid = int((server.datadir / "postmaster.pid").read_text().split()[0]) if server.datadir else None
    return url, pid, gen


def submit(ports: list[int], token: str, server_id: str, jobs: int, clients: int) -> float:
    from tests.support.http import Http

    local = threading.local()

    def one(i: int) -> None:
        client = local.__dict__.setdefault("client", Http(ports[i % len(ports)], token))
        status, body = client.request("POST", "/api/v1/jobs", {"command": f"echo bench-{i}", "server_id": server_id})
        if status != 201:
            raise RuntimeError(f"submit failed: {status} {body}")

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(jobs)))
    return time.perf_counter() - started


def add_ssh_server(port: int, token: str) -> str:
    from tests.support.http import Http
    from tests.support.sshd import start_sshd

    sshd = start_sshd()
    body = {
        "name": "bench-ssh",
        "hostname": sshd.host,
        "port": sshd.port,
        "user": sshd.user,
        "auth_type": "key",
        "private_key": sshd.private_key,
    }
    status, reply = Http(port, token).request("POST", "/api/v1/servers", body)
    if status != 201:
        raise RuntimeError(f"adding the SSH server failed: {status} {reply}")
    add_ssh_server.sshd = sshd  # type: ignore[attr-defined]
    return str(reply["id"])


def run(args: argparse.Namespace) -> dict:
    from remora import auth, models, services
    from remora.models import Job
    from tests.support.cluster import QUEUE_TOKEN, Cluster

    root = Path(tempfile.mkdtemp(prefix="remora-bench-worker-"))
    url, pg_pid, pg_gen = start_database(args.database, root)
    models.init_db(url)
    cluster = Cluster(root, url, settings={"logging.level": "warning"}, queue_token=QUEUE_TOKEN)
    db_cpu = (lambda: tree_cpu(pg_pid)) if pg_pid else (lambda: 0.0)
    try:
        queue = cluster.start_queue(fsync="always")
        api = cluster.start_api()
        token = auth.create_token("bench", "admin")[1]
        server_id = add_ssh_server(cluster.api_ports[0], token) if args.executor == "ssh" else services.ensure_local_server().id
        qpid, apid = queue.pid, api.pid
        idle = cluster.spawn("idle-worker", "worker", "--concurrency", "1", "--id", "idle", "--queue", "unused")
        cluster.wait_workers(1)
        time.sleep(1.0)
        startup_cpu = cpu_seconds(idle.pid)
        idle.stop()

        c0 = {"api": cpu_seconds(apid), "queue": cpu_seconds(qpid), "db": db_cpu()}
        submit_s = submit(cluster.api_ports, token, server_id, args.jobs, args.clients)
        c1 = {"api": cpu_seconds(apid), "queue": cpu_seconds(qpid), "db": db_cpu()}

        workers = [cluster.start_worker(f"bw{n + 1}", concurrency=args.threads) for n in range(args.workers)]
        deadline = time.monotonic() + args.timeout
        while Job.select().where(Job.status.in_(["queued", "running"])).count():
            if time.monotonic() > deadline:
                raise RuntimeError("timed out waiting for the jobs to finish")
            time.sleep(0.2)
        wpids = [w.pid for w in workers]
        worker_cpu = sum(cpu_seconds(pid, children=False) for pid in wpids) - startup_cpu * args.workers
        job_cpu = sum(children_cpu(pid) for pid in wpids)
        c2 = {"api": cpu_seconds(apid), "queue": cpu_seconds(qpid), "db": db_cpu()}
        rows = list(Job.select(Job.status, Job.started_at, Job.finished_at))
        failed = sum(1 for r in rows if r.status != "completed")
        first = min(r.started_at for r in rows)
        last = max(r.finished_at for r in rows)
        window = (last - first).total_seconds()
        mean_wall = sum((r.finished_at - r.started_at).total_seconds() for r in rows) / len(rows)
    finally:
        cluster.stop()
        models.close_db()
        sshd = getattr(add_ssh_server, "sshd", None)
        if sshd is not None:
            sshd.stop()
        if pg_gen is not None:
            pg_gen.close()  # type: ignore[attr-defined]
    n = args.jobs
    return {
        "config": {**vars(args), "cpus": os.cpu_count()},
        "submit": {
            "seconds": round(submit_s, 3),
            "jobs_per_s": round(n / submit_s, 1),
            "api_cpu_per_job_ms": round(1000 * (c1["api"] - c0["api"]) / n, 3),
            "queue_cpu_per_job_ms": round(1000 * (c1["queue"] - c0["queue"]) / n, 3),
            "db_cpu_per_job_ms": round(1000 * (c1["db"] - c0["db"]) / n, 3),
        },
        "run": {
            "seconds": round(window, 3),
            "jobs_per_s": round(n / window, 1),
            "failed": failed,
            "mean_job_wall_ms": round(1000 * mean_wall, 2),
            "worker_cpu_per_job_ms": round(1000 * worker_cpu / n, 3),
            "job_process_cpu_per_job_ms": round(1000 * job_cpu / n, 3),
            "queue_cpu_per_job_ms": round(1000 * (c2["queue"] - c1["queue"]) / n, 3),
            "db_cpu_per_job_ms": round(1000 * (c2["db"] - c1["db"]) / n, 3),
            "api_cpu_during_run_ms_per_job": round(1000 * (c2["api"] - c1["api"]) / n, 3),
            "worker_startup_cpu_s": round(startup_cpu, 3),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker (worker.concurrency)")
    parser.add_argument("--jobs", type=int, default=400, help="jobs to submit and run")
    parser.add_argument("--clients", type=int, default=4, help="concurrent submitting clients")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--executor", choices=["local", "ssh"], default="local", help="local subprocesses or the test sshd")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds of running")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        sub, ran = result["submit"], result["run"]
        print(f"submit: {sub['jobs_per_s']} jobs/s (API {sub['api_cpu_per_job_ms']} ms CPU/job)")
        print(
            f"run:    {ran['jobs_per_s']} jobs/s (worker {ran['worker_cpu_per_job_ms']} ms CPU/job, wall {ran['mean_job_wall_ms']} ms/job)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
