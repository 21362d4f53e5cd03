"""NetQueue's log records: the byte layout of ``wal.N`` and ``snapshot.N`` records, and where job bodies lie.

Record layout (both files)::

    u32 length   bytes of kind + payload
    u32 crc32    of kind + payload
    u8  kind     entries.J_* (J_PUT carries a whole job; the others an id and a field or two)
    ... payload

``remora.netqueue.wal`` appends, syncs and recovers these records; this module
only encodes and decodes them.  A J_PUT body over ``INLINE_BODY`` bytes is kept
only in the log once written: ``Entry.body`` then holds ``body_loc(...)``, its place.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

from remora.netqueue import entries as e
from remora.netqueue.entries import Entry, Group

REC = struct.Struct(">II")
_JOB = struct.Struct(">BBHHHBddd")
_AT = struct.Struct(">d")
_STATE_AT = struct.Struct(">Bd")
_PRIO_AT = struct.Struct(">Bd")
MAX_RECORD = 16 * 1024 * 1024
_BYTE = [bytes((k,)) for k in range(256)]
_KINDS = _BYTE


def _s8(text: str | None) -> bytes:
    data = (text or "").encode()
    return _BYTE[len(data)] + data


def _s16(text: str | None) -> bytes:
    data = (text or "").encode()[:65535]
    return struct.pack(">H", len(data)) + data


_JOB_HEAD = struct.Struct(">BBHHHBdddB")
_U32 = struct.Struct(">I")


# Where a job's body lies in the log (``Entry.body`` holds this int instead of the bytes once logged):
# offset << LOC_SHIFT | length << 1 | file, file 0 = wal.N, 1 = snapshot.N (N: the current generation).
INLINE_BODY = 64  # a body up to this many bytes stays in memory: the int and the read would cost more
LOC_SHIFT = 26  # 25 bits of length (MAX_RECORD) and the file bit below the offset
LEN_MASK = (1 << (LOC_SHIFT - 1)) - 1
IN_SNAPSHOT = 1


def body_loc(offset: int, length: int, in_snapshot: int = 0) -> int:
    return offset << LOC_SHIFT | length << 1 | in_snapshot


def encode_job(job: Entry, body: bytes | None = None) -> bytes:
    """A job's J_PUT payload; ``body``: its bytes when ``job.body`` is a location in the log.

    The body comes last but for the optional group tail (``body_end``): its place in the record is
    known from the record's length, so the log can point at it."""
    if body is None:
        body = job.body  # type: ignore[assignment]
    assert isinstance(body, bytes)
    jid = job.id.encode()
    parts = [
        _JOB_HEAD.pack(
            job.priority, job.state, job.attempt, job.expired, job.max_attempts, job.cancel, job.ttr, job.created, job.at, len(jid)
        ),
        jid,
        _s8(job.queue),
        _s8(job.worker) if job.worker else b"\x00",
        _s16(job.reason) if job.reason else b"\x00\x00",
        _U32.pack(len(body)),
        body,
    ]
    if job.group is not None:  # optional tail: records without it (older logs) read as ungrouped
        parts += (_s8(job.group.name), struct.pack(">H", job.group.limit))
    return b"".join(parts)


def body_end(job: Entry) -> int:
    """Bytes after the body in a J_PUT record: the group tail."""
    return 0 if job.group is None else 3 + len(job.group.name.encode())


def encode(kind: int, job: Entry, arg: Any, body: bytes | None = None) -> bytes:
    """One framed record for an engine journal entry (``body``: see ``encode_job``)."""
    if kind == e.J_DELETE or kind == e.J_CANCEL:
        payload = _s8(job.id)
    elif kind == e.J_PUT:
        payload = encode_job(job, body)
    elif kind == e.J_RESERVE:
        payload = _s8(job.id) + _s8(arg)
    elif kind == e.J_RELEASE:
        payload = _STATE_AT.pack(1 if job.state == e.DELAYED else 0, job.at) + _s8(job.id)
    elif kind in (e.J_EXPIRE, e.J_KICK, e.J_PROMOTE):
        payload = _AT.pack(job.at) + _s8(job.id)
    elif kind == e.J_PRIORITY:
        payload = _PRIO_AT.pack(job.priority, job.at) + _s8(job.id)
    else:
        raise ValueError(f"unknown journal kind {kind}")
    data = _KINDS[kind] + payload
    return REC.pack(len(data), zlib.crc32(data)) + data


