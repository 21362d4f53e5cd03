#!/usr/bin/env python3
"""Benchmark the worker end to end: queue -> worker (4 threads) -> SSH/local -> database.

Starts a NetQueue server and a worker as real processes (``python -m remora``),
a loopback OpenSSH sshd (the test fixture's: generated keys, a plain user),
and SQLite in a temp dir.  Measures, as the median of ``--repeat`` runs:

- ``ssh_jobs_per_s``: N trivial jobs (``true``) queued at once, from the first
  PUT to the last ``completed`` row (output stored), over pooled SSH;
- ``ssh_latency_p50_ms`` / ``p99``: queue-to-start latency (created_at ->
  started_at) of jobs submitted one by one at ``--rate`` per second;
- ``local_jobs_per_s``: the same N through the local executor;
- ``output_mb_per_s`` and ``worker_peak_rss_mib``: one SSH job printing
  ``--output-mb`` MB to stdout, from start to finish with every byte in the
  database; the worker's peak RSS (VmHWM) over the whole run.

Each throughput figure comes with the CPU milliseconds per job of the worker
and queue processes (``*_cpu_ms_per_job``, from /proc/<pid>/stat: far less
sensitive to other load on the machine than jobs/s) and the load average.

Example: python scripts/bench_worker.py --json --jobs 1000 --only-throughput
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from remora import models  # noqa: E402
from remora.config import Settings, with_overrides  # noqa: E402
from remora.crypto import SecretBox  # noqa: E402
from remora.models import AuthType, Job, Server  # noqa: E402
from remora.netqueue.client import PutItem, QueueClient  # noqa: E402
from tests.support.sshd import start_sshd  # noqa: E402
from tests.support.waits import free_port, wait_port  # noqa: E402


def _config(tmp: Path, port: int, output_mb: int) -> Path:
    path = tmp / "remora.toml"
    path.write_text(
        f"""[database]
url = "sqlite:///{tmp / "remora.db"}"
data_dir = "{tmp}"
[queue]
addr = "127.0.0.1:{port}"
data_dir = "{tmp / "queue"}"
[worker]
concurrency = 4
[output]
max_bytes = {(output_mb + 16) * 1024 * 1024}
[security]
secret_key = "bench-secret"
[logging]
level = "warning"
"""
    )
    return path


def _spawn(config: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # cwd: ``python -m`` puts the working directory first on sys.path, ahead of PYTHONPATH
    return subprocess.Popen([sys.executable, "-m", "remora", "-c", str(config), *args], env=env, stdin=subprocess.DEVNULL, cwd=REPO)


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU milliseconds per job of the worker and queue processes, over the runs measured."""

    def __init__(self, **pids: int) -> None:
        self.pids = pids
        self.samples: dict[str, list[float]] = {name: [] for name in pids}

    def run(self, fn, n: int) -> float:  # type: ignore[no-untyped-def]
        before = {name: _cpu_seconds(pid) for name, pid in self.pids.items()}
        value = fn()
        for name, pid in self.pids.items():
            self.samples[name].append((_cpu_seconds(pid) - before[name]) * 1000 / n)
        return value

    def medians(self, prefix: str) -> dict[str, float]:
        out = {f"{prefix}_{name}_cpu_ms_per_job": round(statistics.median(v), 3) for name, v in self.samples.items() if v}
        for values in self.samples.values():
            values.clear()
        return out


def _submit(q: QueueClient, server: Server, n: int, command: str = "true") -> tuple[list[str], float]:
    body = json.dumps({"server_id": server.id, "max_concurrent": 0}, separators=(",", ":")).encode()
    now = models.utcnow()
    rows = [{"id": models.new_id(), "server": server.id, "command": command, "created_at": now, "updated_at": now} for _ in range(n)]
    with models.write_transaction():
        for i in range(0, n, 200):
            Job.insert_many(rows[i : i + 200]).execute()
    ids = [r["id"] for r in rows]
    started = time.perf_counter()
    for i in range(0, n, 500):
        q.put_many([PutItem(job_id=j, ttr=30.0, body=body, group=server.id) for j in ids[i : i + 500]])
    return ids, started


