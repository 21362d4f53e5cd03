"""The change feed: ``GET /api/v1/events`` -- job and batch status changes, as a long-poll or Server-Sent Events.

A long-poll answers ``{"events": [...], "cursor": C}`` as soon as there is a
matching change after the cursor, or empty after ``timeout`` seconds.  With
``Accept: text/event-stream`` the answer is a stream: first an event
``ready`` (its ``id:`` is the starting cursor), then one message per change
(``id:`` = the cursor after it; ``Last-Event-ID`` resumes), a comment line as
heartbeat, and an event ``end`` after a few minutes (the client reconnects
with its last id).  Either form holds a request thread while it waits, so both
take a slot (``app.watchers``): a quarter of the threads per client address,
half of them overall.

With ``output=true`` (and a ``batch_id`` or ``job_id`` filter) the feed also
carries the selected jobs' output as ``output`` events
(``remora.services.live_output``); the cursor then holds the client's place
in each running job's output, and a stream sends one message ``events`` per
write, shaped as a long-poll answer (``{events, cursor}``, ``id:`` = the
cursor), instead of one message per change.  It needs the role that reads a
job's log (the ``GET /jobs/:id/logs`` route's).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from remora.api.http import Request, Response, dumps
from remora.api.router import UUID_RE, Param, Route
from remora.api.schema import obj
from remora.config import Settings
from remora.errors import Forbidden, ValidationError
from remora.services import events, live_output

if TYPE_CHECKING:
    from remora.api.app import App

DEFAULT_TIMEOUT = 25.0  # seconds a long-poll waits for the first change
MAX_TIMEOUT = 55.0
PEEK_NOW = int(socket.MSG_PEEK | socket.MSG_DONTWAIT)
HEARTBEAT = 15.0  # seconds between two heartbeat comments of a stream
LIFETIME = 300.0  # a stream ends after this (the client reconnects with Last-Event-ID): its thread is not held for ever

EVENT = obj(
    {
        "id": {"type": "string", "description": "The cursor after this change."},
        "at": {"type": "string", "format": "date-time"},
        "kind": {"type": "string", "enum": ["job", "batch"]},
        "job_id": {"type": ["string", "null"]},
        "batch_id": {"type": ["string", "null"]},
        "status": {"type": "string"},
        "exit_code": {"type": ["integer", "null"]},
    },
    ["id", "at", "kind", "batch_id", "status"],
    closed=False,
)
OUTPUT_EVENT = obj(
    {
        "kind": {"type": "string", "enum": ["output"]},
        "job_id": {"type": "string"},
        "batch_id": {"type": ["string", "null"]},
        "stream": {"type": "string", "enum": ["stdout", "stderr"]},
        "offset": {"type": "integer", "description": "The first byte's offset in its stream."},
        "length": {"type": "integer", "description": "Bytes in this piece."},
        "data": {"type": "string", "description": "The bytes as text (UTF-8), or base64 when `encoding` says so."},
        "encoding": {"type": "string", "enum": ["base64"]},
    },
    ["kind", "job_id", "batch_id", "stream", "offset", "length", "data"],
    closed=False,
)
FEED = obj(
    {"events": {"type": "array", "items": {"anyOf": [EVENT, OUTPUT_EVENT]}}, "cursor": {"type": "string"}},
    ["events", "cursor"],
)


def _filters(req: Request) -> events.Filters:
    batch_id = (req.arg("batch_id") or "").strip() or None
    if batch_id is not None and not UUID_RE.match(batch_id):
        raise ValidationError("batch_id must be a batch id (UUID)", details={"batch_id": "not a UUID"})
    raw = ",".join(req.query.get("job_id") or [])
    job_ids = tuple(dict.fromkeys(part.strip().lower() for part in raw.split(",") if part.strip()))
    if len(job_ids) > events.MAX_FILTER_IDS:
        raise ValidationError(f"at most {events.MAX_FILTER_IDS} job_id values", details={"job_id": "too many"})
    for job_id in job_ids:
        if not UUID_RE.match(job_id):
            raise ValidationError("job_id must be job ids (UUIDs), comma-separated", details={"job_id": "not a UUID"})
    kind = (req.arg("kind") or "").strip() or None
    if kind is not None and kind not in events.KINDS:
        raise ValidationError(f"kind must be one of: {', '.join(events.KINDS)}", details={"kind": "unknown"})
    return events.Filters(batch_id=batch_id.lower() if batch_id else None, job_ids=job_ids, kind=kind)


def _timeout(req: Request) -> float:
    raw = req.arg("timeout")
    if raw is None or raw.strip() == "":
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= MAX_TIMEOUT:
        raise ValidationError(f"timeout must be a number of seconds between 0 and {MAX_TIMEOUT:g}", details={"timeout": "out of range"})
    return value


def _wants_output(app: App, req: Request, filters: events.Filters) -> bool:
    """``output=true``: the caller must be allowed to read job logs, and name a batch or jobs (400 / 403 otherwise)."""
    raw = (req.arg("output") or "").strip().lower()
    if raw not in ("", "true", "false", "1", "0"):
        raise ValidationError("output must be true or false", details={"output": "must be true or false"})
    if raw not in ("true", "1"):
        return False
    if filters.batch_id is None and not filters.job_ids:
        raise ValidationError("output=true needs a batch_id or job_id filter", details={"output": "needs batch_id or job_id"})
    if filters.kind is not None:  # a job's output is ordered by its own status changes
        raise ValidationError("output=true cannot be combined with kind", details={"kind": "not with output=true"})
    logs, _ = app.router.match("GET", "/api/v1/jobs/00000000-0000-0000-0000-000000000000/logs")
    if req.identity is not None and not req.identity.allows(logs.role):
        raise Forbidden(
            f"role {req.identity.role} may not read job logs (needs {logs.role}): follow without output=true",
            details={"required_role": logs.role},
        )
    return True


def _start(cursor: int | None) -> int:
    if cursor is None:
        return events.latest()
    events.check_cursor(cursor)
    return cursor


def _gone(req: Request) -> Callable[[], bool]:
    """A check that is true once the client closed its connection.

    waitress reads a connection only between its requests (``channel_request_lookahead = 0``, see
    ``remora.api.server``), so a waiter looks itself: a non-consuming peek at the request's socket
    that finds the end of the stream.  Bytes waiting there (a pipelined request) mean the client is
    still there; they stay for waitress to read.
    """
    check = req.environ.get("waitress.client_disconnected")
    sock = getattr(getattr(check, "__self__", None), "socket", None)  # the channel's socket (wasyncore.dispatcher.socket)
    if sock is None:
        return check if callable(check) else (lambda: False)

    def gone() -> bool:
        try:
            return sock.recv(1, PEEK_NOW) == b""
        except (BlockingIOError, InterruptedError):
            return False  # nothing to read: connected
        except OSError:
            return True

    return gone


def _output_stream(cursor: live_output.Cursor, filters: events.Filters, lifetime: float, gone: Callable[[], bool]) -> Iterator[bytes]:
    """The stream with output: each message ``events`` is what a long-poll would answer, ``{events, cursor}``, with ``id:`` = cursor.

    One message per write keeps a resume exact: a message cut off by a lost connection is never
    dispatched (it lacks its closing blank line), so the last ``id:`` a client has matches what it applied.
    """
    ends = time.monotonic() + lifetime
    yield b"retry: 2000\nid: %s\nevent: ready\ndata: %s\n\n" % (str(cursor).encode(), dumps({"cursor": str(cursor), "output": True}))
    while True:
        left = ends - time.monotonic()
        if left <= 0:
            yield b"id: %s\nevent: end\ndata: %s\n\n" % (str(cursor).encode(), dumps({"reason": "reconnect", "cursor": str(cursor)}))
            return
        found, after = live_output.wait(cursor, filters, min(HEARTBEAT, left), stop=gone)
        if gone():
            return
        ident = str(after).encode()
        if found:
            body = json.dumps({"events": found, "cursor": str(after)}, separators=(",", ":")).encode()
            yield b"id: %s\nevent: events\ndata: %s\n\n" % (ident, body)
        elif str(after) != str(cursor):
            yield b"id: %s\n: heartbeat\n\n" % ident
        else:
            yield b": heartbeat\n\n"
        cursor = after


def _stream(app: App, cursor: int, filters: events.Filters, lifetime: float, gone: Callable[[], bool]) -> Iterator[bytes]:
    ends = time.monotonic() + lifetime
    yield b"retry: 2000\nid: %d\nevent: ready\ndata: %s\n\n" % (cursor, dumps({"cursor": str(cursor)}))
    while True:
        left = ends - time.monotonic()
        if left <= 0:
            yield b"id: %d\nevent: end\ndata: %s\n\n" % (cursor, dumps({"reason": "reconnect", "cursor": str(cursor)}))
            return
        found, after = events.wait(cursor, filters, min(HEARTBEAT, left), stop=gone)
        if gone():
            return
        if found:
            parts = [b"id: %s\ndata: %s\n\n" % (e["id"].encode(), json.dumps(e, separators=(",", ":")).encode()) for e in found]
            if after != int(found[-1]["id"]):
                parts.append(b"id: %d\n\n" % after)  # changes of other jobs looked past: resume after them
            yield b"".join(parts)
        elif after != cursor:
            yield b"id: %d\n: heartbeat\n\n" % after
        else:
            yield b": heartbeat\n\n"
        cursor = after


def feed(app: App, req: Request) -> Response | dict[str, Any]:
    """Long-poll (JSON) or, with ``Accept: text/event-stream``, a stream of job and batch status changes (and output)."""
    filters = _filters(req)
    output = _wants_output(app, req, filters)
    sse = "text/event-stream" in (req.header("Accept") or "")
    raw = req.arg("cursor")
    if sse and (raw is None or raw == "") and req.header("Last-Event-ID"):
        raw = req.header("Last-Event-ID")
    timeout = 0.0 if sse else _timeout(req)
    if output:
        given = live_output.parse_cursor(raw)
        start_at = live_output.Cursor(_start(None if given is None else given.change), given.positions if given else {})
    else:
        start = _start(events.parse_cursor(raw.partition("~")[0] if raw else raw))
    app.watchers.acquire(req.client)
    if sse:
        body = _output_stream(start_at, filters, LIFETIME, _gone(req)) if output else _stream(app, start, filters, LIFETIME, _gone(req))
        response = Response(status=200, body=body, content_type="text/event-stream")
        response.on_close.append(lambda: app.watchers.release(req.client))
        return response.header("Cache-Control", "no-store").header("X-Accel-Buffering", "no")
    try:
        if output:
            found, moved = live_output.wait(start_at, filters, timeout, stop=_gone(req))
            return {"events": found, "cursor": str(moved), "output": True}
        found, after = events.wait(start, filters, timeout, stop=_gone(req))
    finally:
        app.watchers.release(req.client)
    return {"events": found, "cursor": str(after)}


def routes(settings: Settings) -> list[Route]:
    return [
        Route(
            "GET",
            "/api/v1/events",
            feed,
            "viewer",
            "Change feed of job and batch status: a long-poll answering {events, cursor} as soon as a change after the cursor"
            " exists (or empty after `timeout`); with Accept: text/event-stream, Server-Sent Events (`ready`, one message per"
            " change with `id:` = cursor, heartbeat comments, `end` after a few minutes; Last-Event-ID resumes); output=true adds"
            " the selected jobs' live output",
            response=FEED,
            query=[
                Param(
                    "cursor",
                    {"type": "string"},
                    "The cursor of a previous answer (opaque); absent: from now; 0: from the oldest change kept. 410 when expired.",
                ),
                Param("batch_id", {"type": "string", "format": "uuid"}, "Only changes of this batch (and its jobs)."),
                Param("job_id", {"type": "string"}, "Only changes of these jobs (comma-separated ids, or repeated)."),
                Param(
                    "kind",
                    {"type": "string", "enum": ["job", "batch"]},
                    "Only changes of this kind: `batch` with batch_id waits for a batch's end in one request (not with output=true).",
                ),
                Param(
                    "output",
                    {"type": "boolean", "default": False},
                    "true: also the selected jobs' output, as `output` events {kind, job_id, batch_id, stream, offset, length, data,"
                    " encoding?} in order per job and stream (needs batch_id or job_id, and the role that reads job logs); the cursor"
                    f" then holds the place in each job's output. At most {live_output.MAX_EVENT_BYTES // 1024} KiB per event and"
                    f" {live_output.MAX_RESPONSE_BYTES // 1024} KiB per answer or stream write; a job's output comes before its final"
                    " status. Without a cursor, running jobs' output from their first byte; cursor 0 gives a batch's from its start.",
                ),
                Param(
                    "timeout",
                    {"type": "number", "minimum": 0, "maximum": MAX_TIMEOUT, "default": DEFAULT_TIMEOUT},
                    "Long-poll: seconds to wait for the first change.",
                ),
            ],
            errors=(400, 403, 410, 429, 503),
            tag="jobs",
        )
    ]
