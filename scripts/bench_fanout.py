#!/usr/bin/env python3
"""Fan-out: Remora (API and CLI) against fabric, parallel-ssh and Ansible on one loopback fleet.

Starts a fleet of N "hosts" (127.0.1.1 … 127.0.1.N) served by real OpenSSH
sshd processes (16 addresses each, one port, a plain login user with a
generated key: never root), then ``remora up`` on SQLite in a temp data dir
with default settings, registers the hosts with a tag per fleet size and
times, for each size and command, from submit to every host's result stored
(the median of ``--runs``):

- ``remora_api``: POST /api/v1/jobs ``servers: ["tag:T"]``, then waiting on
  the batch as a client of the API would: long-polling the /api/v1/events feed
  of the batch's own changes (``kind=batch``) until its final status (else, an API without the feed, polling
  GET /api/v1/batches/:id every 0.1 s); every host's output is checked after;
- ``remora_cli``: the process ``remora submit --tag T --wait -- CMD``;
- ``fabric``: ``ThreadingGroup(*hosts).run(cmd)``;
- ``pssh``: ``ParallelSSHClient(hosts).run_command(cmd)`` + join + read output;
- ``ansible``: ``ansible all -i INV -m command -a CMD -f 100`` (``-m shell``
  when CMD has shell syntax), defaults otherwise (ControlPersist on).

``cold``: no SSH connection open yet (Remora restarted, new client objects, a
new Ansible ControlPath dir); ``warm``: the run right after, reusing them.
Ratios: Remora API / min(fabric, pssh), Remora CLI / min(fabric, pssh),
ansible / Remora API.  Each tool's figures also carry the medians of its own
CPU seconds per run (``tool_cpu_s``: this script and its children, plus the
``remora up`` process for Remora) and of the whole machine's
(``machine_cpu_s``: every core's busy time, the fleet's sshd and shells
included): on a machine whose cores the run keeps busy, the wall time follows
the sum.

``cli_start_s`` is what any CLI command costs before a fan-out starts, the
median of 7 runs each: ``python`` (the interpreter alone, ``-c pass``) and
``remora_round_trip`` (``remora jobs list -n 1 --json``: start-up, imports,
one request to the running API, exit).  ``remora_cli`` pays the latter
besides the fan-out itself; the peers run in this script's process.

``--concurrent 1000`` then submits that many ``sleep 30`` jobs over 100
servers (``max_concurrent_jobs`` = 10 each) to a fresh ``remora up``, on a
queue of their own that one separate ``remora worker`` process (``--concurrency``
= the job count, everything else default) reserves from, and samples that
worker's threads, RSS and CPU until all finished or ``--deadline``: max
threads, max RSS, CPU seconds, most jobs ``running`` at once, wall time, and
whether every job's output landed.  The ``remora up`` process (queue, API and
its own idle worker) is sampled too, apart.  What the worker really does
decides the figures, not its configuration.

Everything started here (sshd, Remora, Ansible's SSH masters) is stopped by
PID at the end, on an error and on Ctrl-C.  Needs the ``bench`` extra
(``make bench-deps``); a peer that is not installed is reported ``skipped``.

    python scripts/bench_fanout.py --json                       # minutes
    python scripts/bench_fanout.py --quick --peers fabric       # N=20, 1 run
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from remora.client import Client  # noqa: E402
from remora.config import Settings  # noqa: E402
from remora.errors import NotFound, ValidationError  # noqa: E402
from tests.support.cluster import Remora, make_remora, rss_kib  # noqa: E402
from tests.support.services import find_binary  # noqa: E402
from tests.support.sshd import KEY_USER, _ensure_user, _keygen  # noqa: E402
from tests.support.waits import free_port, wait_port  # noqa: E402

COMMANDS = ["uptime", "sleep 1; uptime"]
PEERS = ["fabric", "pssh", "ansible"]
MARK = "load average"  # in every line uptime prints
DONE_MARK = "remora-fanout-done"
CONCURRENT_QUEUE = "fanout-1000"  # the --concurrent run's jobs: only its separate worker reserves them
ADDRESSES_PER_SSHD = 16
FINISHED = {"completed", "failed", "aborted", "canceled"}
POLL_INTERVAL = 0.1
ANSIBLE_FORKS = 100


class BenchError(Exception):
    """A run that did not produce every host's result."""


