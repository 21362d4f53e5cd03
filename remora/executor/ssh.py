"""The SSH executor (paramiko): run a job on a remote server over a pooled connection.

How one job runs:

1. A channel is opened on a pooled connection (``executor.sshpool``).  Any
   failure up to and including the ``exec`` request is a connection error
   *before the command started*: it is retried ``ssh.max_retries`` times with
   backoff (each attempt's error kept in ``ExecResult.attempt_errors``).
   Authentication and host-key failures are not retried.
2. The command runs under the wrapper of ``executor.base``; its first stdout
   line is ``remora-pid:<pid>``, the pid of the login shell sshd started.
   sshd makes that shell a session leader (``setsid``), and the wrapper
   ``exec``s the job, so ``<pid>`` is also the job's process group and
   session id.  That line is stripped from the output; the pid is reported
   (``Job.remote_pid``).
3. Output is read in a loop woken by paramiko's buffer events (never a
   blocking ``read()``), stdout and stderr apart, byte-exact, and handed to
   the sink as it arrives.
4. On cancel or timeout, ``kill -TERM -- -<pid>`` plus ``pkill -TERM -s <pid>``
   (children that made their own process group) run over a second channel;
   ``KILL`` follows after ``worker.kill_grace``.  Closing the channel alone
   would leave the process running on OpenSSH.
5. A connection lost while the command runs ends the job with an error
   (never retried here: the command may have had effects); the executor
   then tries once, in the background, to kill the orphaned process group.

Steps 2-5, the command's life on its channel, are ``executor.sshrun.ChannelRun``'s.

A target with jump hosts (``Target.jump``) is connected over a
``direct-tcpip`` channel of its last jump host's pooled connection, that one
over the hop before it, and so on; every hop's host key is checked against
Remora's known_hosts under its own policy.  Everything above then runs over
the target's own transport, unchanged: the jump only carries bytes.
"""

from __future__ import annotations

import logging
import shlex
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import paramiko

from remora.errors import HostKeyError, RemoraError, SSHAuthError, SSHError, ValidationError
from remora.executor import libssh2
from remora.executor.base import (
    Done,
    ErrorKind,
    ExecRequest,
    ExecResult,
    OutputSink,
    Wrapper,
    build_wrapper,
    check_request,
    finish,
    now,
    run_on_private_loop,
)
from remora.executor.hostkeys import KnownHosts
from remora.executor.libssh2 import KeyUnsupported, L2Channel, L2Connection
from remora.executor.loop import EventLoop
from remora.executor.sshpool import (
    Credential,
    SSHConnection,
    SSHPool,
    _tcp_connect,
    default_pool,
    load_private_key,
    open_connection,
    quick_command,
)
from remora.executor.sshrun import ChannelRun, close_quietly, kill_command
from remora.executor.target import AuthKind, Target

if TYPE_CHECKING:
    from pathlib import Path

    from remora.config import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
_known_hosts: dict[str, KnownHosts] = {}
_known_hosts_lock = threading.Lock()


def known_hosts_for(path: Path) -> KnownHosts:
    """One ``KnownHosts`` per file in this process (it caches the parsed file and serialises writes)."""
    with _known_hosts_lock:
        if str(path) not in _known_hosts:
            _known_hosts[str(path)] = KnownHosts(path)
        return _known_hosts[str(path)]


def credential_for(target: Target, cache: dict[str, Credential] | None = None) -> Credential:
    """The target's credential ready for paramiko (parsed keys cached by fingerprint: passphrase KDFs are slow)."""
    if cache is not None and target.fingerprint in cache:
        return cache[target.fingerprint]
    if target.auth is AuthKind.PASSWORD:
        if target.password is None:
            raise SSHAuthError(f"server {target.name}: password auth without a stored password")
        cred = Credential(target.user, password=target.password)
    elif target.auth is AuthKind.KEY:
        if not target.private_key:
            raise SSHAuthError(f"server {target.name}: key auth without a stored private key")
        cred = Credential(target.user, pkey=load_private_key(target.private_key, target.passphrase))
    else:
        raise SSHAuthError(f"server {target.name}: auth {target.auth.value!r} is not an SSH auth type")
    if cache is not None:
        cache[target.fingerprint] = cred
    return cred


