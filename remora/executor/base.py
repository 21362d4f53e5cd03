"""The executor contract: one request shape, one result shape, every transport.

An ``Executor`` runs one ``ExecRequest`` and returns an ``ExecResult``: ``start``
sets the job up on the caller's thread and leaves it to an event loop
(``executor.loop``: no thread per running job), ``run`` does the same on a
private loop driven by the caller until the end.  While
the command runs, its output goes to an ``OutputSink`` as ordered chunks per
stream (stdout and stderr apart, byte-exact: nothing is decoded or
re-joined).  ``run`` never raises for the command's own outcome or for a
transport failure: those are results (``error_kind`` says which).  It returns
when the command is finished, or when ``cancel`` was set or ``timeout`` passed
and the whole process tree was terminated (TERM, then KILL after
``worker.kill_grace``).

Over SSH, commands and scripts are run by a POSIX shell wrapper built here
(``build_wrapper``); the local executor execs the same argv directly
(``executor.local.local_command``), so both agree on semantics:

- ``command`` + ``args`` is shell text (``args`` a string is appended as
  written, a list is quoted word by word) run by ``$SHELL -c`` (the login
  shell over SSH, ``/bin/sh`` locally) -- or by ``shell`` when the job names
  one; its stdin is ``/dev/null``;
- ``script`` is fed to ``<shell> -s -- args...`` on stdin (no quoting at all),
  or, with a pty, passed quoted to ``<shell> -c`` (a terminal would echo stdin);
  only shells in ``security.allowed_shells`` are accepted;
- ``env`` is exported by the wrapper (sshd's AcceptEnv is usually off), names
  must be shell identifiers; ``workdir`` is entered with ``cd`` (failure: exit 1);
- programs that block-buffer a pipe (ping, sed, grep) still stream line by
  line: the wrapper sets what coreutils' ``stdbuf -oL -eL`` would set
  (``LD_PRELOAD`` of its ``libstdbuf.so``, ``_STDBUF_O=L``, ``_STDBUF_E=L``)
  without the extra exec of ``stdbuf`` itself; a host whose ``libstdbuf.so``
  is not at a known place but that has ``stdbuf`` gets ``exec stdbuf -oL
  -eL`` instead.  python, which ignores stdbuf, gets ``PYTHONUNBUFFERED=1``
  unless the job sets it.  Over SSH the first job of a connection finds out
  with shell builtins (``[ -r ]``, ``command -v``) and reports it on its pid
  line; later jobs skip the test;
- the job's process is the wrapper's and its exit code the command's: a
  program with plain words (``uptime``, ``systemctl restart nginx``: no quote,
  variable, operator, reserved word or builtin) is ``exec``'d directly; shell
  text for the login shell is evaluated by the wrapper's own shell (sshd runs
  the wrapper with ``$SHELL -c``; ``eval TEXT`` is the last thing it does, so
  ``exit``, ``$$`` and the exit status are as under ``$SHELL -c TEXT``), with
  no second shell, when the job has no ``env`` of its own; otherwise, and for
  another ``shell``, the text is ``exec``'d as ``<shell> -c TEXT``, which ends
  the wrapper's command line (with the exported values, shown by ``ps``) at
  once.  A host where only ``stdbuf`` itself can line-buffer gets ``exec
  stdbuf -oL -eL <shell> -c TEXT``.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
import shlex
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from remora.errors import ValidationError

if TYPE_CHECKING:
    from remora.executor.loop import EventLoop

PID_MARKER = b"remora-pid:"
DRAIN_AFTER_EXIT = 1.0  # pipes a background child keeps open are still read this long after the job exited (local and SSH)
TICK = 0.2  # how often a running job looks at its cancel flag (a cancel takes effect within this)
JOB_ID_ENV = "REMORA_JOB_ID"  # exported to every job; also how leftovers of a lost worker are recognised
# Where coreutils installs the library ``stdbuf`` preloads (Debian/Ubuntu and Fedora, Arch, RHEL's lib64, /usr/local).
LIBSTDBUF_PATHS = (
    "/usr/libexec/coreutils/libstdbuf.so",
    "/usr/lib/coreutils/libstdbuf.so",
    "/usr/lib64/coreutils/libstdbuf.so",
    "/usr/local/libexec/coreutils/libstdbuf.so",
)
# What ``stdbuf -oL -eL`` sets before it execs the command (coreutils' stdbuf.c), bar LD_PRELOAD.
STDBUF_ENV = {"_STDBUF_O": "L", "_STDBUF_E": "L"}
# A command of plain words: the wrapper runs it itself (no quoting, expansion or operator to tell apart).
_PLAIN_WORDS = re.compile(r"[A-Za-z0-9_./,:@+][A-Za-z0-9_./,:@+-]*(?: +[A-Za-z0-9_./,:@%+=-]+)*")  # not "-x": exec's option
# Reserved words and builtins of sh, bash and zsh: a command starting with one needs its shell.
_SHELL_WORDS = frozenset(
    "if then else elif fi do done case esac while until for in function select time coproc "
    ". : [ alias autoload bg bind bindkey break builtin caller cd command compgen complete compopt continue declare "
    "dirs disable disown echo emulate enable eval exec exit export false fc fg float functions getopts hash help "
    "history integer jobs kill let limit local logout mapfile noglob popd print printf pushd pwd read readarray "
    "readonly rehash return set setopt shift shopt source suspend test times trap true type typeset ulimit umask "
    "unalias unlimit unset unsetopt vared wait whence where which zle zmodload".split()
)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_PTY_SCRIPT = 100 * 1024  # a script passed as one argument (pty mode) must fit MAX_ARG_STRLEN


class Stream(enum.IntEnum):
    """Which output a chunk belongs to; the values are what ``OutputChunk.stream`` stores."""

    STDOUT = 1
    STDERR = 2


def now() -> dt.datetime:
    """Naive UTC, as the database's timestamps are."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class ErrorKind(str, enum.Enum):
    TIMEOUT = "timeout"
    CANCELED = "canceled"
    CONNECTION = "connection"
    AUTH = "auth"
    HOST_KEY = "host_key"
    INTERNAL = "internal"


