"""NetQueue's control-plane bodies: session, worker registry and inspection (``docs/protocol.md``).

The job flow (PUT, RESERVE, ACK, NACK, TOUCH, START, CANCEL, PRIORITY, the
dead-letter ids) is ``remora.netqueue.protocol``'s; this module holds the
bodies of the operations around it: HELLO and AUTH, REGISTER and
DEREGISTER, the job views of PEEK / LIST / DLQ_LIST, and the JSON replies of
STATS, WORKERS and SNAPSHOT.  ``protocol`` re-exports every name here:
server and client import only ``protocol``.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from remora.netqueue import wire

# REGISTER: wire.str8 worker, wire.str8 host, u16 concurrency [, resources]
# resources (optional tail, the worker's process): f64 cpu_seconds, f64 rss_bytes, u32 threads, u32 open_files,
# u32 ssh_connections.  A body without the tail is a registration without figures (older workers).
RESOURCES = struct.Struct(">ddIII")
RESOURCE_FIELDS = ("cpu_seconds", "rss_bytes", "threads", "open_files", "ssh_connections")


def encode_register(worker: str, host: str, concurrency: int, resources: dict[str, float] | None = None) -> bytes:
    body = wire.str8(worker) + wire.str8(host) + wire.U16.pack(max(0, min(concurrency, 65535)))
    if resources is None:
        return body
    floats = [max(0.0, float(resources.get(k) or 0)) for k in RESOURCE_FIELDS[:2]]
    ints = [max(0, min(int(resources.get(k) or 0), 0xFFFFFFFF)) for k in RESOURCE_FIELDS[2:]]
    return body + RESOURCES.pack(*floats, *ints)


def decode_register(body: bytes) -> tuple[str, str, int, dict[str, float] | None]:
    r = wire.Reader(body)
    worker = wire.name(r.str8(), "worker id")
    host = wire.name(r.str8(), "host", allow_empty=True)
    concurrency = r.u16()
    resources = None
    if r.pos < len(r.buf):
        values = r.unpack(RESOURCES)
        if not all(v == v and 0 <= v < float("inf") for v in values[:2]):  # NaN, negative or infinite
            raise wire.ProtocolError("BAD_ARGUMENT", "resource figures must be finite and not negative")
        resources = dict(zip(RESOURCE_FIELDS, values, strict=True))
    r.end()
    return worker, host, concurrency, resources


# DEREGISTER: wire.str8 worker -> reply empty.  A worker stopping cleanly leaves the workers list at once.
def encode_deregister(worker: str) -> bytes:
    return wire.str8(worker)


def decode_deregister(body: bytes) -> str:
    r = wire.Reader(body)
    worker = wire.name(r.str8(), "worker id")
    r.end()
    return worker


# LIST / DLQ_LIST: wire.str8 queue ("" = all), wire.str8 state ("" = all), u32 limit
def encode_list(queue: str | None, state: str | None, limit: int) -> bytes:
    return wire.str8(queue or "") + wire.str8(state or "") + wire.U32.pack(max(0, min(limit, 0xFFFFFFFF)))


def decode_list(body: bytes) -> tuple[str | None, str | None, int]:
    r = wire.Reader(body)
    queue = wire.name(r.str8(), "queue", allow_empty=True)
    state = r.str8()
    limit = r.u32()
    r.end()
    if state and state not in wire.STATE_NAMES:
        raise wire.ProtocolError("BAD_ARGUMENT", f"state must be one of {', '.join(wire.STATE_NAMES)}")
    return queue or None, state or None, min(limit, wire.MAX_LIST)


# job view: u8 priority, u8 state, u16 attempt, f64 age, wire.str8 id, wire.str8 queue, wire.str8 worker, wire.str16 reason, wire.blob32 body
_VIEW = struct.Struct(">BBHd")


def encode_view(
    job_id: str, queue: str, priority: int, state: str, attempt: int, age: float, body: bytes, worker: str, reason: str
) -> bytes:
    return (
        _VIEW.pack(priority, wire.STATE_NAMES.index(state), min(attempt, 65535), age)
        + wire.str8(job_id)
        + wire.str8(queue)
        + wire.str8(worker)
        + wire.str16(reason)
        + wire.blob32(body)
    )


def read_view(r: wire.Reader) -> dict[str, Any]:
    priority, state, attempt, age = r.unpack(_VIEW)
    job_id, queue, worker, reason = r.str8(), r.str8(), r.str8(), r.str16()
    body = r.blob32()
    return {
        "id": job_id,
        "queue": queue,
        "priority": priority,
        "state": wire.STATE_NAMES[state] if state < len(wire.STATE_NAMES) else "unknown",
        "attempt": attempt,
        "age": age,
        "body": body,
        "worker": worker or None,
        "reason": reason or None,
    }


def encode_views(views: list[bytes]) -> bytes:
    return wire.U32.pack(len(views)) + b"".join(views)


def decode_views(body: bytes) -> list[dict[str, Any]]:
    r = wire.Reader(body)
    return [read_view(r) for _ in range(r.u32())]


# HELLO: u8 version, wire.str8 client wire.name, wire.str16 token
#   reply: u8 version, wire.str8 server wire.name, u8 auth_required, u8 authenticated, u32 max_frame, u32 max_body, u8 max_name
def encode_hello(client_name: str, token: str) -> bytes:
    return wire.U8.pack(wire.PROTOCOL_VERSION) + wire.str8(client_name[:200]) + wire.str16(token)


def decode_hello(body: bytes) -> tuple[int, str, str]:
    r = wire.Reader(body)
    version, client, token = r.u8(), r.str8(), r.str16()
    r.end()
    return version, client, token


_HELLO_REPLY = struct.Struct(">BBIIB")


def encode_hello_reply(server_name: str, auth_required: bool, authenticated: bool) -> bytes:
    return (
        wire.U8.pack(wire.PROTOCOL_VERSION)
        + wire.str8(server_name)
        + _HELLO_REPLY.pack(int(auth_required), int(authenticated), wire.MAX_FRAME, wire.MAX_BODY, wire.MAX_NAME)
    )


def decode_hello_reply(body: bytes) -> dict[str, Any]:
    r = wire.Reader(body)
    version, server = r.u8(), r.str8()
    auth_required, authenticated, max_frame, max_body, max_name = r.unpack(_HELLO_REPLY)
    return {
        "version": version,
        "server": server,
        "auth_required": bool(auth_required),
        "authenticated": bool(authenticated),
        "max_frame": max_frame,
        "max_body": max_body,
        "max_name": max_name,
    }


def decode_auth(body: bytes) -> str:
    r = wire.Reader(body)
    token = r.str16()
    r.end()
    return token


def encode_json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), default=str).encode()


def decode_json(body: bytes) -> Any:
    return json.loads(body.decode()) if body else None