def _wait_done(ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    done_states = ("completed", "failed", "canceled")
    while time.monotonic() < deadline:
        done = Job.select().where(Job.id.in_(ids), Job.status.in_(done_states)).count()
        if done == len(ids):
            failed = Job.select().where(Job.id.in_(ids), Job.status != "completed").first()
            if failed:
                raise SystemExit(f"job {failed.id} ended {failed.status}: {failed.error}")
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {len(ids)} jobs")


def throughput(q: QueueClient, server: Server, n: int, command: str = "true") -> float:
    ids, started = _submit(q, server, n, command)
    _wait_done(ids, 120)
    return n / (time.perf_counter() - started)


def latency(q: QueueClient, server: Server, n: int, rate: float) -> tuple[float, float]:
    body = json.dumps({"server_id": server.id, "max_concurrent": 0}, separators=(",", ":")).encode()
    ids = []
    for i in range(n):
        job = Job.create(server=server, command="true")
        q.put(job.id, ttr=30.0, body=body, group=server.id)
        ids.append(job.id)
        time.sleep(max(0.0, 1 / rate - 0.001) if i < n - 1 else 0)
    _wait_done(ids, 60)
    waits = sorted((j.started_at - j.created_at).total_seconds() * 1000 for j in Job.select().where(Job.id.in_(ids)))
    return statistics.median(waits), waits[min(len(waits) - 1, int(len(waits) * 0.99))]


def bulk_output(q: QueueClient, server: Server, mb: int) -> float:
    (job_id,), _ = _submit(q, server, 1, command=f"head -c {mb * 1_000_000} /dev/zero")
    _wait_done([job_id], 300)
    job = Job.get_by_id(job_id)
    if job.stdout_bytes != mb * 1_000_000:
        raise SystemExit(f"bulk job stored {job.stdout_bytes} bytes, expected {mb * 1_000_000}")
    return mb / (job.finished_at - job.started_at).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--jobs", type=int, default=1000, help="trivial jobs per throughput run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (the median is reported)")
    parser.add_argument("--rate", type=float, default=100.0, help="submissions per second in the latency run")
    parser.add_argument("--output-mb", type=int, default=200, help="MB printed by the bulk-output job")
    parser.add_argument("--command", default="true", help="the trivial job of the throughput runs")
    parser.add_argument("--only-throughput", action="store_true", help="skip the latency and bulk-output runs")
    parser.add_argument("--skip-local", action="store_true", help="skip the local-executor runs")
    parser.add_argument("--skip-ssh", action="store_true", help="skip the SSH throughput runs")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="remora-bench-"))
    sshd = start_sshd("127.0.0.1")
    port = free_port()
    config = _config(tmp, port, args.output_mb)
    queue_proc = worker_proc = None
    try:
        models.init_db(f"sqlite:///{tmp / 'remora.db'}")
        settings = with_overrides(Settings(), {"database.data_dir": str(tmp), "security.secret_key": "bench-secret"})
        box = SecretBox.from_settings(settings)
        ssh_server = Server.create(
            name="bench-ssh",
            hostname=sshd.host,
            port=sshd.port,
            user=sshd.user,
            auth_type=AuthType.KEY.value,
            private_key=box.encrypt(sshd.private_key),
        )
        local = Server.create(name="local", hostname="localhost", auth_type=AuthType.LOCAL.value)
        queue_proc = _spawn(config, "queue", "serve")
        wait_port("127.0.0.1", port, 15)
        worker_proc = _spawn(config, "worker", "--concurrency", "4", "--id", "bench-worker")
        q = QueueClient(f"127.0.0.1:{port}", token=(tmp / "queue.token").read_text().strip())  # made by `queue serve`
        throughput(q, ssh_server, 20)  # warm up: connection, imports
        throughput(q, local, 20)
        cpu = CpuMeter(worker=worker_proc.pid, queue=queue_proc.pid)
        result: dict = {
            "command": args.command,
            "jobs": args.jobs,
            "repeat": args.repeat,
            "worker_threads": 4,
            "loadavg_start": os.getloadavg()[0],
        }
        if not args.skip_ssh:
            ssh_rates = [cpu.run(lambda: throughput(q, ssh_server, args.jobs, args.command), args.jobs) for _ in range(args.repeat)]
            result["ssh_jobs_per_s"] = round(statistics.median(ssh_rates), 1)
            result["ssh_jobs_per_s_runs"] = [round(r, 1) for r in ssh_rates]
            result.update(cpu.medians("ssh"))
        if not args.skip_local:
            local_rates = [cpu.run(lambda: throughput(q, local, args.jobs, args.command), args.jobs) for _ in range(args.repeat)]
            result["local_jobs_per_s"] = round(statistics.median(local_rates), 1)
            result["local_jobs_per_s_runs"] = [round(r, 1) for r in local_rates]
            result.update(cpu.medians("local"))
        if not args.only_throughput:
            lat = [latency(q, ssh_server, 200, args.rate) for _ in range(args.repeat)]
            result["ssh_latency_p50_ms"] = round(statistics.median(p50 for p50, _ in lat), 2)
            result["ssh_latency_p99_ms"] = round(statistics.median(p99 for _, p99 in lat), 2)
            rss_before_bulk = _peak_rss_mib(worker_proc.pid)
            bulk = [bulk_output(q, ssh_server, args.output_mb) for _ in range(args.repeat)]
            result["output_mb"] = args.output_mb
            result["output_mb_per_s"] = round(statistics.median(bulk), 1)
            result["output_mb_per_s_runs"] = [round(r, 1) for r in bulk]
            result["worker_peak_rss_mib_before_bulk"] = round(rss_before_bulk, 1)
        result["worker_peak_rss_mib"] = round(_peak_rss_mib(worker_proc.pid), 1)
        result["ssh_connections_opened"] = sshd.accepted_connections()
        result["loadavg_end"] = os.getloadavg()[0]
        q.close()
    except BaseException:
        log_tail = sshd.log_path.read_text(errors="replace").splitlines()[-40:] if sshd.log_path.exists() else []
        sys.stderr.write("sshd log (last lines):\n" + "\n".join(log_tail) + "\n")
        raise
    finally:
        for proc in (worker_proc, queue_proc):
            if proc and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        sshd.stop()
        shutil.rmtree(sshd.workdir, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:32} {value}")


if __name__ == "__main__":
    main()