@dataclass
class ExecRequest:
    """What to run. ``timeout`` <= 0 means no limit."""

    command: str = ""
    args: list[str] | str = field(default_factory=list)
    script: str | None = None
    shell: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    timeout: float = 300.0
    pty: bool = False


@dataclass
class ExecResult:
    """How it ended. ``exit_code`` is None when the command was killed by a signal or never ran."""

    exit_code: int | None = None
    signal: str | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    error_kind: str | None = None
    error: str = ""
    remote_pid: int | None = None
    attempt_errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.error_kind is None


@runtime_checkable
class OutputSink(Protocol):
    """Receives output in order; ``remora.output.JobOutput`` is one."""

    def write(self, stream: Stream, data: bytes) -> None: ...


def notify_started(sink: OutputSink, pid: int | None) -> None:
    """Tell a sink that has a ``started(pid)`` hook the command's (remote) pid/process group."""
    hook = getattr(sink, "started", None)
    if callable(hook):
        hook(pid)


Done = Callable[[ExecResult], None]


class Executor(Protocol):
    """Runs commands on one server."""

    def run(self, request: ExecRequest, sink: OutputSink, cancel: threading.Event) -> ExecResult:
        """Run one job to its end on the calling thread."""
        ...

    def start(self, request: ExecRequest, sink: OutputSink, cancel: threading.Event, loop: EventLoop, done: Done) -> None:
        """Start the job (blocking only for its setup: a connect, a fork) and leave it to ``loop``.

        Its output reaches ``sink`` on the loop thread; ``done(result)`` is called once there when it ended.
        """
        ...

    def starts_at_once(self, loop: EventLoop) -> bool:
        """Whether ``start`` would hand the job to ``loop`` now, without waiting for anything (no connect, no fork)."""
        ...

    def kill_stale(self, pid: int, marker: str | None = None) -> bool:
        """Best effort: terminate the process group ``pid`` left behind by a dead worker.

        Only a session leader is signalled, and with ``marker`` (``NAME=value``,
        e.g. ``REMORA_JOB_ID=<id>``) only one whose environment holds it, where
        ``/proc`` can tell: a reused pid is never killed by mistake.
        """
        ...


class BufferSink:
    """Collects output in memory (tests, quick probes)."""

    def __init__(self) -> None:
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.chunks: list[tuple[Stream, bytes]] = []
        self.pid: int | None = None
        self._lock = threading.Lock()

    def write(self, stream: Stream, data: bytes) -> None:
        with self._lock:
            (self.stdout if stream == Stream.STDOUT else self.stderr).extend(data)
            self.chunks.append((stream, data))

    def started(self, pid: int | None) -> None:
        self.pid = pid


# -- the shell wrapper -----------------------------------------------------------


def command_text(request: ExecRequest) -> str:
    """``command`` plus ``args`` as one line of shell text."""
    args = request.args
    extra = shlex.join(args) if isinstance(args, list) else (args or "").strip()
    return f"{request.command} {extra}".strip() if extra else request.command


