"""Slow readers cannot stall the API.

A real ``remora api`` process serves a job with 40 MiB of stdout.  Fifty
connections ask for ``/api/v1/jobs/<id>/stdout`` with a tiny receive buffer
and never read.  ``/health`` must still answer at once (the measured median
is printed; the design target is under 100 ms, the assertion leaves margin
for a loaded machine), the API's RSS must stay bounded (not 50 x 40 MiB),
and a reader that makes no progress is dropped after ``api.send_timeout``.
"""

from __future__ import annotations

import socket
import statistics
import time
import urllib.error
import urllib.request

import pytest

from remora import models, output
from remora.executor.base import Stream
from tests.support.cluster import Cluster
from tests.support.waits import wait_for

MIB = 1024 * 1024
SIZE = 40 * MIB
READERS = 50


def _job_with_stdout(size: int) -> str:
    """A finished job whose stdout is ``size`` bytes, written through the output layer."""
    local = models.Server.get_or_none(models.Server.name == "local")
    if local is None:
        from remora import services

        local = services.ensure_local_server()
    job_id = models.new_id()
    now = models.utcnow()
    models.Job.insert(
        id=job_id, command="yes", server=local.id, status="completed", created_at=now, updated_at=now, finished_at=now
    ).execute()
    line = b"y" * 1023 + b"\n"
    block = line * (output.MAX_CHUNK // len(line))
    rows = []
    for seq, offset in enumerate(range(0, size, len(block))):
        rows.append((seq, int(Stream.STDOUT), offset, block[: size - offset], output.ENCODING_RAW))
    with models.write_transaction():
        models.append_output(job_id, rows, size, 0, False, now)
    return job_id


def _slow_reader(port: int, path: str, token: str, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    return sock


def _peek_status(sock: socket.socket) -> int:
    """The status code of the response waiting on ``sock``, without consuming it."""
    sock.settimeout(10)
    head = b""
    while len(head) < 12:
        head = sock.recv(12, socket.MSG_PEEK)
    return int(head[9:12])


def _health_ms(url: str) -> float:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url + "/health", timeout=10) as resp:
            resp.read()
    except urllib.error.HTTPError as exc:  # 503 (no queue running) is an answer too
        exc.read()
    return (time.perf_counter() - started) * 1000


@pytest.mark.parametrize("addresses", [1, READERS], ids=["one-address", "fifty-addresses"])
def test_fifty_slow_readers_do_not_stall_health(tmp_path, addresses):
    cluster = Cluster(tmp_path / "stack", settings={"api.send_timeout": "5s", "logging.level": "warning"})
    readers: list[socket.socket] = []
    try:
        job_id = _job_with_stdout(SIZE)
        api = cluster.api()
        api.start()
        quiet = statistics.median(_health_ms(cluster.api_url) for _ in range(5))
        rss_before = api.rss_kib()
        path = f"/api/v1/jobs/{job_id}/stdout"
        for i in range(READERS):
            readers.append(_slow_reader(cluster.api_port, path, cluster.token, f"127.0.0.{1 + i % addresses}"))
        time.sleep(1.0)  # let every request reach the server and fill what it can
        samples = [_health_ms(cluster.api_url) for _ in range(7)]
        median = statistics.median(samples)
        rss_after = api.rss_kib()
        print(
            f"\n/health median {median:.1f} ms with {READERS} slow readers from {addresses} address(es) (quiet: {quiet:.1f} ms; samples {[round(s, 1) for s in samples]});"
            f" API RSS {rss_before / 1024:.0f} -> {rss_after / 1024:.0f} MiB"
        )
        assert median < 1000, f"/health took {median:.0f} ms (median) with {READERS} slow readers"
        assert rss_after - rss_before < 400 * 1024, f"API RSS grew by {(rss_after - rss_before) / 1024:.0f} MiB"

        # Every request was answered: a download (200; at most half the threads overall, a quarter
        # per address) or 429 (per address) / 503 (overall) with Retry-After; none waits for a thread.
        statuses = [_peek_status(sock) for sock in readers]
        refused = 429 if addresses == 1 else 503
        assert set(statuses) <= {200, refused} and 200 in statuses and refused in statuses, statuses
        # A download whose reader accepts nothing is dropped after api.send_timeout (5 s here): reading
        # it afterwards ends early, with less than the whole body.
        victim = readers[statuses.index(200)]
        time.sleep(8)  # more than api.send_timeout plus the server's check interval
        victim.settimeout(30)
        got = 0
        while True:
            piece = victim.recv(1 << 20)
            if not piece:
                break
            got += len(piece)
        assert got < SIZE, f"the stalled download was not dropped ({got} bytes received)"
        # And the 40 MiB body is still served whole to a reader that reads.
        with urllib.request.urlopen(
            urllib.request.Request(cluster.api_url + path, headers={"Authorization": f"Bearer {cluster.token}"}), timeout=60
        ) as resp:
            assert len(resp.read()) == SIZE
    finally:
        for sock in readers:
            sock.close()
        cluster.close()


def test_connections_over_the_per_client_cap_are_refused(tmp_path):
    cluster = Cluster(tmp_path / "stack", settings={"api.max_connections_per_client": 8, "logging.level": "warning"})
    held: list[socket.socket] = []
    try:
        cluster.queue().start()
        api = cluster.api()
        api.start()
        for _ in range(8):
            sock = socket.create_connection(("127.0.0.1", cluster.api_port), timeout=5)
            held.append(sock)
        time.sleep(0.3)
        extra = socket.create_connection(("127.0.0.1", cluster.api_port), timeout=5)
        held.append(extra)
        extra.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while True:
            piece = extra.recv(65536)
            if not piece:
                break
            data += piece
        assert data.startswith(b"HTTP/1.1 503"), data[:200]
        assert b"Retry-After:" in data
        for sock in held[:-1]:
            sock.close()
        held.clear()

        def healthy() -> bool:
            try:
                urllib.request.urlopen(cluster.api_url + "/health", timeout=5).close()
                return True
            except (urllib.error.URLError, ConnectionError):
                return False

        wait_for(healthy, 10, interval=0.1, what="/health once the held connections are closed")
    finally:
        for sock in held:
            sock.close()
        cluster.close()
