"""A real NetQueue server on loopback port 0: concurrency, pipelining, hostile input, HTTP, auth, restarts."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remora.errors import ConfigError, QueueError
from remora.netqueue import protocol as p
from remora.netqueue.client import PutItem, QueueClient
from remora.netqueue.server import QueueServer
from tests.support.waits import wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server(tmp_path):
    srv = QueueServer(port=0, data_dir=tmp_path / "queue", fsync="always")
    srv.start()
    yield srv
    srv.stop()


def addr(srv: QueueServer) -> str:
    host, port = srv.address
    return f"{host}:{port}"


def raw(srv: QueueServer) -> socket.socket:
    sock = socket.create_connection(srv.address, timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_frame(sock: socket.socket) -> tuple[int, int, int, bytes] | None:
    """(opcode, flags, request id, body), or None when the server closed the connection."""
    head = b""
    while len(head) < p.HEADER_SIZE:
        chunk = sock.recv(p.HEADER_SIZE - len(head))
        if not chunk:
            return None
        head += chunk
    length, _version, opcode, flags, rid = p.HEADER.unpack(head)
    body = b""
    while len(body) < length - (p.HEADER_SIZE - 4):
        chunk = sock.recv(length - (p.HEADER_SIZE - 4) - len(body))
        if not chunk:
            return None
        body += chunk
    return opcode, flags, rid, body


def test_fifty_concurrent_clients_put_and_work_every_job_exactly_once(server):
    done: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def client_main(n: int) -> None:
        try:
            with QueueClient(addr(server), name=f"c{n}") as c:
                for i in range(20):
                    assert c.put(f"c{n}-{i}", priority=1 + i % 10)
                got = c.reserve(["job_queue"], timeout=2, count=20, worker_id=f"w{n}")
                while got:
                    ids = [r.id for r in got]
                    for job_id in ids[:-1]:
                        assert c.ack(job_id)
                    got = c.ack_reserve(ids[-1], ["job_queue"], timeout=0, count=5, worker_id=f"w{n}")
                    with lock:
                        done.extend(ids)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client_main, args=(n,)) for n in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert len(done) == len(set(done)) == 1000
    with QueueClient(addr(server)) as c:
        stats = c.stats()
    assert stats["jobs"] == 0 and stats["totals"]["acked"] == 1000


def test_pipelined_requests_are_answered_by_request_id(server):
    sock = raw(server)
    frames = [p.frame(p.OP_PUT, 1000 + i, p.encode_put(f"pipe{i}", "pq", 5, 0, 30, 3, b"x")) for i in range(200)]
    frames.append(p.frame(p.OP_RESERVE, 5000, p.encode_reserve(["pq"], 0, 200, "")))
    sock.sendall(b"".join(frames))
    replies = {}
    for _ in range(201):
        opcode, flags, rid, body = read_frame(sock)
        assert flags == p.FLAG_REPLY
        replies[rid] = (opcode, body)
    assert all(replies[1000 + i] == (p.OP_PUT, b"\x01") for i in range(200))
    got = p.decode_reservations(p.Reader(replies[5000][1]))
    assert [g[0] for g in got] == [f"pipe{i}" for i in range(200)]
    sock.close()


def test_a_parked_reserve_wakes_on_put_from_another_connection(server):
    with QueueClient(addr(server)) as waiter_client, QueueClient(addr(server)) as producer:
        result: list = []
        t = threading.Thread(target=lambda: result.append(waiter_client.reserve(["wake"], timeout=10)))
        t.start()
        wait_for(lambda: server.stats()["server"]["parked_reserves"] == 1, 5, what="the reserve to park")
        started = time.monotonic()
        producer.put("now", queue="wake")
        t.join(5)
        assert [r.id for r in result[0]] == ["now"]
        assert time.monotonic() - started < 1.0


def test_leases_expire_over_the_wire_and_touch_renews(tmp_path):
    srv = QueueServer(port=0, persistence=False)
    srv.start()
    try:
        with QueueClient(addr(srv)) as c:
            c.put("short", ttr=0.3, max_attempts=2)
            c.put("kept", ttr=0.3)
            got = c.reserve(["job_queue"], timeout=0, count=2, worker_id="w")
            assert {r.id for r in got} == {"short", "kept"}
            deadline = time.monotonic() + 0.6
            while time.monotonic() < deadline:
                assert c.touch(["kept"], worker_id="w") == {"kept": "ok"}
                time.sleep(0.05)
            (again,) = c.reserve(["job_queue"], timeout=2)
            assert (again.id, again.attempt) == ("short", 2)
            wait_for(lambda: c.dlq_list(), 3, what="the second expiry to dead-letter the job")
            (dead,) = c.dlq_list()
            assert (dead.id, dead.reason, dead.state) == ("short", "lease expired", "dead")
            assert c.dlq_kick() == 1
            assert c.peek("short").state == "ready"
    finally:
        srv.stop()


def test_oversized_frames_and_bad_versions_get_an_error_and_are_closed(server):
    sock = raw(server)
    sock.sendall(struct.pack(">I", p.MAX_FRAME + 1) + b"\x01" * 64)
    _opcode, flags, rid, body = read_frame(sock)
    assert flags & p.FLAG_ERROR and p.decode_error(body)[0] == "FRAME_TOO_LARGE"
    assert read_frame(sock) is None
    sock = raw(server)
    sock.sendall(p.HEADER.pack(8, 99, p.OP_PING, 0, 7))
    _, flags, rid, body = read_frame(sock)
    assert rid == 7 and p.decode_error(body)[0] == "BAD_VERSION"
    assert read_frame(sock) is None


def test_limits_are_error_codes_and_the_connection_stays_usable(server):
    sock = raw(server)
    big = p._PUT.pack(5, 1, 0, 0, 1, 1, p.MAX_BODY + 1) + b"jq" + b"\x00" * (p.MAX_BODY + 1)
    hello = p.frame(p.OP_HELLO, 9, p.encode_hello("raw", ""))  # before it, frames over MAX_PREAUTH_FRAME close the connection
    sock.sendall(hello + p.frame(p.OP_PUT, 1, big) + p.frame(77, 2) + p.frame(p.OP_PING, 3))
    codes = {}
    for _ in range(4):
        _, flags, rid, body = read_frame(sock)
        codes[rid] = p.decode_error(body)[0] if flags & p.FLAG_ERROR else "ok"
    assert codes == {9: "ok", 1: "BODY_TOO_LARGE", 2: "UNKNOWN_OP", 3: "ok"}
    sock.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    opcode=st.integers(0, 255),
    body=st.binary(max_size=120),
    junk=st.binary(max_size=40),
)
def test_garbage_never_hurts_the_server_or_other_connections(server, opcode, body, junk):
    good = QueueClient(addr(server))
    try:
        bad = raw(server)
        bad.settimeout(2)
        bad.sendall(p.frame(opcode, 42, body) + junk)
        reply = read_frame(bad)
        assert reply is None or reply[2] in (42, 0)  # an answer to the request, or a closed connection
        bad.close()
        assert good.ping() < 2
    finally:
        good.close()


def test_http_endpoints_answer_json_on_the_same_port(server):
    with QueueClient(addr(server)) as c:
        c.register_worker("w1", host="box", concurrency=2)
        c.put("h1", priority=2)
    base = f"http://{addr(server)}"
    health = json.load(urllib.request.urlopen(base + "/health", timeout=5))
    assert health["status"] == "ok"
    stats = json.load(urllib.request.urlopen(base + "/stats", timeout=5))
    assert stats["queue_depth"] == 1 and stats["priority_distribution"]["2"] == 1
    for key in ("active_workers", "processing_rate", "average_wait_time"):
        assert key in stats
    workers = json.load(urllib.request.urlopen(base + "/workers", timeout=5))
    assert workers[0]["id"] == "w1"
    assert json.load(urllib.request.urlopen(base + "/workers/stats", timeout=5))["concurrency"] == 2
    monitor = json.load(urllib.request.urlopen(base + "/monitor", timeout=5))
    assert monitor["stats"]["jobs"] == 1 and monitor["workers"][0]["host"] == "box"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(base + "/nope", timeout=5)
    assert err.value.code == 404


def test_token_auth_over_tcp_and_http(tmp_path):
    srv = QueueServer(port=0, persistence=False, token="s3cret")
    srv.start()
    try:
        with pytest.raises(QueueError) as err:
            QueueClient(addr(srv)).ping()
        assert err.value.code == "UNAUTHORIZED"
        with pytest.raises(QueueError):
            QueueClient(addr(srv), token="wrong").ping()
        with QueueClient(addr(srv), token="s3cret") as c:
            assert c.put("ok") is True
        sock = raw(srv)
        sock.sendall(p.frame(p.OP_PUT, 5, p.encode_put("sneaky", "q", 5, 0, 1, 1, b"")))
        _, _flags, _, body = read_frame(sock)
        assert p.decode_error(body)[0] == "UNAUTHORIZED"
        base = f"http://{addr(srv)}"
        assert json.load(urllib.request.urlopen(base + "/health", timeout=5))["status"] == "ok"
        with pytest.raises(urllib.error.HTTPError) as http_err:
            urllib.request.urlopen(base + "/stats", timeout=5)
        assert http_err.value.code == 401
        req = urllib.request.Request(base + "/stats", headers={"Authorization": "Bearer s3cret"})
        assert json.load(urllib.request.urlopen(req, timeout=5))["jobs"] == 1
    finally:
        srv.stop()


def test_a_non_loopback_bind_without_a_token_is_refused():
    with pytest.raises(ConfigError, match="token"):
        QueueServer(host="0.0.0.0", port=0, persistence=False)


def test_thousand_idle_connections_cost_no_threads(server):
    before = threading.active_count()
    socks = []
    for _ in range(1000):  # each past its handshake, as clients do: idle, not unauthenticated (those are capped and timed out)
        sock = raw(server)
        sock.sendall(p.frame(p.OP_HELLO, 1, p.encode_hello("idle", "")))
        socks.append(sock)
    try:
        with QueueClient(addr(server)) as c:
            wait_for(lambda: c.stats()["connections"] >= 1001, 10, what="connections to be accepted")
            assert c.ping() < 1
        assert threading.active_count() == before
    finally:
        for s in socks:
            s.close()


def test_client_reconnects_after_a_server_restart(tmp_path):
    data_dir = tmp_path / "queue"
    srv = QueueServer(port=0, data_dir=data_dir)
    srv.start()
    host, port = srv.address
    client = QueueClient(f"{host}:{port}", retry_for=10)
    try:
        assert client.put("before")
        srv.stop()
        restarted: list[QueueServer] = []

        def restart() -> None:
            time.sleep(0.3)
            new = QueueServer(port=port, data_dir=data_dir)
            new.start()
            restarted.append(new)

        t = threading.Thread(target=restart)
        t.start()
        assert client.put("after") is True  # retried with backoff until the server is back
        t.join()
        assert client.peek("before") is not None
        restarted[0].stop()
    finally:
        client.close()


def test_cli_stats_health_workers_and_dlq_against_a_live_server(server):
    env_addr = addr(server)
    with QueueClient(env_addr) as c:
        c.put("dead1", ttr=0.05, max_attempts=1)
        c.reserve(["job_queue"], timeout=0)
        wait_for(lambda: c.dlq_list(), 3, what="a dead letter")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "remora", "queue", *args],
            capture_output=True,
            text=True,
            timeout=30,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": "/tmp"},
        )

    stats = cli("stats", "--json", "--addr", env_addr)
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["dead"] == 1
    assert cli("health", "--addr", env_addr).stdout.startswith("ok")
    dead = json.loads(cli("dlq", "list", "--json", "--addr", env_addr).stdout)  # no database here: the queue's view
    assert dead[0]["kind"] == "worker died too often" and "lease expired" in dead[0]["reason"]
    assert cli("dlq", "purge", "--all", "--addr", env_addr).returncode == 0
    assert json.loads(cli("workers", "--json", "--addr", env_addr).stdout) == []
    down = cli("health", "--addr", "127.0.0.1:1")
    assert down.returncode == 69 and "unavailable" in down.stderr


def test_snapshot_on_demand_compacts_to_the_live_set_and_survives_restart(tmp_path):
    data_dir = tmp_path / "queue"
    srv = QueueServer(port=0, data_dir=data_dir)
    srv.start()
    try:
        with QueueClient(addr(srv)) as c:
            c.put_many([PutItem(f"s{i}", priority=1 + i % 10) for i in range(300)], per_frame=50)
            for r in c.reserve(["job_queue"], timeout=0, count=200):
                assert c.ack(r.id)
            result = c.snapshot()
            assert result == {"persistence": True, "generation": 1, "jobs": 100, "records": 100}
            c.put("after-snapshot")
    finally:
        srv.stop()
    assert sorted(p.name for p in data_dir.iterdir()) == ["snapshot.1", "wal.1"]
    srv = QueueServer(port=0, data_dir=data_dir)
    srv.start()
    try:
        with QueueClient(addr(srv)) as c:
            assert c.stats()["jobs"] == 101
            got = c.reserve(["job_queue"], timeout=0, count=3)
            assert [(r.id, r.priority) for r in got] == [("after-snapshot", 5), ("s206", 7), ("s216", 7)]
    finally:
        srv.stop()


def test_a_lease_survives_a_server_restart_and_ack_goes_through_on_a_fresh_connection(tmp_path):
    data_dir = tmp_path / "queue"
    srv = QueueServer(port=0, data_dir=data_dir)
    srv.start()
    host, port = srv.address
    with QueueClient(f"{host}:{port}") as c:  # retry_for=0: one reconnect, no waiting
        c.put("held", ttr=60)
        (r,) = c.reserve(["job_queue"], timeout=0, worker_id="w1")
        srv.stop()
        srv = QueueServer(port=port, data_dir=data_dir)
        srv.start()
        try:
            assert c.touch(["held"], worker_id="w1") == {"held": "ok"}
            srv.stop()
            srv = QueueServer(port=port, data_dir=data_dir)
            srv.start()
            assert c.ack(r.id) is True  # the dead idle connection is noticed before the ACK is sent
            assert c.peek("held") is None
        finally:
            srv.stop()
