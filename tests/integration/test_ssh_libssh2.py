"""The libssh2 transport against a real OpenSSH sshd: pooled sessions per event loop, no thread per connection.

What a job does over it (output, exit codes, signals, cancel, timeout, kill) is covered by
test_ssh_executor, which runs every test over both transports; here is what is libssh2's own.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from remora.executor import libssh2
from remora.executor.base import BufferSink, ExecRequest, ExecResult
from remora.executor.loop import EventLoop
from remora.executor.ssh import SSHExecutor
from remora.executor.sshpool import SSHPool
from tests.support.sshd import start_sshd
from tests.support.waits import wait_for
from tests.support.workerkit import init_db, kill_sessions, make_settings, ssh_target

pytestmark = pytest.mark.ssh


@pytest.fixture
def settings(tmp_path):
    init_db(tmp_path)
    return make_settings(tmp_path, {"ssh.transport": "libssh2"})


@pytest.fixture
def pool():
    pool = SSHPool()
    yield pool
    pool.close()


@pytest.fixture
def loop():
    loop = EventLoop(name="test-loop", threads=2)
    loop.start()
    yield loop
    loop.stop()


def start_and_wait(ex: SSHExecutor, loop: EventLoop, command: str, timeout: float = 20) -> tuple[ExecResult, BufferSink]:
    """``start`` a job on ``loop`` (as the worker does) and wait for its result."""
    sink, box, ended = BufferSink(), [], threading.Event()
    ex.start(ExecRequest(command=command), sink, threading.Event(), loop, lambda r: (box.append(r), ended.set()))
    assert ended.wait(timeout), f"{command!r} did not end"
    return box[0], sink


def test_the_transport_is_available_with_exit_signals():
    """The dependency is installed, exit signals can be read and exit statuses seen before the EOF."""
    assert libssh2.AVAILABLE and libssh2.C is not None and libssh2.C.status_offset is not None


def test_jobs_in_a_row_share_one_session_and_no_paramiko_transport(pool, sshd, settings, loop):
    ex = SSHExecutor(ssh_target(sshd), settings, pool=pool)
    for i in range(50):
        res, sink = start_and_wait(ex, loop, f"echo {i}")
        assert (res.exit_code, bytes(sink.stdout)) == (0, f"{i}\n".encode())
    assert pool.libssh2().opened == 1 and pool.opened == 0


def test_more_concurrent_channels_than_the_limit_open_another_session(sshd, settings, loop):
    pool = SSHPool(max_sessions=3)
    try:
        ex = SSHExecutor(ssh_target(sshd), settings, pool=pool)
        with ThreadPoolExecutor(6) as tp:
            results = list(tp.map(lambda _: start_and_wait(ex, loop, "sleep 0.5; echo ok")[0], range(6)))
        assert [r.exit_code for r in results] == [0] * 6
        assert pool.libssh2().opened == 2
    finally:
        pool.close()


def test_sessions_are_not_threads(settings, loop):
    """12 hosts with a job running on each: 12 sessions, and the process has no more threads for them."""
    hosts = [f"127.0.4.{n}" for n in range(1, 13)]
    server = start_sshd("127.0.4.1", also_listen=hosts[1:])
    pool = SSHPool()
    try:
        executors = [SSHExecutor(ssh_target(server, host=host), settings, pool=pool) for host in hosts]
        start_and_wait(executors[0], loop, "true")  # the loop's own threads exist from here on
        before = threading.active_count()
        ended: list[ExecResult] = []
        for ex in executors:
            ex.start(ExecRequest(command="sleep 1; echo done"), BufferSink(), threading.Event(), loop, ended.append)
        wait_for(lambda: sum(len(c.users) for c in pool.libssh2().connections()) == len(hosts), 10, what="every job running")
        assert threading.active_count() <= before  # paramiko would have started one per connection
        wait_for(lambda: len(ended) == len(hosts), 20, what="every job ended")
        assert [r.exit_code for r in ended] == [0] * len(hosts)
        assert pool.libssh2().connection_count() == len(hosts) and pool.opened == 0
    finally:
        pool.close()
        server.stop()


def test_a_dead_pooled_session_is_noticed_while_idle_and_replaced(pool, sshd, settings, loop):
    ex = SSHExecutor(ssh_target(sshd), settings, pool=pool)
    assert start_and_wait(ex, loop, "true")[0].exit_code == 0
    (conn,) = pool.libssh2().connections()
    assert kill_sessions(sshd) > 0
    wait_for(lambda: not conn.alive(), 5, what="the idle session noticed the server gone")
    res, sink = start_and_wait(ex, loop, "echo again")
    assert (res.exit_code, bytes(sink.stdout), res.attempt_errors) == (0, b"again\n", [])
    assert pool.libssh2().opened == 2


def test_idle_sessions_are_closed_by_the_janitor_through_their_loop(sshd, settings, loop):
    pool = SSHPool(idle_timeout=0.3)
    try:
        ex = SSHExecutor(ssh_target(sshd), settings, pool=pool)
        assert start_and_wait(ex, loop, "true")[0].exit_code == 0
        (conn,) = pool.libssh2().connections()
        wait_for(lambda: pool.libssh2().connection_count() == 0, 5, what="idle eviction")
        wait_for(lambda: conn.sock.fileno() == -1, 5, what="the socket closed on the loop")
        assert start_and_wait(ex, loop, "true")[0].exit_code == 0
        assert pool.libssh2().opened == 2
    finally:
        pool.close()


def test_a_closed_loop_closes_its_sessions(sshd, settings):
    loop = EventLoop(name="short-lived")
    loop.start()
    pool = SSHPool()
    try:
        ex = SSHExecutor(ssh_target(sshd), settings, pool=pool)
        assert start_and_wait(ex, loop, "true")[0].exit_code == 0
        (conn,) = pool.libssh2().connections()
        loop.stop()
        assert not conn.alive() and pool.libssh2().connection_count() == 0
    finally:
        pool.close()


def test_keepalives_are_sent_on_pooled_sessions(tmp_path, loop):
    server = start_sshd("127.0.0.1", ["LogLevel DEBUG1"])
    pool = SSHPool()
    try:
        init_db(tmp_path)
        settings = make_settings(tmp_path, {"ssh.transport": "libssh2", "ssh.keepalive_interval": 1.0})
        ex = SSHExecutor(ssh_target(server), settings, pool=pool)
        assert start_and_wait(ex, loop, "true")[0].exit_code == 0
        wait_for(lambda: "keepalive@" in server.log_path.read_text(errors="replace"), 6, what="a keepalive in sshd's log")
        assert pool.libssh2().connection_count() == 1
    finally:
        pool.close()
        server.stop()


def test_a_key_libssh2_cannot_read_goes_to_paramiko(sshd, settings, loop):
    """The executor falls back to paramiko for that server; paramiko's error (or success) is the job's."""
    ex = SSHExecutor(ssh_target(sshd, private_key="-----BEGIN OPENSSH PRIVATE KEY-----\nbm90IGEga2V5\n"), settings, pool=SSHPool())
    res, _ = start_and_wait(ex, loop, "true")
    assert ex.libssh2_unusable and not ex.uses_libssh2()
    assert res.error_kind == "auth" and "cannot load the private key" in res.error


def test_a_wrong_key_is_an_auth_error_without_retries(sshd, settings, loop, tmp_path):
    import subprocess

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    ex = SSHExecutor(ssh_target(sshd, private_key=(tmp_path / "other").read_text()), settings, pool=SSHPool())
    res, _ = start_and_wait(ex, loop, "true")
    assert res.error_kind == "auth" and "authentication failed" in res.error and res.attempt_errors == []
    assert not ex.libssh2_unusable


def test_ciphers_are_aeads_first_and_ctr_where_the_server_has_nothing_else(make_sshd, settings, loop):
    from ssh2.session import LIBSSH2_METHOD_CRYPT_CS, LIBSSH2_METHOD_CRYPT_SC

    for ciphers, expected in ((None, "chacha20-poly1305@openssh.com"), ("aes256-ctr", "aes256-ctr")):
        srv = make_sshd("127.0.0.1", extra_config=[f"Ciphers {ciphers}"] if ciphers else [])
        pool = SSHPool()
        try:
            res, sink = start_and_wait(SSHExecutor(ssh_target(srv), settings, pool=pool), loop, "echo ok")
            assert (res.exit_code, bytes(sink.stdout)) == (0, b"ok\n")
            (conn,) = pool.libssh2().connections()
            assert conn.session.methods(LIBSSH2_METHOD_CRYPT_CS) == conn.session.methods(LIBSSH2_METHOD_CRYPT_SC) == expected
        finally:
            pool.close()


def test_weak_ciphers_are_never_offered():
    assert not {"arcfour", "arcfour128", "blowfish-cbc", "cast128-cbc", "3des-cbc"} & set(libssh2.CIPHERS.split(","))


def test_data_another_call_queued_reaches_the_job_without_a_socket_event(sshd, settings, loop):
    """Any libssh2 call may read the socket and queue what it finds for another channel: the job still gets it."""
    import time

    pool = SSHPool()
    try:
        ex = SSHExecutor(ssh_target(sshd), settings, pool=pool)
        sink, box, cancel = BufferSink(), [], threading.Event()
        ex.start(ExecRequest(command="echo a; sleep 0.5; echo b; sleep 30"), sink, cancel, loop, box.append)
        wait_for(lambda: bytes(sink.stdout) == b"a\n", 5, what="the first line")
        ((chan,),) = [c.users for c in pool.libssh2().connections()]
        held = threading.Event()

        def hold() -> None:  # on the loop: "b" reaches the socket meanwhile, then another call takes it off
            time.sleep(1.0)
            chan.chan.read_stderr()
            held.set()

        loop.call_soon(hold)
        assert held.wait(5)
        wait_for(lambda: bytes(sink.stdout) == b"a\nb\n", 2, what="the queued line, though the socket stays quiet")
        cancel.set()
        wait_for(lambda: box, 10, what="the canceled job's end")
    finally:
        pool.close()


def test_a_fast_talker_is_handed_to_its_sink_in_bounded_steps(sshd, settings, loop):
    """Each read lets the server send another window: a step hands over what it read at STEP_BYTES, so a sink
    that waits for the database (OutputWriter's bound) holds the reading back instead of the buffer growing."""
    import time

    pool = SSHPool()
    held: list[int] = []

    class SlowSink(BufferSink):
        def write(self, stream, data):  # type: ignore[no-untyped-def]
            chans = [c for conn in pool.libssh2().connections() for c in conn.users]
            held.append(len(data) + sum(len(c.in_buffer) + len(c.in_stderr_buffer) for c in chans))
            time.sleep(0.002)  # the database lags
            super().write(stream, data)

    try:
        ex = SSHExecutor(ssh_target(sshd), settings, pool=pool)
        sink, box = SlowSink(), []
        ex.start(ExecRequest(command="head -c 33554432 /dev/zero", timeout=60), sink, threading.Event(), loop, box.append)
        wait_for(lambda: box, 60, what="32 MiB through a slow sink")
        assert box[0].exit_code == 0 and len(sink.stdout) == 32 * 1024 * 1024
        assert max(held) <= 2 * 1024 * 1024, max(held)  # STEP_BYTES plus one read at most
    finally:
        pool.close()
