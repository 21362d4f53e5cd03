"""The SSH executor's libssh2 transport: sessions in C, driven by the worker's event loop.

paramiko runs one Python thread per connection and parses, decrypts and
dispatches every packet in Python: at fleet scale that is most of a worker's
CPU (a warm 100-host fan-out: ~65 ms in paramiko against ~8 ms for the same
jobs over libssh2).  With ``ssh.transport = auto`` (the default) a job on a
host reached directly runs here instead, through ``ssh2-python``:

- ``open_l2`` connects, checks the host key against Remora's known_hosts under
  the server's policy and logs in, blocking, on the thread that starts the job
  (``ssh.connection_timeout`` bounds it).  From then on the session is
  non-blocking and belongs to one event loop: only that loop's thread touches
  it, so libssh2 (not thread-safe) needs no lock.
- ``L2Connection.pump`` runs when the session's socket is readable: it steps
  every channel on the session (open, pty, exec, stdin, reads, the close
  handshake) until none makes progress.  A channel (``L2Channel``) looks to
  ``executor.sshrun.ChannelRun`` like a paramiko channel, so the job's life (pid line,
  cancel, timeout, TERM then KILL, outcome) is the same code for both.
- Connections are pooled per event loop (``SSHPool`` keyed by host, port,
  user, credential and loop); a socket that closes or errors fails every
  channel on it, and the pool opens a new one for the next job.

paramiko stays for what libssh2 does not cover here: targets behind jump
hosts, ``remora servers test``, killing a dead worker's leftovers, and a key
libssh2 cannot read (the executor then uses paramiko for that server).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from remora.errors import SSHAuthError, SSHError
from remora.executor.base import Buffering

if TYPE_CHECKING:
    from remora.executor.hostkeys import KnownHosts
    from remora.executor.loop import EventLoop, Timer
    from remora.executor.target import Target

log = logging.getLogger(__name__)

try:
    from ssh2 import exceptions as l2x
    from ssh2.error_codes import LIBSSH2_ERROR_EAGAIN as EAGAIN
    from ssh2.session import LIBSSH2_METHOD_CRYPT_CS, LIBSSH2_METHOD_CRYPT_SC, LIBSSH2_SESSION_BLOCK_OUTBOUND, Session

    AVAILABLE = True
except ImportError:  # pragma: no cover - ssh2-python is a dependency; a build without it uses paramiko
    AVAILABLE = False


if AVAILABLE:
    from remora.executor.libssh2c import CChannel

    try:
        C: CChannel | None = CChannel()
    except OSError as exc:  # without the exit signal a killed command would read as a success: use paramiko
        log.info("libssh2 transport unavailable: %s", exc)
        C, AVAILABLE = None, False


KEY_TYPES = {1: "ssh-rsa", 2: "ssh-dss", 3: "ecdsa-sha2-nistp256", 4: "ecdsa-sha2-nistp384", 5: "ecdsa-sha2-nistp521", 6: "ssh-ed25519"}
# AEADs first (chacha20-poly1305 is libssh2's own first choice), then AES-CTR and AES-CBC as paramiko
# offers them; libssh2's arcfour, blowfish, cast128 and 3des are never offered.
CIPHERS = ",".join(
    (
        "chacha20-poly1305@openssh.com",
        "aes256-gcm@openssh.com",
        "aes128-gcm@openssh.com",
        "aes256-ctr",
        "aes192-ctr",
        "aes128-ctr",
        "aes256-cbc",
        "aes192-cbc",
        "aes128-cbc",
    )
)
READ_SIZE = 256 * 1024  # most bytes taken from one stream of a channel per read call
# Most bytes one step takes before the job's sink has them: every read lets the server send a window
# (2 MiB) more, so a fast talker read until the socket ran dry piled up output faster than the database
# stored it; handed over at this size, the sink's bound (OutputWriter.MAX_BYTES) holds.
STEP_BYTES = 1024 * 1024
WRITE_SIZE = 64 * 1024  # most stdin bytes handed to libssh2 per write call
OUTBOUND_RETRY = 0.001  # libssh2 could not send everything: try again this soon
REPLY_RECHECK = 0.002  # a channel waiting for a reply (open, exec, close) is looked at again this soon,
REPLY_RECHECK_MAX = 0.1  # then twice as late each time up to this, in case another call took the reply


class KeyUnsupported(SSHAuthError):
    """libssh2 cannot read this private key (paramiko may: the executor falls back to it)."""


class L2Connection:
    """One libssh2 session on a TCP socket, owned by one event loop; pooled like ``SSHConnection``."""

    depth = 0
    via = None
    transport = None

    def __init__(self, host: str, port: int, sock: socket.socket, session: Any, fingerprint: str, loop: EventLoop) -> None:
        self.host, self.port, self.sock, self.session = host, port, sock, session
        self.host_key_fingerprint = fingerprint
        self.loop = loop
        self.stdbuf: Buffering = None
        self.channels = 0
        self.limit = 8
        self.tunnels = 0
        self.last_used = self.opened_at = time.monotonic()
        self.users: list[L2Channel] = []  # channels stepped when the socket is readable
        self.closing: list[Any] = []  # libssh2 channels whose close handshake is still going on
        self.dead = False
        self.lost_cause: BaseException | None = None
        self.fd = sock.fileno()
        self.watching = False
        self.retry: Timer | None = None
        self.backoff = REPLY_RECHECK
        self.pumping = False
        self.keepalive: Timer | None = None

    def alive(self) -> bool:
        return not self.dead

    # -- any thread ------------------------------------------------------------------

    def close(self) -> None:
        """Close the session (the pool's janitor calls this from its thread: the loop does it)."""
        if self.loop.running_here() or not self.loop.running():
            self._shutdown()
        else:
            self.loop.call_soon(self._shutdown)

    # -- the loop thread ----------------------------------------------------------------

    def add(self, chan: L2Channel) -> None:
        """Drive ``chan`` on this session from now on."""
        if self.dead:
            chan.lost(self.lost_cause)
            return
        self.users.append(chan)
        self.watch()
        self.pump()

    def watch(self) -> None:
        if not self.watching and not self.dead:
            self.loop.add_reader(self.fd, self.pump)
            self.watching = True

    def start_keepalive(self, interval: float) -> None:
        if interval > 0:
            self.session.keepalive_config(False, int(max(1, interval)))
            self.keepalive = self.loop.call_later(max(1.0, interval), self._keepalive)

    def _keepalive(self) -> None:
        if self.dead:
            return
        try:
            wait = self.session.keepalive_send()
        except l2x.SSH2Error as exc:
            self.fail(exc)
            return
        self.keepalive = self.loop.call_later(max(1, wait), self._keepalive)

    def pump(self) -> None:
        """Step every channel until none makes progress or has anything waiting; a session error fails them all.

        Any libssh2 call may read the socket and queue what it finds for another channel (or for another
        stream of the same one), and the socket is then no longer readable: so the passes go on while a
        channel holds queued data or an unseen EOF, and a channel waiting for a reply that another call
        may have taken (an open, an exec, the close: only where the session carries more than one) is
        looked at again on a short timer.
        """
        if self.dead or self.pumping:
            return
        self.pumping = True
        try:
            progress = False
            for _ in range(64):
                stepped_any = False
                for chan in list(self.users):
                    try:
                        stepped = chan.step()
                    except (l2x.SSH2Error, OSError):
                        raise
                    except Exception as exc:  # a bug stepping one channel ends that job, not the session
                        log.exception("libssh2 channel on %s:%d failed", self.host, self.port)
                        self.users.remove(chan)
                        chan.lost(exc)
                        continue
                    if stepped:
                        stepped_any = True
                        chan.notify()
                progress |= stepped_any
                self._close_pending()
                if not stepped_any and not any(chan.pending() for chan in self.users):
                    break
            else:  # still busy after every pass: the rest on the next turn of the loop, not now
                if self.retry is None:
                    self.retry = self.loop.call_later(0, self._retry)
                return
            if not self.users and not self.closing:
                self._idle_check()
            else:
                self._arm_retry(progress)
        except (l2x.SSH2Error, OSError) as exc:
            self.fail(exc)
        finally:
            self.pumping = False

    def _arm_retry(self, progress: bool) -> None:
        if self.retry is not None or self.dead:
            return
        if self.session.block_directions() & LIBSSH2_SESSION_BLOCK_OUTBOUND:
            self.retry = self.loop.call_later(OUTBOUND_RETRY, self._retry)
        elif len(self.users) + len(self.closing) > 1 and any(chan.stage != L2Channel.RUN for chan in self.users):
            # another channel's call may have read this one's reply off the socket (one channel alone reads its own)
            self.backoff = REPLY_RECHECK if progress else min(self.backoff * 2, REPLY_RECHECK_MAX)
            self.retry = self.loop.call_later(self.backoff, self._retry)

    def _retry(self) -> None:
        self.retry = None
        self.pump()

    def done_with(self, chan: L2Channel) -> None:
        """``chan`` ended: stop stepping it and close it on the session (without waiting)."""
        if chan in self.users:
            self.users.remove(chan)
        if chan.chan is not None and not self.dead:
            self.closing.append(chan.chan)
            chan.chan = None
            self.pump()  # while a pump runs, it closes it itself

    def _close_pending(self) -> None:
        for chan in list(self.closing):
            if chan.close() != EAGAIN:
                self.closing.remove(chan)  # freed when the last reference goes

    def _idle_check(self) -> None:
        """No channel: readable means the server closed, or sent something the next job's read will take."""
        try:
            data = self.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return
        except OSError as exc:
            self.fail(exc)
            return
        if not data:
            self.fail(ConnectionResetError("the server closed the connection"))
            return
        self.loop.remove_reader(self.fd)  # parked until the next channel (a level-triggered fd would spin)
        self.watching = False

    def fail(self, exc: BaseException | None) -> None:
        """The session is unusable: every channel on it ends, the socket is closed."""
        if self.dead:
            return
        self.lost_cause = exc
        log.debug("libssh2 connection to %s:%d lost: %s", self.host, self.port, exc)
        users, self.users = self.users, []
        self._shutdown()
        for chan in users:
            chan.lost(exc)

    def _shutdown(self) -> None:
        if self.watching:
            self.loop.remove_reader(self.fd)
            self.watching = False
        for timer in (self.retry, self.keepalive):
            if timer is not None:
                timer.cancel()
        was_dead, self.dead = self.dead, True
        self.closing.clear()
        if not was_dead:
            try:
                self.session.disconnect()
            except Exception:  # noqa: BLE001 - a broken session may raise anything on its way out
                pass
        try:
            self.sock.close()
        except OSError:
            pass
        users, self.users = self.users, []
        for chan in users:
            chan.lost(self.lost_cause)


class L2Channel:
    """A session channel that runs one command; stepped by its connection, read like a paramiko channel.

    ``on_start_failed(exc, refused)``: the channel could not be opened or the exec request failed (the
    command did not start); ``refused``: the server refused a further session on this connection.
    """

    OPEN, PTY, EXEC, RUN, WAIT, DONE = range(6)

    def __init__(self, conn: L2Connection, text: str, *, pty: bool = False, stdin: bytes | None = None) -> None:
        self.conn = conn
        self.text = text
        self.pty = pty
        self.stdin = memoryview(stdin) if stdin is not None else None
        self.stage = self.OPEN
        self.chan: Any = None
        self.in_buffer = bytearray()
        self.in_stderr_buffer = bytearray()
        self.eof_received = False
        self.closed = False
        self.exit_status = -1
        self.remora_exit_signal: str | None = None
        self.remote_closed = False
        self.status_watched = False  # the exit status can be seen before the channel closes (CChannel)
        self.on_progress: Callable[[], None] = lambda: None
        self.on_start_failed: Callable[[BaseException | None, bool], None] = lambda exc, refused: None

    # -- what ChannelRun reads (paramiko's channel surface) ------------------------------------

    def fileno(self) -> int:
        return -1  # the connection's socket is watched, not the channel

    def recv_ready(self) -> bool:
        return bool(self.in_buffer)

    def recv_stderr_ready(self) -> bool:
        return bool(self.in_stderr_buffer)

    def recv(self, size: int) -> bytes:
        return _take(self.in_buffer, size)

    def recv_stderr(self, size: int) -> bytes:
        return _take(self.in_stderr_buffer, size)

    def _status(self) -> int:
        return C.status(self.chan) if self.status_watched and C is not None else self.chan.get_exit_status()

    def pending(self) -> bool:
        """Whether libssh2 holds data or an EOF this running channel has not taken yet (reads no socket)."""
        if self.closed or self.chan is None or self.stage != self.RUN:
            return False
        return bool(self.chan.poll_channel_read(1)) or bool(self.chan.eof())

    def exit_status_ready(self) -> bool:
        """The exit status (or signal) has arrived: at the latest when the server closed the channel."""
        if self.remote_closed:
            return True
        if not self.status_watched or self.chan is None or self.stage != self.RUN:
            return False
        status = self._status()
        signal = C.exit_signal(self.chan, True) if C is not None else None
        if status == CChannel.UNSET and signal is None:
            return False
        self.exit_status = -1 if status == CChannel.UNSET else status
        self.remora_exit_signal = signal
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.conn.done_with(self)

    # -- stepped by the connection (loop thread) ------------------------------------------

    def notify(self) -> None:
        self.on_progress()

    def step(self) -> bool:
        """Advance as far as the session allows without blocking; True if anything happened."""
        if self.closed or self.stage == self.DONE:
            return False
        session = self.conn.session
        progress = False
        try:
            if self.stage == self.OPEN:
                chan = session.open_session()
                if chan == EAGAIN:
                    return False
                self.chan, self.stage, progress = chan, self.PTY if self.pty else self.EXEC, True
                self.status_watched = C is not None and C.watch_status(chan)
            if self.stage == self.PTY:
                if self.chan.pty("dumb") == EAGAIN:
                    return progress
                self.stage, progress = self.EXEC, True
            if self.stage == self.EXEC:
                if self.chan.execute(self.text) == EAGAIN:
                    return progress
                self.stage, progress = self.RUN, True
        except (l2x.ChannelFailure, l2x.ChannelRequestDenied, l2x.ChannelError, l2x.RequestDeniedError) as exc:
            self._start_failed(exc, refused=self.stage == self.OPEN)
            return False
        except l2x.SSH2Error as exc:
            if self.stage == self.OPEN and not isinstance(exc, (l2x.SocketDisconnectError, l2x.SocketRecvError, l2x.SocketSendError)):
                self._start_failed(exc, refused=True)  # e.g. the server answered the open with a failure
                return False
            raise
        if self.stage == self.RUN:
            progress |= self._run()
        if self.stage == self.WAIT:  # the EOF came: the exit status, then the server's close, follow
            seen = self.status_watched and (
                self._status() != CChannel.UNSET or (C is not None and C.exit_signal(self.chan, True) is not None)
            )
            if seen or self.chan.wait_closed() != EAGAIN:
                status = self._status()
                self.exit_status = -1 if status == CChannel.UNSET else status
                self.remora_exit_signal = C.exit_signal(self.chan, self.status_watched) if C is not None else None
                self.remote_closed, self.stage, progress = True, self.DONE, True
        return progress

    def _run(self) -> bool:
        chan, progress = self.chan, False
        if self.stdin is not None:
            while self.stdin:
                rc, sent = chan.write(bytes(self.stdin[:WRITE_SIZE]))
                if sent > 0:
                    self.stdin = self.stdin[sent:]
                    progress = True
                if rc == EAGAIN or sent <= 0:
                    break
            if not self.stdin and chan.send_eof() != EAGAIN:
                self.stdin = None
        for _ in range(8):  # reading one stream may queue the other's data: until neither has any queued
            got = False
            for read, buffer in ((chan.read, self.in_buffer), (chan.read_stderr, self.in_stderr_buffer)):
                while len(self.in_buffer) + len(self.in_stderr_buffer) < STEP_BYTES:
                    size, data = read(READ_SIZE)
                    if size <= 0:
                        break
                    buffer += data
                    got = True
            progress |= got
            if len(self.in_buffer) + len(self.in_stderr_buffer) >= STEP_BYTES:
                return True  # handed to the job first (its sink may wait for the database): read on next pass
            if not got and not chan.poll_channel_read(1):
                break
        if chan.eof():
            self.eof_received, self.stage, progress = True, self.WAIT, True
        return progress

    def _start_failed(self, exc: BaseException, *, refused: bool) -> None:
        self.closed = True
        if self in self.conn.users:
            self.conn.users.remove(self)
        if self.chan is not None:
            self.conn.closing.append(self.chan)
            self.chan = None
        self.on_start_failed(exc, refused)

    def lost(self, exc: BaseException | None) -> None:
        """The connection is gone."""
        self.chan = None
        if self.stage < self.RUN:
            self.closed = True
            self.on_start_failed(exc, False)
            return
        self.closed = True
        self.on_progress()


def _take(buffer: bytearray, size: int) -> bytes:
    data = bytes(buffer[:size])
    del buffer[:size]
    return data


def open_l2(
    target: Target,
    *,
    known_hosts: KnownHosts,
    timeout: float,
    loop: EventLoop,
    tcp_connect: Callable[[str, int, float], socket.socket],
) -> L2Connection:
    """Connect, check the host key, log in (blocking, bounded by ``timeout``); then the session is the loop's.

    Raises SSHError / HostKeyError / SSHAuthError; KeyUnsupported for a private key libssh2 cannot read.
    """
    host, port = target.host, int(target.port)
    where = f"{target.user}@{host}:{port}"
    sock = tcp_connect(host, port, timeout)
    session = Session()
    session.set_timeout(int(timeout * 1000))
    for direction in (LIBSSH2_METHOD_CRYPT_CS, LIBSSH2_METHOD_CRYPT_SC):
        session.method_pref(direction, CIPHERS)
    started = time.monotonic()
    try:
        try:
            session.handshake(sock)
        except (l2x.SSH2Error, OSError) as exc:
            if isinstance(exc, (l2x.Timeout, l2x.SocketTimeout, l2x.BannerRecvError)) and time.monotonic() - started >= timeout * 0.9:
                raise SSHError(
                    f"{where}: no SSH greeting within {timeout:g}s (connection timeout): the port accepts TCP but does not speak SSH"
                ) from None
            raise SSHError(f"{where}: SSH handshake failed: {describe(exc)}") from None
        key, kind = session.hostkey()
        fingerprint = known_hosts.verify(host, port, KEY_TYPES.get(kind, "unknown"), bytes(key), target.host_key_policy)
        _login(session, target, where)
    except BaseException:
        sock.close()
        raise
    session.set_blocking(False)
    sock.setblocking(False)
    return L2Connection(host, port, sock, session, fingerprint, loop)


def _login(session: Any, target: Target, where: str) -> None:
    from remora.executor.target import AuthKind

    try:
        if target.auth is AuthKind.KEY:
            if not target.private_key:
                raise SSHAuthError(f"server {target.name}: key auth without a stored private key")
            try:
                session.userauth_publickey_frommemory(target.user, target.private_key.encode(), passphrase=target.passphrase or "")
            except (l2x.FileError, l2x.PublicKeyInitError, l2x.MethodNotSupported) as exc:
                raise KeyUnsupported(f"{where}: libssh2 cannot use this private key ({describe(exc)})") from None
        elif target.auth is AuthKind.PASSWORD:
            if target.password is None:
                raise SSHAuthError(f"server {target.name}: password auth without a stored password")
            session.userauth_password(target.user, target.password)
        else:
            raise SSHAuthError(f"server {target.name}: auth {target.auth.value!r} is not an SSH auth type")
    except SSHAuthError:
        raise
    except (l2x.AuthenticationError, l2x.PublickeyUnverifiedError, l2x.PasswordExpiredError) as exc:
        allowed = _methods(session, target.user)
        method = "publickey" if target.auth is AuthKind.KEY else "password"
        if allowed is not None and method not in allowed:
            raise SSHAuthError(f"{where}: authentication method refused (server allows: {', '.join(allowed)})") from None
        raise SSHAuthError(f"{where}: authentication failed for user {target.user!r}") from exc
    except (l2x.SSH2Error, OSError) as exc:
        raise SSHError(f"{where}: SSH handshake failed: {describe(exc)}") from None


def _methods(session: Any, user: str) -> list[str] | None:
    try:
        methods = session.userauth_list(user)
    except Exception:  # noqa: BLE001 - only for a better error message
        return None
    return [m.decode() if isinstance(m, bytes) else str(m) for m in methods or []]


def describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__
