"""Pooled SSH connections (paramiko transports), keyed by host, port, user and credential.

One ``SSHConnection`` is a TCP socket with ``TCP_NODELAY`` (without it every
command on a reused transport stalls ~40 ms on Nagle + delayed ACKs), a
verified host key, an authenticated paramiko transport and keepalives.
``SSHPool.acquire`` hands out a connection with a free channel slot: at most
``ssh.max_sessions_per_connection`` channels run on one transport (10:
OpenSSH's default MaxSessions, so a fan-out of 10 jobs per host needs one
connection; a cancel's kill channel that a full connection refuses goes over
another pooled connection); beyond that another connection is opened.  A server that refuses a
session (a lower MaxSessions) marks its connection full at what it carries
(``refused``), so the next channel goes to another connection.  Connections are created
one at a time per key, so a burst of jobs to a new host shares one or two
connections instead of opening one each.  A transport that died is detected
(``is_active`` or a failing channel open) and replaced; idle connections are
closed after ``ssh.idle_timeout`` by a janitor thread.

Jump hosts: a target behind a jump host is reached over a ``direct-tcpip``
channel of the jump host's own pooled connection (``acquire(...,
tunnel=True)``: a tunnel takes no session slot, since sshd's MaxSessions does
not count forwarded channels), and its connection records the jump's in
``via``.  A connection that carries tunnels is never closed as idle, and
connections are closed deepest first, so a target's transport always goes
before its jump host's.
"""

from __future__ import annotations

import io
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import paramiko
from paramiko.channel import Channel
from paramiko.common import MSG_CHANNEL_REQUEST

from remora.errors import HostKeyError, SSHAuthError, SSHError
from remora.executor.base import Buffering
from remora.executor.hostkeys import KnownHosts

log = logging.getLogger(__name__)
# paramiko logs every failed handshake with a traceback; the error reaches the job and our log instead.
logging.getLogger("paramiko.transport").setLevel(logging.CRITICAL)

WINDOW_SIZE = 2 * 1024 * 1024  # paramiko's default; bigger windows made bulk output slower and fatter
MAX_PACKET = 32768


def _channel_request(chan: Channel, m: paramiko.Message) -> None:
    """paramiko ignores ``exit-signal``; record it so a killed command reports its signal."""
    start = m.packet.tell()
    if m.get_text() == "exit-signal":
        m.get_boolean()
        chan.remora_exit_signal = m.get_text()  # type: ignore[attr-defined]
        chan.status_event.set()
        return
    m.packet.seek(start)
    Channel._handle_request(chan, m)  # type: ignore[attr-defined]


class _Transport(paramiko.Transport):
    _channel_handler_table = {**paramiko.Transport._channel_handler_table, MSG_CHANNEL_REQUEST: _channel_request}  # type: ignore[attr-defined]
    # AES-GCM first (an AEAD, as secure as AES-CTR + HMAC-SHA2 and faster here: paramiko computes a separate
    # HMAC in Python for every packet, and a job is ten-odd packets); the rest in paramiko's order for older servers.
    _preferred_ciphers = tuple(sorted(paramiko.Transport._preferred_ciphers, key=lambda c: not c.endswith("-gcm@openssh.com")))  # type: ignore[attr-defined]
    # paramiko's thread per connection wakes on this socket timeout to look at its state (closed? a keepalive
    # due?); at its 0.1 s, a worker holding 200 idle pooled connections woke 2,000 times a second. close()
    # does not wait for it (it closes the packetizer), and keepalives are seconds apart.
    _active_check_timeout = 1.0


@dataclass
class Credential:
    """How to log in, ready for paramiko (a private key already parsed)."""

    username: str
    password: str | None = None
    pkey: paramiko.PKey | None = None


def load_private_key(text: str, passphrase: str | None = None) -> paramiko.PKey:
    """An RSA, ECDSA or Ed25519 private key (PEM or OpenSSH format), decrypted with ``passphrase``."""
    errors = []
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(text), password=passphrase or None)
        except paramiko.PasswordRequiredException:
            raise SSHAuthError("the private key is encrypted and no passphrase is set") from None
        except (paramiko.SSHException, ValueError, TypeError, IndexError) as exc:
            errors.append(str(exc))
    raise SSHAuthError("cannot load the private key: unsupported format or wrong passphrase")


