"""One delivery attempt against misbehaving receivers on 127.0.0.1: the attempt's time is bounded by webhooks.timeout."""

from __future__ import annotations

import socket
import threading
import time

from remora.notify import transport


def test_a_receiver_trickling_its_answer_is_cut_off_at_the_timeout():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok":  # one byte every 0.2 s: each read is quick, the whole is not
                if stop.wait(0.2):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    started = time.monotonic()
    result = transport.post(f"http://127.0.0.1:{port}/hook", b"{}", {"Content-Type": "application/json"}, timeout=1.0)
    elapsed = time.monotonic() - started
    stop.set()
    server.close()
    assert not result.ok and "timed out" in result.error, result
    assert elapsed < 3.0, elapsed


def test_a_refused_connection_and_a_non_2xx_are_failed_attempts_with_their_reason():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    refused = transport.post(f"http://127.0.0.1:{port}/", b"{}", {}, timeout=1.0)
    assert not refused.ok and refused.status_code is None and "refused" in refused.error.lower()
