"""NetQueue client: thread-safe, pipelined, reconnecting.

One ``QueueClient`` holds one TCP connection (a ``remora.netqueue.link.Link``).  Any number of
threads may call it at once: each call sends its frame with a fresh request
id and waits for the reply carrying that id.  There is no reader thread:
the first waiting caller becomes the reader and hands replies to the other
callers (leader/follower), so a single-threaded caller pays no thread
switch per round trip.  A blocking RESERVE is just a call whose reply comes
late; the server parks it without blocking anything, so other threads'
calls on the same connection go on meanwhile.

When the connection breaks, every outstanding call fails; a call is then
retried on a new connection (backoff with jitter, re-sending HELLO with the
token) if it had not been sent yet or is idempotent, for up to
``retry_for`` seconds (0: one reconnect attempt).  ACK, NACK and
ACK_RESERVE are not re-sent once sent: they could act twice.
"""

from __future__ import annotations

import functools
import itertools
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from remora.errors import QueueError, QueueFull, QueueUnavailable
from remora.netqueue import protocol as p
from remora.netqueue.link import Call, Link, LinkLost

CALL_TIMEOUT = 30.0  # most time a call waits for its reply (plus a RESERVE's own timeout)
NOT_RESENT = {p.OP_ACK, p.OP_NACK, p.OP_ACK_RESERVE}
T = TypeVar("T")


@dataclass
class Reservation:
    """One leased job; ``attempt`` is 1 on first delivery, +1 on every re-delivery."""

    id: str
    queue: str
    priority: int
    attempt: int
    body: bytes
    ttr: float


@dataclass
class QueuedJob:
    """A job as PEEK/LIST/DLQ show it; ``state`` is ready | delayed | reserved | dead."""

    id: str
    queue: str
    priority: int
    state: str
    attempt: int
    age: float
    body: bytes
    worker: str | None
    reason: str | None


@dataclass
class PutItem:
    """One job of ``put_many`` (the same fields as ``put``)."""

    job_id: str
    queue: str = "job_queue"
    priority: int = 5
    delay: float = 0.0
    ttr: float = 30.0
    max_attempts: int = 3
    body: bytes = b""
    group: str = ""  # concurrency group: at most ``limit`` of its jobs reserved at once (0: no limit)
    limit: int = 0


class PendingReserve:
    """A RESERVE sent and not yet waited for: ``answered`` (no wait), calling it waits for the reservations."""

    __slots__ = ("_call", "_result")

    def __init__(self, result: Callable[[], list[Reservation]], call: Call) -> None:
        self._result, self._call = result, call

    @property
    def answered(self) -> bool:
        return self._call.done

    def __call__(self) -> list[Reservation]:
        return self._result()