@dataclass
class SSHConnection:
    host: str
    port: int
    transport: paramiko.Transport
    host_key_fingerprint: str
    stdbuf: Buffering = None  # the host's libstdbuf.so, or whether it has stdbuf; None: not known yet (the first job's wrapper reports it)
    channels: int = 0
    limit: int = 8
    tunnels: int = 0  # direct-tcpip channels to hosts behind this one (their connections' ``via``)
    via: SSHConnection | None = None  # the jump host's connection this one runs over
    last_used: float = field(default_factory=time.monotonic)
    opened_at: float = field(default_factory=time.monotonic)

    def alive(self) -> bool:
        return self.transport.is_active()

    @property
    def depth(self) -> int:
        """How many jump hosts this connection runs through."""
        return 0 if self.via is None else self.via.depth + 1

    def close(self) -> None:
        try:
            self.transport.close()
        except Exception:  # noqa: BLE001 - closing a broken transport may raise anything
            pass


def _tcp_connect(host: str, port: int, timeout: float) -> socket.socket:
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise SSHError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return sock


def _authenticate(transport: paramiko.Transport, cred: Credential, where: str) -> None:
    try:
        if cred.pkey is not None:
            transport.auth_publickey(cred.username, cred.pkey)
        elif cred.password is not None:
            transport.auth_password(cred.username, cred.password)
        else:
            raise SSHAuthError(f"{where}: no credentials configured")
    except paramiko.BadAuthenticationType as exc:
        raise SSHAuthError(f"{where}: authentication method refused (server allows: {', '.join(exc.allowed_types)})") from None
    except paramiko.AuthenticationException:
        raise SSHAuthError(f"{where}: authentication failed for user {cred.username!r}") from None


def open_connection(
    host: str,
    port: int,
    cred: Credential,
    *,
    known_hosts: KnownHosts,
    policy: str,
    timeout: float,
    keepalive: float,
    probe_stdbuf: bool = True,
    sock: Any = None,
) -> SSHConnection:
    """Connect, check the host key, authenticate. Raises SSHError / HostKeyError / SSHAuthError.

    ``sock``: an open channel to ``host:port`` (a jump host's ``direct-tcpip`` channel) instead of a TCP connection.
    """
    where = f"{cred.username}@{host}:{port}"
    if sock is None:
        sock = _tcp_connect(host, port, timeout)
    started = time.monotonic()
    transport = _Transport(sock, default_window_size=WINDOW_SIZE, default_max_packet_size=MAX_PACKET)
    transport.banner_timeout = timeout
    transport.auth_timeout = timeout
    try:
        transport.start_client(timeout=timeout)
        key = transport.get_remote_server_key()
        fp = known_hosts.verify(host, port, key.get_name(), key.asbytes(), policy)
        _authenticate(transport, cred, where)
    except (HostKeyError, SSHError):
        transport.close()
        raise
    except (paramiko.SSHException, EOFError, OSError) as exc:
        transport.close()
        if not transport.remote_version and time.monotonic() - started >= timeout * 0.9:  # paramiko words this several ways
            raise SSHError(
                f"{where}: no SSH greeting within {timeout:g}s (connection timeout): the port accepts TCP but does not speak SSH"
            ) from None
        raise SSHError(f"{where}: SSH handshake failed: {exc or type(exc).__name__}") from None
    if keepalive > 0:
        transport.set_keepalive(int(max(1, keepalive)))
    conn = SSHConnection(host, port, transport, fp, stdbuf=None)
    if probe_stdbuf:
        probe(conn, timeout)
    log.debug("opened SSH connection to %s (stdbuf %s)", where, "yes" if conn.stdbuf else "no")
    return conn


def probe(conn: SSHConnection, timeout: float) -> Buffering:
    """Whether the host has ``stdbuf`` (remembered on the connection; a host that refuses sessions has not)."""
    if conn.stdbuf is None:
        try:
            conn.stdbuf = quick_command(conn, "command -v stdbuf >/dev/null 2>&1", timeout) == 0
        except (paramiko.SSHException, EOFError, OSError):
            conn.stdbuf = False
    return conn.stdbuf