class SSHExecutor:
    """Runs jobs on one target over pooled SSH."""

    def __init__(self, target: Target, settings: Settings, *, pool: SSHPool | None = None) -> None:
        self.target = target
        self.settings = settings
        self.pool = pool or default_pool(settings.ssh.max_sessions_per_connection, settings.ssh.idle_timeout)
        self.known_hosts = known_hosts_for(target.known_hosts or settings.known_hosts_path)
        self.kill_grace = settings.worker.kill_grace
        self.buffer_size = max(4096, settings.output.buffer_size)
        self.libssh2_unusable = False  # libssh2 could not read the target's key: paramiko serves it

    def uses_libssh2(self) -> bool:
        """Whether this target's jobs run over libssh2 (``ssh.transport``; jump hosts always use paramiko)."""
        if self.settings.ssh.transport == "paramiko" or not libssh2.AVAILABLE or self.target.jump or self.libssh2_unusable:
            return False
        # auto: a jump host whose paramiko connection carries tunnels runs its own jobs over it too (one connection)
        return self.settings.ssh.transport == "libssh2" or not self.pool.carries_tunnels(self.target.connection_key)

    # -- connections ----------------------------------------------------------

    def _open(self) -> SSHConnection:
        return self._connect(self.target, self.target.hop_route)

    def _connect(self, target: Target, route: list[Target]) -> SSHConnection:
        """A new connection to ``target``; through the pooled connection of ``route[-1]`` (reached over the rest) if any."""
        ssh = self.settings.ssh
        via: SSHConnection | None = None
        sock = None
        if route:
            jump = route[-1]
            via, _ = self.pool.acquire(jump.connection_key, lambda: self._open_jump(jump), tunnel=True)
            try:
                sock = forward(via, jump, target, ssh.connection_timeout)
            except BaseException:
                self.pool.untunnel(via)
                if not via.alive():
                    self.pool.discard(via)
                raise
        try:
            conn = open_connection(
                target.host,
                int(target.port),
                credential_for(target, self.pool.credentials),
                known_hosts=known_hosts_for(target.known_hosts or self.settings.known_hosts_path),
                policy=target.host_key_policy,
                timeout=ssh.connection_timeout,
                keepalive=ssh.keepalive_interval,
                probe_stdbuf=False,  # the first job's wrapper reports stdbuf on its pid line
                sock=sock,
            )
        except BaseException:
            if via is not None:
                self.pool.untunnel(via)
            raise
        conn.via = via
        return conn

    def _open_jump(self, jump: Target) -> SSHConnection:
        """A pooled connection to a jump host; its errors name it as the jump host."""
        try:
            return self._connect(jump, jump.hop_route)
        except RemoraError as exc:
            if exc.message.startswith("jump host "):
                raise
            raise type(exc)(f"jump host {jump.name}: {exc.message}", details=exc.details) from None

    def _start(
        self, request: ExecRequest, cancel: threading.Event, result: ExecResult
    ) -> tuple[SSHConnection, paramiko.Channel, Wrapper] | None:
        """Open a channel and exec the wrapper, retrying connection errors; None with result.error set on failure."""
        return self._retrying(lambda: self._start_once(request), cancel, result)

    def _retrying(self, attempt_once: Callable[[], T], cancel: threading.Event, result: ExecResult) -> T | None:
        """``attempt_once()`` until it succeeds, retrying connection errors with backoff; None with result.error set on failure."""
        retries = max(0, self.settings.ssh.max_retries)
        attempt = 0
        while True:
            try:
                return attempt_once()
            except HostKeyError as exc:
                result.error_kind, result.error = ErrorKind.HOST_KEY.value, exc.message
            except SSHAuthError as exc:
                if isinstance(exc, KeyUnsupported):
                    raise
                result.error_kind, result.error = ErrorKind.AUTH.value, exc.message
            except ValidationError as exc:
                result.error_kind, result.error = ErrorKind.INTERNAL.value, exc.message
            except RemoraError as exc:
                attempt += 1
                result.attempt_errors.append(f"attempt {attempt}: {exc.message}")
                if attempt <= retries:
                    delay = min(0.5 * 2 ** (attempt - 1), 10.0)
                    log.info("%s: %s; retrying in %.1fs", self.target.name, exc.message, delay)
                    if not cancel.wait(delay):
                        continue
                    result.error_kind, result.error = ErrorKind.CANCELED.value, "canceled"
                    return None
                result.error_kind = ErrorKind.CONNECTION.value
                result.error = f"SSH connection failed after {attempt} attempt(s): {exc.message}"
            return None

    def _start_once(self, request: ExecRequest) -> tuple[SSHConnection, paramiko.Channel, Wrapper]:
        check_request(request, list(self.settings.security.allowed_shells))
        key = self.target.connection_key
        last: BaseException | None = None
        for attempt in range(5):
            conn, fresh = self.pool.acquire(key, self._open)
            try:
                chan = conn.transport.open_session(timeout=self.settings.ssh.connection_timeout)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                self.pool.release(conn)
                last = exc
                if not conn.alive():  # a pooled transport that died since its last use: replace it at once
                    self.pool.discard(conn)
                    if fresh:
                        raise SSHError(f"{self.target.host}: cannot open a session: {exc or type(exc).__name__}") from None
                    continue
                # The transport is fine but the channel was refused: it carries as many sessions as the
                # server's MaxSessions allows (or sshd has not yet freed the ones we closed). Never close a
                # transport other jobs are using for this: take it as full, so the next try opens another
                # pooled connection, after a short pause.
                self.pool.refused(conn)
                time.sleep(0.02 * (attempt + 1))
                continue
            try:
                # None (not known yet on this connection): the wrapper looks for stdbuf itself and says so
                wrapper = build_wrapper(request, stdbuf=False if request.pty else conn.stdbuf, print_pid=True)
                if request.pty:
                    chan.get_pty(term="dumb", width=200, height=50)
                chan.exec_command(wrapper.text)
            except BaseException as exc:
                close_quietly(chan)
                self.pool.release(conn)
                if isinstance(exc, (paramiko.SSHException, EOFError, OSError)):
                    raise SSHError(f"{self.target.host}: exec request failed: {exc or type(exc).__name__}") from None
                raise
            return conn, chan, wrapper
        raise SSHError(f"{self.target.host}: cannot open a session: {last or 'channel refused'}")

    # -- running --------------------------------------------------------------

    def run(self, request: ExecRequest, sink: OutputSink, cancel: threading.Event) -> ExecResult:
        """Run one job to its end, blocking this thread.

        paramiko: ``start`` on a private event loop driven here.  libssh2: on the process's shared loop
        (``shared_loop``), whose sessions stay pooled from one call to the next.
        """
        if not self.uses_libssh2():
            return run_on_private_loop(self.start, request, sink, cancel)
        box: list[ExecResult] = []
        ended = threading.Event()

        def done(result: ExecResult) -> None:
            box.append(result)
            ended.set()

        self.start(request, sink, cancel, shared_loop(), done)
        ended.wait()
        return box[0]

    def starts_at_once(self, loop: EventLoop) -> bool:
        """Whether a pooled libssh2 session of ``loop`` has room for one more channel (the start then only queues it)."""
        return self.uses_libssh2() and self.pool.libssh2().has_room((*self.target.connection_key, loop.serial))

    def start(self, request: ExecRequest, sink: OutputSink, cancel: threading.Event, loop: EventLoop, done: Done) -> None:
        """Open a channel and exec the job on this thread (it blocks: connect, handshake); then ``loop`` runs it.

        ``done(result)`` is called once, on the loop thread, when the job has ended.
        """
        result = ExecResult(started_at=now())
        if self.uses_libssh2():
            self._start_libssh2(request, sink, cancel, loop, done, result)
            return
        try:
            started = self._start(request, cancel, result)
        except RemoraError as exc:  # credentials that cannot be parsed
            result.error_kind, result.error = ErrorKind.AUTH.value, exc.message
            started = None
        if started is None:
            loop.call_soon(lambda: done(finish(result)))
            return
        conn, chan, wrapper = started
        run = ChannelRun(self, conn, chan, request, sink, cancel, result, loop, done)
        loop.call_soon(lambda: run.begin(wrapper))

    # -- libssh2 (executor.libssh2) ---------------------------------------------------

    def _start_libssh2(
        self,
        request: ExecRequest,
        sink: OutputSink,
        cancel: threading.Event,
        loop: EventLoop,
        done: Done,
        result: ExecResult,
        tries: int = 0,
    ) -> None:
        """Take a pooled session of ``loop`` (connecting if needed, on this thread) and run the job on it there."""
        pool = self.pool.libssh2()
        key = (*self.target.connection_key, loop.serial)
        _close_with_loop(pool, loop)
        try:
            check_request(request, list(self.settings.security.allowed_shells))
            opener = cast("Callable[[], SSHConnection]", lambda: self._open_libssh2(loop))  # the pool takes either kind
            taken = self._retrying(lambda: pool.acquire(key, opener), cancel, result)
        except KeyUnsupported as exc:
            log.info("%s: %s; using paramiko for this server", self.target.name, exc.message)
            self.libssh2_unusable = True
            self.start(request, sink, cancel, loop, done)
            return
        except ValidationError as exc:
            result.error_kind, result.error = ErrorKind.INTERNAL.value, exc.message
            taken = None
        if taken is None:
            loop.call_soon(lambda: done(finish(result)))
            return
        conn, fresh = cast("tuple[L2Connection, bool]", taken)
        wrapper = build_wrapper(request, stdbuf=False if request.pty else conn.stdbuf, print_pid=True)
        chan = L2Channel(conn, wrapper.text, pty=request.pty, stdin=wrapper.stdin)
        run = ChannelRun(self, conn, chan, request, sink, cancel, result, loop, done, pool=pool)
        chan.on_progress = run.readable

        def failed(exc: BaseException | None, refused: bool) -> None:  # on the loop: the command did not start
            run.abandon()
            pool.release(conn)
            if refused:  # it carries as many sessions as the server allows: the next try goes elsewhere
                pool.refused(conn)
            lost = not conn.alive()
            if lost:
                pool.discard(conn)
            if tries < 5 and (refused or (lost and not fresh)):  # a full or stale pooled session: try another
                pause = 0.02 * (tries + 1) if refused else 0.0
                loop.blocking(self._restart_libssh2, pause, request, sink, cancel, loop, done, result, tries + 1)
                return
            what = "cannot open a session" if refused or lost else "exec request failed"
            message = f"{self.target.host}: {what}: {libssh2.describe(exc) if exc else 'connection lost'}"
            result.attempt_errors.append(f"attempt {tries + 1}: {message}")
            result.error_kind = ErrorKind.CONNECTION.value
            result.error = f"SSH connection failed after {tries + 1} attempt(s): {message}"
            done(finish(result))

        chan.on_start_failed = failed

        def begin() -> None:
            run.begin(Wrapper(wrapper.text, None))  # the channel writes the script itself
            conn.add(chan)

        loop.call_soon(begin)

    def _restart_libssh2(self, pause: float, *args: Any) -> None:
        if pause:
            time.sleep(pause)
        self._start_libssh2(*args)

    def _open_libssh2(self, loop: EventLoop) -> L2Connection:
        ssh = self.settings.ssh
        conn = libssh2.open_l2(
            self.target,
            known_hosts=self.known_hosts,
            timeout=ssh.connection_timeout,
            loop=loop,
            tcp_connect=_tcp_connect,
        )
        loop.call_soon(lambda: conn.start_keepalive(ssh.keepalive_interval))
        return conn

    def kill_group(self, conn: SSHConnection | None, pid: int, sig: str) -> bool:
        """Signal process group and session ``pid`` over a separate channel (a fresh connection if needed)."""
        command = kill_command(pid, sig)
        timeout = self.settings.ssh.connection_timeout
        if conn is not None and conn.alive():
            try:
                return quick_command(conn, command, timeout) is not None
            except (paramiko.SSHException, EOFError, OSError) as exc:
                log.debug("kill over the job's connection failed: %s", exc)
        try:
            other, _ = self.pool.acquire(self.target.connection_key, self._open)
        except RemoraError as exc:
            log.warning("%s: cannot reach the server to kill process group %d: %s", self.target.name, pid, exc.message)
            return False
        try:
            return quick_command(other, command, timeout) is not None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            log.warning("%s: kill of process group %d failed: %s", self.target.name, pid, exc)
            return False
        finally:
            self.pool.release(other)

    def kill_stale(self, pid: int, marker: str | None = None) -> bool:
        """Kill what a dead worker's job left behind: TERM, then KILL after kill_grace (see Executor.kill_stale)."""
        check = f"[ \"$(ps -o sid= -p {pid} 2>/dev/null | tr -d ' ')\" = {pid} ] || exit 3; "
        if marker:
            env = f"/proc/{pid}/environ"
            check += f"if [ -r {env} ]; then tr '\\0' '\\n' < {env} | grep -qxF -- {shlex.quote(marker)} || exit 3; fi; "
        script = f"{check}kill -s TERM -- -{pid} 2>/dev/null; pkill -TERM -s {pid}; "
        script += f"i=0; while kill -0 -- -{pid} 2>/dev/null && [ $i -lt {int(self.kill_grace * 10)} ]; do sleep 0.1; i=$((i+1)); done; "
        script += f"kill -s KILL -- -{pid} 2>/dev/null; pkill -KILL -s {pid}; true"
        try:
            conn, _ = self.pool.acquire(self.target.connection_key, self._open)
        except RemoraError as exc:
            log.warning("%s: cannot reach the server to kill stale process group %d: %s", self.target.name, pid, exc.message)
            return False
        try:
            return quick_command(conn, script, self.kill_grace + self.settings.ssh.connection_timeout) == 0
        except (paramiko.SSHException, EOFError, OSError):
            return False
        finally:
            self.pool.release(conn)


