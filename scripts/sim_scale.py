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
the 2-core development machine by scripts/bench_queue.py, bench_worker.py and
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

# Per-job costs in seconds (or seconds per byte), measured on this machine.
DEFAULT_COSTS = {
    "queue_cpu": 1 / 9000,  # queue server CPU per job (put + reserve/ack in one round trip + touches)
    "db_sqlite": 1 / 900,  # SQLite write cost per job (insert, claim, output, finish) — one writer at a time
    "db_pg": 1 / 700,  # PostgreSQL write cost per job, per database core
    "db_per_byte": 1 / 60e6,  # output bytes into the database
    "worker_cpu_ssh": 1 / 330,  # worker process CPU per SSH job (channel open/exec/close, DB writes)
    "ssh_latency": 0.0036,  # wall time of a trivial command on a pooled, TCP_NODELAY connection
    "ssh_bandwidth": 160e6,  # bytes/s one channel drains
    "api_cpu": 1 / 600,  # API process CPU per submitted job
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
    mean_out = sum(c.share * c.output for c in mix)
    mean_wall = sum(c.share * (costs["ssh_latency"] + s.rtt * 2 + c.duration + c.output / costs["ssh_bandwidth"]) for c in mix)
    worker_cpu = costs["worker_cpu_ssh"] + mean_out * costs["db_per_byte"]
    per_worker = min(s.threads / mean_wall, 1 / worker_cpu)
    db_job = (costs["db_sqlite"] if s.database == "sqlite" else costs["db_pg"]) + mean_out * costs["db_per_byte"]
    db_parallel = 1 if s.database == "sqlite" else s.db_cores
    per_server = s.per_server if s.per_server > 0 else s.threads * s.workers
    return {
        "queue": 1 / costs["queue_cpu"],
        "database": db_parallel / db_job,
        "workers": s.workers * per_worker,
        "servers": s.servers * per_server / mean_wall,
        "api": s.api_instances / costs["api_cpu"],
    }


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
            scenario = Scenario(w, args.threads, m, args.per_server, args.database, args.db_cores, args.api_instances, args.rtt_ms / 1000)
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