def send_eof(chan: paramiko.Channel) -> None:
    """``shutdown_write`` without paramiko's race.

    paramiko builds the EOF under the channel lock but sends it after releasing
    it; if the server's CLOSE arrives in between, the transport thread answers
    with CLOSE first and our EOF follows for a channel sshd has already freed --
    sshd then disconnects the whole connection ("ieof packet referred to
    nonexistent channel"), failing every job on it.  Sending under the lock
    orders the two.
    """
    with chan.lock:
        transport: Any = chan.transport
        if chan.closed or transport is None:
            return
        message = chan._send_eof()  # type: ignore[attr-defined]
        if message is not None:
            transport._send_user_message(message)


def quick_command(conn: SSHConnection, command: str, timeout: float) -> int | None:
    """Run a short command on its own channel; its exit status (None if it did not finish in time)."""
    chan = conn.transport.open_session(timeout=timeout)
    try:
        chan.exec_command(f"{{ {command}; }} </dev/null")
        if not chan.status_event.wait(timeout):
            return None
        return chan.exit_status if chan.exit_status >= 0 else None
    finally:
        chan.close()


class Pooled(Protocol):
    """What the pool needs of a connection (``SSHConnection``; ``executor.libssh2.L2Connection``)."""

    host: str
    port: int
    channels: int
    limit: int
    tunnels: int
    last_used: float

    def alive(self) -> bool: ...
    def close(self) -> None: ...


PoolKey = tuple[Any, ...]  # (host, port, user, credential fingerprint[, event loop serial])


