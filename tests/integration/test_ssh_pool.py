"""The SSH connection pool with paramiko transports: reuse, channel limits, idle eviction (libssh2's: test_ssh_libssh2)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from remora.executor.base import BufferSink, ExecRequest
from remora.executor.ssh import SSHExecutor
from remora.executor.sshpool import SSHPool
from tests.support.waits import wait_for
from tests.support.workerkit import init_db, make_settings, ssh_target

pytestmark = pytest.mark.ssh


@pytest.fixture
def settings(tmp_path):
    init_db(tmp_path)
    return make_settings(tmp_path, {"ssh.transport": "paramiko"})


def executor(srv, settings, pool) -> SSHExecutor:
    return SSHExecutor(ssh_target(srv), settings, pool=pool)


def test_200_jobs_in_a_row_open_at_most_2_connections(make_sshd, settings):
    srv = make_sshd("127.0.0.1")
    pool = SSHPool()
    try:
        ex = executor(srv, settings, pool)
        before = srv.accepted_connections()
        for i in range(200):
            sink = BufferSink()
            res = ex.run(ExecRequest(command=f"echo {i}"), sink, threading.Event())
            assert res.exit_code == 0 and bytes(sink.stdout) == f"{i}\n".encode()
        assert srv.accepted_connections() - before <= 2
        assert pool.opened == 1
    finally:
        pool.close()


def test_connections_prefer_aes_gcm_and_fall_back_to_what_the_server_offers(make_sshd, settings):
    """AES-GCM (an AEAD: no separate HMAC per packet, which paramiko computes in Python) when the server has it."""
    for ciphers, expected in ((None, "aes128-gcm@openssh.com"), ("aes256-ctr", "aes256-ctr")):
        srv = make_sshd("127.0.0.1", extra_config=[f"Ciphers {ciphers}"] if ciphers else [])
        pool = SSHPool()
        try:
            sink = BufferSink()
            assert executor(srv, settings, pool).run(ExecRequest(command="echo", args=["ok"]), sink, threading.Event()).exit_code == 0
            assert bytes(sink.stdout) == b"ok\n"
            [conn] = [c for conns in pool._conns.values() for c in conns]
            assert conn.transport.remote_cipher == conn.transport.local_cipher == expected
        finally:
            pool.close()


def test_an_idle_pooled_connections_thread_wakes_about_once_a_second(sshd, settings):
    """paramiko's per-connection thread wakes on its socket timeout (0.1 s by default: ten times a second, per connection)."""
    pool = SSHPool()
    try:
        assert executor(sshd, settings, pool).run(ExecRequest(command="true"), BufferSink(), threading.Event()).exit_code == 0
        [conn] = [c for conns in pool._conns.values() for c in conns]

        def switches() -> int:
            status = Path(f"/proc/self/task/{conn.transport.native_id}/status").read_text()
            return int(next(line.split()[1] for line in status.splitlines() if line.startswith("voluntary_ctxt_switches")))

        before, started = switches(), time.monotonic()
        time.sleep(3)  # what is measured is idleness itself
        woke = switches() - before
        assert woke <= 3 * (time.monotonic() - started) + 2, woke  # ~1/s; at paramiko's 0.1 s it is ~30
    finally:
        pool.close()


def test_more_concurrent_channels_than_the_limit_open_another_connection(make_sshd, settings):
    srv = make_sshd("127.0.0.1")
    pool = SSHPool(max_sessions=3)
    try:
        ex = executor(srv, settings, pool)
        with ThreadPoolExecutor(6) as tp:
            results = list(tp.map(lambda i: ex.run(ExecRequest(command="sleep 0.5"), BufferSink(), threading.Event()), range(6)))
        assert all(r.exit_code == 0 for r in results)
        assert pool.opened == 2 and srv.accepted_connections() == 2
    finally:
        pool.close()


def test_idle_connections_are_closed(sshd, settings):
    pool = SSHPool(idle_timeout=0.3)
    try:
        ex = executor(sshd, settings, pool)
        assert ex.run(ExecRequest(command="true"), BufferSink(), threading.Event()).exit_code == 0
        assert pool.connection_count() == 1
        wait_for(lambda: pool.connection_count() == 0, 3, what="idle eviction")
        assert ex.run(ExecRequest(command="true"), BufferSink(), threading.Event()).exit_code == 0
        assert pool.opened == 2
    finally:
        pool.close()


def test_keepalive_is_set_on_pooled_transports(sshd, settings):
    pool = SSHPool()
    try:
        ex = executor(sshd, settings, pool)
        ex.run(ExecRequest(command="true"), BufferSink(), threading.Event())
        (conn,) = [c for cs in pool._conns.values() for c in cs]
        assert conn.transport.packetizer._Packetizer__keepalive_interval == int(settings.ssh.keepalive_interval)
    finally:
        pool.close()
