"""The local executor: jobs of the built-in server ``local`` run as subprocesses here.

Same semantics as SSH (see ``executor.base``): the job runs in its own
session and process group (``start_new_session``), so a cancel or timeout
signals the whole tree -- TERM, then KILL after ``worker.kill_grace``.
Output is read from both pipes (or the pty) as it arrives, by the
worker's event loop (``executor.loop``), which learns of the exit from a
pidfd: a running local job holds no thread.  The job is exec'd directly -- ``/bin/sh -c
command`` or ``<shell> -s -- args`` with the script on stdin, with what
``stdbuf -oL -eL`` sets in its environment (or behind ``stdbuf`` itself when its
library is not where coreutils puts it) -- with the
worker's environment plus the job's ``env`` and ``workdir`` as its cwd, so a
local job costs one exec fewer than the SSH wrapper; commands run under
``/bin/sh`` (or the job's ``shell``), not the worker's login shell.  The
variables that carry Remora's own secrets (``DATABASE_URL``,
``REMORA_SECRET_KEY``, the tokens: ``config.secret_env_names``) are not
passed on: a job's output is visible to every viewer, and ``env`` would
print them.  A job that needs one sets it in its own ``env``.

When the worker runs as root, local jobs run as ``worker.local_user``
(default ``nobody``): its uid, gid and groups, ``HOME``/``USER``/``LOGNAME``
set to it, in its home directory (or ``/``), so a job cannot read the data
directory (0700) with the admin token, the secret key and the database.  A
``workdir`` that user cannot enter fails like ``cd`` would.  Otherwise
(``local_user = ""``, or a worker that is not root) local jobs run as the
worker's own account and can read everything it can.
"""

from __future__ import annotations

import functools
import logging
import os
import pwd
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from remora.config import secret_env_names
from remora.errors import ValidationError
from remora.executor.base import (
    DRAIN_AFTER_EXIT,
    LIBSTDBUF_PATHS,
    STDBUF_ENV,
    TICK,
    Done,
    ErrorKind,
    ExecRequest,
    ExecResult,
    OutputSink,
    Stream,
    check_request,
    command_text,
    finish,
    notify_started,
    now,
    run_on_private_loop,
    script_args,
    signal_name,
    stopped,
)
from remora.executor.loop import EventLoop, Timer

if TYPE_CHECKING:
    from remora.config import Settings

log = logging.getLogger(__name__)

_STDBUF_PATH = shutil.which("stdbuf")
_STDBUF = _STDBUF_PATH is not None


def _find_libstdbuf() -> str | None:
    """The ``libstdbuf.so`` that this machine's ``stdbuf`` preloads, where coreutils installs it."""
    if _STDBUF_PATH is None:
        return None
    prefix = os.path.dirname(os.path.dirname(os.path.realpath(_STDBUF_PATH)))
    for path in (*LIBSTDBUF_PATHS, os.path.join(prefix, "libexec", "coreutils", "libstdbuf.so")):
        if os.access(path, os.R_OK):
            return path
    return None


LIBSTDBUF = _find_libstdbuf()  # set: jobs get stdbuf's environment without stdbuf's own exec
CWD_TTL = 5.0
_CWD: dict[str, tuple[float, str]] = {}


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


_SETPRIV = shutil.which("setpriv")