class SSHPool:
    """Shared SSH transports (thread-safe). See the module docstring."""

    def __init__(self, *, max_sessions: int = 8, idle_timeout: float = 300.0) -> None:
        self.max_sessions = max(1, max_sessions)
        self.idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self._conns: dict[PoolKey, list[SSHConnection]] = {}
        self._connecting: dict[PoolKey, threading.Lock] = {}
        self._closed = threading.Event()
        self._janitor: threading.Thread | None = None
        self.opened = 0
        self.credentials: dict[str, Credential] = {}  # parsed keys by Target.fingerprint (a passphrase KDF is slow)
        self._libssh2: SSHPool | None = None

    def libssh2(self) -> SSHPool:
        """The pool of this pool's libssh2 sessions (``executor.libssh2``; keyed by loop too), closed with it."""
        with self._lock:
            if self._libssh2 is None:
                self._libssh2 = SSHPool(max_sessions=self.max_sessions, idle_timeout=self.idle_timeout)
            return self._libssh2

    def acquire(self, key: PoolKey, opener: Callable[[], SSHConnection], *, tunnel: bool = False) -> tuple[SSHConnection, bool]:
        """A connection with a channel slot reserved for the caller; (conn, freshly_opened).

        ``tunnel``: for a forwarded channel to a host behind this one: any live connection will do, and
        the caller gives it back with ``untunnel`` (closing the connection it carries does that).
        """
        conn = self._take(key, tunnel)
        if conn:
            return conn, False
        with self._lock:
            connect_lock = self._connecting.setdefault(key, threading.Lock())
        with connect_lock:  # one connect at a time per key: followers reuse what the leader opened
            conn = self._take(key, tunnel)
            if conn:
                return conn, False
            conn = opener()
            conn.limit = self.max_sessions
            conn.channels, conn.tunnels = (0, 1) if tunnel else (1, 0)
            with self._lock:
                self._conns.setdefault(key, []).append(conn)
                self.opened += 1
            self._start_janitor()
            return conn, True

    def _take(self, key: PoolKey, tunnel: bool = False) -> SSHConnection | None:
        dead = []
        chosen = None
        with self._lock:
            conns = self._conns.get(key, [])
            for conn in list(conns):
                if not conn.alive():
                    conns.remove(conn)
                    dead.append(conn)
                elif chosen is None and (tunnel or conn.channels < conn.limit):
                    chosen = conn
            if chosen:
                if tunnel:
                    chosen.tunnels += 1
                else:
                    chosen.channels += 1
                chosen.last_used = time.monotonic()
        for conn in dead:
            log.info("SSH connection to %s:%d died; replacing it", conn.host, conn.port)
            self._close(conn)
        return chosen

    def release(self, conn: Pooled) -> None:
        with self._lock:
            conn.channels = max(0, conn.channels - 1)
            conn.last_used = time.monotonic()

    def refused(self, conn: Pooled) -> None:
        """The server refused a session on ``conn`` (its MaxSessions): no more than it carries now go there."""
        with self._lock:
            conn.limit = max(1, min(conn.limit, conn.channels))

    def untunnel(self, conn: Pooled) -> None:
        """A tunnel taken with ``acquire(..., tunnel=True)`` is closed."""
        with self._lock:
            conn.tunnels = max(0, conn.tunnels - 1)
            conn.last_used = time.monotonic()

    def _close(self, conn: Pooled) -> None:
        """Close a connection that left the pool; the jump host's connection it ran over loses a tunnel."""
        conn.close()
        via = getattr(conn, "via", None)
        if via is not None:
            self.untunnel(via)

    def discard(self, conn: Pooled) -> None:
        with self._lock:
            for conns in self._conns.values():
                if conn in conns:
                    conns.remove(conn)
        self._close(conn)

    def close_where(self, match: Callable[[PoolKey], bool]) -> int:
        """Close and forget the connections whose key ``match``es (a closed event loop's sessions)."""
        with self._lock:
            gone = [c for key in list(self._conns) if match(key) for c in self._conns.pop(key)]
        for conn in gone:
            self._close(conn)
        return len(gone)

    def has_room(self, key: PoolKey) -> bool:
        """Whether a live pooled connection for ``key`` has a free channel slot (``acquire`` would not connect)."""
        with self._lock:
            return any(conn.channels < conn.limit and conn.alive() for conn in self._conns.get(key, ()))

    def carries_tunnels(self, key: PoolKey) -> bool:
        """Whether a live pooled connection for ``key`` carries tunnels (it is a jump host's)."""
        with self._lock:
            return any(conn.tunnels and conn.alive() for conn in self._conns.get(key, ()))

    def stats(self) -> dict[PoolKey, list[tuple[int, int]]]:
        """(channels, tunnels) of each pooled connection by key."""
        with self._lock:
            return {key: [(c.channels, c.tunnels) for c in conns] for key, conns in self._conns.items() if conns}

    def connections(self) -> list[Any]:
        """Every pooled connection (a snapshot)."""
        with self._lock:
            return [c for conns in self._conns.values() for c in conns]

    def connection_count(self) -> int:
        with self._lock:
            return sum(len(c) for c in self._conns.values())

    def sweep(self) -> int:
        """Close connections idle longer than ``idle_timeout``; how many were closed."""
        now = time.monotonic()
        idle = []
        with self._lock:
            for conns in self._conns.values():
                for conn in list(conns):
                    if not conn.alive() or (conn.channels == 0 and conn.tunnels == 0 and now - conn.last_used >= self.idle_timeout):
                        conns.remove(conn)
                        idle.append(conn)
        for conn in sorted(idle, key=lambda c: -c.depth):  # a target's transport before its jump host's
            log.debug("closing idle SSH connection to %s:%d", conn.host, conn.port)
            self._close(conn)
        return len(idle)

    def _start_janitor(self) -> None:
        with self._lock:
            if self._janitor and self._janitor.is_alive():
                return
            self._janitor = threading.Thread(target=self._janitor_loop, name="ssh-pool-janitor", daemon=True)
            self._janitor.start()

    def _janitor_loop(self) -> None:
        tick = min(max(self.idle_timeout / 4, 0.05), 10.0)
        while not self._closed.wait(tick):
            try:
                self.sweep()
            except Exception:
                log.exception("SSH pool sweep failed")

    def close(self) -> None:
        self._closed.set()
        if self._libssh2 is not None:
            self._libssh2.close()
        with self._lock:
            conns = [c for cs in self._conns.values() for c in cs]
            self._conns.clear()
        for conn in sorted(conns, key=lambda c: -c.depth):  # a target's transport before its jump host's
            self._close(conn)


_default_pool: SSHPool | None = None
_default_lock = threading.Lock()


def default_pool(max_sessions: int = 8, idle_timeout: float = 300.0) -> SSHPool:
    """The process-wide pool used when an executor is not given one."""
    global _default_pool
    with _default_lock:
        if _default_pool is None:
            _default_pool = SSHPool(max_sessions=max_sessions, idle_timeout=idle_timeout)
        return _default_pool