class _Cursor:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf, self.pos = buf, pos

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.buf):
            raise ValueError("short record")
        out = self.buf[self.pos : end]
        self.pos = end
        return out

    def s8(self) -> str:
        return self.take(self.take(1)[0]).decode()

    def s16(self) -> str:
        return self.take(struct.unpack(">H", self.take(2))[0]).decode()


def decode(data: bytes, base: int = -1, in_snapshot: int = 0) -> tuple[int, Any, Any]:
    """(kind, Entry or id, arg) of one record's kind + payload.

    ``base``: the file offset of ``data`` (-1: not from a file); a J_PUT body over ``INLINE_BODY``
    read from a file then becomes its location in that file (``body_loc``), not a copy."""
    kind = data[0]
    c = _Cursor(data, 1)
    if kind == e.J_PUT:
        priority, state, attempt, expired, max_attempts, cancel, ttr, created, at = struct.unpack(">BBHHHBddd", c.take(_JOB.size))
        job_id, queue, worker, reason = c.s8(), c.s8(), c.s8(), c.s16()
        (length,) = struct.unpack(">I", c.take(4))
        body: bytes | int
        if base >= 0 and length > INLINE_BODY:
            if c.pos + length > len(data):
                raise ValueError("short record")
            body = body_loc(base + c.pos, length, in_snapshot)
            c.pos += length
        else:
            body = c.take(length)
        job = Entry(job_id, queue, priority, ttr, max_attempts, body, created)
        job.state, job.attempt, job.expired, job.cancel, job.at = state, attempt, expired, bool(cancel), at
        job.worker, job.reason = worker or None, reason or None
        if c.pos < len(data):
            group = c.s8()
            (limit,) = struct.unpack(">H", c.take(2))
            job.group = Group(group, limit)  # interned by Engine.replay_job
        return kind, job, None
    if kind == e.J_RESERVE:
        return kind, c.s8(), c.s8()
    if kind == e.J_RELEASE:
        delayed, at = _STATE_AT.unpack(c.take(_STATE_AT.size))
        return kind, c.s8(), (delayed, at)
    if kind in (e.J_EXPIRE, e.J_KICK, e.J_PROMOTE):
        (at,) = _AT.unpack(c.take(8))
        return kind, c.s8(), at
    if kind == e.J_PRIORITY:
        priority, at = _PRIO_AT.unpack(c.take(_PRIO_AT.size))
        return kind, c.s8(), (priority, at)
    if kind in (e.J_DELETE, e.J_CANCEL):
        return kind, c.s8(), None
    raise ValueError(f"unknown record kind {kind}")


def read_records(path: Path, in_snapshot: int = 0) -> tuple[list[tuple[int, Any, Any]], int, int]:
    """(records, good_bytes, file_size): records up to the first torn or corrupt one.

    Job bodies over ``INLINE_BODY`` come back as their location in ``path`` (see ``decode``)."""
    data = path.read_bytes()
    out = []
    pos, n = 0, len(data)
    while pos < n:
        if n - pos < REC.size:
            break
        length, crc = REC.unpack_from(data, pos)
        end = pos + REC.size + length
        if length == 0 or length > MAX_RECORD or end > n:
            break
        body = data[pos + REC.size : end]
        if zlib.crc32(body) != crc:
            break
        try:
            out.append(decode(body, pos + REC.size, in_snapshot))
        except (ValueError, IndexError, UnicodeDecodeError, struct.error):
            break
        pos = end
    return out, pos, n