@dataclass(frozen=True)
class RunAs:
    """The account local jobs run as when the worker is root (``worker.local_user``)."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str

    def wrap(self, argv: list[str]) -> list[str]:
        """The command, started through ``setpriv`` when there is one.

        Changing uid in the child (subprocess's ``user=``) makes Python fork the
        whole worker instead of vfork-ing: several ms of CPU per job.  ``setpriv``
        (util-linux) drops to the user after a cheap vfork + exec instead.
        """
        if _SETPRIV is None:
            return argv
        groups = f"--groups={','.join(map(str, self.groups))}" if self.groups else "--clear-groups"
        return [_SETPRIV, f"--reuid={self.uid}", f"--regid={self.gid}", groups, "--", *argv]

    def popen_args(self) -> dict[str, Any]:
        """What ``subprocess.Popen`` must do itself: nothing when ``setpriv`` changes the user."""
        if _SETPRIV is not None:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": list(self.groups)}

    @classmethod
    def lookup(cls, name: str) -> RunAs:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise ValidationError(f"worker.local_user: no user {name!r} on this machine") from None
        groups = tuple(sorted(set(os.getgrouplist(name, entry.pw_gid))))
        return cls(name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir)

    @property
    def cwd(self) -> str:
        """The user's home when it may enter it, else ``/`` (looked at once per ``CWD_TTL``, not per job)."""
        now = time.monotonic()
        cached = _CWD.get(self.home)
        if cached is not None and cached[0] > now:
            return cached[1]
        cwd = self.home if self.can_enter(self.home) else "/"
        _CWD[self.home] = (now + CWD_TTL, cwd)
        return cwd

    def can_enter(self, path: str) -> bool:
        """Whether this user may search every directory of ``path`` (mode bits; ACLs are the kernel's to refuse later)."""
        if self.uid == 0:
            return True
        current = "/"
        parts = [p for p in os.path.realpath(path).split("/") if p]
        for part in ["", *parts]:
            current = os.path.join(current, part) if part else current
            try:
                st = os.stat(current)
            except OSError:
                return False
            if st.st_uid == self.uid:
                bit = 0o100
            elif st.st_gid in self.groups:
                bit = 0o010
            else:
                bit = 0o001
            if not st.st_mode & bit:
                return False
        return True


class LocalExecutor:
    """Runs jobs as subprocesses of the worker (server auth_type ``local``)."""

    def __init__(self, settings: Settings) -> None:
        self.kill_grace = settings.worker.kill_grace
        self.buffer_size = max(65536, settings.output.buffer_size)  # a whole pipe buffer per read
        self.allowed_shells = list(settings.security.allowed_shells)
        self.local_user = settings.worker.local_user.strip()
        self._run_as: RunAs | None = None

    def run(self, request: ExecRequest, sink: OutputSink, cancel: threading.Event) -> ExecResult:
        """Run one job to its end on this thread (``start`` on a private event loop)."""
        return run_on_private_loop(self.start, request, sink, cancel)

    def starts_at_once(self, loop: EventLoop) -> bool:
        return False  # a fork (and with worker.local_user, a login) may take a while

    def start(self, request: ExecRequest, sink: OutputSink, cancel: threading.Event, loop: EventLoop, done: Done) -> None:
        """Fork the job here; ``loop`` reads its pipes and sees it exit (pidfd); ``done(result)`` on the loop thread."""
        result = ExecResult(started_at=now())
        started = self._spawn(request, sink, result)
        if started is None:
            loop.call_soon(lambda: done(finish(result)))
            return
        proc, sources, master, stdin = started
        run = _LocalRun(self, proc, sources, master, request, sink, cancel, result, loop, done)
        loop.call_soon(lambda: run.begin(stdin))

    def _spawn(
        self, request: ExecRequest, sink: OutputSink, result: ExecResult
    ) -> tuple[subprocess.Popen, dict[int, Stream], int, bytes | None] | None:
        try:
            check_request(request, self.allowed_shells)
            run_as = self.run_as()
            argv, stdin, env = local_command(request, stdbuf=_STDBUF and not request.pty, run_as=run_as, libstdbuf=LIBSTDBUF)
            if run_as is not None:
                argv = run_as.wrap(argv)
        except ValidationError as exc:
            result.error_kind, result.error = ErrorKind.INTERNAL.value, exc.message
            return None
        if request.workdir and not os.path.isdir(request.workdir):  # what `cd` in the SSH wrapper reports
            sink.write(Stream.STDERR, f"cd: {request.workdir}: No such directory\n".encode())
            result.exit_code = 1
            return None
        if request.workdir and run_as is not None and not run_as.can_enter(request.workdir):
            sink.write(Stream.STDERR, f"cd: {request.workdir}: Permission denied (local jobs run as {run_as.name})\n".encode())
            result.exit_code = 1
            return None
        cwd = request.workdir or (run_as.cwd if run_as is not None else None)
        master = slave = -1
        try:
            if request.pty:
                master, slave = os.openpty()
            out = slave if request.pty else subprocess.PIPE
            proc = subprocess.Popen(
                argv,
                executable=_STDBUF_PATH if argv[0] == "stdbuf" else None,  # no search of PATH per job
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=env,
                cwd=cwd,
                start_new_session=True,
                close_fds=True,
                **(run_as.popen_args() if run_as is not None else {}),
            )
        except OSError as exc:
            for fd in (master, slave):
                if fd >= 0:
                    os.close(fd)
            result.error_kind, result.error = ErrorKind.INTERNAL.value, f"cannot start {argv[0]}: {exc}"
            return None
        if request.pty:
            os.close(slave)
            sources = {master: Stream.STDOUT}
        else:
            assert proc.stdout and proc.stderr
            sources = {proc.stdout.fileno(): Stream.STDOUT, proc.stderr.fileno(): Stream.STDERR}
        result.remote_pid = proc.pid
        notify_started(sink, proc.pid)
        return proc, sources, master, stdin

    def run_as(self) -> RunAs | None:
        """The account jobs run as (looked up once; a missing user fails each job, naming the setting)."""
        if self._run_as is None and self.local_user and os.geteuid() == 0:
            self._run_as = RunAs.lookup(self.local_user)
        return self._run_as

    def kill_stale(self, pid: int, marker: str | None = None) -> bool:
        """Kill process group ``pid`` if it is still a session leader here (and carries ``marker``)."""
        try:
            if os.getsid(pid) != pid:
                return False
            if marker and marker.encode() not in _environ(pid):
                return False
        except (ProcessLookupError, FileNotFoundError):
            return False
        except PermissionError:
            pass  # cannot read its environment: the session check stands
        _kill_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.kill_grace
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except (ProcessLookupError, PermissionError):
                return True
            time.sleep(0.05)
        _kill_group(pid, signal.SIGKILL)
        return True


class _LocalRun:
    """One running local job on the event loop: its pipes (or pty), its pidfd, its deadlines."""

    def __init__(
        self,
        ex: LocalExecutor,
        proc: subprocess.Popen,
        sources: dict[int, Stream],
        master: int,
        request: ExecRequest,
        sink: OutputSink,
        cancel: threading.Event,
        result: ExecResult,
        loop: EventLoop,
        done: Done,
    ) -> None:
        self.ex, self.proc, self.sources, self.master = ex, proc, dict(sources), master
        self.request, self.sink, self.cancel, self.result = request, sink, cancel, result
        self.loop, self.done = loop, done
        self.pidfd = -1
        self.deadline: float | None = None
        self.term_at: float | None = None
        self.killed = False
        self.exited_at: float | None = None
        self.ended = False
        self.timer: Timer | None = None

    def begin(self, stdin: bytes | None) -> None:
        if stdin is not None:
            self.loop.blocking(_feed_stdin, self.proc, stdin)
        for fd in self.sources:
            os.set_blocking(fd, False)
            self.loop.add_reader(fd, functools.partial(self.readable, fd))
        try:
            self.pidfd = os.pidfd_open(self.proc.pid)
            self.loop.add_reader(self.pidfd, self.exited)
        except (AttributeError, OSError):
            self.pidfd = -1  # no pidfd: the tick polls the process
        self.deadline = time.monotonic() + self.request.timeout if self.request.timeout > 0 else None
        self.schedule()

    def schedule(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        when = time.monotonic() + (TICK if self.pidfd >= 0 else 0.05)
        if self.deadline is not None and self.term_at is None:
            when = min(when, self.deadline)
        if self.exited_at is not None:
            when = min(when, self.exited_at + DRAIN_AFTER_EXIT)
        self.timer = self.loop.call_at(when, self.tick)

    def readable(self, fd: int) -> None:
        stream = self.sources.get(fd)
        if stream is None:
            return
        try:
            data = os.read(fd, self.ex.buffer_size)
        except BlockingIOError:
            return
        except OSError:  # EIO: the pty's other side is closed
            data = b""
        if data:
            self.sink.write(stream, data)
            return
        self.loop.remove_reader(fd)
        del self.sources[fd]
        if not self.sources:
            self.exited()

    def exited(self) -> None:
        """The pidfd is readable (the job exited) or every pipe reached EOF."""
        if self.ended or self.proc.poll() is None:
            return
        self.exited_at = self.exited_at or time.monotonic()
        if self.pidfd >= 0:
            self.loop.remove_reader(self.pidfd)
        if not self.sources:
            self.end()
        else:
            self.schedule()  # pipes a background child keeps open: read them DRAIN_AFTER_EXIT more

    def tick(self) -> None:
        if self.ended:
            return
        self.timer = None
        now_ = time.monotonic()
        proc = self.proc
        if self.term_at is None and (self.cancel.is_set() or (self.deadline is not None and now_ >= self.deadline)):
            stopped(self.result, self.request, canceled=self.cancel.is_set())
            _kill_group(proc.pid, signal.SIGTERM)
            self.term_at = now_
        elif self.term_at is not None and not self.killed and now_ - self.term_at >= self.ex.kill_grace:
            _kill_group(proc.pid, signal.SIGKILL)
            self.killed = True
        if self.exited_at is None and self.pidfd < 0 and proc.poll() is not None:
            self.exited_at = now_
        if self.exited_at is not None and (not self.sources or now_ - self.exited_at >= DRAIN_AFTER_EXIT):
            self.end()
            return
        self.schedule()

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        if self.timer is not None:
            self.timer.cancel()
        for fd in list(self.sources):  # what is left in the pipes (a background child may hold them open)
            try:
                while data := os.read(fd, self.ex.buffer_size):
                    self.sink.write(self.sources[fd], data)
            except OSError:
                pass
            self.loop.remove_reader(fd)
        self.sources.clear()
        if self.pidfd >= 0:
            self.loop.remove_reader(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = -1
        proc, result = self.proc, self.result
        try:
            for pipe in (proc.stdout, proc.stderr):
                if pipe:
                    pipe.close()
            if self.master >= 0:
                os.close(self.master)
            if proc.poll() is None:  # only when something went wrong: never leave the tree behind
                _kill_group(proc.pid, signal.SIGKILL)
            returncode = proc.wait()
            if self.term_at is not None:
                _kill_group(proc.pid, signal.SIGKILL)  # stragglers that ignored TERM
            if returncode < 0:
                result.signal = signal_name(-returncode)
            else:
                result.exit_code = returncode
        finally:
            self.done(finish(result))


def _environ(pid: int) -> list[bytes]:
    """The environment of ``pid``; read again while it is empty, as it is for a moment during an exec."""
    deadline = time.monotonic() + 1.0
    while True:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            data = fh.read()
        if data or time.monotonic() >= deadline:
            return data.split(b"\0")
        time.sleep(0.01)


_SECRET_ENV = tuple(os.fsencode(name) for name in sorted(secret_env_names()))


def _worker_environment() -> dict[bytes, bytes]:
    """A copy of this process's environment, as bytes, without Remora's secrets.

    ``os.environ`` keeps its variables as bytes underneath (POSIX); copying
    that mapping skips decoding and re-encoding every variable for every job.
    """
    data = getattr(os.environ, "_data", None)
    env = dict(data) if isinstance(data, dict) else {os.fsencode(k): os.fsencode(v) for k, v in os.environ.items()}
    for name in _SECRET_ENV:
        env.pop(name, None)
    return env


def local_command(
    request: ExecRequest, *, stdbuf: bool, run_as: RunAs | None = None, libstdbuf: str | None = None
) -> tuple[list[str], bytes | None, dict[bytes, bytes]]:
    """argv, stdin and environment of a local job: no wrapper shell (one exec fewer than over SSH).

    ``stdbuf`` with ``libstdbuf`` (its library's path): the job gets the environment ``stdbuf -oL -eL``
    would give it (``LD_PRELOAD``, ``_STDBUF_O/E=L``), without ``stdbuf``'s own exec.
    """
    argv = ["stdbuf", "-oL", "-eL"] if stdbuf and not libstdbuf else []
    stdin = None
    if request.script is not None:
        shell = request.shell or "/bin/bash"
        if request.pty:
            argv += [shell, "-c", request.script, shell, *script_args(request)]
        else:
            argv += [shell, "-s", "--", *script_args(request)]
            stdin = request.script.encode()
    else:
        argv += [request.shell or "/bin/sh", "-c", command_text(request)]
    env = _worker_environment()  # a local job inherits the worker's environment, like any child process, secrets aside
    if run_as is not None:
        env[b"HOME"] = os.fsencode(run_as.home)
        env[b"USER"] = env[b"LOGNAME"] = os.fsencode(run_as.name)
    if stdbuf:
        env[b"PYTHONUNBUFFERED"] = b"1"
        if libstdbuf:
            preload = env.get(b"LD_PRELOAD")
            env[b"LD_PRELOAD"] = (preload + b":" if preload else b"") + os.fsencode(libstdbuf)
            env.update((k.encode(), v.encode()) for k, v in STDBUF_ENV.items())
    env.update((os.fsencode(k), os.fsencode(str(v))) for k, v in request.env.items())
    return argv, stdin, env


def _feed_stdin(proc: subprocess.Popen, data: bytes) -> None:
    assert proc.stdin
    try:
        proc.stdin.write(data)
    except (BrokenPipeError, OSError):
        pass
    finally:
        try:
            proc.stdin.close()
        except OSError:
            pass