def script_args(request: ExecRequest) -> list[str]:
    args = request.args
    if isinstance(args, list):
        return list(args)
    try:
        return shlex.split(args or "")
    except ValueError as exc:
        raise ValidationError(f"args: {exc}") from None


def check_shell(shell: str, allowed: list[str]) -> str:
    if shell not in allowed:
        raise ValidationError(f"shell {shell!r} is not allowed (security.allowed_shells: {', '.join(allowed)})")
    return shell


def check_request(request: ExecRequest, allowed_shells: list[str]) -> None:
    """Reject what cannot be run safely, before anything is started."""
    for name in request.env:
        if not _ENV_NAME.match(name):
            raise ValidationError(f"env: {name!r} is not a valid variable name")
    if request.script is not None:
        check_shell(request.shell or "/bin/bash", allowed_shells)
        if request.pty and len(request.script.encode()) > MAX_PTY_SCRIPT:
            raise ValidationError(f"script: a pty job's script is limited to {MAX_PTY_SCRIPT} bytes")
    elif request.shell:
        check_shell(request.shell, allowed_shells)
    elif not request.command.strip():
        raise ValidationError("command: empty")


@dataclass
class Wrapper:
    """The shell text to run and what to write on its stdin (None: close stdin)."""

    text: str
    stdin: bytes | None


Buffering = bool | str | None
"""What a host offers to line-buffer a job: the path of its ``libstdbuf.so``; True: only ``stdbuf``; False: neither; None: not known yet."""


def build_wrapper(request: ExecRequest, *, stdbuf: Buffering, print_pid: bool, default_shell: str = '"${SHELL:-/bin/sh}"') -> Wrapper:
    """The POSIX shell text that prepares the environment and ``exec``s the job.

    ``stdbuf`` None: not known yet for this host; the wrapper looks for ``libstdbuf.so`` and
    ``stdbuf`` with shell builtins (``[ -r ]``, ``command -v``: no process, no channel of its own)
    and reports what it found on the pid line (``remora-pid:<pid>:<path|1|0>``, see ``parse_pid_line``).
    """
    learn = stdbuf is None
    parts: list[str] = []
    if learn:  # _remora_b: the library's path, 1 (only stdbuf) or 0 (neither)
        parts.append(
            f"_remora_b=0; for _remora_l in {' '.join(shlex.quote(p) for p in LIBSTDBUF_PATHS)}; do "
            'if [ -r "$_remora_l" ]; then _remora_b=$_remora_l; break; fi; done; unset _remora_l; '
            'if [ "$_remora_b" = 0 ] && command -v stdbuf >/dev/null 2>&1; then _remora_b=1; fi'
        )
    if print_pid:
        tail, value = (":%s", ' "$_remora_b"') if learn else ("", "")
        parts.append(f"printf '{PID_MARKER.decode()}%s{tail}\\n' \"$$\"{value}")
    for name, value in request.env.items():
        parts.append(f"export {name}={shlex.quote(str(value))}")
    if request.workdir:
        parts.append(f"cd -- {shlex.quote(request.workdir)} || exit 1")
    stdbuf_env = " ".join(f"{k}={v}" for k, v in STDBUF_ENV.items())
    unbuffered = "PYTHONUNBUFFERED" not in request.env  # python ignores stdbuf; this is its own switch
    if learn:
        parts.append(f'case $_remora_b in /*) export LD_PRELOAD="${{LD_PRELOAD:+$LD_PRELOAD:}}$_remora_b" {stdbuf_env};; esac')
        if unbuffered:
            parts.append('[ "$_remora_b" = 0 ] || export PYTHONUNBUFFERED=1')
    elif stdbuf:
        if isinstance(stdbuf, str):  # what stdbuf would set, without its exec
            parts.append(f'export LD_PRELOAD="${{LD_PRELOAD:+$LD_PRELOAD:}}"{shlex.quote(stdbuf)} {stdbuf_env}')
        if unbuffered:
            parts.append("export PYTHONUNBUFFERED=1")
    run, stdin, login_text = _run(request, default_shell)
    # stdin is /dev/null unless a script is fed on it (or a pty is asked for): no EOF has to be sent
    # over SSH, which paramiko could race after the channel's CLOSE (sshd then drops the connection).
    redirect = " </dev/null" if stdin is None and not request.pty else ""
    # Shell text for the login shell: the wrapper runs in that shell already, so it evaluates the text
    # itself rather than exec'ing a second one (unless stdbuf's own exec is the only way to line-buffer).
    # Not when the job has env values: the wrapper's command line (shown by ps to every user of the
    # host) exports them, and an exec ends that command line at once; the job id alone is no secret.
    inline = None
    if login_text is not None and set(request.env) <= {JOB_ID_ENV}:
        # (a space first: bash's eval would take text starting with "-" for its own option)
        inline = ("exec" + redirect + "; " if redirect else "") + "eval " + shlex.quote(" " + login_text)
    if learn:
        otherwise = inline or f"exec {run}{redirect}"
        parts.append(
            f'if [ "$_remora_b" = 1 ]; then unset _remora_b; exec stdbuf -oL -eL {run}{redirect}; else unset _remora_b; {otherwise}; fi'
        )
    elif inline and stdbuf is not True:
        parts.append(inline)
    else:
        prefix = "stdbuf -oL -eL " if stdbuf is True else ""
        parts.append(f"exec {prefix}{run}".rstrip() + redirect)
    return Wrapper("; ".join(parts), stdin)


