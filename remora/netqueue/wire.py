"""NetQueue's wire vocabulary: named limits, header layout, opcodes, error codes and primitive codecs.

The layer under ``remora.netqueue.protocol``, which imports these names one by
one and re-exports them (``remora.netqueue.control`` uses them as ``wire.X``):
server and client import only ``protocol``, nothing else imports this module.  ``docs/protocol.md`` is the specification.
"""

from __future__ import annotations

import struct
from typing import Any

PROTOCOL_VERSION = 1

# -- named limits (answered with an error code, never a crash) -----------
MAX_FRAME = 8 * 1024 * 1024  # largest frame (after the length field)
MAX_PREAUTH_FRAME = 4096  # largest frame before the connection has authenticated
MAX_BODY = 1024 * 1024  # largest job body
MAX_NAME = 200  # longest job id, queue name, worker id, host
MAX_BATCH = 1000  # most jobs in one PUT_BATCH
MAX_RESERVE = 1000  # most jobs one RESERVE may lease
MAX_QUEUES = 32  # most queues one RESERVE may watch
MAX_TOUCH = 10000  # most ids in one TOUCH / DLQ_KICK / DLQ_PURGE
MAX_LIST = 10000  # most jobs one LIST / DLQ_LIST returns
MAX_TIMEOUT_MS = 24 * 3600 * 1000  # longest RESERVE timeout, delay, ttr
MIN_PRIORITY, MAX_PRIORITY = 1, 10

HEADER = struct.Struct(">IBBHI")
HEADER_SIZE = HEADER.size  # 12
LENGTH = struct.Struct(">I")

FLAG_REPLY = 0x1
FLAG_ERROR = 0x2

OP_HELLO = 1
OP_AUTH = 2
OP_PING = 3
OP_PUT = 10
OP_PUT_BATCH = 11
OP_RESERVE = 12
OP_ACK = 13
OP_ACK_RESERVE = 14
OP_NACK = 15
OP_TOUCH = 16
OP_CANCEL = 17
OP_PRIORITY = 18
OP_PEEK = 19
OP_LIST = 20
OP_START = 21
OP_STATS = 30
OP_WORKERS = 31
OP_REGISTER = 32
OP_DEREGISTER = 33
OP_DLQ_LIST = 40
OP_DLQ_KICK = 41
OP_DLQ_PURGE = 42
OP_SNAPSHOT = 50

OP_NAMES = {v: k[3:] for k, v in dict(globals()).items() if k.startswith("OP_") and isinstance(v, int)}

# -- error codes (the reply body names one) ------------------------------
ERRORS = {
    "BAD_FRAME": "the body does not match the opcode's layout (truncated, trailing bytes, bad UTF-8)",
    "BAD_VERSION": "the header's version is not PROTOCOL_VERSION; the connection is closed",
    "UNKNOWN_OP": "no such opcode",
    "FRAME_TOO_LARGE": "length over MAX_FRAME (MAX_PREAUTH_FRAME before authentication); the connection is closed",
    "BODY_TOO_LARGE": "a job body over MAX_BODY",
    "NAME_TOO_LONG": "an id, queue, worker or host over MAX_NAME bytes, or empty where required",
    "BAD_ARGUMENT": "a value out of range (priority, counts, times, state names)",
    "UNAUTHORIZED": "the server requires a token and this connection has not sent the right one",
    "QUEUE_FULL": "the queue holds max_size waiting jobs; nothing of the request was stored",
    "TOO_MANY_QUEUES": "a PUT names a new queue but the server holds max_queues queue names; nothing of the request was stored",
    "SHUTTING_DOWN": "the server is stopping; retry elsewhere or later",
    "STORAGE": "the log cannot be written (disk full); changes are refused until it can, retry later",
    "INTERNAL": "a bug in the server; the request had no effect or an unknown one",
}

STATE_NAMES = ("ready", "delayed", "reserved", "dead")
TOUCH_STATUS = ("ok", "canceled", "lost")
CANCEL_RESULT = ("not_found", "removed", "flagged")


class ProtocolError(Exception):
    """A request the server answers with an error reply (``code`` is an ERRORS name)."""

    def __init__(self, code: str, message: str = "", *, fatal: bool = False) -> None:
        super().__init__(message or ERRORS.get(code, code))
        self.code = code
        self.message = message or ERRORS.get(code, code)
        self.fatal = fatal  # the connection is closed after the reply


# -- primitive codecs ----------------------------------------------------

U8 = struct.Struct(">B")
U16 = struct.Struct(">H")
U32 = struct.Struct(">I")
F64 = struct.Struct(">d")


def str8(text: str) -> bytes:
    data = text.encode()
    if len(data) > 255:
        raise ProtocolError("NAME_TOO_LONG", f"{text[:40]!r}... is over 255 bytes")
    return U8.pack(len(data)) + data


def str16(text: str) -> bytes:
    data = text.encode()[:65535]
    return U16.pack(len(data)) + data


def blob32(data: bytes) -> bytes:
    return U32.pack(len(data)) + data


class Reader:
    """Reads a body left to right; any shortfall raises BAD_FRAME."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def _take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.buf):
            raise ProtocolError("BAD_FRAME", "body is truncated")
        data = self.buf[self.pos : end]
        self.pos = end
        return bytes(data)

    def unpack(self, st: struct.Struct) -> tuple[Any, ...]:
        if self.pos + st.size > len(self.buf):
            raise ProtocolError("BAD_FRAME", "body is truncated")
        values = st.unpack_from(self.buf, self.pos)
        self.pos += st.size
        return values

    def u8(self) -> int:
        return int(self.unpack(U8)[0])

    def u16(self) -> int:
        return int(self.unpack(U16)[0])

    def u32(self) -> int:
        return int(self.unpack(U32)[0])

    def f64(self) -> float:
        return float(self.unpack(F64)[0])

    def text(self, n: int) -> str:
        try:
            return self._take(n).decode()
        except UnicodeDecodeError:
            raise ProtocolError("BAD_FRAME", "a string is not valid UTF-8") from None

    def str8(self) -> str:
        return self.text(self.u8())

    def str16(self) -> str:
        return self.text(self.u16())

    def blob32(self) -> bytes:
        return self._take(self.u32())

    def end(self) -> None:
        if self.pos != len(self.buf):
            raise ProtocolError("BAD_FRAME", f"{len(self.buf) - self.pos} trailing bytes")


def name(value: str, what: str, *, allow_empty: bool = False) -> str:
    """Check an id/queue/worker name against MAX_NAME."""
    if not value and not allow_empty:
        raise ProtocolError("NAME_TOO_LONG", f"{what} must not be empty")
    if len(value) > MAX_NAME or len(value.encode()) > MAX_NAME:
        raise ProtocolError("NAME_TOO_LONG", f"{what} is over {MAX_NAME} bytes")
    return value


def ms(seconds: float) -> int:
    """Seconds -> u32 milliseconds, clamped to MAX_TIMEOUT_MS."""
    if seconds != seconds or seconds < 0:  # NaN or negative
        raise ProtocolError("BAD_ARGUMENT", "times must not be negative")
    return min(round(seconds * 1000), MAX_TIMEOUT_MS)
