"""Limits on the queue port before authentication, and on what an authenticated client may create.

`remora queue serve` runs as a real subprocess (its RSS is read from
/proc/<pid>/status); the hostile clients are raw sockets from this process.
"""

from __future__ import annotations

import resource
import socket
import time

import pytest

from remora.errors import QueueError
from remora.netqueue import protocol as p
from remora.netqueue.client import PutItem, QueueClient
from remora.netqueue.server import QueueServer
from tests.security.test_queue_token import base_env, queue_serve
from tests.support.cluster import rss_kib
from tests.support.waits import wait_for

FLOOD = 1000
AUTH_TIMEOUT = 2.0
TOKEN = "preauth-test-token"


def closed_by_peer(sock: socket.socket) -> bool:
    """True once the server has closed ``sock`` (EOF or reset), reading and dropping whatever it answered."""
    try:
        while True:
            if not sock.recv(65536, socket.MSG_DONTWAIT):  # no select(): these fds may be over FD_SETSIZE
                return True
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


@pytest.fixture
def many_fds():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * FLOOD))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < FLOOD + 200:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is too low for {FLOOD} connections")
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_flood_of_unauthenticated_8_mib_frames_costs_no_memory(tmp_path, many_fds):
    env = base_env(tmp_path, REMORA_QUEUE_AUTH_TIMEOUT=f"{AUTH_TIMEOUT}s", REMORA_QUEUE_TOKEN=TOKEN)
    with queue_serve(tmp_path, "--no-persistence", env=env) as (proc, port):
        token = TOKEN
        with QueueClient(f"127.0.0.1:{port}", token=token) as warm:
            warm.put("warm-up")
        idle = rss_kib(proc.pid)
        header = p.LENGTH.pack(p.MAX_FRAME) + p.HEADER.pack(p.MAX_FRAME, p.PROTOCOL_VERSION, p.OP_PUT, 0, 1)[4:]
        chunk = b"\x00" * (256 * 1024)
        socks = []
        peak = idle
        started = time.monotonic()
        try:
            for _ in range(FLOOD):
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                sock.setblocking(False)
                try:
                    sock.send(header)
                    for _ in range(4):  # as much of the 8 MiB body as the socket takes
                        sock.send(chunk)
                except (BlockingIOError, ConnectionError):
                    pass
                socks.append(sock)
                if len(socks) % 100 == 0:
                    peak = max(peak, rss_kib(proc.pid))

            def all_closed() -> bool:
                nonlocal peak
                peak = max(peak, rss_kib(proc.pid))
                return all(closed_by_peer(s) for s in socks)

            wait_for(all_closed, AUTH_TIMEOUT + 15, interval=0.1, what="the server to close every unauthenticated connection")
            elapsed = time.monotonic() - started
        finally:
            for sock in socks:
                sock.close()
        print(f"\nqueue RSS: {idle} KiB idle, {peak} KiB at most under {FLOOD} pre-auth 8 MiB frames; all closed in {elapsed:.2f}s")
        assert peak - idle < 8 * 1024, f"RSS grew from {idle} KiB to {peak} KiB under {FLOOD} pre-auth 8 MiB frames"
        assert elapsed < AUTH_TIMEOUT + 15
        with QueueClient(f"127.0.0.1:{port}", token=token, connect_timeout=3) as client:
            assert client.put("after-the-flood") is True
            assert client.stats()["jobs"] == 2


def test_a_silent_unauthenticated_connection_is_closed_after_the_deadline(tmp_path):
    env = base_env(tmp_path, REMORA_QUEUE_AUTH_TIMEOUT=f"{AUTH_TIMEOUT}s", REMORA_QUEUE_TOKEN=TOKEN)
    with queue_serve(tmp_path, "--no-persistence", env=env) as (_, port):
        silent = socket.create_connection(("127.0.0.1", port), timeout=5)
        half = socket.create_connection(("127.0.0.1", port), timeout=5)
        half.sendall(b"\x00\x00")  # half a length field, then nothing
        opened = time.monotonic()
        with QueueClient(f"127.0.0.1:{port}", token=TOKEN) as good:
            good.put("j")
            wait_for(lambda: closed_by_peer(silent) and closed_by_peer(half), AUTH_TIMEOUT + 10, interval=0.05, what="the close")
            waited = time.monotonic() - opened
            assert AUTH_TIMEOUT - 0.5 <= waited < AUTH_TIMEOUT + 5, waited
            assert good.ping() >= 0  # an authenticated connection stays, idle or not
        silent.close()
        half.close()


