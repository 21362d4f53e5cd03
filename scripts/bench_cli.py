#!/usr/bin/env python3
"""Command-line latency: `remora --help` and `remora submit -- true`, process start to exit.

Starts `remora up` (SQLite in a temp dir, free ports), then times each command
N times from the checkout (`python -m remora`) and from the zipapp
(`python3 dist/remora.pyz`, built with shiv when missing or with --build).
Prints one JSON object (milliseconds: min, median, p90, max) with --json.

Targets: submit < 400 ms with the zipapp; --help < 250 ms.

    python scripts/bench_cli.py --json
    python scripts/bench_cli.py --runs 20 --zipapp dist/remora.pyz --json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_zipapp(target: Path) -> None:
    shiv = Path(sys.executable).with_name("shiv")
    target.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(shiv), "-q", "--compressed", "--compile-pyc", "-c", "remora", "-o", str(target), "-p", "/usr/bin/env python3", str(ROOT)]
    subprocess.run(cmd, check=True, cwd=ROOT, timeout=600, capture_output=True)


def system_python() -> str:
    """A python3 outside any virtualenv (the zipapp must run on a bare interpreter)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if Path(candidate).exists():
            return candidate
    return shutil.which("python3") or sys.executable


def timed(cmd: list[str], env: dict[str, str], cwd: str, runs: int) -> dict[str, float]:
    samples, cpu = [], []
    subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, timeout=120)  # warm-up (zipapp extraction, page cache)
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        res = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, timeout=60)
        samples.append((time.perf_counter() - start) * 1000)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append((after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000)
        if res.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} exited {res.returncode}: {res.stderr.decode(errors='replace')[-500:]}")
    samples.sort()
    return {
        "min": round(samples[0], 1),
        "median": round(statistics.median(samples), 1),
        "p90": round(samples[min(len(samples) - 1, int(len(samples) * 0.9))], 1),
        "max": round(samples[-1], 1),
        "cpu_median": round(statistics.median(cpu), 1),  # user+sys: less sensitive to a busy machine than wall time
        "runs": runs,
    }


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"remora up exited {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"remora up did not become healthy at {url}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--zipapp", type=Path, default=ROOT / "dist" / "remora.pyz")
    parser.add_argument("--build", action="store_true", help="Rebuild the zipapp first.")
    parser.add_argument("--no-zipapp", action="store_true", help="Only time the checkout.")
    parser.add_argument("--json", action="store_true", help="Print JSON only.")
    args = parser.parse_args()

    if not args.no_zipapp and (args.build or not args.zipapp.exists()):
        build_zipapp(args.zipapp)
    tmp = Path(tempfile.mkdtemp(prefix="remora-bench-"))
    empty = tmp / "cwd"
    empty.mkdir()
    port, qport = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "HOME": str(tmp),
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "REMORA_DATA_DIR": str(tmp / "data"),
        "REMORA_API_URL": url,
        "SHIV_ROOT": str(tmp / "shiv"),
        "LANG": "C.UTF-8",
    }
    checkout = [sys.executable, "-m", "remora"]
    dev_env = {**env, "PYTHONPATH": str(ROOT)}
    up = subprocess.Popen(
        [*checkout, "up", "--port", str(port), "--queue-port", str(qport), "--workers", "2"],
        env=dev_env, cwd=str(empty), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    result: dict[str, object] = {"python": sys.version.split()[0], "cpus": os.cpu_count(), "load_before": os.getloadavg()[0]}
    try:
        wait_healthy(url, up)
        result["help_ms"] = {"checkout": timed([*checkout, "--help"], dev_env, str(empty), args.runs)}
        result["submit_true_ms"] = {"checkout": timed([*checkout, "submit", "--", "true"], dev_env, str(empty), args.runs)}
        if not args.no_zipapp:
            zipapp = [system_python(), str(args.zipapp.resolve())]
            result["help_ms"]["zipapp"] = timed([*zipapp, "--help"], env, str(empty), args.runs)  # type: ignore[index]
            result["submit_true_ms"]["zipapp"] = timed([*zipapp, "submit", "--", "true"], env, str(empty), args.runs)  # type: ignore[index]
        result["targets_ms"] = {"submit_true_zipapp": 400, "help": 250}
        result["load_after"] = os.getloadavg()[0]
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for what in ("help_ms", "submit_true_ms"):
            for where, stats in result[what].items():  # type: ignore[union-attr]
                print(f"{what:16} {where:9} median {stats['median']:7.1f}  p90 {stats['p90']:7.1f}  min {stats['min']:7.1f}")


if __name__ == "__main__":
    main()
