"""The HTTP client never sends a POST twice, yet survives keep-alive connections the server closed."""

from __future__ import annotations

import socket
import threading

import pytest

from remora.client import Client
from remora.errors import Unavailable
from tests.support.waits import wait_for

SHORT = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"partial'
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n{}"


class ScriptedServer:
    """Answers each connection's requests by a script: 'ok' answers, 'close' reads then hangs up."""

    def __init__(self, scripts: list[list[str]]) -> None:
        self.scripts = scripts
        self.requests: list[bytes] = []
        self.closed = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        for script in self.scripts:
            conn, _ = self.sock.accept()
            with conn:
                for action in script:
                    data = conn.recv(65536)
                    if not data:
                        break
                    self.requests.append(data.split(b" ", 1)[0])
                    if action == "ok":
                        conn.sendall(OK)
                    elif action == "short":  # fewer body bytes than announced, then hang up
                        conn.sendall(SHORT)
                        break
                    else:
                        break
            self.closed += 1
        self.sock.close()


def test_a_post_on_a_connection_the_server_closed_goes_out_once_on_a_new_one():
    server = ScriptedServer([["ok"], ["ok"]])  # first connection: one answer, then closed by the server
    client = Client(f"http://127.0.0.1:{server.port}")
    client.get("/health")
    wait_for(lambda: server.closed == 1, 5, what="the server to close the kept-alive connection")
    assert client.post("/api/v1/jobs", {"command": "true"}) == {}
    assert server.requests == [b"GET", b"POST"]


def test_a_post_whose_answer_is_lost_is_not_sent_again():
    server = ScriptedServer([["ok", "close"], ["ok"]])
    client = Client(f"http://127.0.0.1:{server.port}")
    client.get("/health")
    with pytest.raises(Unavailable, match="lost the connection"):
        client.post("/api/v1/jobs", {"command": "true"})
    assert server.requests == [b"GET", b"POST"]


def test_a_get_is_retried_once_on_a_dropped_connection():
    server = ScriptedServer([["ok", "close"], ["ok"]])
    client = Client(f"http://127.0.0.1:{server.port}")
    client.get("/health")
    assert client.get("/health") == {}
    assert server.requests == [b"GET", b"GET", b"GET"]


def test_an_answer_cut_off_mid_body_is_a_lost_connection_not_a_crash():
    server = ScriptedServer([["short"]])
    client = Client(f"http://127.0.0.1:{server.port}")
    with pytest.raises(Unavailable, match="lost the connection"):
        client.get("/api/v1/jobs")
