"""Request handlers: one function per opcode, from decoded body to engine call to reply body.

The server's I/O thread calls ``Dispatcher.handle`` with the engine lock
held.  A handler returns the reply body, or ``None`` when the reply comes
later (a blocking RESERVE parked as a waiter).  Every failure is a
``ProtocolError`` whose code becomes an error reply; nothing here touches a
socket.
"""

from __future__ import annotations

import logging

# hmac.compare_digest is this same constant-time comparison, but `import hmac` loads hashlib and
# OpenSSL's libcrypto: measured on the lean queue server, idle RSS 16.0 -> 19.7 MiB and start-up
# +5 ms (median of 9 starts).  The queue's only use of hmac would be this comparison.
from _operator import _compare_digest
from collections.abc import Callable
from typing import TYPE_CHECKING

from remora.netqueue import protocol as p
from remora.netqueue.engine import Engine
from remora.netqueue.entries import RESERVED, STATE_NAMES, Entry, QueueFullError

if TYPE_CHECKING:
    from remora.netqueue.replies import ClientConn
    from remora.netqueue.server import QueueServer

log = logging.getLogger(__name__)

Handler = Callable[["Dispatcher", "ClientConn", int, bytes], "bytes | None"]
OPEN_OPS = {p.OP_HELLO, p.OP_AUTH, p.OP_PING}  # allowed before authentication
# operations that append to the log: refused while it cannot be written (TOUCH and REGISTER are not logged)
LOGGED_OPS = {
    p.OP_PUT, p.OP_PUT_BATCH, p.OP_RESERVE, p.OP_ACK, p.OP_ACK_RESERVE, p.OP_NACK, p.OP_CANCEL,
    p.OP_PRIORITY, p.OP_DLQ_KICK, p.OP_DLQ_PURGE, p.OP_SNAPSHOT,
}  # fmt: skip


def token_matches(given: str, expected: str) -> bool:
    """Constant-time comparison of a presented token with the server's (HELLO, AUTH, HTTP Bearer)."""
    return _compare_digest(given.encode(), expected.encode())


def hand_out(conn: ClientConn, jobs: list[Entry], engine: Engine) -> list[tuple[str, str, int, int, float, bytes]]:
    """The reservations of a reply, remembered as this connection's unstarted ones (until START, ACK or NACK)."""
    unstarted = conn.unstarted
    for job in jobs:
        unstarted[job.id] = job.attempt
    return reservation_tuples(jobs, engine)


def reservation_tuples(jobs: list[Entry], engine: Engine) -> list[tuple[str, str, int, int, float, bytes]]:
    body = engine.body
    return [(j.id, j.queue, j.priority, j.attempt, j.ttr, body(j)) for j in jobs]


def view(job: Entry, now: float, engine: Engine) -> bytes:
    return p.encode_view(
        job.id,
        job.queue,
        job.priority,
        STATE_NAMES[job.state],
        job.attempt,
        max(0.0, now - job.created),
        engine.body(job),
        job.worker or "",
        job.reason or "",
    )