def _run(request: ExecRequest, default_shell: str) -> tuple[str, bytes | None, str | None]:
    """What the wrapper ``exec``s: the command's own words when they are plain, else a shell given the text;
    its stdin; and the text when it is shell text for the login shell (which the wrapper may evaluate itself)."""
    if request.script is not None:
        shell = shlex.quote(request.shell or "/bin/bash")
        args = " ".join(shlex.quote(a) for a in script_args(request))
        if request.pty:
            return f"{shell} -c {shlex.quote(request.script)} {shell} {args}", None, None
        return f"{shell} -s -- {args}", request.script.encode(), None
    text = command_text(request)
    if request.shell:
        return f"{shlex.quote(request.shell)} -c {shlex.quote(text)}", None, None
    if plain_words(text):
        return text, None, None
    return f"{default_shell} -c {shlex.quote(text)}", None, text


def plain_words(text: str) -> bool:
    """Whether shell text is a program and plain words: nothing a shell would parse, expand or run itself (a builtin).

    Such a command is ``exec``'d by the wrapper directly, as ``$SHELL -c`` would: same PATH lookup,
    same process, same exit code, one shell fewer.
    """
    return _PLAIN_WORDS.fullmatch(text) is not None and text.split(" ", 1)[0] not in _SHELL_WORDS


def parse_pid_line(line: bytes) -> tuple[int | None, Buffering]:
    """``remora-pid:<pid>[:<path|1|0>]`` -> (pid, what the host has to line-buffer if the line says); (None, None) if not one."""
    if not line.startswith(PID_MARKER):
        return None, None
    pid, _, flag = line[len(PID_MARKER) :].partition(b":")
    if not pid.isdigit():
        return None, None
    if flag in (b"", b"0", b"1"):
        return int(pid), (flag == b"1") if flag else None
    path = flag.decode(errors="replace")
    if path not in LIBSTDBUF_PATHS:  # only what the wrapper asked about
        return None, None
    return int(pid), path


def run_on_private_loop(
    start: Callable[[ExecRequest, OutputSink, threading.Event, EventLoop, Done], None],
    request: ExecRequest,
    sink: OutputSink,
    cancel: threading.Event,
) -> ExecResult:
    """``Executor.run`` for every executor: ``start`` on a loop of its own, driven on this thread until the end."""
    from remora.executor.loop import EventLoop

    loop = EventLoop(name="run", threads=2)
    box: list[ExecResult] = []
    try:
        start(request, sink, cancel, loop, box.append)
        loop.run_until(lambda: bool(box))
    finally:
        loop.stop()
    return box[0]


def signal_name(value: int | str) -> str:
    """``15`` / ``SIGTERM`` / ``TERM`` -> ``TERM``."""
    if isinstance(value, int):
        import signal as _signal

        try:
            return _signal.Signals(value).name.removeprefix("SIG")
        except ValueError:
            return str(value)
    return value.removeprefix("SIG")


def stopped(result: ExecResult, request: ExecRequest, *, canceled: bool) -> None:
    """Record why a running job is being stopped: a cancel, or its timeout passed."""
    if canceled:
        result.error_kind, result.error = ErrorKind.CANCELED.value, "canceled"
    else:
        result.error_kind, result.error = ErrorKind.TIMEOUT.value, f"timeout after {request.timeout:g}s"


def finish(result: ExecResult) -> ExecResult:
    if result.finished_at is None:
        result.finished_at = now()
    return result
