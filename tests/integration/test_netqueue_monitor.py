"""``/monitor`` on the queue's port: a live Server-Sent Events stream pushed by the I/O loop, or a JSON snapshot.

Read with raw sockets (what a browser's EventSource or curl sees on the wire): the stream's head, then an
event about every second; a plain GET keeps the one JSON snapshot; streams need the queue token, are capped
(``max_monitor_streams``: one more gets 503) and end with an ``end`` event when the server stops.  A stream
is pushed from the loop's timer, so it never delays another client's PUT or RESERVE.
"""

from __future__ import annotations

import itertools
import json
import socket
import time

import pytest

from remora.netqueue.client import QueueClient
from remora.netqueue.server import QueueServer

TOKEN = "monitor-token"


@pytest.fixture
def server():
    srv = QueueServer(port=0, persistence=False, token=TOKEN, max_monitor_streams=2)
    srv.start()
    yield srv
    srv.stop()


def open_stream(srv: QueueServer, token: str | None = TOKEN, accept: str = "text/event-stream") -> socket.socket:
    host, port = srv.address
    sock = socket.create_connection((host, port), timeout=5)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    sock.sendall(f"GET /monitor HTTP/1.1\r\nHost: q\r\nAccept: {accept}\r\n{auth}\r\n".encode())
    return sock


class Reader:
    """Reads an HTTP response head, then Server-Sent Events, from a raw socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf = sock, b""

    def _until(self, sep: bytes) -> bytes:
        while sep not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(self.buf[:300])
            self.buf += chunk
        head, self.buf = self.buf.split(sep, 1)
        return head

    def head(self) -> tuple[int, dict[str, str]]:
        lines = self._until(b"\r\n\r\n").decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        return int(lines[0].split()[1]), headers

    def body(self, headers: dict[str, str]) -> bytes:
        n = int(headers["content-length"])
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buf += chunk
        return self.buf[:n]

    def event(self) -> tuple[str, dict]:
        fields = dict(line.split(": ", 1) for line in self._until(b"\n\n").decode().split("\n"))
        return fields.get("event", "message"), json.loads(fields["data"])


def test_a_stream_pushes_an_event_about_every_second(server):
    with QueueClient(":".join(map(str, server.address)), token=TOKEN) as c:
        c.register_worker("w1", host="box", concurrency=3)
        c.put("j1")
    sock = open_stream(server)
    try:
        r = Reader(sock)
        status, headers = r.head()
        assert status == 200 and headers["content-type"] == "text/event-stream" and "content-length" not in headers
        times, events = [], []
        for _ in range(3):
            events.append(r.event())
            times.append(time.monotonic())
        assert all(kind == "monitor" for kind, _ in events)
        first = events[0][1]
        assert first["stats"]["jobs"] == 1 and first["workers"][0]["host"] == "box" and first["worker_summary"]["concurrency"] == 3
        assert first["stats"]["server"]["monitor_streams"] == 1
        assert first["stats"]["process"]["rss_bytes"] > 0
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(0.8 <= g <= 2.0 for g in gaps), gaps
        with QueueClient(":".join(map(str, server.address)), token=TOKEN) as c:
            c.put("j2")
        assert r.event()[1]["stats"]["jobs"] == 2  # each event is a fresh snapshot
    finally:
        sock.close()


def test_a_plain_get_keeps_the_json_snapshot_and_streams_need_the_token(server):
    for accept in ("application/json", "*/*"):
        sock = open_stream(server, accept=accept)
        r = Reader(sock)
        status, headers = r.head()
        assert status == 200 and headers["content-type"] == "application/json"
        assert set(json.loads(r.body(headers))) == {"health", "stats", "workers", "worker_summary"}
        sock.close()
    for token in (None, "wrong"):
        sock = open_stream(server, token=token)
        status, _ = Reader(sock).head()
        assert status == 401
        sock.close()
    assert server.monitor_streams == 0


def test_streams_are_capped_and_a_closed_one_frees_its_place(server):
    a, b = open_stream(server), open_stream(server)
    ra, rb = Reader(a), Reader(b)
    assert ra.head()[0] == 200 and rb.head()[0] == 200
    ra.event(), rb.event()
    third = open_stream(server)
    r3 = Reader(third)
    status, headers = r3.head()
    assert status == 503 and json.loads(r3.body(headers))["code"] == "BUSY"
    third.close()
    a.close()
    deadline = time.monotonic() + 5
    while server.monitor_streams > 1 and time.monotonic() < deadline:
        rb.event()  # the server notices the closed stream on its next read
    assert server.monitor_streams == 1
    again = open_stream(server)
    ra2 = Reader(again)
    assert ra2.head()[0] == 200 and ra2.event()[0] == "monitor"
    again.close()
    b.close()


def test_a_stream_does_not_delay_other_clients(server):
    streams = [open_stream(server), open_stream(server)]
    readers = [Reader(s) for s in streams]
    for r in readers:
        r.head()
    addr = ":".join(map(str, server.address))
    with QueueClient(addr, token=TOKEN) as producer, QueueClient(addr, token=TOKEN) as consumer:
        slowest = 0.0
        for n in range(200):  # spans over two seconds of events (the streams' readers do not read meanwhile)
            t0 = time.monotonic()
            producer.put(f"job-{n}")
            (job,) = consumer.reserve(["job_queue"], timeout=1, count=1)
            consumer.ack(job.id)
            slowest = max(slowest, time.monotonic() - t0)
            time.sleep(0.012)
        assert slowest < 0.5, slowest
    # a parked RESERVE is answered as soon as a job arrives, whatever the stream's timer says
    with QueueClient(addr, token=TOKEN) as producer, QueueClient(addr, token=TOKEN) as consumer:
        pending = consumer.reserve_later(["job_queue"], timeout=5, count=1, worker_id="")
        time.sleep(0.1)
        t0 = time.monotonic()
        producer.put("late")
        (job,) = pending()
        assert job.id == "late" and time.monotonic() - t0 < 0.3
    assert readers[0].event()[0] == "monitor"
    for s in streams:
        s.close()


def test_stopping_the_server_ends_every_stream_cleanly():
    srv = QueueServer(port=0, persistence=False, token=TOKEN)
    srv.start()
    sock = open_stream(srv)
    r = Reader(sock)
    assert r.head()[0] == 200 and r.event()[0] == "monitor"
    srv.stop()
    kinds = []
    try:
        while True:
            kinds.append(r.event()[0])
    except EOFError:
        pass
    assert kinds[-1] == "end"
    sock.close()