class Dispatcher:
    """Maps opcodes to engine calls for one server."""

    def __init__(self, server: QueueServer) -> None:
        self.server = server
        self.engine: Engine = server.engine
        self.table: dict[int, Handler] = {
            p.OP_HELLO: Dispatcher.hello,
            p.OP_AUTH: Dispatcher.auth,
            p.OP_PING: Dispatcher.ping,
            p.OP_PUT: Dispatcher.put,
            p.OP_PUT_BATCH: Dispatcher.put_batch,
            p.OP_RESERVE: Dispatcher.reserve,
            p.OP_ACK: Dispatcher.ack,
            p.OP_ACK_RESERVE: Dispatcher.ack_reserve,
            p.OP_NACK: Dispatcher.nack,
            p.OP_TOUCH: Dispatcher.touch,
            p.OP_START: Dispatcher.start,
            p.OP_CANCEL: Dispatcher.cancel,
            p.OP_PRIORITY: Dispatcher.priority,
            p.OP_PEEK: Dispatcher.peek,
            p.OP_LIST: Dispatcher.list_jobs,
            p.OP_STATS: Dispatcher.stats,
            p.OP_WORKERS: Dispatcher.workers,
            p.OP_REGISTER: Dispatcher.register,
            p.OP_DEREGISTER: Dispatcher.deregister,
            p.OP_DLQ_LIST: Dispatcher.dlq_list,
            p.OP_DLQ_KICK: Dispatcher.dlq_kick,
            p.OP_DLQ_PURGE: Dispatcher.dlq_purge,
            p.OP_SNAPSHOT: Dispatcher.snapshot,
        }

    def handle(self, conn: ClientConn, opcode: int, rid: int, body: bytes) -> bytes | None:
        handler = self.table.get(opcode)
        if handler is None:
            raise p.ProtocolError("UNKNOWN_OP", f"unknown opcode {opcode}")
        if not conn.authed and opcode not in OPEN_OPS:
            raise p.ProtocolError("UNAUTHORIZED", "send HELLO or AUTH with the server's token first")
        if self.server.stopping and opcode not in OPEN_OPS:
            raise p.ProtocolError("SHUTTING_DOWN", "the server is stopping")
        replies = self.server.replies
        if replies.log_error is not None and opcode in LOGGED_OPS and not replies.log_writable():
            raise p.ProtocolError("STORAGE", replies.log_error or "")
        try:
            return handler(self, conn, rid, body)
        except QueueFullError as exc:
            raise p.ProtocolError("QUEUE_FULL", str(exc)) from None

    # -- session ----------------------------------------------------------
    def _check_token(self, conn: ClientConn, token: str) -> bool:
        expected = self.server.settings.token
        if expected and token_matches(token, expected):
            conn.authed = True
        return conn.authed

    def hello(self, conn: ClientConn, rid: int, body: bytes) -> bytes:
        version, client, token = p.decode_hello(body)
        conn.name = client
        if version != p.PROTOCOL_VERSION:
            raise p.ProtocolError("BAD_VERSION", f"server speaks version {p.PROTOCOL_VERSION}", fatal=True)
        if token:
            self._check_token(conn, token)
        return p.encode_hello_reply("remora-netqueue", bool(self.server.settings.token), conn.authed)

    def auth(self, conn: ClientConn, rid: int, body: bytes) -> bytes:
        if not self._check_token(conn, p.decode_auth(body)):
            log.warning("queue: bad token from %s", conn.peer)
            raise p.ProtocolError("UNAUTHORIZED", "wrong token")
        return b""

    def ping(self, conn: ClientConn, rid: int, body: bytes) -> bytes:
        return b""

    # -- producers --------------------------------------------------------
    def put(self, conn: ClientConn, rid: int, body: bytes) -> bytes:
        fields = p.put_fields(body)
        if fields[1] not in self.engine.queues:
            self._new_queues({fields[1]})
        return b"\x01" if self.engine.put(*fields) else b"\x00"

    def put_batch(self, conn: ClientConn, rid: int, body: bytes) -> bytes:
        items = p.put_batch_fields(body)
        queues = self.engine.queues
        new = {f[1] for f in items if f[1] not in queues}
        if new:
            self._new_queues(new)
        return p.encode_flags(self.engine.put_many(items))

    def _new_queues(self, names: set[str]) -> None:
        """Refuse a PUT whose new queue names would take the server past ``max_queues``."""
        held, limit = len(self.engine.queues), self.server.settings.max_queues
        if held + len(names) > limit:
            name = sorted(names)[0]
            raise p.ProtocolError(
                "TOO_MANY_QUEUES", f"queue {name[:60]!r} would be one more than the {limit} queue names held (queue.max_queues)"
            )

    # -- consumers --------------------------------------------------------
    def _reserve(self, conn: ClientConn, opcode: int, rid: int, req: p.ReserveRequest, prefix: bytes) -> bytes | None:
        jobs = self.engine.reserve(req.queues, req.count, req.worker)
        if jobs or req.timeout <= 0:
            return prefix + p.encode_reservations(hand_out(conn, jobs, self.engine))
        self.server.park(conn, opcode, rid, req, prefix)
        return None

    def reserve(self, conn: ClientConn, rid: int, body: bytes) -> bytes | None:
        return self._reserve(conn, p.OP_RESERVE, rid, p.decode_reserve(body), b"")

    def ack(self, conn: ClientConn, rid: int, body: bytes) -> bytes:
        job_id = p.decode_id(body)
        conn.unstarted.pop(job_id, None)
        return b"\x01" if self.engine.ack(job_id) else b"\x00"

    def ack_reserve(self, conn: ClientConn, rid: int, body: bytes) -> bytes | None:
        job_id, req = p.decode_ack_reserve(body)
        conn.unstarted.pop(job_id, None)
        acked = self.engine.ack(job_id)
        return self._reserve(conn, p.OP_ACK_RESERVE, rid, req, b"\x01" if acked else b"\x00")

    def nack(self, conn: ClientConn, rid: int, body: bytes) -> bytes:
        job_id, delay = p.decode_nack(body)
        conn.unstarted.pop(job_id, None)
        return b"\x01" if self.engine.nack(job_id, delay) else b"\x00"

    def touch(self, conn: ClientConn, rid: int, body: bytes) -> bytes:
        ids, worker = p.decode_touch(body)
        return p.encode_touch_reply(self.engine.touch(ids, worker))

    def start(self, conn: ClientConn, rid: int, body: bytes) -> bytes:
        """The worker started these jobs: a closed connection no longer hands them back (their lease runs on)."""
        ids, worker, acks = p.decode_start(body)
        if acks:
            replies = self.server.replies
            if replies.log_error is not None and not replies.log_writable():
                raise p.ProtocolError("STORAGE", replies.log_error or "")
            for job_id in acks:
                conn.unstarted.pop(job_id, None)
                self.engine.ack(job_id)
        flags = []
        for job_id in ids:
            if conn.unstarted.pop(job_id, None) is not None:
                flags.append(True)
            else:  # sent again on a new connection: still this worker's reservation?
                job = self.engine.jobs.get(job_id)
                ours = job is not None and job.state == RESERVED and bool(worker) and job.worker == worker
                if ours:
                    self.server.forget_unstarted(job_id)  # the old connection, once closed, must not hand it back
                flags.append(ours)
        return p.encode_flags(flags)

    def cancel(self, conn: ClientConn, rid: int, body: bytes) -> bytes:
        return p.encode_u8(p.CANCEL_RESULT.index(self.engine.cancel(p.decode_id(body))))

    def priority(self, conn: ClientConn, rid: int, body: bytes) -> bytes:
        job_id, priority = p.decode_priority(body)
        return b"\x01" if self.engine.set_priority(job_id, priority) else b"\x00"

    # -- inspection -------------------------------------------------------
    def peek(self, conn: ClientConn, rid: int, body: bytes) -> bytes:
        job = self.engine.peek(p.decode_id(body))
        return p.encode_views([view(job, self.engine.clock(), self.engine)] if job else [])

    def list_jobs(self, conn: ClientConn, rid: int, body: bytes) -> bytes:
        queue, state, limit = p.decode_list(body)
        now = self.engine.clock()
        return p.encode_views([view(j, now, self.engine) for j in self.engine.list_jobs(queue, state, limit)])

    def stats(self, conn: ClientConn, rid: int, body: bytes) -> bytes:
        return p.encode_json(self.server.stats())

    def workers(self, conn: ClientConn, rid: int, body: bytes) -> bytes:
        return p.encode_json(self.engine.worker_list())

    def register(self, conn: ClientConn, rid: int, body: bytes) -> bytes:
        worker, host, concurrency, resources = p.decode_register(body)
        self.engine.register_worker(worker, host or conn.peer, concurrency, resources)
        return b""

    def deregister(self, conn: ClientConn, rid: int, body: bytes) -> bytes:
        self.engine.deregister_worker(p.decode_deregister(body))
        return b""

    def dlq_list(self, conn: ClientConn, rid: int, body: bytes) -> bytes:
        queue, _state, limit = p.decode_list(body)
        now = self.engine.clock()
        return p.encode_views([view(j, now, self.engine) for j in self.engine.dlq_list(queue, limit)])

    def dlq_kick(self, conn: ClientConn, rid: int, body: bytes) -> bytes:
        return p.encode_u32(self.engine.dlq_kick(p.decode_ids(body)))

    def dlq_purge(self, conn: ClientConn, rid: int, body: bytes) -> bytes:
        return p.encode_u32(self.engine.dlq_purge(p.decode_ids(body)))

    def snapshot(self, conn: ClientConn, rid: int, body: bytes) -> bytes:
        p.Reader(body).end()
        return p.encode_json(self.server.snapshot())
