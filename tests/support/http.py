"""The one HTTP helper for tests: ``request`` (one call, a ``Reply``) and ``Http`` (keep-alive, one per thread).

``token`` is sent as ``Authorization: Bearer <token>``; a ``dict`` body is sent
as JSON, ``raw`` bytes as they are.  ``Reply.data`` is the body decoded by its
Content-Type: JSON, else text.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def data(self) -> Any:
        """The body as JSON when the server says so (None when empty), else as text."""
        if self.headers.get("content-type", "").startswith("application/json"):
            return json.loads(self.body) if self.body else None
        return self.body.decode(errors="replace")

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.body[:300]!r})"


def _send(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: Any,
    token: str | None,
    raw: bytes | None,
    headers: dict[str, str] | None,
    content_type: str,
) -> Reply:
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    if data is not None:
        all_headers.setdefault("Content-Type", content_type)
    conn.request(method, path, body=data, headers=all_headers)
    resp = conn.getresponse()
    return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())


def request(
    host: str,
    port: int,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
    timeout: float = 30,
) -> Reply:
    """One HTTP request on a fresh connection."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        return _send(conn, method, path, body, token, raw, headers, content_type)
    finally:
        conn.close()


@dataclass
class Http:
    """A keep-alive HTTP client for one server (not thread-safe: one per thread); retries once on a dropped connection."""

    port: int
    token: str | None = None
    host: str = "127.0.0.1"
    timeout: float = 30
    conn: http.client.HTTPConnection | None = None

    def send(self, method: str, path: str, body: Any = None, **kw: Any) -> Reply:
        kw.setdefault("token", self.token)
        kw.setdefault("raw", None)
        kw.setdefault("headers", None)
        kw.setdefault("content_type", "application/json")
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                return _send(self.conn, method, path, body, **kw)
            except (http.client.HTTPException, ConnectionError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """``(status, decoded body)``."""
        reply = self.send(method, path, body)
        return reply.status, reply.data

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
