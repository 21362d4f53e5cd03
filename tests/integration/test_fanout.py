"""Fan-out at fleet scale: a running job holds no worker thread (the worker's event loop runs them all).

Real NetQueue (in memory), two real OpenSSH sshd listening on 10 loopback addresses each (127.0.1.x,
127.0.2.x: 20 hosts as far as the worker can tell; sshd listens on at most 16), SQLite in tmp_path.
"""

from __future__ import annotations

import threading
import time

import pytest

from remora import output
from remora.executor.base import Stream
from remora.executor.local import LIBSTDBUF
from remora.models import Job
from tests.support.sshd import start_sshd
from tests.support.waits import wait_for
from tests.support.workerkit import add_server, local_server, pool_opened, pooled, submit, wait_status, worker_stack

HOSTS = [f"127.0.{net}.{n}" for net in (1, 2) for n in range(1, 11)]
WORKER_OWN_THREADS = 40  # dispatchers + finishers (worker.threads 16), loop, its pool, heartbeat, ackers, writers, the queue's


@pytest.fixture(scope="module")
def fleet():
    """Two sshd: the first serves HOSTS[:10], the second HOSTS[10:] (same user, a key each)."""
    servers = [start_sshd("127.0.0.1", also_listen=HOSTS[:10])]
    servers.append(start_sshd("127.0.0.1", also_listen=HOSTS[10:]))
    yield servers
    for server in servers:
        server.stop()


def _sessions(servers) -> int:
    """Sessions the sshd started so far (one per channel that ran a command)."""
    return sum(s.log_path.read_text(errors="replace").count("Starting session:") for s in servers)