# -- the fleet -------------------------------------------------------------------
@dataclass
class Hosts:
    """What a client needs to reach some of the fleet."""

    hosts: list[str]
    user: str
    port: int
    key_path: Path


class Fleet:
    """N loopback hosts 127.0.1.1 … 127.0.1.N on one port, served by sshd processes of 16 addresses each."""

    def __init__(self, size: int, base: Path) -> None:
        if not 1 <= size <= 254:
            raise SystemExit(f"fleet size {size}: 1 … 254 hosts (127.0.1.1 … 127.0.1.254)")
        self.size = size
        self.base = base
        self.hosts = [f"127.0.1.{i}" for i in range(1, size + 1)]
        self.port = 0
        self.user = ""
        self.key_path = base / "id_ed25519"
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        sshd = find_binary("sshd", ["/usr/sbin"])
        if not sshd or not shutil.which("ssh-keygen"):
            raise SystemExit("OpenSSH sshd is needed (Debian package openssh-server)")
        self.base.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o755)
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
            _ensure_user(KEY_USER)  # a plain account: root's shell startup files would be measured too
            self.user = KEY_USER
        else:
            import pwd

            self.user = pwd.getpwuid(os.getuid()).pw_name
        _keygen(self.key_path)
        host_key = self.base / "ssh_host_ed25519_key"
        _keygen(host_key)
        authorized = self.base / "authorized_keys"
        authorized.write_text(Path(f"{self.key_path}.pub").read_text())
        os.chmod(authorized, 0o644)
        self.port = free_port(self.hosts[0])
        for index in range(0, self.size, ADDRESSES_PER_SSHD):
            group = self.hosts[index : index + ADDRESSES_PER_SSHD]
            config = self.base / f"sshd_config.{index // ADDRESSES_PER_SSHD}"
            lines = [
                f"Port {self.port}",
                *(f"ListenAddress {host}" for host in group),
                f"HostKey {host_key}",
                "PidFile none",
                f"AuthorizedKeysFile {authorized}",
                "StrictModes no",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "PermitRootLogin no",
                "LogLevel ERROR",
                "MaxSessions 64",
                "MaxStartups 1000:30:2000",
                "UseDNS no",
                "PrintMotd no",
                f"AllowUsers {self.user}",
            ]
            config.write_text("\n".join(lines) + "\n")
            log = self.base / f"sshd.{index // ADDRESSES_PER_SSHD}.log"
            proc = subprocess.Popen(
                [sshd, "-D", "-f", str(config), "-E", str(log)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.procs.append(proc)
            wait_port(group[-1], self.port, 15)

    def first(self, n: int) -> Hosts:
        return Hosts(self.hosts[:n], self.user, self.port, self.key_path)

    def stop(self) -> None:
        """Stop each listener and the session processes it forked (still open ones included)."""
        children = _children({p.pid for p in self.procs if p.poll() is None})
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()


def _children(parents: set[int]) -> list[int]:
    """PIDs whose parent is one of ``parents`` (read from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) in parents:
                found.append(int(stat.parent.name))
    return found


# -- Remora ----------------------------------------------------------------------
class RemoraUnderTest:
    """``remora up`` with default settings (restartable on the same data dir) and an admin client."""

    def __init__(self, base: Path, workers: int | None) -> None:
        self.remora: Remora = make_remora("checkout", base, None)
        for key in ("REMORA_WORKER_HEARTBEAT_INTERVAL", "REMORA_OUTPUT_FLUSH_INTERVAL"):  # the harness's test tuning
            self.remora.env.pop(key, None)
        self.workers = workers or Settings().worker.concurrency
        self.client: Client | None = None
        self.events: bool | None = None  # None: not probed yet

    def start(self) -> None:
        self.remora.start(workers=self.workers)
        token = (self.remora.data_dir / "admin.token").read_text().strip()
        self.client = Client(self.remora.url, token, timeout=60)

    def restart(self) -> None:
        """A fresh process: no SSH connection pooled."""
        self.stop()
        self.start()

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        self.remora.stop(signal.SIGINT, timeout=60)

    @property
    def api(self) -> Client:
        assert self.client is not None
        return self.client

    def register(self, fleet: Fleet, sizes: list[int], max_concurrent: int) -> None:
        key = fleet.key_path.read_text()
        for i, host in enumerate(fleet.hosts, start=1):
            self.api.create_server(
                {
                    "name": f"fleet-{i}",
                    "hostname": host,
                    "port": fleet.port,
                    "user": fleet.user,
                    "auth_type": "key",
                    "private_key": key,
                    "tags": [f"fleet-{n}" for n in sizes if i <= n],
                    "max_concurrent_jobs": max_concurrent,
                }
            )

    def wait_batch(self, batch_id: str, deadline: float) -> None:
        """Block until the batch finished: told by the change feed when there is one (no batch reads), else polling."""
        cursor = "0"  # every change of this batch so far, then the ones after: a batch that already ended is seen at once
        while time.monotonic() < deadline:
            if self.events is not False:
                try:
                    timeout = max(1, min(25, int(deadline - time.monotonic())))
                    reply = self.api.get("/api/v1/events", batch_id=batch_id, kind="batch", cursor=cursor, timeout=timeout) or {}
                    self.events = True
                except (NotFound, ValidationError):  # no feed, or not one this script knows how to ask
                    self.events = False
                    continue
                cursor = reply.get("cursor", cursor)
                if any(e.get("kind") == "batch" and e.get("status") in FINISHED for e in reply.get("events") or []):
                    return
                continue
            if self.api.batch(batch_id)["status"] in FINISHED:
                return
            time.sleep(POLL_INTERVAL)
        raise BenchError(f"batch {batch_id} not finished within the deadline")

    def check_batch(self, batch_id: str, n: int, mark: str = MARK) -> int:
        """How many hosts completed with ``mark`` in their stored output; raises unless all ``n``."""
        batch = self.api.batch(batch_id, output=True)
        ok = sum(1 for h in batch.get("hosts") or [] if h["status"] == "completed" and mark in (h.get("stdout") or ""))
        if ok != n:
            bad = [h for h in batch.get("hosts") or [] if h["status"] != "completed"][:3]
            raise BenchError(f"batch {batch_id}: {ok} of {n} hosts stored their result; e.g. {bad}")
        return ok


def remora_api_run(rut: RemoraUnderTest, tag: str, command: str, n: int, timeout: float) -> float:
    started = time.perf_counter()
    reply = rut.api.post("/api/v1/jobs", {"command": command, "servers": [f"tag:{tag}"], "timeout": 300})
    rut.wait_batch(reply["batch_id"], time.monotonic() + timeout)
    elapsed = time.perf_counter() - started
    rut.check_batch(reply["batch_id"], n)
    return elapsed


def remora_cli_run(rut: RemoraUnderTest, tag: str, command: str, n: int, timeout: float) -> float:
    started = time.perf_counter()
    res = rut.remora.run("submit", "--tag", tag, "--wait", "--", command, timeout=timeout)
    elapsed = time.perf_counter() - started
    printed = res.stdout.decode(errors="replace").count(MARK)
    if res.returncode != 0 or printed != n:
        raise BenchError(f"remora submit exited {res.returncode}, printed {printed} of {n} results: {res.stderr.decode()[-500:]}")
    newest = rut.api.batches(limit=1)["batches"][0]
    rut.check_batch(newest["id"], n)
    return elapsed


# -- the peers -------------------------------------------------------------------
def peer_missing(peer: str) -> str | None:
    """Why ``peer`` cannot run here, or None."""
    if peer == "ansible":
        return None if _ansible_bin() else "ansible not installed (pip install -e '.[bench]')"
    module = {"fabric": "fabric", "pssh": "pssh"}[peer]
    return None if importlib.util.find_spec(module) else f"{module} not installed (pip install -e '.[bench]')"


def _ansible_bin() -> str | None:
    beside = Path(sys.executable).with_name("ansible")
    return str(beside) if beside.exists() else shutil.which("ansible")


class FabricPeer:
    def __init__(self, fleet: Hosts) -> None:
        from fabric import ThreadingGroup

        connect = {"key_filename": str(fleet.key_path), "look_for_keys": False, "allow_agent": False}
        self.group = ThreadingGroup(*fleet.hosts, user=fleet.user, port=fleet.port, connect_kwargs=connect)

    def run(self, command: str) -> int:
        from fabric.exceptions import GroupException

        try:
            results = self.group.run(command, hide=True, warn=True)
        except GroupException as exc:
            results = exc.result
        return sum(1 for r in results.values() if not isinstance(r, BaseException) and r.ok and MARK in r.stdout)

    def close(self) -> None:
        self.group.close()


class PsshPeer:
    def __init__(self, fleet: Hosts) -> None:
        from pssh.clients import ParallelSSHClient

        self.client = ParallelSSHClient(fleet.hosts, user=fleet.user, port=fleet.port, pkey=str(fleet.key_path), num_retries=1)

    def run(self, command: str) -> int:
        output = self.client.run_command(command, stop_on_errors=False)
        self.client.join(output)
        ok = 0
        for host_output in output:
            text = "\n".join(host_output.stdout or []) if host_output.exception is None else ""
            ok += host_output.exit_code == 0 and MARK in text
        return ok

    def close(self) -> None:
        disconnect = getattr(self.client, "disconnect", None)
        if disconnect:
            disconnect()
        self.client = None


class AnsiblePeer:
    """``ansible all -m command`` ad hoc; its SSH masters (ControlPersist) live in a ControlPath dir of this object."""

    RESULT = re.compile(r"^\S+ \| CHANGED \| rc=0 >>", re.M)

    def __init__(self, fleet: Hosts, base: Path) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="ansible-", dir=base))
        self.inventory = self.base / "inventory.ini"
        self.inventory.write_text(
            "[fleet]\n"
            + "".join(f"{h}\n" for h in fleet.hosts)
            + f"[fleet:vars]\nansible_user={fleet.user}\nansible_port={fleet.port}\n"
            + f"ansible_ssh_private_key_file={fleet.key_path}\nansible_python_interpreter=/usr/bin/python3\n"
        )
        self.control = self.base / "cp"
        self.control.mkdir()
        self.env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(self.base / "none.cfg"),
            "ANSIBLE_HOME": str(self.base / "home"),
            "ANSIBLE_LOCAL_TEMP": str(self.base / "tmp"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.control),
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_DEPRECATION_WARNINGS": "False",
            "ANSIBLE_SYSTEM_WARNINGS": "False",
        }

    def run(self, command: str, timeout: float) -> int:
        module = "shell" if re.search(r"[;&|<>$`*?]", command) else "command"
        cmd = [str(_ansible_bin()), "all", "-i", str(self.inventory), "-m", module, "-a", command, "-f", str(ANSIBLE_FORKS)]
        res = subprocess.run(cmd, env=self.env, cwd=self.base, capture_output=True, text=True, timeout=timeout)
        return min(len(self.RESULT.findall(res.stdout)), res.stdout.count(MARK))

    def close(self) -> None:
        """Ask every SSH master Ansible left behind to exit."""
        for sock in self.control.iterdir():
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "x"], capture_output=True, timeout=10)
        shutil.rmtree(self.base, ignore_errors=True)


# -- measuring -------------------------------------------------------------------
def machine_cpu_seconds() -> float:
    """CPU seconds every core of the machine spent busy (not idle, not waiting for I/O) since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def cold_warm(
    tool: str, make: Callable[[], Any], run: Callable[[Any], int], close: Callable[[Any], None], n: int, own_pid: Callable[[], int | None]
) -> dict[str, dict[str, float]]:
    """One cold run on a new client, then one warm run on the same one: seconds and CPU seconds of each.

    ``tool_cpu_s``: this process and its children (a peer's client, the ``remora`` CLI) plus ``own_pid``'s
    process (``remora up``); ``machine_cpu_s``: every core's busy time, the hosts' sshd and shells included.
    """
    measured = {}
    client = make()
    try:
        for temperature in ("cold", "warm"):
            pid = own_pid()
            before = (time.perf_counter(), _tool_cpu(pid), machine_cpu_seconds())
            ok = run(client)
            after = (time.perf_counter(), _tool_cpu(pid), machine_cpu_seconds())
            measured[temperature] = {"s": after[0] - before[0], "tool_cpu_s": after[1] - before[1], "machine_cpu_s": after[2] - before[2]}
            if ok != n:
                raise BenchError(f"{tool}: {ok} of {n} hosts returned a result ({temperature})")
    finally:
        close(client)
    return measured


def _tool_cpu(pid: int | None) -> float:
    mine = os.times()
    own = mine.user + mine.system + mine.children_user + mine.children_system
    return own + (_proc_sample(pid)[2] if pid else 0.0)


def measure_cell(
    rut: RemoraUnderTest, fleet: Fleet, base: Path, n: int, command: str, peers: list[str], timeout: float
) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, str]]:
    """Every tool, cold then warm, once: ({tool: {"cold": figures, "warm": figures}}, {tool: error of a run that failed})."""
    tag = f"fleet-{n}"
    sub = fleet.first(n)

    def remora(run: Callable[..., float]) -> Callable[[Any], int]:
        def once(_: Any) -> int:
            run(rut, tag, command, n, timeout)
            return n

        return once

    def up_pid() -> int | None:
        return rut.remora.proc.pid if rut.remora.proc else None

    def no_pid() -> None:
        return None

    tools: list[tuple[str, Callable[[], Any], Callable[[Any], int], Callable[[Any], None], Callable[[], int | None]]] = [
        ("remora_api", rut.restart, remora(remora_api_run), lambda _: None, up_pid),
        ("remora_cli", rut.restart, remora(remora_cli_run), lambda _: None, up_pid),
    ]
    if "fabric" in peers:
        tools.append(("fabric", lambda: FabricPeer(sub), lambda p: p.run(command), lambda p: p.close(), no_pid))
    if "pssh" in peers:
        tools.append(("pssh", lambda: PsshPeer(sub), lambda p: p.run(command), lambda p: p.close(), no_pid))
    if "ansible" in peers:
        tools.append(("ansible", lambda: AnsiblePeer(sub, base), lambda p: p.run(command, timeout), lambda p: p.close(), no_pid))
    out: dict[str, dict[str, dict[str, float]]] = {}
    errors: dict[str, str] = {}
    for tool, make, run, close, own_pid in tools:
        try:
            out[tool] = cold_warm(tool, make, run, close, n, own_pid)
        except Exception as exc:  # one tool's failed run is data; the others still run
            errors[tool] = f"{type(exc).__name__}: {exc}"[:500]
            progress(f"  {tool} failed: {errors[tool]}")
    return out, errors