def test_unauthenticated_connections_cannot_fill_max_connections():
    server = QueueServer(port=0, persistence=False, token="t0k", max_connections=300, max_unauthenticated=16, auth_timeout=30)
    server.start()
    try:
        host, port = server.address
        idle = [socket.create_connection((host, port)) for _ in range(200)]
        wait_for(lambda: server.stats()["connections"] <= 16, 10, what="unauthenticated connections beyond the cap to be closed")
        with QueueClient(f"{host}:{port}", token="t0k") as client:
            assert client.put("in") is True
        for sock in idle:
            sock.close()
    finally:
        server.stop()


def test_a_large_frame_before_auth_is_refused_even_without_a_token():
    server = QueueServer(port=0, persistence=False, token="")
    server.start()
    try:
        host, port = server.address
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(p.LENGTH.pack(1024 * 1024))
            reply = b""
            while len(reply) < 4 or len(reply) < 4 + p.LENGTH.unpack_from(reply, 0)[0]:
                data = sock.recv(65536)
                assert data
                reply += data
            assert p.decode_error(reply[p.HEADER_SIZE :])[0] == "FRAME_TOO_LARGE"
        with QueueClient(f"{host}:{port}") as client:  # after HELLO the full MAX_FRAME applies
            assert client.put("big", body=b"x" * (p.MAX_BODY - 100)) is True
    finally:
        server.stop()


def test_creating_queue_names_beyond_the_limit_is_a_clear_error():
    server = QueueServer(port=0, persistence=False, token="t0k", max_queues=5)
    server.start()
    try:
        host, port = server.address
        with QueueClient(f"{host}:{port}", token="t0k") as client:
            for i in range(5):
                assert client.put(f"j{i}", queue=f"q{i}") is True
            with pytest.raises(QueueError) as err:
                client.put("j-over", queue="q-over")
            assert err.value.code == "TOO_MANY_QUEUES" and "5" in str(err.value)
            with pytest.raises(QueueError) as err:
                client.put_many([PutItem("b1", "q0"), PutItem("b2", "another-new")])
            assert err.value.code == "TOO_MANY_QUEUES"
            assert client.put("j-existing", queue="q3") is True  # existing names still take jobs
            assert client.peek("j-over") is None and client.peek("b1") is None
            with pytest.raises(QueueError) as err:
                client.put("j-long", queue="q" * (p.MAX_NAME + 1))
            assert err.value.code == "NAME_TOO_LONG"
    finally:
        server.stop()


def test_requests_without_the_token_end_with_a_closed_connection():
    server = QueueServer(port=0, persistence=False, token="t0k")
    server.start()
    try:
        host, port = server.address
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(b"".join(p.frame(p.OP_PUT, rid, p.encode_put(f"j{rid}", "q", 5, 0, 30, 3, b"")) for rid in range(1, 21)))
            replies, buf = [], b""
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                buf += data
                while len(buf) >= 4 and len(buf) >= 4 + p.LENGTH.unpack_from(buf, 0)[0]:
                    end = 4 + p.LENGTH.unpack_from(buf, 0)[0]
                    replies.append(p.decode_error(buf[p.HEADER_SIZE : end]))
                    buf = buf[end:]
        assert [code for code, _ in replies] == ["UNAUTHORIZED"] * 9  # 8 answered, then the close is explained
        assert "too many requests before authentication" in replies[-1][1]
        assert server.stats()["jobs"] == 0
    finally:
        server.stop()