def _host_servers(box, fleet, names: str, hosts: list[str]) -> list:
    return [add_server(box, fleet[HOSTS.index(h) // 10], name=f"{names}-{h}", hostname=h) for h in hosts]


def _run_and_watch(job_ids: list[str], timeout: float) -> tuple[float, int]:
    """Wait until every job ended; (seconds taken, most threads alive in this process meanwhile)."""
    started = time.monotonic()
    peak = threading.active_count()
    deadline = started + timeout
    while time.monotonic() < deadline:
        peak = max(peak, threading.active_count())
        if not Job.select().where(Job.id.in_(job_ids), Job.status.not_in(["completed", "failed", "canceled"])).exists():
            break
        time.sleep(0.1)
    return time.monotonic() - started, peak


@pytest.mark.ssh
def test_200_remote_jobs_on_20_hosts_finish_in_one_wave_on_few_threads(tmp_path, fleet):
    baseline = threading.active_count()
    with worker_stack(tmp_path, concurrency=256) as (settings, q, worker, box):
        servers = _host_servers(box, fleet, "fleet", HOSTS)
        sessions_before = _sessions(fleet)
        jobs = [submit(q, servers[n % len(servers)], settings, command="sleep 2; echo $REMORA_JOB_ID") for n in range(200)]
        took, peak = _run_and_watch([j.id for j in jobs], 60)
        rows = {row.id: row for row in Job.select().where(Job.id.in_([j.id for j in jobs]))}
        assert [r.status for r in rows.values()].count("completed") == 200, {r.status for r in rows.values()}
        # five threads ran five at a time: 40 waves of 2 s; one wave (plus connects and the database) now
        assert took < 12, took
        for job in jobs:
            assert output.read_stream(job.id, Stream.STDOUT) == f"{job.id}\n".encode()
            assert rows[job.id].remote_pid
        # the worker's threads do not grow with the jobs it runs: a libssh2 session has no thread, a
        # paramiko transport one (10 channels per host: two connections each)
        connections = len(pooled(worker.pool))
        assert connections <= 2 * len(HOSTS)
        transport_threads = worker.pool.connection_count()
        print(f"fan-out: {took:.1f}s, {peak - baseline} threads; {connections} SSH connections, {transport_threads} with a thread")
        assert peak - baseline - transport_threads <= WORKER_OWN_THREADS, (peak, baseline, transport_threads)
        # one session per job: no separate `command -v stdbuf` channel on any of the new connections
        assert _sessions(fleet) - sessions_before == 200


@pytest.mark.ssh
def test_line_buffering_is_learnt_from_the_first_jobs_pid_line(tmp_path, fleet):
    with worker_stack(tmp_path, concurrency=8) as (settings, q, worker, box):
        server = _host_servers(box, fleet, "stdbuf", HOSTS[:1])[0]
        first = submit(q, server, settings, command="echo one")
        assert wait_status(first.id).status == "completed"
        conns = pooled(worker.pool)
        assert [c.stdbuf for c in conns] == [LIBSTDBUF]  # where the host has coreutils' libstdbuf.so, reported by the wrapper
        # grep block-buffers a pipe unless stdbuf makes it line-buffered: its first line arrives while it runs
        job = submit(q, server, settings, command="(echo a; sleep 2; echo b) | grep .")
        wait_for(lambda: output.read_stream(job.id, Stream.STDOUT) == b"a\n", 1.8, what="first line while running")
        assert wait_status(job.id).status == "completed"
        assert output.read_stream(job.id, Stream.STDOUT) == b"a\nb\n"


def test_100_local_jobs_run_at_once_on_few_threads(tmp_path):
    baseline = threading.active_count()
    with worker_stack(tmp_path, concurrency=256) as (settings, q, _worker, _box):
        server = local_server()
        jobs = [submit(q, server, settings, command="sleep 2; echo $REMORA_JOB_ID; echo done >&2") for _ in range(100)]
        took, peak = _run_and_watch([j.id for j in jobs], 60)
        assert all(Job.get_by_id(j.id).status == "completed" for j in jobs)
        assert took < 10, took
        print(f"local fan-out: {took:.1f}s, {peak - baseline} threads")
        assert peak - baseline <= WORKER_OWN_THREADS, (peak, baseline)
        for job in jobs:
            assert output.read_stream(job.id, Stream.STDOUT) == f"{job.id}\n".encode()
            assert output.read_stream(job.id, Stream.STDERR) == b"done\n"


@pytest.mark.ssh
def test_cancel_and_timeout_of_one_job_among_many(tmp_path, fleet):
    with worker_stack(tmp_path, concurrency=256) as (settings, q, _worker, box):
        servers = _host_servers(box, fleet, "cancel", HOSTS[5:15])
        others = [submit(q, servers[n % 10], settings, command="sleep 4; echo fine") for n in range(60)]
        doomed = submit(q, servers[0], settings, command="sleep 60")
        late = submit(q, servers[1], settings, command="sleep 60", timeout=1)
        wait_for(lambda: Job.get_by_id(doomed.id).remote_pid, 10, what="the job to report its pid")
        asked = time.monotonic()
        q.cancel(doomed.id)
        assert wait_status(doomed.id, "canceled", timeout=5).error == "canceled"
        assert time.monotonic() - asked < 2.5  # heartbeat (0.2 s here) + the loop's check + TERM
        row = wait_status(late.id, timeout=15)
        assert (row.status, row.error) == ("failed", "timeout after 1s")
        for job in others:
            row = wait_status(job.id, timeout=30)
            assert row.status == "completed" and output.read_stream(job.id, Stream.STDOUT) == b"fine\n"


@pytest.mark.ssh
def test_a_server_with_fewer_sessions_per_connection_gets_more_connections(tmp_path):
    """sshd refuses sessions past its MaxSessions: the pool opens another connection instead of failing jobs."""
    import threading as _threading

    from remora.executor.base import BufferSink, ExecRequest
    from remora.executor.ssh import SSHExecutor
    from remora.executor.sshpool import SSHPool
    from tests.support.workerkit import make_settings, ssh_target

    server = start_sshd("127.0.0.1", ["MaxSessions 2"])
    try:
        pool = SSHPool(max_sessions=8)
        ex = SSHExecutor(ssh_target(server), make_settings(tmp_path), pool=pool)
        results: list = []

        def one() -> None:
            sink = BufferSink()
            results.append((ex.run(ExecRequest(command="sleep 1; echo ok"), sink, _threading.Event()), bytes(sink.stdout)))

        runners = [_threading.Thread(target=one) for _ in range(6)]
        for runner in runners:
            runner.start()
        for runner in runners:
            runner.join(30)
        assert [(r.exit_code, r.error, out) for r, out in results] == [(0, "", b"ok\n")] * 6
        assert pool_opened(pool) >= 3  # two sessions each
        pool.close()
    finally:
        server.stop()


@pytest.mark.ssh
def test_a_cancel_on_a_full_connection_kills_over_another_one(tmp_path):
    """Every session of the job's connection is taken (sshd MaxSessions = the pool's limit): the kill channel goes elsewhere."""
    import subprocess

    server = start_sshd("127.0.0.1", ["MaxSessions 2"])
    try:
        with worker_stack(tmp_path, concurrency=8, overrides={"ssh.max_sessions_per_connection": 2}) as (settings, q, _worker, box):
            row = add_server(box, server, name="full")
            keep = submit(q, row, settings, command="sleep 30; echo kept")
            doomed = submit(q, row, settings, command="sleep 61; echo never")
            wait_for(lambda: Job.get_by_id(doomed.id).remote_pid and Job.get_by_id(keep.id).remote_pid, 10, what="both pids")
            q.cancel(doomed.id)
            assert wait_status(doomed.id, "canceled", timeout=5).error == "canceled"
            wait_for(
                lambda: subprocess.run(["pgrep", "-f", "sleep 61"], capture_output=True).returncode == 1, 5, what="the job's process gone"
            )
            assert Job.get_by_id(keep.id).status == "running"
            q.cancel(keep.id)
            wait_status(keep.id, "canceled", timeout=5)
    finally:
        server.stop()


class _Gate:
    """A TCP relay to one sshd on several addresses that holds every connection until ``want`` are waiting.

    Counts the most connections waiting at once: how many SSH connects a worker has in flight together.
    After ``patience`` seconds without ``want`` it lets them through anyway (the worker then still runs its jobs).
    """

    def __init__(self, hosts: list[str], target: tuple[str, int], want: int, patience: float = 8.0) -> None:
        import socket

        self.target, self.want, self.patience = target, want, patience
        self.cond = threading.Condition()
        self.waiting = self.most = 0
        self.open = False
        self.listeners = [socket.create_server((host, 0)) for host in hosts[:1]]
        self.port = self.listeners[0].getsockname()[1]
        self.listeners += [socket.create_server((host, self.port)) for host in hosts[1:]]
        self.socks: list = []
        for listener in self.listeners:
            threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client) -> None:
        import socket

        with self.cond:
            self.waiting += 1
            self.most = max(self.most, self.waiting)
            if self.waiting >= self.want:
                self.open = True
                self.cond.notify_all()
            self.cond.wait_for(lambda: self.open, self.patience)
            self.open = True
            self.waiting -= 1
        upstream = socket.create_connection(self.target)
        self.socks += [client, upstream]

        def pipe(src, dst) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
        pipe(client, upstream)

    def close(self) -> None:
        for sock in [*self.listeners, *self.socks]:
            sock.close()


@pytest.mark.ssh
def test_a_first_fan_out_opens_its_connections_at_once_not_a_few_at_a_time(tmp_path, fleet):
    """16 new hosts: their 16 SSH connects are in flight together (worker.threads 16), not 8 at a time.

    A start that must first connect waits mostly on the other side (TCP, sshd's fork, the key
    exchange); the relay in front of sshd holds each connection until 16 wait, and counts them.
    """
    hosts = [f"127.0.3.{n}" for n in range(1, 17)]
    gate = _Gate(hosts, (fleet[0].host, fleet[0].port), want=len(hosts))
    try:
        # connects that wait at the gate must not time out and retry while it waits (a retry would count twice)
        with worker_stack(tmp_path, concurrency=256, overrides={"ssh.connection_timeout": 30.0}) as (settings, q, worker, box):
            servers = [add_server(box, fleet[0], name=f"gated-{h}", hostname=h, port=gate.port) for h in hosts]
            jobs = [submit(q, server, settings, command="echo $REMORA_JOB_ID") for server in servers]
            for job in jobs:
                assert wait_status(job.id, timeout=60).status == "completed"
            assert gate.most == len(hosts), f"at most {gate.most} connects in flight at once"
            # the start threads end after the burst: a second job per host runs on the pooled connections
            wait_for(lambda: worker._starters.running == 0, 10, 0.05, "the start threads to end")
            again = [submit(q, server, settings, command="echo $REMORA_JOB_ID") for server in servers]
            for job in again:
                assert wait_status(job.id, timeout=60).status == "completed"
                assert output.read_stream(job.id, Stream.STDOUT) == f"{job.id}\n".encode()
            assert len(pooled(worker.pool)) == len(hosts)
    finally:
        gate.close()