def _close_with_loop(pool: SSHPool, loop: EventLoop) -> None:
    """Once per loop: its libssh2 sessions are closed when it is (they are driven by it alone)."""
    with _loops_lock:
        if (id(pool), loop.serial) in _loops_hooked:
            return
        _loops_hooked.add((id(pool), loop.serial))
    serial = loop.serial

    def close() -> None:
        pool.close_where(lambda key: key[-1] == serial)
        with _loops_lock:
            _loops_hooked.discard((id(pool), serial))

    loop.at_close(close)


_shared_loop: EventLoop | None = None


def shared_loop() -> EventLoop:
    """The event loop ``SSHExecutor.run`` uses for libssh2 sessions (started on first use, a daemon thread)."""
    global _shared_loop
    with _loops_lock:
        if _shared_loop is None:
            _shared_loop = EventLoop(name="remora-ssh", threads=4)
            _shared_loop.start()
        return _shared_loop


_loops_hooked: set[tuple[int, int]] = set()
_loops_lock = threading.Lock()


def forward(via: SSHConnection, jump: Target, target: Target, timeout: float) -> paramiko.Channel:
    """A ``direct-tcpip`` channel from the jump host ``jump`` (connected as ``via``) to ``target``'s SSH port."""
    try:
        return via.transport.open_channel("direct-tcpip", (target.host, int(target.port)), ("127.0.0.1", 0), timeout=timeout)
    except paramiko.ChannelException as exc:
        raise SSHError(
            f"jump host {jump.name}: cannot forward to {target.host}:{target.port} ({exc.text or 'refused'}; "
            "the jump host's sshd needs AllowTcpForwarding and must reach the target)"
        ) from None
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise SSHError(f"jump host {jump.name}: cannot forward to {target.host}:{target.port}: {exc or type(exc).__name__}") from None


