#!/usr/bin/env python3
"""Benchmark NetQueue (and, side by side, beanstalkd) on this machine; prints one JSON object with --json.

Workload (the issue's): 20,000 jobs of 200 bytes — sequential PUT, sequential
RESERVE+ACK (one round trip: ACK_RESERVE), batched PUT (100 per frame), 8
concurrent client processes putting with fsync always, p50/p99 PUT latency,
and the server's RSS idle and with 100,000 ready jobs.  Every server runs as
its own process (`python -m remora queue serve`, `beanstalkd`) on a free
loopback port; every figure is the median of ``--runs`` runs.

The sequential workloads also report CPU per operation (``server_cpu_us``,
``client_cpu_us``: user + system time divided by operations), because
NetQueue's default adaptive busy-poll (``queue.busy_poll``) trades a busy vCPU
for not sleeping between back-to-back requests; ``*_nospin`` repeats them
with ``queue.busy_poll = 0``.

With ``--compare-beanstalkd``, ``python_floor`` is a reference for the
sequential durable PUT: a bare Python server process that reads a PUT-sized
request, writes it to a preallocated file with ``RWF_DSYNC`` (as NetQueue's
log does) and answers, driven by a bare socket client: no protocol, index or
checksum.  ``seq_put_always_logic`` adds what no queue can skip: the PUT is a
real frame, decoded with NetQueue's protocol code, logged as NetQueue's CRC'd
record and answered with a real reply frame (still no index and no event loop).
``seq_put_nosync_logic`` is that server with a plain write and no fsync at all:
its ``server_cpu_us`` is the reference for NetQueue's server CPU per PUT with
the busy-poll off.  ``ratios`` compares the floors with beanstalkd and NetQueue
with them.

    scripts/bench_queue.py --json
    scripts/bench_queue.py --json --compare-beanstalkd auto        # starts /usr/bin/beanstalkd itself
    scripts/bench_queue.py --json --compare-beanstalkd 127.0.0.1:11300
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-queue-token"  # the servers' queue token (REMORA_QUEUE_TOKEN)
BEANSTALKD = shutil.which("beanstalkd") or "/usr/bin/beanstalkd"  # what --compare-beanstalkd auto starts (Debian package beanstalkd)
sys.path.insert(0, str(ROOT))

from remora.netqueue.client import PutItem, QueueClient  # noqa: E402

BODY = b"x" * 200
MiB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU microseconds per operation of the server process (when known) and of this client process."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid

    def __enter__(self) -> CpuMeter:
        self.server0 = cpu_seconds(self.pid) if self.pid else 0.0
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.client0 = usage.ru_utime + usage.ru_stime
        return self

    def __exit__(self, *exc: object) -> None:
        self.server = cpu_seconds(self.pid) - self.server0 if self.pid else None
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.client = usage.ru_utime + usage.ru_stime - self.client0

    def per_op(self, ops: int) -> dict[str, float | None]:
        return {
            "server_cpu_us": round(self.server / ops * 1e6, 1) if self.server is not None else None,
            "client_cpu_us": round(self.client / ops * 1e6, 1),
        }


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Server:
    """A server process on a free port, stopped (and its data removed) on exit."""

    def __init__(self, argv_for: Callable[[int, str], list[str]], env_extra: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="bench-queue-")
        env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
        self.proc = subprocess.Popen(argv_for(self.port, self.dir), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def netqueue(fsync: str, busy_poll: str | None = None) -> Server:
    """``busy_poll`` overrides queue.busy_poll (default: the server's default)."""
    return Server(
        lambda port, d: [sys.executable, "-m", "remora", "-q", "queue", "serve", "--port", str(port), "--data-dir", d, "--fsync", fsync],
        {"REMORA_QUEUE_TOKEN": TOKEN, **({"REMORA_QUEUE_BUSY_POLL": busy_poll} if busy_poll is not None else {})},
    )


def beanstalkd(mode: str) -> Server:
    flags = {"memory": [], "binlog": ["-b", "{d}"], "always": ["-b", "{d}", "-f", "0"]}[mode]
    return Server(lambda port, d: [BEANSTALKD, "-l", "127.0.0.1", "-p", str(port), *[f.format(d=d) for f in flags]])


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


# -- NetQueue workloads ------------------------------------------------------


def nq_seq_put(port: int, n: int, pid: int | None = None) -> dict[str, Any]:
    lat = []
    with QueueClient(f"127.0.0.1:{port}", token=TOKEN) as c:
        c.ping()
        with CpuMeter(pid) as cpu:
            started = time.perf_counter()
            for i in range(n):
                t0 = time.perf_counter()
                c.put(f"s{i}", body=BODY)
                lat.append(time.perf_counter() - t0)
            elapsed = time.perf_counter() - started
    return {"rate": n / elapsed, "p50_ms": percentile(lat, 50) * 1000, "p99_ms": percentile(lat, 99) * 1000, **cpu.per_op(n)}


def nq_reserve_ack(port: int, n: int, pid: int | None = None) -> dict[str, Any]:
    with QueueClient(f"127.0.0.1:{port}", token=TOKEN) as c:
        items = [PutItem(f"r{i}", body=BODY) for i in range(n)]
        for k in range(0, n, 1000):
            c.put_many(items[k : k + 1000])
        with CpuMeter(pid) as cpu:
            started = time.perf_counter()
            got = c.reserve(["job_queue"], timeout=0)
            done = 0
            while got:
                done += 1
                got = c.ack_reserve(got[0].id, ["job_queue"], timeout=0)
            elapsed = time.perf_counter() - started
    return {"rate": done / elapsed, **cpu.per_op(done)}


def nq_batch_put(port: int, n: int, per_frame: int = 100, pipelined: int = 1) -> dict[str, float]:
    """``per_frame`` jobs per PUT_BATCH; ``pipelined`` frames sent before the first reply is read."""
    with QueueClient(f"127.0.0.1:{port}", token=TOKEN) as c:
        c.ping()
        items = [PutItem(f"b{i}", body=BODY) for i in range(n)]
        step = per_frame * pipelined
        started = time.perf_counter()
        for k in range(0, n, step):
            c.put_many(items[k : k + step], per_frame=per_frame)
        elapsed = time.perf_counter() - started
    return {"rate": n / elapsed}


def _nq_put_worker(port: int, prefix: str, n: int, barrier: Any, out: Any) -> None:
    with QueueClient(f"127.0.0.1:{port}", token=TOKEN) as c:
        c.ping()
        barrier.wait()
        started = time.perf_counter()
        for i in range(n):
            c.put(f"{prefix}{i}", body=BODY)
        out.put((started, time.perf_counter()))


def _bs_put_worker(port: int, prefix: str, n: int, barrier: Any, out: Any) -> None:
    import greenstalk

    with greenstalk.Client(("127.0.0.1", port)) as c:
        barrier.wait()
        started = time.perf_counter()
        for _ in range(n):
            c.put(BODY)
        out.put((started, time.perf_counter()))


def concurrent_put(worker: Callable[..., None], port: int, n: int, clients: int) -> dict[str, float]:
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(clients), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(port, f"c{k}-", n // clients, barrier, out)) for k in range(clients)]
    for proc in procs:
        proc.start()
    spans = [out.get(timeout=300) for _ in procs]
    for proc in procs:
        proc.join(30)
    elapsed = max(e for _, e in spans) - min(s for s, _ in spans)
    return {"rate": (n // clients) * clients / elapsed}


def nq_fill(port: int, n: int) -> None:
    with QueueClient(f"127.0.0.1:{port}", token=TOKEN) as c:
        items = [PutItem(f"m{i}", body=BODY) for i in range(n)]
        for k in range(0, n, 1000):
            c.put_many(items[k : k + 1000])


# -- beanstalkd workloads ------------------------------------------------------


def bs_seq_put(port: int, n: int, pid: int | None = None) -> dict[str, Any]:
    import greenstalk

    lat = []
    with greenstalk.Client(("127.0.0.1", port)) as c, CpuMeter(pid) as cpu:
        started = time.perf_counter()
        for _ in range(n):
            t0 = time.perf_counter()
            c.put(BODY)
            lat.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
    return {"rate": n / elapsed, "p50_ms": percentile(lat, 50) * 1000, "p99_ms": percentile(lat, 99) * 1000, **cpu.per_op(n)}


def bs_reserve_delete(port: int, n: int, pid: int | None = None) -> dict[str, Any]:
    import greenstalk

    bs_fill(port, n)
    with greenstalk.Client(("127.0.0.1", port)) as c, CpuMeter(pid) as cpu:
        started = time.perf_counter()
        for _ in range(n):
            c.delete(c.reserve(timeout=0))
        elapsed = time.perf_counter() - started
    return {"rate": n / elapsed, **cpu.per_op(n)}


def bs_fill(port: int, n: int) -> None:
    """Pipelined raw puts (greenstalk waits for each reply)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        cmd = f"put 1024 0 60 {len(BODY)}\r\n".encode() + BODY + b"\r\n"
        for k in range(0, n, 1000):
            sock.sendall(cmd * min(1000, n - k))
            need, got = min(1000, n - k), b""
            while got.count(b"\r\n") < need:
                got += sock.recv(65536)


# -- the Python floor -----------------------------------------------------------

FLOOR_REQUEST = 244  # bytes: a NetQueue PUT frame of a 200-byte body
FLOOR_REPLY = b"OK\n"


def _floor_server(listener: socket.socket, path: str, logic: bool = False, durable: bool = True) -> None:
    """The least a durable queue server in Python does per sequential PUT: read the request, write it
    to a preallocated log with ``RWF_DSYNC`` (NetQueue's own write), answer.  No parsing, no index, no CRC.

    ``logic``: the request is a real PUT frame, and the server also does what no queue can skip:
    decode it (``protocol.put_fields``), encode its log record with its CRC (``records.encode``,
    NetQueue's own code) and answer with a real reply frame.  Still no index, no loop over connections.

    ``durable=False``: a plain write (to the page cache, as NetQueue's ``fsync = interval`` writes each
    record) and no fsync at all, so its CPU per PUT is below what any queue with a log can reach."""
    from remora.netqueue import entries, records
    from remora.netqueue import protocol as p

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.posix_fallocate(fd, 0, 64 * MiB)
    flags = os.RWF_DSYNC if durable else 0
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray(64 * 1024)
    view = memoryview(buf)
    offset = 0
    while True:
        got = 0
        need = 4 if logic else FLOOR_REQUEST
        while got < need:
            n = conn.recv_into(view[got:])
            if not n:
                return
            got += n
            if logic and got >= 4:
                need = 4 + p.LENGTH.unpack_from(buf)[0]
        if not logic:
            os.pwritev(fd, [view[:got]], offset, flags)
            offset += got
            conn.sendall(FLOOR_REPLY)
            continue
        _, _version, opcode, _flags, rid = p.HEADER.unpack_from(buf)
        job_id, queue, priority, _delay, ttr, attempts, body, _group, _limit = p.put_fields(bytes(view[p.HEADER_SIZE : got]))
        record = records.encode(entries.J_PUT, entries.Entry(job_id, queue, priority, ttr, attempts, body, time.time()), None)
        os.pwritev(fd, [record], offset, flags)
        offset += len(record)
        conn.sendall(p.reply(opcode, rid, b"\x01"))


def floor_seq_put(n: int, logic: bool = False, durable: bool = True) -> dict[str, Any]:
    """Sequential durable PUTs against ``_floor_server`` (its own process) from a bare socket client:
    what Python reaches on this machine before any queue logic, the reference for ``seq_put_always``.
    ``logic``: real PUT frames (built before the clock starts) and the server's minimal queue logic.
    ``durable=False``: no fsync, the reference for the server CPU of ``seq_put_interval_nospin``."""
    from remora.netqueue import protocol as p

    workdir = tempfile.mkdtemp(prefix="bench-queue-floor-")
    listener = socket.create_server(("127.0.0.1", 0))
    proc = multiprocessing.get_context("fork").Process(target=_floor_server, args=(listener, os.path.join(workdir, "log"), logic, durable))
    proc.start()
    if logic:
        requests = [p.frame(p.OP_PUT, i + 1, p.encode_put(f"s{i}", "job_queue", 5, 0.0, 30.0, 3, BODY)) for i in range(n)]
        reply_size = len(p.reply(p.OP_PUT, 1, b"\x01"))
    else:
        requests, reply_size = [b"x" * FLOOR_REQUEST] * n, len(FLOOR_REPLY)
    try:
        with socket.create_connection(listener.getsockname()) as conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            lat = []
            with CpuMeter(proc.pid) as cpu:
                started = time.perf_counter()
                for request in requests:
                    t0 = time.perf_counter()
                    conn.sendall(request)
                    reply = b""
                    while len(reply) < reply_size:
                        chunk = conn.recv(64)
                        if not chunk:
                            raise RuntimeError("the floor server closed the connection")
                        reply += chunk
                    lat.append(time.perf_counter() - t0)
                elapsed = time.perf_counter() - started
    finally:
        listener.close()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    return {"rate": n / elapsed, "p50_ms": percentile(lat, 50) * 1000, "p99_ms": percentile(lat, 99) * 1000, **cpu.per_op(n)}


# -- the run -----------------------------------------------------------------


def run_once(n: int, clients: int, compare: str | None, only: set[str] | None = None) -> dict[str, Any]:
    def want(name: str) -> bool:
        return only is None or name in only

    ours: dict[str, Any] = {}
    if want("seq_put_interval") or want("reserve_ack_interval"):
        with netqueue("interval") as s:
            ours["seq_put_interval"] = nq_seq_put(s.port, n, s.proc.pid)
            ours["reserve_ack_interval"] = nq_reserve_ack(s.port, n, s.proc.pid)
        with netqueue("interval", busy_poll="0") as s:
            ours["seq_put_interval_nospin"] = nq_seq_put(s.port, n, s.proc.pid)
            ours["reserve_ack_interval_nospin"] = nq_reserve_ack(s.port, n, s.proc.pid)
    if want("seq_put_always"):
        with netqueue("always") as s:
            ours["seq_put_always"] = nq_seq_put(s.port, n, s.proc.pid)
    if want("batch_put_always"):
        with netqueue("always") as s:
            ours["batch_put_always"] = nq_batch_put(s.port, n)
        with netqueue("always") as s:
            ours["batch_put_always_pipelined10"] = nq_batch_put(s.port, n, pipelined=10)
    if want("concurrent_put_always"):
        with netqueue("always") as s:
            ours["concurrent_put_always"] = concurrent_put(_nq_put_worker, s.port, n, clients)
    if want("rss"):
        with netqueue("never") as s:
            time.sleep(0.3)
            ours["rss_idle_mib"] = rss_mib(s.proc.pid)
            nq_fill(s.port, 100000)
            ours["rss_100k_mib"] = rss_mib(s.proc.pid)
    result: dict[str, Any] = {"netqueue": ours}
    if only is not None:
        return result
    if compare:
        theirs: dict[str, Any] = {}
        for mode in ("memory", "binlog", "always"):
            with _beanstalkd_server(compare, mode) as b:
                theirs[f"seq_put_{mode}"] = bs_seq_put(b.port, n, _pid(b))
        with _beanstalkd_server(compare, "binlog") as b:
            theirs["reserve_delete_binlog"] = bs_reserve_delete(b.port, n, _pid(b))
        with _beanstalkd_server(compare, "always") as b:
            theirs["concurrent_put_always"] = concurrent_put(_bs_put_worker, b.port, n, clients)
        with _beanstalkd_server(compare, "memory") as b:
            time.sleep(0.3)
            theirs["rss_idle_mib"] = rss_mib(b.proc.pid) if isinstance(b, Server) else None
            bs_fill(b.port, 100000)
            theirs["rss_100k_mib"] = rss_mib(b.proc.pid) if isinstance(b, Server) else None
        result["beanstalkd"] = theirs
        result["python_floor"] = {
            "seq_put_always": floor_seq_put(n),
            "seq_put_always_logic": floor_seq_put(n, logic=True),
            "seq_put_nosync_logic": floor_seq_put(n, logic=True, durable=False),
        }
    return result


class _External:
    """A beanstalkd someone else runs (HOST:PORT): one mode only, whatever it was started with."""

    def __init__(self, addr: str) -> None:
        host, _, port = addr.rpartition(":")
        self.host, self.port = host or "127.0.0.1", int(port)

    def __enter__(self) -> _External:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _pid(server: Any) -> int | None:
    return server.proc.pid if isinstance(server, Server) else None


def _beanstalkd_server(compare: str, mode: str) -> Any:
    if compare != "auto":
        return _External(compare)
    if not Path(BEANSTALKD).exists():
        raise SystemExit(f"--compare-beanstalkd auto: {BEANSTALKD} not found (make bench-deps installs it; or give HOST:PORT of one)")
    return beanstalkd(mode)


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def merge(items: list[Any]) -> Any:
        if isinstance(items[0], dict):
            return {k: merge([i[k] for i in items]) for k in items[0]}
        if items[0] is None:
            return None
        return round(statistics.median(items), 3)

    return merge(runs)


def ratios(result: dict[str, Any]) -> dict[str, Any]:
    ours = result["netqueue"]
    out: dict[str, Any] = {
        "batch_put_always_jobs_per_s": ours["batch_put_always"]["rate"],
        "batch_put_always_pipelined10_jobs_per_s": ours["batch_put_always_pipelined10"]["rate"],
        "concurrent8_vs_single_always": round(ours["concurrent_put_always"]["rate"] / ours["seq_put_always"]["rate"], 2),
    }
    targets = {
        "batch_put_always >= 50000/s": out["batch_put_always_jobs_per_s"] >= 50000,
        "8 clients always >= 3x single always": out["concurrent8_vs_single_always"] >= 3,
        "p99 put interval < 1 ms": ours["seq_put_interval"]["p99_ms"] < 1,
        "p99 put always < 3 ms": ours["seq_put_always"]["p99_ms"] < 3,
        "rss 100k ready <= 50 MiB": ours["rss_100k_mib"] <= 50,
        "server cpu per seq put, busy_poll 0 <= 45 us": ours["seq_put_interval_nospin"]["server_cpu_us"] <= 45,
        "rss idle <= 30 MiB": ours["rss_idle_mib"] <= 30,
    }
    theirs = result.get("beanstalkd")
    if theirs:
        out["seq_put_interval_vs_beanstalkd_binlog"] = round(ours["seq_put_interval"]["rate"] / theirs["seq_put_binlog"]["rate"], 2)
        out["reserve_ack_vs_beanstalkd_reserve_delete"] = round(
            ours["reserve_ack_interval"]["rate"] / theirs["reserve_delete_binlog"]["rate"], 2
        )
        out["seq_put_always_vs_beanstalkd_always"] = round(ours["seq_put_always"]["rate"] / theirs["seq_put_always"]["rate"], 2)
        out["concurrent_always_vs_beanstalkd"] = round(ours["concurrent_put_always"]["rate"] / theirs["concurrent_put_always"]["rate"], 2)
        out["seq_put_interval_nospin_vs_beanstalkd_binlog"] = round(
            ours["seq_put_interval_nospin"]["rate"] / theirs["seq_put_binlog"]["rate"], 2
        )
        out["reserve_ack_nospin_vs_beanstalkd_reserve_delete"] = round(
            ours["reserve_ack_interval_nospin"]["rate"] / theirs["reserve_delete_binlog"]["rate"], 2
        )
        floor = result["python_floor"]["seq_put_always"]["rate"]
        out["python_floor_seq_put_always_vs_beanstalkd_always"] = round(floor / theirs["seq_put_always"]["rate"], 2)
        out["seq_put_always_vs_python_floor"] = round(ours["seq_put_always"]["rate"] / floor, 2)
        floor_logic = result["python_floor"]["seq_put_always_logic"]["rate"]
        out["python_floor_logic_seq_put_always_vs_beanstalkd_always"] = round(floor_logic / theirs["seq_put_always"]["rate"], 2)
        out["seq_put_always_vs_python_floor_logic"] = round(ours["seq_put_always"]["rate"] / floor_logic, 2)
        # the CPU target's reference: the same minimal logic with no fsync, in a server with one connection
        floor_cpu = result["python_floor"]["seq_put_nosync_logic"]["server_cpu_us"]
        out["server_cpu_nospin_vs_python_floor_logic_nosync"] = round(ours["seq_put_interval_nospin"]["server_cpu_us"] / floor_cpu, 2)
        targets["seq put always >= 1.0x beanstalkd always"] = out["seq_put_always_vs_beanstalkd_always"] >= 1.0
        targets["seq put interval >= 0.8x beanstalkd binlog"] = out["seq_put_interval_vs_beanstalkd_binlog"] >= 0.8
        targets["reserve+ack >= 1.5x beanstalkd reserve+delete"] = out["reserve_ack_vs_beanstalkd_reserve_delete"] >= 1.5
    out["targets_met"] = targets
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--compare-beanstalkd", metavar="HOST:PORT|auto", help="run the same workload against beanstalkd")
    parser.add_argument("--jobs", type=int, default=20000, help="jobs per workload (default 20000)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--runs", type=int, default=3, help="runs; figures are medians (default 3)")
    parser.add_argument(
        "--only",
        help="comma-separated NetQueue workloads (seq_put_interval (with reserve_ack, both also without busy-poll), "
        "seq_put_always, batch_put_always, concurrent_put_always, rss)",
    )
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    runs = []
    for k in range(args.runs):
        runs.append(run_once(args.jobs, args.clients, args.compare_beanstalkd, only))
        if only is not None:
            continue
        if not args.json:
            print(f"run {k + 1}/{args.runs} done", file=sys.stderr)
    result = median_of(runs)
    if only is not None:
        print(json.dumps(result, indent=2))
        return
    result["ratios"] = ratios(result)
    result["config"] = {"jobs": args.jobs, "body_bytes": len(BODY), "clients": args.clients, "runs": args.runs, "cpus": os.cpu_count()}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for side in ("netqueue", "beanstalkd", "python_floor"):
        for key, value in result.get(side, {}).items():
            print(f"{side:10} {key:28} {value}")
    for key, value in result["ratios"].items():
        print(f"ratio      {key:28} {value}")


if __name__ == "__main__":
    main()
