"""One command running on an SSH channel, driven by an event loop (``ChannelRun``).

Both transports' channels look alike here (a libssh2 ``L2Channel`` reads like
a paramiko channel): the first stdout line is the wrapper's pid report
(stripped, reported as ``remote_pid``; on a connection's first job it also
says how the host line-buffers), the rest goes to the sink as it arrives.  A
timer looks at the cancel flag and the deadline every ``TICK``; a cancel or a
timeout sends ``TERM`` to the job's process group over another channel, then
``KILL`` after ``worker.kill_grace``.  The end drains what is buffered, turns
the exit status (or signal, or a lost connection) into the job's outcome,
closes the channel and gives the connection back to its pool.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

import paramiko

from remora.executor.base import (
    DRAIN_AFTER_EXIT,
    PID_MARKER,
    TICK,
    Done,
    ErrorKind,
    ExecRequest,
    ExecResult,
    OutputSink,
    Stream,
    Wrapper,
    finish,
    notify_started,
    parse_pid_line,
    signal_name,
    stopped,
)
from remora.executor.libssh2 import L2Channel, L2Connection
from remora.executor.sshpool import SSHConnection, SSHPool, send_eof

if TYPE_CHECKING:
    from remora.executor.loop import EventLoop, Timer
    from remora.executor.ssh import SSHExecutor

log = logging.getLogger(__name__)

EOF_POLL = 0.002  # after an EOF that came before the exit status: how often to look for the status
KILL_WAIT = 5.0  # after KILL, how long we still wait for the channel to report the end
MAX_READ = 256 * 1024  # most bytes taken from a channel buffer at once (bigger reads cost RSS, not speed)


class ChannelRun:
    """One running command on the event loop: its channel's fd, its deadlines, its output."""

    def __init__(
        self,
        ex: SSHExecutor,
        conn: SSHConnection | L2Connection,
        chan: paramiko.Channel | L2Channel,
        request: ExecRequest,
        sink: OutputSink,
        cancel: threading.Event,
        result: ExecResult,
        loop: EventLoop,
        done: Done,
        *,
        pool: SSHPool | None = None,
    ) -> None:
        self.ex, self.conn, self.chan, self.request = ex, conn, chan, request
        self.pool = pool or ex.pool
        self.pumped = isinstance(chan, L2Channel)  # stepped by its libssh2 session, not watched on an fd of its own
        self.sink, self.cancel, self.result = sink, cancel, result
        self.loop, self.done = loop, done
        self.head: bytearray | None = bytearray()  # stdout until the pid line has been parsed
        self.fd = -1
        self.deadline: float | None = None
        self.term_at: float | None = None
        self.kill_at: float | None = None
        self.exited_at: float | None = None
        self.pid_wait_until: float | None = None
        self.eof_at: float | None = None  # EOF came before the exit status: watched on a short timer from then on
        self.ended = False
        self.timer: Timer | None = None

    def begin(self, wrapper: Wrapper) -> None:
        request = self.request
        try:
            self.fd = self.chan.fileno()
        except (paramiko.SSHException, EOFError, OSError):
            self.fd = -1
        if self.fd >= 0:
            self.loop.add_reader(self.fd, self.readable)
        if wrapper.stdin is not None:
            self.loop.blocking(send_stdin, self.chan, wrapper.stdin)
        self.deadline = time.monotonic() + request.timeout if request.timeout > 0 else None
        self.readable()
        if not self.ended and self.timer is None:
            self.schedule(TICK)

    def schedule(self, delay: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        when = time.monotonic() + delay
        if self.deadline is not None and self.term_at is None:
            when = min(when, self.deadline)
        self.timer = self.loop.call_at(when, self.tick)

    def readable(self) -> None:
        if self.ended:
            return
        self.drain()
        chan = self.chan
        if chan.closed or (chan.eof_received and chan.exit_status_ready()):
            self.end()
        elif chan.eof_received and self.fd >= 0:
            # EOF before the exit status: the fd stays readable from now on; look again on a short timer
            self.loop.remove_reader(self.fd)
            self.fd = -1
            self.eof_at = time.monotonic()
            self.schedule(EOF_POLL)

    def tick(self) -> None:
        """The periodic check: cancel and timeout, the exit status, TERM -> KILL, the drain after the exit."""
        if self.ended:
            return
        self.timer = None
        if isinstance(self.chan, L2Channel) and self.chan.pending():
            self.chan.conn.pump()  # something the session holds for this job that no socket event announced
        self.readable()
        if self.ended:
            return
        chan, now_ = self.chan, time.monotonic()
        if chan.exit_status_ready() or getattr(chan, "remora_exit_signal", None):
            self.exited_at = self.exited_at or now_
            if chan.eof_received or chan.closed or now_ - self.exited_at >= DRAIN_AFTER_EXIT:
                self.end()
                return
        if self.term_at is None and (self.cancel.is_set() or (self.deadline is not None and now_ >= self.deadline)):
            stopped(self.result, self.request, canceled=self.cancel.is_set())
            self.term_at = now_
            self.signal("TERM")
        elif self.term_at is not None and self.kill_at is None and now_ - self.term_at >= self.ex.kill_grace:
            self.kill_at = now_
            self.signal("KILL")
        elif self.kill_at is not None and now_ - self.kill_at >= KILL_WAIT:
            self.end()
            return
        if self.pid_wait_until is not None and self.result.remote_pid is not None:
            self.pid_wait_until = None
            self.signal(self.pending_signal)
        elif self.pid_wait_until is not None and now_ >= self.pid_wait_until:
            self.pid_wait_until = None
            log.warning("%s: no remote pid known; closing the channel instead of signalling", self.ex.target.name)
            self.end()
            return
        if self.eof_at is not None and now_ - self.eof_at < 0.5:
            self.schedule(EOF_POLL)  # the exit status follows the EOF within milliseconds
        elif self.pid_wait_until is not None or self.exited_at is not None or (self.fd < 0 and not self.pumped):
            self.schedule(0.05)
        else:
            self.schedule(TICK)

    pending_signal = "TERM"

    def signal(self, sig: str) -> None:
        pid = self.result.remote_pid
        if pid is None:  # the wrapper has not even printed its pid: wait a moment for it
            if not self.chan.exit_status_ready():
                self.pending_signal = sig
                self.pid_wait_until = self.pid_wait_until or time.monotonic() + 1.0
            return
        if isinstance(self.conn, L2Connection):
            self.kill_over_libssh2(self.conn, pid, sig)
        else:
            self.loop.blocking(self.ex.kill_group, self.conn, pid, sig)

    def kill_over_libssh2(self, conn: L2Connection, pid: int, sig: str) -> None:
        """Signal the job's process group over another channel of its session (paramiko's pool if refused)."""
        if not conn.alive():
            self.loop.blocking(self.ex.kill_group, None, pid, sig)
            return
        chan = L2Channel(conn, f"{{ {kill_command(pid, sig)}; }} </dev/null")
        chan.on_progress = lambda: chan.close() if chan.remote_closed or chan.closed else None
        chan.on_start_failed = lambda exc, refused: self.loop.blocking(self.ex.kill_group, None, pid, sig)
        conn.add(chan)

    def abandon(self) -> None:
        """The command never started (its start is retried or reported elsewhere): stop without an outcome."""
        self.ended = True
        if self.timer is not None:
            self.timer.cancel()

    def drain(self) -> None:
        # Take everything buffered at once: paramiko's buffer deletes from its front on each read,
        # so many small reads of a large buffer cost quadratic time (8 KiB reads: ~15 MB/s).
        chan = self.chan
        size = self.ex.buffer_size
        while chan.recv_ready():
            data = chan.recv(max(size, min(len(chan.in_buffer), MAX_READ)))
            if not data:
                break
            self.stdout(data)
        while chan.recv_stderr_ready():
            data = chan.recv_stderr(max(size, min(len(chan.in_stderr_buffer), MAX_READ)))
            if not data:
                break
            self.sink.write(Stream.STDERR, data)

    def stdout(self, data: bytes) -> None:
        if self.head is None:
            self.sink.write(Stream.STDOUT, data)
            return
        self.head += data
        newline = self.head.find(b"\n")
        if newline < 0:
            if not PID_MARKER.startswith(bytes(self.head[: len(PID_MARKER)])):
                self.flush_head()
            return
        line, rest = bytes(self.head[:newline]).rstrip(b"\r"), bytes(self.head[newline + 1 :])
        self.head = None
        pid, stdbuf = parse_pid_line(line)
        if pid is not None:
            self.result.remote_pid = pid
            if stdbuf is not None:
                self.conn.stdbuf = stdbuf  # learnt on this connection's first job: no probe channel
            notify_started(self.sink, pid)
            if rest:
                self.sink.write(Stream.STDOUT, rest)
        else:
            self.sink.write(Stream.STDOUT, line + b"\n" + rest)

    def flush_head(self) -> None:
        if self.head:
            self.sink.write(Stream.STDOUT, bytes(self.head))
        self.head = None

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        if self.timer is not None:
            self.timer.cancel()
        if self.fd >= 0:
            self.loop.remove_reader(self.fd)
            self.fd = -1
        try:
            self.drain()
            self.flush_head()
            self.outcome()
        finally:
            close_quietly(self.chan)
            self.pool.release(self.conn)
            self.done(finish(self.result))

    def outcome(self) -> None:
        chan, result = self.chan, self.result
        sig = getattr(chan, "remora_exit_signal", None)
        if sig:
            result.signal = signal_name(sig)
        elif chan.exit_status_ready() and chan.exit_status >= 0:
            result.exit_code = chan.exit_status
        elif result.error_kind is None:
            result.error_kind = ErrorKind.CONNECTION.value
            alive = self.conn.alive()
            cause = getattr(self.conn, "lost_cause", None) or getattr(self.conn.transport, "saved_exception", None)
            result.error = (
                f"SSH connection to {self.ex.target.host}:{self.ex.target.port} lost while the command was running"
                + (f" ({type(cause).__name__}: {cause})" if cause else "")
                if not alive
                else "the SSH channel closed without an exit status"
            )
            if not alive:
                self.pool.discard(self.conn)
            if result.remote_pid:
                self.loop.blocking(self.ex.kill_stale, result.remote_pid)


def kill_command(pid: int, sig: str) -> str:
    """Shell text that signals process group and session ``pid`` (children that made their own group too)."""
    return f"kill -s {sig} -- -{pid} 2>/dev/null; pkill -{sig} -s {pid} 2>/dev/null; true"


def close_quietly(chan: paramiko.Channel | L2Channel) -> None:
    try:
        chan.close()
    except (paramiko.SSHException, EOFError, OSError):
        pass  # the transport is gone already


def send_stdin(chan: paramiko.Channel, data: bytes) -> None:
    try:
        chan.sendall(data)
        send_eof(chan)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        log.debug("sending the script failed: %s", exc)