def test_connection(target: Target, settings: Settings) -> dict:
    """Connect through every jump host to the target (host-key policy applies to each), log in and run ``true``.

    {latency_ms, host_key_fingerprint, hops: [{name, host, port, ms}]}: ``hops`` are the jump hosts then the
    target, each with the time to reach it from the hop before (channel or TCP connect, handshake, host key,
    login; for the target also running ``true``).  Nothing is pooled: every connection is closed after.
    """
    started = time.perf_counter()
    opened: list[SSHConnection] = []
    hops: list[dict] = []
    timeout = settings.ssh.connection_timeout
    try:
        for hop in [*target.jump, target]:
            hop_started = time.perf_counter()
            sock = forward(opened[-1], target.jump[len(opened) - 1], hop, timeout) if opened else None
            try:
                conn = open_connection(
                    hop.host,
                    int(hop.port),
                    credential_for(hop),
                    known_hosts=known_hosts_for(hop.known_hosts or settings.known_hosts_path),
                    policy=hop.host_key_policy,
                    timeout=timeout,
                    keepalive=0,
                    probe_stdbuf=False,
                    sock=sock,
                )
            except RemoraError as exc:
                if hop is target:
                    raise
                raise type(exc)(f"jump host {hop.name}: {exc.message}", details=exc.details) from None
            opened.append(conn)
            if hop is target:
                try:
                    status = quick_command(conn, "true", timeout)
                except (paramiko.SSHException, EOFError, OSError) as exc:
                    raise SSHError(f"{target.host}: test command failed: {exc}") from None
                if status != 0:
                    raise SSHError(f"{target.host}: test command did not succeed (exit status {status})")
            hops.append(
                {"name": hop.name, "host": hop.host, "port": int(hop.port), "ms": round((time.perf_counter() - hop_started) * 1000, 2)}
            )
    finally:
        for conn in reversed(opened):  # the target's transport before its jump hosts'
            conn.close()
    return {
        "latency_ms": round((time.perf_counter() - started) * 1000, 2),
        "host_key_fingerprint": opened[-1].host_key_fingerprint,
        "hops": hops,
    }


test_connection.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