def progress(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def cli_start(rut: RemoraUnderTest, runs: int = 7) -> dict[str, float]:
    """Median seconds of the bare interpreter and of one CLI command's round trip (see the module doc)."""

    def median_wall(run: Callable[[], subprocess.CompletedProcess]) -> float:
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            res = run()
            times.append(time.perf_counter() - started)
            if res.returncode != 0:
                raise BenchError(f"{res.args} exited {res.returncode}: {res.stderr.decode(errors='replace')[-300:]}")
        return round(statistics.median(times), 4)

    return {
        "python": median_wall(lambda: subprocess.run([rut.remora.argv[0], "-c", "pass"], capture_output=True, env=rut.remora.env)),
        "remora_round_trip": median_wall(lambda: rut.remora.run("jobs", "list", "-n", "1", "--json")),
    }


def ratios(cell: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    def median(tool: str) -> float | None:
        return cell.get(tool, {}).get("median_s")

    peers = [m for m in (median("fabric"), median("pssh")) if m]
    best = min(peers) if peers else None
    api, cli, ansible = median("remora_api"), median("remora_cli"), median("ansible")
    return {
        "remora_api_vs_best_peer": round(api / best, 2) if api and best else None,
        "remora_cli_vs_best_peer": round(cli / best, 2) if cli and best else None,
        "ansible_vs_remora_api": round(ansible / api, 2) if ansible and api else None,
    }


# -- many long jobs at once --------------------------------------------------------
def _proc_sample(pid: int) -> tuple[int, int, float]:
    """Threads, RSS KiB, CPU seconds of a live process."""
    threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            threads = int(line.split()[1])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return threads, rss_kib(pid), cpu


def concurrent_run(rut: RemoraUnderTest, total: int, servers: int, deadline_s: float) -> dict[str, Any]:
    """``total`` ``sleep 30`` jobs over ``servers`` hosts; sampled until all finished or the deadline."""
    rut.restart()
    finished_before = _finished(rut)
    up_pid = rut.remora.proc.pid  # type: ignore[union-attr]
    worker = rut.remora.worker("fanout-1000", concurrency=total, queue=CONCURRENT_QUEUE)
    wait_for_worker(rut, "fanout-1000")
    pid = worker.proc.pid  # type: ignore[union-attr]
    threads0, rss0, cpu0 = _proc_sample(pid)
    up_threads0, up_rss0, up_cpu0 = _proc_sample(up_pid)
    per_batch = servers
    command = f"sleep 30; echo {DONE_MARK}"
    started = time.monotonic()
    batch_ids = []
    for _ in range(math.ceil(total / per_batch)):
        job = {"command": command, "servers": [f"tag:fleet-{servers}"], "timeout": 300, "queue": CONCURRENT_QUEUE}
        batch_ids.append(rut.api.post("/api/v1/jobs", job)["batch_id"])
    submitted_s = time.monotonic() - started
    max_threads, max_rss, max_running, finished = threads0, rss0, 0, 0
    up_threads, up_rss = up_threads0, up_rss0
    deadline = started + deadline_s
    while time.monotonic() < deadline:
        threads, rss, _ = _proc_sample(pid)
        max_threads, max_rss = max(max_threads, threads), max(max_rss, rss)
        threads, rss, _ = _proc_sample(up_pid)
        up_threads, up_rss = max(up_threads, threads), max(up_rss, rss)
        info = rut.api.system_info()
        max_running = max(max_running, info["running_jobs"])
        finished = info["completed_jobs"] + info["failed_jobs"] + info["canceled_jobs"] - finished_before
        if finished >= per_batch * len(batch_ids):
            break
        time.sleep(0.5)
    wall = time.monotonic() - started
    cpu = _proc_sample(pid)[2] - cpu0
    up_cpu = _proc_sample(up_pid)[2] - up_cpu0
    complete = 0
    for batch_id in batch_ids:
        batch = rut.api.batch(batch_id, output=True)
        complete += sum(1 for h in batch["hosts"] if h["status"] == "completed" and DONE_MARK in (h.get("stdout") or ""))
        if batch["status"] not in FINISHED:
            rut.api.cancel_batch(batch_id)
    jobs = per_batch * len(batch_ids)
    return {
        "jobs": jobs,
        "servers": servers,
        "deadline_s": deadline_s,
        "submit_s": round(submitted_s, 2),
        "wall_s": round(wall, 2),
        "all_finished": finished >= jobs,
        "finished_jobs": finished,
        "completed_with_output": complete,
        "all_output_complete": complete == jobs,
        "max_running": max_running,
        "threads_before": threads0,
        "max_threads": max_threads,
        "rss_mib_before": round(rss0 / 1024, 1),
        "max_rss_mib": round(max_rss / 1024, 1),
        "cpu_s": round(cpu, 2),
        "up_process": {  # remora up: the queue, the API and its own (idle) worker
            "threads_before": up_threads0,
            "max_threads": up_threads,
            "max_rss_mib": round(up_rss / 1024, 1),
            "cpu_s": round(up_cpu, 2),
        },
    }


def wait_for_worker(rut: RemoraUnderTest, worker_id: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(w.get("id") == worker_id for w in rut.api.get("/api/v1/workers/stats")["workers"]):
            return
        time.sleep(0.1)
    raise RuntimeError(f"worker {worker_id} did not register with the queue within {timeout:.0f}s")


# -- main ------------------------------------------------------------------------
def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--sizes", default="20,100,200", help="fleet sizes, comma-separated")
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (the median is reported)")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"peers to compare with ({','.join(PEERS)}; '' for none)")
    parser.add_argument("--command", action="append", dest="commands", help=f"command to fan out (repeatable; default {COMMANDS})")
    parser.add_argument("--quick", action="store_true", help="smoke run: N=20, 1 run, no --concurrent")
    parser.add_argument("--concurrent", type=int, default=None, help="long jobs at once over 100 servers (default 1000; 0: skip)")
    parser.add_argument("--deadline", type=float, default=120.0, help="seconds the --concurrent run may take")
    parser.add_argument("--workers", type=int, default=None, help="worker threads of remora up (default: worker.concurrency)")
    args = parser.parse_args()
    sizes = [20] if args.quick else sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    runs = 1 if args.quick else args.runs
    concurrent = args.concurrent if args.concurrent is not None else (0 if args.quick else 1000)
    commands = args.commands or COMMANDS
    peers = [p for p in args.peers.split(",") if p]
    unknown = set(peers) - set(PEERS)
    if unknown:
        parser.error(f"unknown peers: {', '.join(sorted(unknown))}")
    concurrent_servers = 100
    skipped = {p: why for p in peers if (why := peer_missing(p))}
    peers = [p for p in peers if p not in skipped]

    for signum in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a shell starts background jobs with it ignored
        signal.signal(signum, _interrupt)
    base = Path(tempfile.mkdtemp(prefix="remora-fanout-"))
    os.chmod(base, 0o755)  # sshd reads authorized_keys under fleet/ as the login user
    fleet = Fleet(max([*sizes, concurrent_servers if concurrent else 0]), base / "fleet")
    rut = RemoraUnderTest(base / "remora", args.workers)
    result: dict[str, Any] = {
        "sizes": sizes,
        "runs": runs,
        "commands": commands,
        "peers": peers,
        "cpus": os.cpu_count(),
        "remora_workers": rut.workers,
        "ansible_forks": ANSIBLE_FORKS,
        "loadavg_start": os.getloadavg()[0],
    }
    try:
        fleet.start()
        rut.start()
        rut.register(fleet, sorted({*sizes, concurrent_servers} if concurrent else set(sizes)), max(1, math.ceil(concurrent / 100)))
        result["cli_start_s"] = cli_start(rut)
        results: dict[str, Any] = {}
        table: dict[str, Any] = {}
        remora_complete = True
        for n in sizes:
            timeout = max(120.0, 2.0 * n)
            for command in commands:
                samples: dict[str, dict[str, dict[str, list[float]]]] = {}
                failures: dict[str, list[str]] = {}
                for run in range(runs):
                    progress(f"N={n} {command!r} run {run + 1}/{runs}")
                    cell, errors = measure_cell(rut, fleet, base, n, command, peers, timeout)
                    for tool, temps in cell.items():
                        for temperature, figures in temps.items():
                            for name, value in figures.items():
                                samples.setdefault(temperature, {}).setdefault(tool, {}).setdefault(name, []).append(round(value, 3))
                    for tool, error in errors.items():
                        failures.setdefault(tool, []).append(error)
                        remora_complete = remora_complete and not tool.startswith("remora")
                for temperature in ("cold", "warm"):
                    tools = samples.get(temperature, {})
                    cell_out: dict[str, Any] = {
                        tool: {
                            "median_s": round(statistics.median(figures["s"]), 3),
                            "runs_s": figures["s"],
                            "tool_cpu_s": round(statistics.median(figures["tool_cpu_s"]), 3),
                            "machine_cpu_s": round(statistics.median(figures["machine_cpu_s"]), 3),
                        }
                        for tool, figures in tools.items()
                    }
                    for tool, errs in failures.items():
                        cell_out.setdefault(tool, {})["errors"] = errs
                    cell_out.update({peer: {"skipped": why} for peer, why in skipped.items()})
                    results.setdefault(str(n), {}).setdefault(command, {})[temperature] = cell_out
                    table.setdefault(str(n), {}).setdefault(command, {})[temperature] = ratios(cell_out)
        result["results"] = results
        result["ratios"] = table
        result["remora_results_complete"] = remora_complete  # each Remora run checked every host's stored output
        result["wait"] = "events" if rut.events else "poll"
        if concurrent:
            progress(f"{concurrent} long jobs at once over {concurrent_servers} servers")
        result["concurrent"] = concurrent_run(rut, concurrent, concurrent_servers, args.deadline) if concurrent else None
        result["loadavg_end"] = os.getloadavg()[0]
    finally:
        with contextlib.suppress(Exception):
            rut.stop()
        fleet.stop()
        shutil.rmtree(base, ignore_errors=True)
    print_table(result, sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(result, indent=2))


def _finished(rut: RemoraUnderTest) -> int:
    info = rut.api.system_info()
    return int(info["completed_jobs"] + info["failed_jobs"] + info["canceled_jobs"])


def print_table(result: dict[str, Any], out: Any) -> None:
    """Medians per tool and the ratios, one line per (N, command, temperature)."""
    tools = ["remora_api", "remora_cli", *PEERS]
    print(f"{'N':>4} {'command':16} {'temp':5} " + " ".join(f"{t:>10}" for t in tools) + "   api/peer cli/peer ansible/api", file=out)
    for n, by_command in result["results"].items():
        for command, by_temp in by_command.items():
            for temperature, cell in by_temp.items():
                cols = []
                for tool in tools:
                    entry = cell.get(tool)
                    if entry and "median_s" in entry:
                        cols.append(f"{entry['median_s']:>9.2f}s")
                    else:
                        cols.append(f"{'skipped' if entry and 'skipped' in entry else 'error' if entry else '-':>10}")
                r = result["ratios"][n][command][temperature]
                shown = " ".join(f"{r[k]:>8}" if r[k] is not None else f"{'-':>8}" for k in r)
                print(f"{n:>4} {command:16} {temperature:5} " + " ".join(cols) + f"   {shown}", file=out)
    if result.get("cli_start_s"):
        print("cli start-up:", json.dumps(result["cli_start_s"]), file=out)
    if result.get("concurrent"):
        print("concurrent:", json.dumps(result["concurrent"]), file=out)


if __name__ == "__main__":
    main()
