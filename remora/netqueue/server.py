"""NetQueue server: one epoll-driven I/O thread, the engine under a lock, a group-commit thread.

Why epoll and not a thread per connection: workers and API processes
keep connections open for hours and most of them sit idle or parked in a
blocking RESERVE.  With epoll one thread watches thousands of sockets for
the cost of a file descriptor each, and a parked RESERVE is just an entry in
a waiter list — no thread, no stack.  The engine is a pure in-memory state
machine whose operations take microseconds, so handling every request on
the I/O thread (under ``self.lock``, which in-process callers also take) is
faster than handing requests to worker threads across the GIL.  The loop
calls ``select.epoll`` directly (fd -> connection in one dict) rather than
through ``selectors``, and waits through ``remora.netqueue.idle``: a short
adaptive busy-poll catches a client that streams requests back to back
without the sleep/wake cycle that costs more than the request itself.

Durability without stalling I/O: each loop iteration decodes every request
that arrived, applies them to the engine, appends their log records and
writes them with one ``write()``.  With ``fsync = always`` the I/O thread
then runs the ``fdatasync`` itself (nothing held, the commit thread idle):
no thread hand-off per sync, and the requests that arrive meanwhile wait in
their sockets and are read, written and synced as the next iteration's batch
— one fsync covers every request that came in while the previous one ran
(group commit).  Otherwise (a sync already in flight) the replies are held
until the commit thread's next ``fdatasync`` covers them.  A reply is never sent
before everything logged before it is durable, so no client can observe a
state that a crash would undo (``remora.netqueue.replies``, which the server owns).

HTTP on the same port: a binary frame starts with 0x00 (MAX_FRAME < 16 MiB),
so a connection whose first byte is anything else is read as an HTTP/1.x
request (see ``remora.netqueue.http``) and answered with JSON.

Before authentication a connection is cheap to hold and cannot grow: a
frame may be at most MAX_PREAUTH_FRAME bytes (the length field is checked
before anything is buffered) and ``remora.netqueue.preauth`` limits how many
requests it sends, how long it stays and how many such connections exist.
Authenticated connections pay one attribute check per frame for this.  Live
``/monitor`` streams are ``remora.netqueue.monitor``'s; the server's
settings are ``remora.netqueue.settings.ServeSettings``.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from remora import procstats
from remora.errors import ConfigError
from remora.netqueue import protocol as p
from remora.netqueue.engine import Engine
from remora.netqueue.handlers import Dispatcher, hand_out
from remora.netqueue.idle import AdaptivePoll
from remora.netqueue.monitor import MonitorStreams
from remora.netqueue.preauth import PreauthGate
from remora.netqueue.replies import EV_IN, EV_OUT, ClientConn, Replies
from remora.netqueue.settings import ServeSettings
from remora.netqueue.waiters import ParkedReserves, Waiter

if TYPE_CHECKING:
    from remora.config import Settings
    from remora.netqueue.wal import WriteAheadLog

log = logging.getLogger(__name__)

RECV_SIZE = 256 * 1024
MAX_HTTP_REQUEST = 16 * 1024
EV_READ = select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP  # an error or hang-up shows when reading


class QueueServer:
    """NetQueue over TCP (binary frames) and HTTP (JSON) on one port.

    ``QueueServer(settings)`` or ``QueueServer(**fields)`` with ``ServeSettings``'s fields."""

    def __init__(self, settings: ServeSettings | None = None, /, **fields: Any) -> None:
        if settings is None:
            settings = ServeSettings(**fields)
        elif fields:
            settings = replace(settings, **fields)
        self.settings = settings
        self.lock = threading.RLock()
        self.engine = Engine(max_size=settings.max_size)
        self.engine.workers.active_window = settings.health_check_interval
        self.dispatcher = Dispatcher(self)
        self.replies = Replies(self._close)
        self.wal: WriteAheadLog | None = None
        self.recovery: dict[str, Any] = {}
        self.stopping = False
        self.started_at = time.time()
        self._ep: select.epoll | None = None
        self._idle: AdaptivePoll | None = None
        self._listen_fd = self._wake_fd = -1
        self._listener: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._conns: dict[int, ClientConn] = {}
        self.preauth = PreauthGate(settings.auth_timeout, settings.max_unauthenticated, self._close)
        self.streams = MonitorStreams(self, self._close)
        self._preauth_due, self._stream_due = self.preauth.deadlines, self.streams.due  # the loop's checks, one lookup each
        self.parked = ParkedReserves()
        self._rbuf = bytearray(RECV_SIZE)  # the I/O thread's receive buffer
        self._rview = memoryview(self._rbuf)
        self._stopped = threading.Event()
        self.counters = {"connections_total": 0, "requests": 0, "errors": 0, "http_requests": 0}

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> QueueServer:
        """A server from Remora's settings (see ``ServeSettings.from_config``)."""
        return cls(ServeSettings.from_config(settings, **overrides))

    @property
    def log_error(self) -> str | None:
        """Why the log cannot be written now (disk full), or None."""
        return self.replies.log_error

    # -- lifecycle --------------------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        if self._listener is None:
            return (self.settings.host, self.settings.port)
        host, port = self._listener.getsockname()[:2]
        return (host, port)

    def start(self) -> None:
        """Recover the log, bind, and serve in background threads; returns once listening."""
        s = self.settings
        if s.persistence:
            from remora.netqueue.wal import WriteAheadLog

            assert s.data_dir is not None
            self.wal = WriteAheadLog(Path(s.data_dir), fsync=s.fsync, fsync_interval=s.fsync_interval, on_durable=self._wake)
            self.recovery = self.wal.recover(self.engine)
            self.engine.journal = self.wal.record
            self.replies.wal = self.wal
        family = socket.AF_INET6 if ":" in s.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((s.host, s.port))
        except OSError as exc:
            listener.close()
            if self.wal:
                self.wal.close()
            raise ConfigError(f"cannot listen on {s.host}:{s.port}: {exc.strerror or exc}") from None
        listener.listen(1024)
        listener.setblocking(False)
        self._listener = listener
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._ep = self.replies.ep = select.epoll()
        self._listen_fd, self._wake_fd = listener.fileno(), self._wake_r.fileno()
        self._ep.register(self._listen_fd, EV_IN)
        self._ep.register(self._wake_fd, EV_IN)
        self._idle = AdaptivePoll(self._ep.poll, s.busy_poll)
        if self.wal:
            self.wal.start()
        self._thread = threading.Thread(target=self._run, name="netqueue-io", daemon=True)
        self._thread.start()
        host, port = self.address
        log.info(
            "queue: listening on %s:%d (persistence=%s fsync=%s auth=%s jobs=%d)",
            host,
            port,
            s.persistence,
            s.fsync,
            "token" if s.token else "off",
            len(self.engine.jobs),
        )

    def serve_forever(self) -> None:
        if self._thread is None:
            self.start()
        self._stopped.wait()

    def stop(self) -> None:
        """Stop accepting, answer what is owed, flush and close the log, join the threads."""
        if self._thread is None or self.stopping:
            self._stopped.set()
            return
        self.stopping = True
        self._wake()
        self._thread.join(timeout=10)
        if self.wal:
            self.wal.close()
        log.info("queue: stopped (jobs=%d)", len(self.engine.jobs))
        self._stopped.set()

    def _wake(self) -> None:
        try:
            if self._wake_w is not None:
                self._wake_w.send(b"x")
        except OSError:
            pass  # the pipe is full: the loop is awake anyway

    # -- the I/O loop -----------------------------------------------------
    def _run(self) -> None:
        assert self._idle is not None
        wait, lock, replies = self._idle.wait, self.lock, self.replies
        held = replies.held
        while not self.stopping:
            try:
                # no spin while replies wait for the fsync (it comes next), nor after one synced here: a
                # request that waited for the disk costs a sync anyway, spinning would only add CPU
                events = wait(self._select_timeout(), not held and not replies.synced_here)
                with lock:
                    self._iteration(events)
            except Exception:
                log.exception("queue: error in the I/O loop")
        self._shutdown()

    def _select_timeout(self) -> float:
        longest = 1.0 if self.replies.log_error is None else 0.5
        if self._preauth_due:
            longest = min(longest, max(0.0, self.preauth.next_deadline() - time.monotonic()))
        if self._stream_due:
            longest = min(longest, max(0.0, self.streams.next_due() - time.monotonic()))
        timers = self.engine.timers
        if not timers.delayed and not timers.leases and not self.parked.deadlines:
            return longest  # nothing timed: the usual case of a producer's stream of PUTs
        nxt = timers.next_deadline()
        parked = self.parked.next_deadline()
        if nxt is None and parked is None:
            return longest
        now = time.time()
        deadlines = [longest]
        if nxt is not None:
            deadlines.append(nxt - now)
        if parked is not None:
            deadlines.append(parked - now)
        return max(0.0, min(deadlines))

    def _iteration(self, events: list[tuple[int, int]]) -> None:
        conns = self._conns
        for fd, mask in events:
            conn = conns.get(fd)
            if conn is None:
                if fd == self._listen_fd:
                    self._accept()
                elif fd == self._wake_fd:
                    self._drain_wake()
                continue
            if mask & EV_OUT:
                self.replies.send(conn)
            if mask & EV_READ:
                if conn.closing:
                    self._discard_input(conn)
                else:
                    self._read(conn)
        if self._preauth_due:
            self.preauth.expire()
        if self._stream_due:
            self.streams.push()
        engine = self.engine
        engine.tick()
        if self.parked.deadlines:
            self._expire_waiters()
        if engine.woken:
            if self.parked.count:
                self._serve_waiters()
            else:
                engine.woken.clear()  # nobody waits: nothing to serve
        replies = self.replies
        replies.commit()
        wal = self.wal
        if wal is not None and replies.log_error is None and wal.should_compact(len(engine.jobs)):
            wal.compact(self.engine)
            replies.release_durable()

    def _accept(self) -> None:
        assert self._listener is not None and self._ep is not None
        for _ in range(64):
            try:
                sock, addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("queue: accept failed: %s", exc)
                return
            if len(self._conns) >= self.settings.max_connections:
                log.warning("queue: refusing %s: %d connections (max_connections)", addr, len(self._conns))
                sock.close()
                continue
            sock.setblocking(False)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = ClientConn(sock, addr, authed=not self.settings.token)
            self.preauth.enter(conn)
            self._conns[sock.fileno()] = conn
            self._ep.register(sock.fileno(), EV_IN)
            self.counters["connections_total"] += 1

    def _drain_wake(self) -> None:
        assert self._wake_r is not None
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        self.replies.release_durable()

    def _discard_input(self, conn: ClientConn) -> None:
        """A closing connection's further input is read and dropped (level-triggered epoll would spin)."""
        try:
            if not conn.sock.recv(RECV_SIZE):
                self._close(conn)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._close(conn)

    def _read(self, conn: ClientConn) -> None:
        """Read what arrived into the shared buffer; whole frames are handled straight from it."""
        try:
            n = conn.sock.recv_into(self._rbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not n:
            self._close(conn)
            return
        data = self._rview[:n]
        if conn.http is None:
            conn.http = data[0] != 0
        if conn.http:
            if conn in self.streams:
                return  # a stream's reader has nothing to say: its input is dropped (EOF closes it above)
            conn.inbuf += data
            self._read_http(conn)
        elif conn.inbuf:
            buf = conn.inbuf
            buf += data
            del buf[: self._read_frames(conn, buf)]
            if conn.closing:
                buf.clear()
        else:
            used = self._read_frames(conn, data)
            if used < n and not conn.closing:
                conn.inbuf += data[used:]

    def _read_frames(self, conn: ClientConn, buf: bytearray | memoryview) -> int:
        """Handle every whole frame in ``buf``; return how many bytes they took."""
        n = len(buf)
        pos = 0
        unpack_len = p.LENGTH.unpack_from
        header = p.HEADER.unpack_from
        preauth = conn.preauth
        max_frame = p.MAX_PREAUTH_FRAME if preauth else p.MAX_FRAME
        while n - pos >= 4 and not conn.closing:
            (length,) = unpack_len(buf, pos)
            if length > max_frame or length < p.HEADER_SIZE - 4:
                code = "FRAME_TOO_LARGE" if length > max_frame else "BAD_FRAME"
                what = " before authentication" if preauth else ""
                self._fail(conn, 0, 0, p.ProtocolError(code, f"frame length {length} (at most {max_frame}{what})", fatal=True))
                break
            if n - pos - 4 < length:
                break
            _, version, opcode, _flags, rid = header(buf, pos)
            body = bytes(buf[pos + p.HEADER_SIZE : pos + 4 + length])
            pos += 4 + length
            if version != p.PROTOCOL_VERSION:
                self._fail(conn, opcode, rid, p.ProtocolError("BAD_VERSION", f"server speaks version {p.PROTOCOL_VERSION}", fatal=True))
                break
            self._request(conn, opcode, rid, body)
            if preauth:
                if conn.authed:
                    self.preauth.admit(conn)
                    preauth, max_frame = 0, p.MAX_FRAME
                elif preauth == 1:
                    self._fail(conn, 0, 0, p.ProtocolError("UNAUTHORIZED", "too many requests before authentication", fatal=True))
                else:
                    preauth = conn.preauth = preauth - 1
        return pos

    def _request(self, conn: ClientConn, opcode: int, rid: int, body: bytes) -> None:
        self.counters["requests"] += 1
        try:
            result = self.dispatcher.handle(conn, opcode, rid, body)
        except p.ProtocolError as exc:
            self._fail(conn, opcode, rid, exc)
            return
        except Exception:
            log.exception("queue: internal error handling %s from %s", p.OP_NAMES.get(opcode, opcode), conn.peer)
            self._fail(conn, opcode, rid, p.ProtocolError("INTERNAL", "internal error; see the server log"))
            return
        if result is not None:
            self.replies.batch.append((conn, p.reply(opcode, rid, result)))

    def _fail(self, conn: ClientConn, opcode: int, rid: int, exc: p.ProtocolError) -> None:
        self.counters["errors"] += 1
        if exc.code not in ("QUEUE_FULL", "UNAUTHORIZED", "STORAGE"):
            log.info("queue: %s from %s: %s", exc.code, conn.peer, exc.message)
        self.replies.add(conn, p.error_reply(opcode, rid, exc.code, exc.message))
        if exc.fatal:
            conn.closing = True

    def _read_http(self, conn: ClientConn) -> None:
        from remora.netqueue.http import handle_http

        buf = conn.inbuf
        end = buf.find(b"\r\n\r\n")
        if end < 0 and len(buf) < MAX_HTTP_REQUEST:
            return
        self.counters["http_requests"] += 1
        response, stream = handle_http(self, bytes(buf[: end if end >= 0 else MAX_HTTP_REQUEST]))
        buf.clear()
        if stream:
            self.preauth.admit(conn)  # authenticated (or no token): no auth_timeout for a stream
            self.streams.add(conn)
        else:
            conn.closing = True
        self.replies.add(conn, response)

    @property
    def monitor_streams(self) -> int:
        """Live /monitor streams (``remora.netqueue.monitor``)."""
        return len(self.streams)

    # -- blocking reserves (see remora.netqueue.waiters) --------------------
    def park(self, conn: ClientConn, opcode: int, rid: int, req: p.ReserveRequest, prefix: bytes) -> None:
        """Hold a RESERVE that found nothing until a job arrives or its timeout passes."""
        self.parked.park(conn, opcode, rid, req, prefix, time.time())

    def _answer(self, waiter: Waiter, jobs: list[Any]) -> None:
        body = waiter.prefix + p.encode_reservations(hand_out(waiter.conn, jobs, self.engine))
        self.replies.add(waiter.conn, p.reply(waiter.opcode, waiter.rid, body))

    def _expire_waiters(self) -> None:
        for waiter in self.parked.expired(time.time()):
            self._answer(waiter, [])

    def _serve_waiters(self) -> None:
        for waiter, jobs in self.parked.serve(self.engine):
            self._answer(waiter, jobs)

    def _close(self, conn: ClientConn) -> None:
        if conn.preauth:
            self.preauth.drop(conn)
        if self.streams.due:
            self.streams.drop(conn)
        fd = conn.sock.fileno()
        if fd < 0:
            return
        self._conns.pop(fd, None)
        try:
            assert self._ep is not None
            self._ep.unregister(fd)
        except (OSError, ValueError):
            pass
        conn.sock.close()
        conn.closing = True
        self.parked.drop(conn)
        if not self.stopping:  # a restart keeps every reservation (the log has them)
            self._hand_back(conn)

    def forget_unstarted(self, job_id: str) -> None:
        """A job counts as started wherever it was reserved (rare: a START sent on a new connection)."""
        for conn in self._conns.values():
            conn.unstarted.pop(job_id, None)

    def _hand_back(self, conn: ClientConn) -> None:
        """A closed connection's unstarted reservations go back to the queue at once, each to its old place.

        A worker that dies (kill -9 closes its socket) so costs no lease time for the jobs it had not
        started; the jobs it started keep their lease (docs/dispatch.md)."""
        if not conn.unstarted:
            return
        unstarted, conn.unstarted = conn.unstarted, {}
        engine = self.engine
        for job_id, attempt in unstarted.items():
            engine.unreserve(job_id, attempt)
        if engine.woken and not self.stopping:
            self._wake()  # the loop's next iteration serves parked reserves and logs the releases

    def _shutdown(self) -> None:
        """Answer parked reserves with nothing, make the log durable, send what is owed, close."""
        with self.lock:
            for waiter in self.parked.drain():
                if waiter.conn.sock.fileno() >= 0:
                    self._answer(waiter, [])
            self.streams.end_all()
            replies = self.replies
            replies.commit()
            if self.wal is not None:
                self.wal.sync_now()
                replies.release_durable()
            deadline = time.time() + 2.0
            while time.time() < deadline and any(c.out for c in self._conns.values()):
                for conn in list(self._conns.values()):
                    replies.send(conn)
                time.sleep(0.005)
            for conn in list(self._conns.values()):
                self._close(conn)
            assert self._ep is not None and self._listener is not None
            self._ep.close()
            self._listener.close()
            for sock in (self._wake_r, self._wake_w):
                if sock is not None:
                    sock.close()

    def snapshot(self) -> dict[str, Any]:
        """Compact the log now (call with the lock held, as handlers are): a fresh snapshot of the live jobs."""
        wal = self.wal
        if wal is None:
            return {"persistence": False, "jobs": len(self.engine.jobs)}
        wal.compact(self.engine)  # flushes and syncs the log first
        self.replies.release_durable()
        return {"persistence": True, "generation": wal.gen, "jobs": len(self.engine.jobs), "records": wal.records}

    # -- introspection ------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        with self.lock:
            return self._stats()

    def _stats(self) -> dict[str, Any]:
        data = self.engine.stats()
        data["connections"] = len(self._conns)
        data["uptime"] = round(time.time() - self.started_at, 3)
        data["process"] = procstats.sample()
        data["server"] = {
            **self.counters,
            "unauthenticated_closed": self.preauth.closed,
            "persistence": self.settings.persistence,
            "fsync": self.settings.fsync,
            "parked_reserves": self.parked.count,
            "monitor_streams": len(self.streams),
            "log_error": self.replies.log_error,
            **(self._idle.info() if self._idle is not None else {}),
        }
        if self.wal is not None:
            data["wal"] = self.wal.info()
        return data
