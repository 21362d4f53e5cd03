"""One NetQueue client connection: the socket, the calls waiting on it, leader/follower reading.

``QueueClient`` (``remora.netqueue.client``) holds one ``Link`` at a time and
makes a new one when it breaks.  Any number of threads send on a link; the
first one that waits for a reply becomes the reader and hands the replies it
reads to the others' ``Call``s.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

from remora.netqueue import protocol as p

RECV_SIZE = 256 * 1024
READ_SLICE = 0.5  # a blocked reader re-checks its deadline this often
PEEK_NOW = int(socket.MSG_PEEK | socket.MSG_DONTWAIT)  # an int: the enum's | costs a call per use
HEADER, HEADER_SIZE, LENGTH = p.HEADER, p.HEADER_SIZE, p.LENGTH


class LinkLost(Exception):
    """The connection broke (or could not be made); ``sent`` says whether the request may have left."""

    def __init__(self, message: str, *, sent: bool = True) -> None:
        super().__init__(message)
        self.sent = sent


class Call:
    __slots__ = ("body", "done", "error", "flags")

    def __init__(self) -> None:
        self.done = False
        self.flags = 0
        self.body = b""
        self.error: BaseException | None = None


class Link:
    """One connected socket and the calls waiting on it.

    The socket is blocking with a short ``SO_RCVTIMEO`` (``READ_SLICE``): the
    reader calls ``recv_into`` straight away (no poll first) and checks its
    deadline whenever a slice passes without data.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.send_lock = threading.Lock()
        self.mutex = threading.Lock()  # ``with self.mutex``: the C lock, not Condition's Python-level __enter__
        self.cond = threading.Condition(self.mutex)
        self.reading = False
        self.followers = 0  # callers waiting on ``cond`` for the reader
        self.calls: dict[int, Call] = {}
        self.buf = bytearray()
        self.error: BaseException | None = None
        self.rbuf = bytearray(RECV_SIZE)  # used only by the current reader
        self.rview = memoryview(self.rbuf)
        sock.settimeout(None)
        sec = int(READ_SLICE)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", sec, int((READ_SLICE - sec) * 1e6)))

    def send(self, rid: int, data: bytes) -> Call:
        call = Call()
        with self.mutex:
            if self.error is not None:
                raise LinkLost(str(self.error))
            self.calls[rid] = call
        try:
            with self.send_lock:
                self.sock.sendall(data)
        except OSError as exc:
            self.fail(exc)
            raise LinkLost(str(exc)) from None
        return call

    def call(self, rid: int, data: bytes, deadline: float) -> Call:
        """Send a request and wait for its reply: ``send`` + ``wait`` in one go.

        A lone caller (no other call outstanding, nobody reading) becomes the reader as it sends, so
        a synchronous call takes the mutex once before its reply instead of three times."""
        call = Call()
        with self.mutex:
            if self.error is not None:
                raise LinkLost(str(self.error), sent=False)
            lone = not self.calls and not self.reading
            if lone:
                self.reading = True
            self.calls[rid] = call
        try:
            with self.send_lock:
                self.sock.sendall(data)
        except OSError as exc:
            if lone:
                self.reading = False
            self.fail(exc)
            raise LinkLost(str(exc), sent=False) from None
        if not lone:
            self.wait(rid, call, deadline)
            return call
        try:
            self._read_until(rid, call, deadline)
        finally:
            with self.mutex:
                self.reading = False
                if self.followers:
                    self.cond.notify_all()  # one of them becomes the reader
        if call.error is not None:
            raise LinkLost(str(call.error))
        return call

    def wait(self, rid: int, call: Call, deadline: float) -> None:
        cond, mutex = self.cond, self.mutex
        while True:
            with mutex:
                while not call.done and self.reading and self.error is None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self.calls.pop(rid, None)
                        raise TimeoutError
                    self.followers += 1
                    try:
                        cond.wait(remaining)
                    finally:
                        self.followers -= 1
                if call.done:
                    break
                if self.error is not None:
                    raise LinkLost(str(self.error))
                self.reading = True
            try:
                self._read_until(rid, call, deadline)
            finally:
                with mutex:
                    self.reading = False
                    if self.followers:
                        cond.notify_all()  # one of them becomes the reader
        if call.error is not None:
            raise LinkLost(str(call.error))

    def _read_until(self, rid: int, call: Call, deadline: float) -> None:
        recv_into, rview = self.sock.recv_into, self.rview
        while not call.done:
            try:
                n = recv_into(self.rbuf)
            except (BlockingIOError, InterruptedError):  # a READ_SLICE passed without data
                if time.monotonic() >= deadline:
                    with self.mutex:
                        self.calls.pop(rid, None)
                    raise TimeoutError from None
                continue
            except OSError as exc:
                self.fail(exc)
                raise LinkLost(str(exc)) from None
            if not n:
                self.fail(ConnectionError("the server closed the connection"))
                raise LinkLost("the server closed the connection")
            self._dispatch(rview[:n], call)

    def _dispatch(self, data: memoryview, mine: Call) -> None:
        buf = self.buf
        n = len(data)
        if not buf and n >= HEADER_SIZE and LENGTH.unpack_from(data)[0] + 4 == n:
            # exactly one whole frame, nothing buffered: the usual reply to a lone call, taken without the buffer
            _, _version, _opcode, flags, rid = HEADER.unpack_from(data)
            with self.mutex:
                call = self.calls.pop(rid, None)
                if call is not None:
                    call.flags = flags
                    call.body = bytes(data[HEADER_SIZE:])
                    call.done = True
                    if call is not mine and self.followers:
                        self.cond.notify_all()
            return
        buf += data
        pos, n = 0, len(buf)
        others = False
        with self.mutex:
            while n - pos >= 4:
                (length,) = p.LENGTH.unpack_from(buf, pos)
                if n - pos - 4 < length:
                    break
                _, _version, _opcode, flags, rid = p.HEADER.unpack_from(buf, pos)
                call = self.calls.pop(rid, None)
                if call is not None:
                    call.flags = flags
                    call.body = bytes(buf[pos + p.HEADER_SIZE : pos + 4 + length])
                    call.done = True
                    others = others or call is not mine
                pos += 4 + length
            del buf[:pos]
            if others and self.followers:
                self.cond.notify_all()

    def stale(self) -> bool:
        """True (and the link failed) when an idle connection was closed by the server (e.g. a restart).

        Checked before sending so that a non-resendable request (ACK, NACK) is not lost on a dead socket.
        Only an idle link is probed (no call outstanding, so no reader): a non-consuming peek under the lock.
        A resendable request skips the probe: on a dead link it fails once and goes out on a new one.
        """
        if self.calls or self.reading:
            return False
        with self.mutex:
            if self.calls or self.reading or self.error is not None:
                return self.error is not None
            try:
                peeked = self.sock.recv(1, PEEK_NOW)
            except (BlockingIOError, InterruptedError):
                return False  # nothing to read: the usual, healthy case
            except OSError:
                peeked = b""
        if peeked:
            return False  # unsolicited bytes (an error frame): the next reader deals with them
        self.fail(ConnectionError("the server closed the connection"))
        return True

    def fail(self, exc: BaseException) -> None:
        with self.mutex:
            if self.error is None:
                self.error = exc
            for call in self.calls.values():
                call.error = exc
                call.done = True
            self.calls.clear()
            self.cond.notify_all()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a reader blocked in recv
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
