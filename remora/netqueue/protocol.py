"""NetQueue wire protocol: frames, opcodes, error codes and body codecs.

Pure functions over bytes, shared by the server and the client (and nothing
else): no sockets, no threads.  ``docs/protocol.md`` is the specification;
this module is its executable form and must agree with it.

Every frame, in both directions::

    u32 length      bytes that follow this field (header rest + body), big-endian
    u8  version     PROTOCOL_VERSION (1)
    u8  opcode      OP_* below; a reply carries the opcode of its request
    u16 flags       FLAG_REPLY on replies, FLAG_ERROR on error replies
    u32 request id  chosen by the client, echoed by the reply (pipelining)
    ... body        opcode-specific layout, see the encode_*/decode_* pairs

``MAX_FRAME`` stays below 16 MiB so the first byte of a binary frame is
always 0x00: that is how the server tells a frame from an HTTP request line
on the same port.

Strings are UTF-8 with a u8 (``str8``) or u16 (``str16``) length prefix; job
bodies are opaque bytes with a u32 prefix; times travel as u32 milliseconds.
A body that cannot be decoded raises ``ProtocolError`` carrying the error
name the reply must use.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from remora.netqueue.control import (  # noqa: F401  (re-exported: server and client import only this module)
    RESOURCE_FIELDS,
    RESOURCES,
    decode_auth,
    decode_deregister,
    decode_hello,
    decode_hello_reply,
    decode_json,
    decode_list,
    decode_register,
    decode_views,
    encode_deregister,
    encode_hello,
    encode_hello_reply,
    encode_json,
    encode_list,
    encode_register,
    encode_view,
    encode_views,
    read_view,
)
from remora.netqueue.wire import (  # noqa: F401  (the vocabulary is re-exported: server and client import only this module)
    CANCEL_RESULT,
    ERRORS,
    FLAG_ERROR,
    FLAG_REPLY,
    HEADER,
    HEADER_SIZE,
    LENGTH,
    MAX_BATCH,
    MAX_BODY,
    MAX_FRAME,
    MAX_LIST,
    MAX_NAME,
    MAX_PREAUTH_FRAME,
    MAX_PRIORITY,
    MAX_QUEUES,
    MAX_RESERVE,
    MAX_TIMEOUT_MS,
    MAX_TOUCH,
    MIN_PRIORITY,
    OP_ACK,
    OP_ACK_RESERVE,
    OP_AUTH,
    OP_CANCEL,
    OP_DEREGISTER,
    OP_DLQ_KICK,
    OP_DLQ_LIST,
    OP_DLQ_PURGE,
    OP_HELLO,
    OP_LIST,
    OP_NACK,
    OP_NAMES,
    OP_PEEK,
    OP_PING,
    OP_PRIORITY,
    OP_PUT,
    OP_PUT_BATCH,
    OP_REGISTER,
    OP_RESERVE,
    OP_SNAPSHOT,
    OP_START,
    OP_STATS,
    OP_TOUCH,
    OP_WORKERS,
    PROTOCOL_VERSION,
    STATE_NAMES,
    TOUCH_STATUS,
    U8,
    U16,
    U32,
    ProtocolError,
    Reader,
    blob32,
    ms,
    name,
    str8,
    str16,
)

# -- frames --------------------------------------------------------------


def frame(opcode: int, request_id: int, body: bytes = b"", flags: int = 0) -> bytes:
    return HEADER.pack(HEADER_SIZE - 4 + len(body), PROTOCOL_VERSION, opcode, flags, request_id) + body


def reply(opcode: int, request_id: int, body: bytes = b"") -> bytes:
    return HEADER.pack(HEADER_SIZE - 4 + len(body), PROTOCOL_VERSION, opcode, FLAG_REPLY, request_id) + body


def error_reply(opcode: int, request_id: int, code: str, message: str) -> bytes:
    return frame(opcode, request_id, str8(code) + str16(message[:2000]), FLAG_REPLY | FLAG_ERROR)


def decode_error(body: bytes) -> tuple[str, str]:
    r = Reader(body)
    code, message = r.str8(), r.str16()
    return code, message


# -- PUT -------------------------------------------------------------------
# item: u8 priority, u16 max_attempts, u32 delay_ms, u32 ttr_ms, u8 id_len, u8 queue_len, u32 body_len,
#       id, queue, body [, str8 group, u16 limit]
# The priority byte's top bit (PUT_GROUPED) says a concurrency group follows the body: at most ``limit``
# jobs of the group are reserved at once (0: no limit).
PUT_GROUPED = 0x80


@dataclass(slots=True)
class PutRequest:
    id: str
    queue: str
    priority: int
    delay: float
    ttr: float
    max_attempts: int
    body: bytes
    group: str = ""
    limit: int = 0


_PUT = struct.Struct(">BHIIBBI")


def encode_put(
    job_id: str, queue: str, priority: int, delay: float, ttr: float, max_attempts: int, body: bytes, group: str = "", limit: int = 0
) -> bytes:
    jid, q = job_id.encode(), queue.encode()
    if len(jid) > 255 or len(q) > 255:
        raise ProtocolError("NAME_TOO_LONG", "job id or queue over 255 bytes")
    if not 0 <= priority < PUT_GROUPED or not 0 <= max_attempts <= 65535 or not 0 <= limit <= 65535:
        raise ProtocolError("BAD_ARGUMENT", "priority, max_attempts or limit out of range")
    head = _PUT.pack(priority | (PUT_GROUPED if group else 0), max_attempts, ms(delay), ms(ttr), len(jid), len(q), len(body))
    item = head + jid + q + body
    return item + str8(group) + U16.pack(limit) if group else item


# id, queue, priority, delay, ttr, max_attempts, body, group, limit (``Engine.put``'s arguments)
PutFields = tuple[str, str, int, float, float, int, bytes, str, int]


def put_fields_at(buf: bytes, pos: int) -> tuple[PutFields, int]:
    """One PUT item at ``pos``: its fields (``Engine.put``'s arguments, in order) and where it ends.

    The hot path of every PUT: plain slicing, no ``Reader`` and no object per item."""
    head_end = pos + _PUT.size
    if head_end > len(buf):
        raise ProtocolError("BAD_FRAME", "body is truncated")
    priority, max_attempts, delay_ms, ttr_ms, id_len, q_len, body_len = _PUT.unpack_from(buf, pos)
    q_at = head_end + id_len
    body_at = q_at + q_len
    if body_at > len(buf):
        raise ProtocolError("BAD_FRAME", "body is truncated")
    if body_len > MAX_BODY:
        raise ProtocolError("BODY_TOO_LARGE", f"job body of {body_len} bytes is over {MAX_BODY}")
    end = body_at + body_len
    if end > len(buf):
        raise ProtocolError("BAD_FRAME", "body is truncated")
    group, limit, item_end = "", 0, end
    if priority & PUT_GROUPED:
        priority &= ~PUT_GROUPED
        if end >= len(buf) or end + 1 + buf[end] + 2 > len(buf):
            raise ProtocolError("BAD_FRAME", "body is truncated")
        group_end = end + 1 + buf[end]
        try:
            group = str(buf[end + 1 : group_end], "utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("BAD_FRAME", "a string is not valid UTF-8") from None
        (limit,) = U16.unpack_from(buf, group_end)
        item_end = group_end + 2
        if not 0 < group_end - end - 1 <= MAX_NAME:
            raise ProtocolError("NAME_TOO_LONG", f"a group must be 1..{MAX_NAME} bytes")
    if not 0 < id_len <= MAX_NAME or not 0 < q_len <= MAX_NAME:
        raise ProtocolError("NAME_TOO_LONG", f"job id and queue must be 1..{MAX_NAME} bytes")
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise ProtocolError("BAD_ARGUMENT", f"priority {priority} is not in {MIN_PRIORITY}..{MAX_PRIORITY}")
    if max_attempts < 1:
        raise ProtocolError("BAD_ARGUMENT", "max_attempts must be at least 1")
    if delay_ms > MAX_TIMEOUT_MS or ttr_ms > MAX_TIMEOUT_MS:
        raise ProtocolError("BAD_ARGUMENT", "delay or ttr too long")
    try:
        job_id, queue = str(buf[head_end:q_at], "utf-8"), str(buf[q_at:body_at], "utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("BAD_FRAME", "a string is not valid UTF-8") from None
    fields = (job_id, queue, priority, delay_ms / 1000.0, ttr_ms / 1000.0, max_attempts, bytes(buf[body_at:end]), group, limit)
    return fields, item_end


def put_fields(body: bytes) -> PutFields:
    """A whole PUT body: its fields (see ``put_fields_at``)."""
    fields, end = put_fields_at(body, 0)
    if end != len(body):
        raise ProtocolError("BAD_FRAME", f"{len(body) - end} trailing bytes")
    return fields


def decode_put(body: bytes) -> PutRequest:
    return PutRequest(*put_fields(body))


def encode_put_batch(items: list[bytes]) -> bytes:
    """``items`` are ``encode_put`` results."""
    return U16.pack(len(items)) + b"".join(items)


def put_batch_fields(body: bytes) -> list[PutFields]:
    if len(body) < 2:
        raise ProtocolError("BAD_FRAME", "body is truncated")
    (count,) = U16.unpack_from(body, 0)
    if count > MAX_BATCH:
        raise ProtocolError("BAD_ARGUMENT", f"batch of {count} is over {MAX_BATCH}")
    items, pos = [], 2
    for _ in range(count):
        fields, pos = put_fields_at(body, pos)
        items.append(fields)
    if pos != len(body):
        raise ProtocolError("BAD_FRAME", f"{len(body) - pos} trailing bytes")
    return items


def decode_put_batch(body: bytes) -> list[PutRequest]:
    return [PutRequest(*fields) for fields in put_batch_fields(body)]


def encode_flags(values: list[bool]) -> bytes:
    return U16.pack(len(values)) + bytes(1 if v else 0 for v in values)


def decode_flags(body: bytes) -> list[bool]:
    r = Reader(body)
    n = r.u16()
    return [b == 1 for b in r._take(n)]


# -- RESERVE / ACK_RESERVE -------------------------------------------------
# u32 timeout_ms, u16 count, str8 worker, u8 n, str8 queue * n


@dataclass(slots=True)
class ReserveRequest:
    queues: list[str]
    timeout: float
    count: int
    worker: str


def encode_reserve(queues: list[str], timeout: float, count: int, worker: str) -> bytes:
    if not 0 < count <= 65535 or not 0 < len(queues) <= 255:
        raise ProtocolError("BAD_ARGUMENT", "count or number of queues out of range")
    return struct.pack(">IH", ms(timeout), count) + str8(worker) + U8.pack(len(queues)) + b"".join(str8(q) for q in queues)


def _read_reserve(r: Reader) -> ReserveRequest:
    timeout_ms, count = r.unpack(_RESERVE_HEAD)
    worker = name(r.str8(), "worker id", allow_empty=True)
    n = r.u8()
    if not 1 <= n <= MAX_QUEUES:
        raise ProtocolError("BAD_ARGUMENT", f"a reserve watches 1..{MAX_QUEUES} queues")
    queues = [name(r.str8(), "queue") for _ in range(n)]
    if not 1 <= count <= MAX_RESERVE:
        raise ProtocolError("BAD_ARGUMENT", f"count must be 1..{MAX_RESERVE}")
    if timeout_ms > MAX_TIMEOUT_MS:
        raise ProtocolError("BAD_ARGUMENT", "timeout too long")
    return ReserveRequest(queues, timeout_ms / 1000.0, count, worker)


_RESERVE_HEAD = struct.Struct(">IH")


def decode_reserve(body: bytes) -> ReserveRequest:
    r = Reader(body)
    req = _read_reserve(r)
    r.end()
    return req


def encode_ack_reserve(job_id: str, queues: list[str], timeout: float, count: int, worker: str) -> bytes:
    return str8(job_id) + encode_reserve(queues, timeout, count, worker)


_reserve_cache: dict[bytes, ReserveRequest] = {}  # the RESERVE part of ACK_RESERVE repeats call after call


def decode_ack_reserve(body: bytes) -> tuple[str, ReserveRequest]:
    """The RESERVE part is decoded once per distinct encoding (a small cache); callers must not mutate it."""
    if not body:
        raise ProtocolError("BAD_FRAME", "body is truncated")
    id_end = 1 + body[0]
    if id_end > len(body):
        raise ProtocolError("BAD_FRAME", "body is truncated")
    try:
        job_id = str(body[1:id_end], "utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("BAD_FRAME", "a string is not valid UTF-8") from None
    if not job_id or id_end - 1 > MAX_NAME:
        name(job_id, "job id")  # raises NAME_TOO_LONG with the usual message
    tail = body[id_end:]
    req = _reserve_cache.get(tail)
    if req is None:
        r = Reader(body)
        r.pos = id_end
        req = _read_reserve(r)
        r.end()
        if len(_reserve_cache) >= 256:
            _reserve_cache.clear()
        _reserve_cache[tail] = req
    return job_id, req


# reservation: u8 priority, u16 attempt, u32 ttr_ms, u8 id_len, u8 queue_len, u32 body_len, id, queue, body
_RES = struct.Struct(">BHIBBI")


def encode_reservations(jobs: list[tuple[str, str, int, int, float, bytes]]) -> bytes:
    """``jobs``: (id, queue, priority, attempt, ttr, body) tuples."""
    parts = [U16.pack(len(jobs))]
    for job_id, queue, priority, attempt, ttr, body in jobs:
        jid, q = job_id.encode(), queue.encode()
        parts.append(_RES.pack(priority, min(attempt, 65535), int(ttr * 1000), len(jid), len(q), len(body)) + jid + q + body)
    return b"".join(parts)


def decode_reservations(r: Reader) -> list[tuple[str, str, int, int, float, bytes]]:
    out = []
    buf, unpack, size = r.buf, _RES.unpack_from, _RES.size
    for _ in range(r.u16()):
        pos = r.pos
        if pos + size > len(buf):
            raise ProtocolError("BAD_FRAME", "body is truncated")
        priority, attempt, ttr_ms, id_len, q_len, body_len = unpack(buf, pos)
        a = pos + size
        b = a + id_len
        c = b + q_len
        end = c + body_len
        if end > len(buf):
            raise ProtocolError("BAD_FRAME", "body is truncated")
        try:
            job_id, queue = str(buf[a:b], "utf-8"), str(buf[b:c], "utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("BAD_FRAME", "a string is not valid UTF-8") from None
        r.pos = end
        out.append((job_id, queue, priority, attempt, ttr_ms / 1000.0, bytes(buf[c:end])))
    return out


# -- small requests --------------------------------------------------------


def encode_id(job_id: str) -> bytes:
    return str8(job_id)


def decode_id(body: bytes) -> str:
    r = Reader(body)
    job_id = name(r.str8(), "job id")
    r.end()
    return job_id


def encode_nack(job_id: str, delay: float) -> bytes:
    return str8(job_id) + U32.pack(ms(delay))


def decode_nack(body: bytes) -> tuple[str, float]:
    r = Reader(body)
    job_id = name(r.str8(), "job id")
    delay_ms = r.u32()
    r.end()
    if delay_ms > MAX_TIMEOUT_MS:
        raise ProtocolError("BAD_ARGUMENT", "delay too long")
    return job_id, delay_ms / 1000.0


def encode_priority(job_id: str, priority: int) -> bytes:
    if not 0 <= priority <= 255:
        raise ProtocolError("BAD_ARGUMENT", "priority out of range")
    return str8(job_id) + U8.pack(priority)


def decode_priority(body: bytes) -> tuple[str, int]:
    r = Reader(body)
    job_id = name(r.str8(), "job id")
    priority = r.u8()
    r.end()
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise ProtocolError("BAD_ARGUMENT", f"priority {priority} is not in {MIN_PRIORITY}..{MAX_PRIORITY}")
    return job_id, priority


def encode_u8(value: int) -> bytes:
    return U8.pack(value)


def decode_u8(body: bytes) -> int:
    r = Reader(body)
    value = r.u8()
    r.end()
    return value


def encode_u32(value: int) -> bytes:
    return U32.pack(value)


def decode_u32(body: bytes) -> int:
    r = Reader(body)
    value = r.u32()
    r.end()
    return value


# TOUCH: str8 worker, u16 n, str8 id * n -> reply u16 n, (str8 id, u8 status) * n
def encode_touch(job_ids: list[str], worker: str) -> bytes:
    return str8(worker) + U16.pack(len(job_ids)) + b"".join(str8(j) for j in job_ids)


def decode_touch(body: bytes) -> tuple[list[str], str]:
    r = Reader(body)
    worker = name(r.str8(), "worker id", allow_empty=True)
    n = r.u16()
    if n > MAX_TOUCH:
        raise ProtocolError("BAD_ARGUMENT", f"over {MAX_TOUCH} ids")
    ids = [name(r.str8(), "job id") for _ in range(n)]
    r.end()
    return ids, worker


def encode_touch_reply(result: dict[str, str]) -> bytes:
    return U16.pack(len(result)) + b"".join(str8(k) + U8.pack(TOUCH_STATUS.index(v)) for k, v in result.items())


def decode_touch_reply(body: bytes) -> dict[str, str]:
    r = Reader(body)
    out = {}
    for _ in range(r.u16()):
        job_id = r.str8()
        code = r.u8()
        out[job_id] = TOUCH_STATUS[code] if code < len(TOUCH_STATUS) else "lost"
    return out


# START: str8 worker, u16 n, str8 id * n [, u16 m, str8 ack id * m] -> reply u16 n, u8 flag * n
# (1: reserved by this connection, or by this worker, and now counted as started); the optional tail ACKs
# m jobs in the same request (a worker slot's previous job).
def encode_start(job_ids: list[str], worker: str, acks: list[str] | tuple[str, ...] = ()) -> bytes:
    body = encode_touch(job_ids, worker)
    return body + U16.pack(len(acks)) + b"".join(str8(j) for j in acks) if acks else body


def decode_start(body: bytes) -> tuple[list[str], str, list[str]]:
    r = Reader(body)
    worker = name(r.str8(), "worker id", allow_empty=True)
    ids: list[str] = []
    acks: list[str] = []
    for out in (ids, acks):
        if out is acks and r.pos == len(r.buf):
            break
        n = r.u16()
        if n > MAX_TOUCH:
            raise ProtocolError("BAD_ARGUMENT", f"over {MAX_TOUCH} ids")
        out.extend(name(r.str8(), "job id") for _ in range(n))
    r.end()
    return ids, worker, acks


# DLQ_KICK / DLQ_PURGE: u8 all, u16 n, str8 id * n -> reply u32 count
def encode_ids(job_ids: list[str] | None) -> bytes:
    ids = job_ids or []
    return U8.pack(1 if job_ids is None else 0) + U16.pack(len(ids)) + b"".join(str8(j) for j in ids)


def decode_ids(body: bytes) -> list[str] | None:
    r = Reader(body)
    everything = r.u8()
    n = r.u16()
    if n > MAX_TOUCH:
        raise ProtocolError("BAD_ARGUMENT", f"over {MAX_TOUCH} ids")
    ids = [name(r.str8(), "job id") for _ in range(n)]
    r.end()
    return None if everything else ids