def _api(method: Callable[..., T]) -> Callable[..., T]:
    """Arguments the protocol cannot carry become QueueError (code = the protocol's error name)."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return method(*args, **kwargs)
        except p.ProtocolError as exc:
            raise QueueError(f"{exc.code}: {exc.message}", code=exc.code) from None

    return wrapper


class QueueClient:
    """Thread-safe NetQueue client (one socket, pipelined); reconnects with backoff+jitter, re-authenticates.

    Raises ``QueueUnavailable`` when the server cannot be reached within
    ``retry_for`` seconds, ``QueueFull`` on QUEUE_FULL, and ``QueueError``
    (``code`` = the protocol's error name) for every other error reply.
    """

    def __init__(
        self, addr: str, *, token: str | Callable[[], str] = "", name: str = "", connect_timeout: float = 5.0, retry_for: float = 0.0
    ) -> None:
        from remora.config import split_addr

        self.addr = addr
        host, port = split_addr(addr, 9000)
        self._target = ("127.0.0.1" if host in ("", "0.0.0.0") else host, port)
        self.token = token  # or a function asked at each connect (a token file made after this client started)
        self.name = name or "remora-client"
        self.connect_timeout = connect_timeout
        self.retry_for = retry_for
        self.server_info: dict[str, Any] = {}
        self._link: Link | None = None
        self._link_lock = threading.Lock()
        self._rids = itertools.count(1)
        self._closed = False
        self._reserve_tails: dict[tuple[tuple[str, ...], float, int, str], bytes] = {}  # encoded RESERVE parts

    def __enter__(self) -> QueueClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closed = True
        link, self._link = self._link, None
        if link is not None:
            link.fail(ConnectionError("client closed"))

    # -- plumbing ---------------------------------------------------------
    def _next_rid(self) -> int:
        rid = next(self._rids) & 0xFFFFFFFF
        return rid or next(self._rids) & 0xFFFFFFFF

    def _connect(self) -> Link:
        try:
            sock = socket.create_connection(self._target, timeout=self.connect_timeout)
        except OSError as exc:
            raise LinkLost(f"cannot connect to {self.addr}: {exc.strerror or exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)
        link = Link(sock)
        rid = self._next_rid()
        token = self.token if isinstance(self.token, str) else self.token()
        call = link.send(rid, p.frame(p.OP_HELLO, rid, p.encode_hello(self.name, token)))
        try:
            link.wait(rid, call, time.monotonic() + self.connect_timeout)
        except TimeoutError:
            link.fail(TimeoutError("no HELLO reply"))
            raise LinkLost(f"{self.addr} did not answer HELLO within {self.connect_timeout}s") from None
        if call.flags & p.FLAG_ERROR:
            link.fail(ConnectionError("HELLO refused"))
            self._raise(call.body)
        info = p.decode_hello_reply(call.body)
        if info["auth_required"] and not info["authenticated"]:
            link.fail(ConnectionError("unauthorized"))
            raise QueueError(
                f"NetQueue at {self.addr} refused the token"
                if token
                else f"NetQueue at {self.addr} needs a token: set REMORA_QUEUE_TOKEN or queue.token, or queue.token_file "
                "(the server writes it to <data_dir>/queue.token)",
                code="UNAUTHORIZED",
            )
        self.server_info = info
        return link

    def _get_link(self, probe: bool = True) -> Link:
        link = self._link
        if link is not None and link.error is None and not (probe and link.stale()):
            return link
        with self._link_lock:
            if self._closed:
                raise QueueUnavailable("the queue client is closed")
            link = self._link
            if link is None or link.error is not None:
                link = self._link = self._connect()
            return link

    @staticmethod
    def _raise(body: bytes) -> None:
        try:
            code, message = p.decode_error(body)
        except p.ProtocolError:
            code, message = "BAD_FRAME", "unreadable error reply"
        if code == "QUEUE_FULL":
            raise QueueFull(message, code=code)
        raise QueueError(f"{code}: {message}", code=code)

    def _call(self, opcode: int, body: bytes = b"", *, wait: float = 0.0) -> bytes:
        """Send one request and return its reply body (retrying as the class docstring says)."""
        give_up = time.monotonic() + self.retry_for
        attempt = 0
        while True:
            attempt += 1
            sent = False
            try:
                link = self._get_link(opcode in NOT_RESENT)
                rid = self._next_rid()
                sent = True  # unless the LinkLost says it was not (the link was already broken, or sendall failed)
                call = link.call(rid, p.frame(opcode, rid, body), time.monotonic() + CALL_TIMEOUT + wait)
            except TimeoutError:
                raise QueueUnavailable(f"NetQueue at {self.addr} sent no reply within {CALL_TIMEOUT + wait:.0f}s") from None
            except LinkLost as exc:
                sent = sent and exc.sent
                if self._closed or (sent and opcode in NOT_RESENT) or (attempt >= 2 and time.monotonic() >= give_up):
                    raise QueueUnavailable(f"NetQueue at {self.addr} is unavailable: {exc}") from None
                if attempt >= 2:
                    pause = min(2.0, 0.05 * 2 ** (attempt - 2)) * (0.5 + random.random())
                    time.sleep(max(0.0, min(pause, give_up - time.monotonic())))
                continue
            if call.flags & p.FLAG_ERROR:
                self._raise(call.body)
            return call.body

    # -- the API ------------------------------------------------------------
    @_api
    def ping(self) -> float:
        started = time.perf_counter()
        self._call(p.OP_PING)
        return time.perf_counter() - started

    @_api
    def put(
        self,
        job_id: str,
        *,
        queue: str = "job_queue",
        priority: int = 5,
        delay: float = 0.0,
        ttr: float = 30.0,
        max_attempts: int = 3,
        body: bytes = b"",
        group: str = "",
        limit: int = 0,
    ) -> bool:
        """True when inserted, False when a job with this id is already held (PUT is idempotent).

        ``group``/``limit``: at most ``limit`` jobs of the group are reserved at once (0: no limit).
        """
        return self._call(p.OP_PUT, p.encode_put(job_id, queue, priority, delay, ttr, max_attempts, body, group, limit)) == b"\x01"

    @_api
    def put_many(self, items: list[PutItem], *, per_frame: int = p.MAX_BATCH) -> list[bool]:
        """Batch PUT: ``per_frame`` jobs per PUT_BATCH frame, every frame sent before any reply is read.

        All or nothing per frame on QUEUE_FULL.  If the connection breaks the
        frames are sent again (PUT is idempotent): a job stored by the first
        try then reports False.
        """
        per_frame = max(1, min(per_frame, p.MAX_BATCH))
        bodies = []
        for start in range(0, len(items), per_frame):
            chunk = items[start : start + per_frame]
            encoded = [_encode_put(i.job_id, i.queue, i.priority, i.delay, i.ttr, i.max_attempts, i.body, i.group, i.limit) for i in chunk]
            bodies.append(p.encode_put_batch(encoded))
        out: list[bool] = []
        for reply in self._call_many(p.OP_PUT_BATCH, bodies):
            out.extend(p.decode_flags(reply))
        return out

    def _call_many(self, opcode: int, bodies: list[bytes]) -> list[bytes]:
        """Pipeline idempotent requests on one connection; errors as ``_call``."""
        if len(bodies) <= 1:
            return [self._call(opcode, body) for body in bodies]
        give_up = time.monotonic() + self.retry_for
        attempt = 0
        while True:
            attempt += 1
            try:
                link = self._get_link()
                rids = [self._next_rid() for _ in bodies]
                calls = [link.send(rid, p.frame(opcode, rid, body)) for rid, body in zip(rids, bodies, strict=True)]
                deadline = time.monotonic() + CALL_TIMEOUT
                for rid, call in zip(rids, calls, strict=True):
                    link.wait(rid, call, deadline)
            except TimeoutError:
                raise QueueUnavailable(f"NetQueue at {self.addr} sent no reply within {CALL_TIMEOUT:.0f}s") from None
            except LinkLost as exc:
                if self._closed or (attempt >= 2 and time.monotonic() >= give_up):
                    raise QueueUnavailable(f"NetQueue at {self.addr} is unavailable: {exc}") from None
                if attempt >= 2:
                    time.sleep(max(0.0, min(min(2.0, 0.05 * 2 ** (attempt - 2)) * (0.5 + random.random()), give_up - time.monotonic())))
                continue
            for call in calls:
                if call.flags & p.FLAG_ERROR:
                    self._raise(call.body)
            return [call.body for call in calls]

    @_api
    def reserve(self, queues: list[str], *, timeout: float, count: int = 1, worker_id: str = "") -> list[Reservation]:
        """Lease up to ``count`` jobs; blocks server-side up to ``timeout``; [] on timeout."""
        body = self._call(p.OP_RESERVE, p.encode_reserve(queues, timeout, count, worker_id), wait=timeout)
        return _reservations(p.Reader(body))

    def reserve_later(self, queues: list[str], *, timeout: float, count: int = 1, worker_id: str = "") -> PendingReserve:
        """Send a RESERVE now; the returned object waits for its reservations when called (pipelining).

        Lets a caller overlap the round trip with other work.  Errors (QueueUnavailable when the
        connection breaks: the server then hands back what it reserved) surface when it is called.
        """
        try:
            key = (tuple(queues), timeout, count, worker_id)
            body = self._reserve_tails.get(key) or b""
            if not body:
                body = p.encode_reserve(queues, timeout, count, worker_id)
                if len(self._reserve_tails) >= 64:
                    self._reserve_tails.clear()
                self._reserve_tails[key] = body
            link = self._get_link()
            rid = self._next_rid()
            call = link.send(rid, p.frame(p.OP_RESERVE, rid, body))
        except p.ProtocolError as exc:
            raise QueueError(f"{exc.code}: {exc.message}", code=exc.code) from None
        except LinkLost as exc:
            raise QueueUnavailable(f"NetQueue at {self.addr} is unavailable: {exc}") from None
        deadline = time.monotonic() + CALL_TIMEOUT + timeout

        def result() -> list[Reservation]:
            try:
                link.wait(rid, call, deadline)
            except TimeoutError:
                raise QueueUnavailable(f"NetQueue at {self.addr} sent no reply in time") from None
            except LinkLost as exc:
                raise QueueUnavailable(f"NetQueue at {self.addr} is unavailable: {exc}") from None
            if call.flags & p.FLAG_ERROR:
                self._raise(call.body)
            return _reservations(p.Reader(call.body))

        return PendingReserve(result, call)

    @_api
    def ack(self, job_id: str) -> bool:
        """Delete a reserved job; False when nobody holds it (NOT_FOUND)."""
        return self._call(p.OP_ACK, p.encode_id(job_id)) == b"\x01"

    @_api
    def ack_reserve(self, job_id: str, queues: list[str], *, timeout: float, count: int = 1, worker_id: str = "") -> list[Reservation]:
        """ACK one job and RESERVE the next in one round trip."""
        key = (tuple(queues), timeout, count, worker_id)
        tail = self._reserve_tails.get(key)
        if tail is None:
            tail = p.encode_reserve(queues, timeout, count, worker_id)
            if len(self._reserve_tails) >= 64:
                self._reserve_tails.clear()
            self._reserve_tails[key] = tail
        body = self._call(p.OP_ACK_RESERVE, p.str8(job_id) + tail, wait=timeout)
        r = p.Reader(body)
        r.u8()
        return _reservations(r)

    @_api
    def nack(self, job_id: str, *, delay: float = 0.0) -> bool:
        """Release a reserved job back to ready (after ``delay``); never dead-letters."""
        return self._call(p.OP_NACK, p.encode_nack(job_id, delay)) == b"\x01"

    @_api
    def touch(self, job_ids: list[str], *, worker_id: str = "") -> dict[str, str]:
        """Renew leases (and heartbeat): {id: "ok" | "canceled" | "lost"}."""
        return p.decode_touch_reply(self._call(p.OP_TOUCH, p.encode_touch(job_ids, worker_id)))

    @_api
    def start(self, job_ids: list[str], *, worker_id: str = "") -> list[bool]:
        """Tell the queue these reserved jobs started (their lease no longer ends when this connection closes).

        [True] per job still reserved by this connection or by ``worker_id``."""
        return p.decode_flags(self._call(p.OP_START, p.encode_start(job_ids, worker_id)))

    @_api
    def ack_many(self, job_ids: list[str]) -> None:
        """ACK several reserved jobs in one request (a START that carries only ACKs); ids nobody holds are skipped."""
        self._call(p.OP_START, p.encode_start([], "", job_ids))

    def start_nowait(self, job_ids: list[str], *, worker_id: str = "", acks: list[str] | tuple[str, ...] = ()) -> None:
        """``start`` without waiting for the reply: pipelined on the connection that reserved the jobs.

        ``acks``: jobs to ACK in the same request (their ACK is not retried if the connection breaks).
        Raises QueueUnavailable when that connection is gone (the server has then handed the
        unstarted jobs back, unless it restarted): the caller asks again with ``start``."""
        try:
            link = self._get_link()
            rid = self._next_rid()
            link.send(rid, p.frame(p.OP_START, rid, p.encode_start(job_ids, worker_id, acks)))
        except LinkLost as exc:
            raise QueueUnavailable(f"NetQueue at {self.addr} is unavailable: {exc}") from None
        except p.ProtocolError as exc:
            raise QueueError(f"{exc.code}: {exc.message}", code=exc.code) from None

    @_api
    def cancel(self, job_id: str) -> str:
        """ "removed" (was waiting) | "flagged" (reserved: the holder learns it on TOUCH) | "not_found"."""
        code = p.decode_u8(self._call(p.OP_CANCEL, p.encode_id(job_id)))
        return p.CANCEL_RESULT[code] if code < len(p.CANCEL_RESULT) else "not_found"

    @_api
    def set_priority(self, job_id: str, priority: int) -> bool:
        return self._call(p.OP_PRIORITY, p.encode_priority(job_id, priority)) == b"\x01"

    @_api
    def peek(self, job_id: str) -> QueuedJob | None:
        views = p.decode_views(self._call(p.OP_PEEK, p.encode_id(job_id)))
        return QueuedJob(**views[0]) if views else None

    @_api
    def list_jobs(self, *, queue: str | None = None, state: str | None = None, limit: int = 100) -> list[QueuedJob]:
        return [QueuedJob(**v) for v in p.decode_views(self._call(p.OP_LIST, p.encode_list(queue, state, limit)))]

    @_api
    def stats(self) -> dict:
        return dict(p.decode_json(self._call(p.OP_STATS)))

    @_api
    def workers(self) -> list[dict]:
        return list(p.decode_json(self._call(p.OP_WORKERS)))

    @_api
    def register_worker(self, worker_id: str, *, host: str, concurrency: int, resources: dict[str, float] | None = None) -> None:
        """Announce (or refresh) a worker; ``resources``: its process figures (``p.RESOURCE_FIELDS``)."""
        self._call(p.OP_REGISTER, p.encode_register(worker_id, host, concurrency, resources))

    @_api
    def deregister_worker(self, worker_id: str) -> None:
        """The worker is stopping cleanly: the queue drops it from its list at once."""
        self._call(p.OP_DEREGISTER, p.encode_deregister(worker_id))

    @_api
    def dlq_list(self, *, queue: str | None = None, limit: int = 100) -> list[QueuedJob]:
        return [QueuedJob(**v) for v in p.decode_views(self._call(p.OP_DLQ_LIST, p.encode_list(queue, None, limit)))]

    @_api
    def dlq_kick(self, job_ids: list[str] | None = None) -> int:
        """Requeue dead letters (None = all); returns how many."""
        return p.decode_u32(self._call(p.OP_DLQ_KICK, p.encode_ids(job_ids)))

    @_api
    def dlq_purge(self, job_ids: list[str] | None = None) -> int:
        """Delete dead letters (None = all); returns how many."""
        return p.decode_u32(self._call(p.OP_DLQ_PURGE, p.encode_ids(job_ids)))

    @_api
    def snapshot(self) -> dict:
        """Make the server write a snapshot and start a fresh log now (compaction on demand)."""
        return dict(p.decode_json(self._call(p.OP_SNAPSHOT)))


def _encode_put(
    job_id: str, queue: str, priority: int, delay: float, ttr: float, max_attempts: int, body: bytes, group: str = "", limit: int = 0
) -> bytes:
    try:
        return p.encode_put(job_id, queue, priority, delay, ttr, max_attempts, body, group, limit)
    except p.ProtocolError as exc:
        raise QueueError(f"{exc.code}: {exc.message}", code=exc.code) from None


def _reservations(r: p.Reader) -> list[Reservation]:
    return [Reservation(id=i, queue=q, priority=pr, attempt=a, body=b, ttr=t) for i, q, pr, a, t, b in p.decode_reservations(r)]
