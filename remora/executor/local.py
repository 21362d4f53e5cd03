"""The local executor: jobs of the built-in server ``local`` run as subprocesses here.

Same semantics as SSH (see ``executor.base``): the job runs in its own
session and process group (``start_new_session``), so a cancel or timeout
signals the whole tree -- TERM, then KILL after ``worker.kill_grace``.
Output is read from both pipes (or the pty) with ``selectors`` as it
arrives.  The job is exec'd directly -- ``[stdbuf -oL -eL] /bin/sh -c
command`` or ``<shell> -s -- args`` with the script on stdin -- with the
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

import logging
import os
import pwd
import selectors
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
    script_args,
    signal_name,
)

if TYPE_CHECKING:
    from remora.config import Settings

log = logging.getLogger(__name__)

DRAIN_AFTER_EXIT = 1.0  # how long pipes held open by background children are still read after the job exits
_STDBUF = shutil.which("stdbuf") is not None


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
        return self.home if self.can_enter(self.home) else "/"

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
        result = ExecResult(started_at=now())
        try:
            check_request(request, self.allowed_shells)
            run_as = self.run_as()
            argv, stdin, env = local_command(request, stdbuf=_STDBUF and not request.pty, run_as=run_as)
            if run_as is not None:
                argv = run_as.wrap(argv)
        except ValidationError as exc:
            result.error_kind, result.error = ErrorKind.INTERNAL.value, exc.message
            return finish(result)
        if request.workdir and not os.path.isdir(request.workdir):  # what `cd` in the SSH wrapper reports
            sink.write(Stream.STDERR, f"cd: {request.workdir}: No such directory\n".encode())
            result.exit_code = 1
            return finish(result)
        if request.workdir and run_as is not None and not run_as.can_enter(request.workdir):
            sink.write(Stream.STDERR, f"cd: {request.workdir}: Permission denied (local jobs run as {run_as.name})\n".encode())
            result.exit_code = 1
            return finish(result)
        cwd = request.workdir or (run_as.cwd if run_as is not None else None)
        master = slave = -1
        try:
            if request.pty:
                master, slave = os.openpty()
            out = slave if request.pty else subprocess.PIPE
            proc = subprocess.Popen(
                argv,
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
            return finish(result)
        if request.pty:
            os.close(slave)
            sources = {master: Stream.STDOUT}
        else:
            assert proc.stdout and proc.stderr
            sources = {proc.stdout.fileno(): Stream.STDOUT, proc.stderr.fileno(): Stream.STDERR}
        result.remote_pid = proc.pid
        notify_started(sink, proc.pid)
        if stdin is not None:
            threading.Thread(target=_feed_stdin, args=(proc, stdin), daemon=True, name=f"stdin-{proc.pid}").start()
        try:
            self._pump(proc, sources, request, sink, cancel, result)
        finally:
            for pipe in (proc.stdout, proc.stderr):
                if pipe:
                    pipe.close()
            if master >= 0:
                os.close(master)
            if proc.poll() is None:  # only on an internal error: never leave the tree behind
                _kill_group(proc.pid, signal.SIGKILL)
                proc.wait()
        return finish(result)

    def run_as(self) -> RunAs | None:
        """The account jobs run as (looked up once; a missing user fails each job, naming the setting)."""
        if self._run_as is None and self.local_user and os.geteuid() == 0:
            self._run_as = RunAs.lookup(self.local_user)
        return self._run_as

    def _pump(
        self,
        proc: subprocess.Popen,
        sources: dict[int, Stream],
        request: ExecRequest,
        sink: OutputSink,
        cancel: threading.Event,
        result: ExecResult,
    ) -> None:
        sel = selectors.DefaultSelector()
        for fd, stream in sources.items():
            sel.register(fd, selectors.EVENT_READ, stream)
        deadline = time.monotonic() + request.timeout if request.timeout > 0 else None
        term_at: float | None = None
        killed = False
        exited_at: float | None = None
        while sel.get_map():
            now = time.monotonic()
            if term_at is None and (cancel.is_set() or (deadline is not None and now >= deadline)):
                kind = ErrorKind.CANCELED if cancel.is_set() else ErrorKind.TIMEOUT
                result.error_kind = kind.value
                result.error = "canceled" if kind is ErrorKind.CANCELED else f"timeout after {request.timeout:g}s"
                _kill_group(proc.pid, signal.SIGTERM)
                term_at = now
            elif term_at is not None and not killed and now - term_at >= self.kill_grace:
                _kill_group(proc.pid, signal.SIGKILL)
                killed = True
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at >= DRAIN_AFTER_EXIT:
                break  # a background child keeps the pipes open: the job itself is done
            for key, _ in sel.select(timeout=0.05):
                try:
                    data = os.read(key.fd, self.buffer_size)
                except OSError:  # EIO: the pty's other side is closed
                    data = b""
                if data:
                    sink.write(key.data, data)
                else:
                    sel.unregister(key.fileobj)
        sel.close()
        returncode = proc.wait()
        if term_at is not None:
            _kill_group(proc.pid, signal.SIGKILL)  # stragglers that ignored TERM
        if returncode < 0:
            result.signal = signal_name(-returncode)
        else:
            result.exit_code = returncode

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


def local_command(request: ExecRequest, *, stdbuf: bool, run_as: RunAs | None = None) -> tuple[list[str], bytes | None, dict[bytes, bytes]]:
    """argv, stdin and environment of a local job: no wrapper shell (one exec fewer than over SSH)."""
    argv = ["stdbuf", "-oL", "-eL"] if stdbuf else []
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
