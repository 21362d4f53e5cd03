"""HTTP on the queue's port: ``GET /health``, ``/stats``, ``/workers``, ``/workers/stats``, ``/monitor`` as JSON,
and ``/metrics`` as Prometheus text (remora.netqueue.metrics).

The server hands over the raw request head of a connection whose first byte
was not 0x00 (binary frames always start with 0x00); the answer is a full
HTTP/1.1 response with ``Connection: close``.  When the server has a token,
every path but ``/health`` needs ``Authorization: Bearer <token>``.

``GET /monitor`` with ``Accept: text/event-stream`` is a live stream instead
(Server-Sent Events): ``handle_http`` answers with the stream's head only and
the server keeps the connection, pushing ``monitor_event`` every second from
its I/O loop (at most ``max_monitor_streams`` at once: more get 503).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from remora.netqueue.handlers import token_matches

if TYPE_CHECKING:
    from remora.netqueue.server import QueueServer

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nX-Accel-Buffering: no\r\nConnection: close\r\n\r\n"
)
PATHS = ("/health", "/stats", "/workers", "/workers/stats", "/monitor", "/metrics")


def response(status: int, data: Any, *, head: bool = False, text: str | None = None, content_type: str = "application/json") -> bytes:
    """A complete HTTP/1.1 response: ``data`` as JSON, or ``text`` as is (with ``content_type``)."""
    body = text.encode() if text is not None else json.dumps(data, indent=None, separators=(",", ":"), default=str).encode() + b"\n"
    lines = [
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "Connection: close",
    ]
    if status == 401:
        lines.append('WWW-Authenticate: Bearer realm="netqueue"')
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head else body)


def _error(status: int, code: str, message: str) -> bytes:
    return response(status, {"error": message, "code": code})


def handle_http(server: QueueServer, head: bytes) -> tuple[bytes, bool]:
    """Answer one HTTP request (request line + headers, already read in full): ``(response, stream)``.

    ``stream`` True: the response is the head of a Server-Sent Events stream the server keeps open."""
    data = _handle(server, head)
    return (data, True) if data is STREAM_HEAD else (data, False)


def monitor_event(server: QueueServer) -> bytes:
    """One Server-Sent Event of the ``/monitor`` snapshot (call with the server's lock held)."""
    body = json.dumps(_body(server, "/monitor"), separators=(",", ":"), default=str)
    return b"event: monitor\ndata: " + body.encode() + b"\n\n"


def _handle(server: QueueServer, head: bytes) -> bytes:
    try:
        text = head.decode("latin-1")
        request_line, *header_lines = text.split("\r\n")
        method, target, _version = request_line.split(" ", 2)
    except ValueError:
        return _error(400, "BAD_REQUEST", "malformed HTTP request")
    headers = {}
    for line in header_lines:
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip().lower()] = value.strip()
    path = target.split("?", 1)[0].rstrip("/") or "/"
    if method not in ("GET", "HEAD"):
        return _error(405, "METHOD_NOT_ALLOWED", "only GET and HEAD")
    if path not in PATHS:
        return _error(404, "NOT_FOUND", f"no such path; try {', '.join(PATHS)}")
    expected = server.settings.token
    if path != "/health" and expected:
        auth = headers.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else ""
        if not token_matches(token, expected):
            return _error(401, "UNAUTHORIZED", "send Authorization: Bearer <queue token>")
    if path == "/metrics":
        from remora.netqueue import metrics

        text = metrics.render(server.stats(), server.engine.worker_list())
        return response(200, None, head=method == "HEAD", text=text, content_type=metrics.CONTENT_TYPE)
    if path == "/monitor" and method == "GET" and "text/event-stream" in headers.get("accept", ""):
        if server.monitor_streams >= server.settings.max_monitor_streams:
            return response(503, {"error": f"{server.monitor_streams} monitor streams already (the most)", "code": "BUSY"})
        return STREAM_HEAD
    return response(200, _body(server, path), head=method == "HEAD")


def _body(server: QueueServer, path: str) -> Any:
    if path == "/health":
        data = {"status": "ok", "uptime": round(time.time() - server.started_at, 3), "jobs": len(server.engine.jobs)}
        if server.log_error is not None:
            data.update(status="degraded", log_error=server.log_error)
        return data
    if path == "/stats":
        return server.stats()
    if path == "/workers":
        return server.engine.worker_list()
    workers = server.engine.worker_list()
    summary = {
        "total": len(workers),
        "active": sum(1 for w in workers if w["active"]),
        "concurrency": sum(w["concurrency"] for w in workers),
        "jobs_held": sum(len(w["jobs"]) for w in workers),
        "done": sum(w["done"] for w in workers),
        "failed": sum(w["failed"] for w in workers),
    }
    if path == "/workers/stats":
        return summary
    stats = server.stats()
    return {"health": "ok", "stats": stats, "workers": workers, "worker_summary": summary}
