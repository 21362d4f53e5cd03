#!/usr/bin/env python3
"""Predict Remora's throughput at scale from per-job costs measured on one machine.

A job crosses four shared resources; each caps the whole system:

- the queue server (one process: PUT + RESERVE + ACK + heartbeat TOUCHes per job),
- the database (job insert, claim, output chunks, final update: serialised on
  SQLite, spread over the server's cores on PostgreSQL),
- the workers (each a Python process: per-job CPU for the SSH channel and the
  database writes, plus `threads` jobs in flight at once),
- the servers themselves (each runs at most `per_server` jobs at once).

Throughput is the smallest of the four capacities and the first bottleneck is
the one that sets it.  The per-job costs default to the figures measured on
the 2-core development machine by scripts/bench_queue.py, bench_cluster.py and
bench_api.py (see docs/scaling.md); pass `--calibration FILE.json` to use
others.  `--json` prints the whole grid.

Example:
    python scripts/sim_scale.py --workers 1,10,100 --servers 10,100,1000 --mix "0.9:0:2KB,0.1:30:1MB"
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass

# Per-job costs in seconds (or seconds per byte), measured on this machine (2 cores) by
# scripts/bench_cluster.py, bench_queue.py and bench_api.py: see docs/scaling.md for the runs.
DEFAULT_COSTS = {
    "queue_cpu": 0.0010,  # queue server CPU per job: PUT 0.3 ms + RESERVE/ACK/TOUCH 0.7 ms
    "db_sqlite": 0.0,  # SQLite: its CPU is inside the API and worker processes (counted there)
    "db_sqlite_serial": 0.0025,  # SQLite: time the one writer lock is held per job (estimate, not measured separately)
    "db_pg": 0.0029,  # PostgreSQL server CPU per job: insert 0.55 ms + claim, output, finish 2.35 ms
    "db_per_byte": 1 / 60e6,  # output bytes into the database
    "worker_cpu_ssh": 0.0055,  # worker process CPU per trivial SSH job (paramiko channel, DB writes)
    "worker_cpu_local": 0.0046,  # worker process CPU per trivial local job (fork/exec, pipes, DB writes)
    "job_cpu_local": 0.0032,  # the local job's own processes (sh, stdbuf, echo) on the worker's host
    "ssh_latency": 0.042,  # one worker thread's cycle per trivial SSH job: reserve, claim, exec, output, finish, ack
    "local_latency": 0.043,  # the same for the local executor
    "ssh_bandwidth": 160e6,  # bytes/s one channel drains
    "api_cpu": 0.0019,  # API process CPU per submitted job
}


@dataclass
class JobClass:
    share: float
    duration: float  # seconds the command itself runs
    output: int  # bytes it prints


@dataclass
class Scenario:
    workers: int
    threads: int
    servers: int
    per_server: int
    database: str
    db_cores: int
    api_instances: int
    rtt: float
    executor: str = "ssh"
    host_cores: int = 0  # > 0: every process shares this many cores (one host), as in a local measurement


def parse_size(text: str) -> int:
    text = text.strip().upper()
    for suffix, mult in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10), ("B", 1)):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * mult)
    return int(text)


def parse_mix(text: str) -> list[JobClass]:
    classes = []
    for part in text.split(","):
        share, duration, output = part.split(":")
        classes.append(JobClass(float(share), float(duration), parse_size(output)))
    total = sum(c.share for c in classes)
    return [JobClass(c.share / total, c.duration, c.output) for c in classes]


def capacities(s: Scenario, mix: list[JobClass], costs: dict[str, float]) -> dict[str, float]:
    """Jobs/s each shared resource can sustain in scenario ``s``."""
    local = s.executor == "local"
    mean_out = sum(c.share * c.output for c in mix)
    cycle = costs["local_latency" if local else "ssh_latency"]
    mean_wall = sum(c.share * (cycle + s.rtt * 2 + c.duration + c.output / costs["ssh_bandwidth"]) for c in mix)
    worker_cpu = costs["worker_cpu_local" if local else "worker_cpu_ssh"] + mean_out * costs["db_per_byte"]
    per_worker = min(s.threads / mean_wall, 1 / worker_cpu)
    if s.database == "sqlite":
        db = 1 / (costs["db_sqlite_serial"] + mean_out * costs["db_per_byte"])
    else:
        db = s.db_cores / (costs["db_pg"] + mean_out * costs["db_per_byte"])
    per_server = s.per_server if s.per_server > 0 else s.threads * s.workers
    caps = {
        "queue": 1 / costs["queue_cpu"],
        "database": db,
        "workers": s.workers * per_worker,
        "servers": math.inf if local else s.servers * per_server / mean_wall,
        "api": s.api_instances / costs["api_cpu"] if s.api_instances > 0 else math.inf,
    }
    if s.host_cores > 0:  # everything on one host: the sum of every process's CPU per job shares its cores
        db_cpu = costs["db_sqlite"] if s.database == "sqlite" else costs["db_pg"]
        job_cpu = costs["job_cpu_local"] if local else 0.0
        caps["host"] = s.host_cores / (costs["queue_cpu"] + db_cpu + worker_cpu + job_cpu + costs["api_cpu"] * (s.api_instances > 0))
    return caps


def predict(s: Scenario, mix: list[JobClass], costs: dict[str, float]) -> dict:
    caps = capacities(s, mix, costs)
    bottleneck = min(caps, key=lambda k: caps[k])
    return {
        **asdict(s),
        "throughput": round(caps[bottleneck], 3),
        "bottleneck": bottleneck,
        "capacities": {k: (round(v, 3) if math.isfinite(v) else None) for k, v in caps.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2,5,10,20,50,100", help="worker processes (comma list)")
    parser.add_argument("--servers", default="1,10,100,1000", help="servers (comma list)")
    parser.add_argument("--threads", type=int, default=5, help="threads per worker (worker.concurrency)")
    parser.add_argument("--per-server", type=int, default=0, help="max concurrent jobs per server (0: unlimited)")
    parser.add_argument("--mix", default="1:0:100B", help="job classes share:seconds:output, comma separated")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--db-cores", type=int, default=8)
    parser.add_argument("--api-instances", type=int, default=2)
    parser.add_argument("--rtt-ms", type=float, default=0.0, help="network round trip to the servers")
    parser.add_argument("--executor", choices=["ssh", "local"], default="ssh", help="how jobs run (local: on the worker's host)")
    parser.add_argument("--host-cores", type=int, default=0, help="all processes share this many cores (0: separate machines)")
    parser.add_argument("--no-api", action="store_true", help="jobs are already submitted (drain only): leave the API out")
    parser.add_argument("--calibration", help="JSON file overriding per-job costs (keys of DEFAULT_COSTS)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    costs = dict(DEFAULT_COSTS)
    if args.calibration:
        with open(args.calibration) as fh:
            costs.update({k: float(v) for k, v in json.load(fh).items() if k in DEFAULT_COSTS})
    mix = parse_mix(args.mix)
    rows = []
    for w in (int(x) for x in args.workers.split(",")):
        for m in (int(x) for x in args.servers.split(",")):
            apis = 0 if args.no_api else args.api_instances
            scenario = Scenario(
                w, args.threads, m, args.per_server, args.database, args.db_cores, apis, args.rtt_ms / 1000, args.executor, args.host_cores
            )
            rows.append(predict(scenario, mix, costs))
    if args.json:
        json.dump({"costs": costs, "mix": [asdict(c) for c in mix], "predictions": rows}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    header = ["workers", "threads", "servers", "throughput", "bottleneck"]
    print("  ".join(f"{h:>10}" for h in header))
    for row in rows:
        print("  ".join(f"{row[h]!s:>10}" for h in header))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
