"""Webhook receivers for tests: a real HTTP server on 127.0.0.1 that records every POST, and an SMTP sink.

``Receiver`` answers each request with the next status of ``answers`` (then
``default``), or what ``answer`` says; with ``hang`` set it holds requests unanswered until
``release()`` (or its stop).  It can be started on a port chosen before
(``port``), so a test can point a webhook at a receiver that is down and start
it later.  ``SmtpSink`` is aiosmtpd's controller on a free port, keeping every
message.
"""

from __future__ import annotations

import email
import email.policy
import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.waits import free_port, wait_for


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    def __init__(
        self,
        *,
        port: int = 0,
        answers: list[int] | None = None,
        default: int = 200,
        hang: bool = False,
        answer: Callable[[Received, list[Received]], int] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.answer = answer  # (this request, the earlier ones) -> status, instead of ``answers``
        self.answers: deque[int] = deque(answers or [])
        self.default = default
        self.hang = hang
        self.requests: list[Received] = []
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                got = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with receiver._lock:
                    earlier = list(receiver.requests)
                    receiver.requests.append(got)
                    if receiver.answer is not None:
                        status = receiver.answer(got, earlier)
                    else:
                        status = receiver.answers.popleft() if receiver.answers else receiver.default
                if receiver.hang:
                    receiver._released.wait(60)
                    return
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"receiver-{self.port}", daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        self._released.set()

    def stop(self) -> None:
        self.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def of_event(self, event: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.headers.get("x-remora-event") == event]

    def wait(self, count: int, event: str | None = None, timeout: float = 30.0) -> list[Received]:
        """The requests (of ``event``) once there are at least ``count``."""

        def enough() -> list[Received] | None:
            found = self.of_event(event) if event else list(self.requests)
            return found if len(found) >= count else None

        return wait_for(enough, timeout, interval=0.05, what=f"{count} request(s) {event or ''} at {self.url}")  # type: ignore[return-value]


class SmtpSink:
    """An SMTP server (aiosmtpd) on 127.0.0.1 that keeps every message it is sent."""

    def __init__(self, *, login: tuple[str, str] | None = None) -> None:
        """``login``: (user, password) the sink requires (AUTH over plain TCP: loopback only)."""
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        self.port = free_port()
        self.messages: list[EmailMessage] = []
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                message = email.message_from_bytes(envelope.content, policy=email.policy.default)
                message["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
                sink.messages.append(message)  # type: ignore[arg-type]
                return "250 OK"

        def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
            given = (data.login.decode(), data.password.decode()) if hasattr(data, "login") else None
            return AuthResult(success=given == login)

        extra: dict[str, Any] = {}
        if login is not None:
            extra = {"authenticator": authenticate, "auth_required": True, "auth_require_tls": False}
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **extra)

    def __enter__(self) -> SmtpSink:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()

    def wait(self, count: int, timeout: float = 30.0) -> list[EmailMessage]:
        return wait_for(lambda: self.messages if len(self.messages) >= count else None, timeout, 0.05, f"{count} email(s)")  # type: ignore[return-value]
