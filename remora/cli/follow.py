"""Waiting for jobs and following their output live (``--wait``, ``--follow``, ``jobs wait``).

Output is fetched incrementally by byte offsets (``GET /jobs/:id/logs?stdout_offset=N&stderr_offset=M``)
and written to the matching local stream.  One job: byte for byte.  Several:
each line prefixed with the job's label (its server name).  Exit codes follow
``remora.errors.ExitCode``: a job that ran exits with its own code.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from remora.cli.render import FINISHED, server_name, short
from remora.errors import ExitCode, RemoraError

if TYPE_CHECKING:
    from remora.client import Client

# How the worker words a job that hit its own timeout (not an SSH connect timeout).
JOB_TIMEOUT_ERROR = re.compile(r"\b(timeout|timed out) after\b", re.IGNORECASE)
POLL_MIN = 0.05
POLL_MAX = 0.5


class WaitTimeout(RemoraError):
    code = "WAIT_TIMEOUT"
    exit_code = ExitCode.WAIT_TIMEOUT


@dataclass
class Tracked:
    job: dict[str, Any]
    label: str = ""
    offsets: dict[str, int] = field(default_factory=lambda: {"stdout": 0, "stderr": 0})
    partial: dict[str, bytes] = field(default_factory=lambda: {"stdout": b"", "stderr": b""})
    done: bool = False

    @property
    def id(self) -> str:
        return str(self.job["id"])


def exit_code_of(job: dict[str, Any]) -> int:
    """The process exit code for a finished job (see ExitCode)."""
    status = job.get("status")
    if status == "completed":
        return 0
    if status == "canceled":
        return int(ExitCode.JOB_CANCELED)
    if JOB_TIMEOUT_ERROR.search(str(job.get("error") or "")):
        return int(ExitCode.JOB_TIMEOUT)
    code = job.get("exit_code")
    if isinstance(code, int) and 0 < code <= 255:
        return code
    return int(ExitCode.FAILURE)


def combined_exit_code(jobs: list[dict[str, Any]]) -> int:
    """0 when every job succeeded, else the first failing job's code."""
    for job in jobs:
        code = exit_code_of(job)
        if code:
            return code
    return 0


def labels_for(jobs: list[dict[str, Any]]) -> list[str]:
    names = [server_name(j) for j in jobs]
    if len(set(names)) == len(names):
        return names
    return [f"{j.get('name') or short(j.get('id'))}@{n}" for j, n in zip(jobs, names, strict=True)]


class Watcher:
    """Polls jobs until they finish; optionally streams their output."""

    def __init__(
        self,
        client: Client,
        jobs: list[dict[str, Any]],
        *,
        follow: bool = False,
        streams: tuple[str, ...] = ("stdout", "stderr"),
        timeout: float | None = None,
        progress: bool = False,
        prefix: bool | None = None,
    ) -> None:
        self.client = client
        labels = labels_for(jobs)
        self.tracked = [Tracked(job=j, label=label) for j, label in zip(jobs, labels, strict=True)]
        self.follow = follow
        self.streams = streams
        self.timeout = timeout
        self.progress = progress
        self.prefix = (len(jobs) > 1) if prefix is None else prefix
        self.sinks: dict[str, IO[bytes]] = {"stdout": sys.stdout.buffer, "stderr": sys.stderr.buffer}

    def run(self) -> list[dict[str, Any]]:
        """Block until every job finished; returns the final job objects."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        if self.progress:
            return self._run_with_progress(deadline)
        self._loop(deadline, None)
        return [t.job for t in self.tracked]

    def _run_with_progress(self, deadline: float | None) -> list[dict[str, Any]]:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from remora.cli.common import console

        with Progress(
            TextColumn("[bold]waiting"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
            console=console(stderr=True), transient=True,
        ) as bar:  # fmt: skip
            task = bar.add_task("", total=len(self.tracked))

            def update() -> None:
                failed = sum(1 for t in self.tracked if t.done and exit_code_of(t.job))
                bar.update(task, completed=sum(t.done for t in self.tracked), description=f"[red]{failed} failed[/]" if failed else "")

            self._loop(deadline, update)
        return [t.job for t in self.tracked]

    def _loop(self, deadline: float | None, on_change: Any) -> None:
        delay = POLL_MIN
        while True:
            active = [t for t in self.tracked if not t.done]
            if not active:
                return
            changed = False
            for tracked in active:
                changed |= self._poll(tracked)
            if changed and on_change:
                on_change()
            if all(t.done for t in self.tracked):
                return
            if deadline is not None and time.monotonic() >= deadline:
                pending = ", ".join(short(t.id) for t in self.tracked if not t.done)
                raise WaitTimeout(f"gave up waiting after {self.timeout:g}s; still running: {pending}")
            delay = POLL_MIN if changed else min(POLL_MAX, delay * 1.5)
            time.sleep(delay)

    def _poll(self, t: Tracked) -> bool:
        """One logs request; writes new output; returns True when something happened."""
        data = self.client.job_logs(t.id, t.offsets["stdout"], t.offsets["stderr"])
        changed = False
        for stream in ("stdout", "stderr"):
            text = data.get(stream) or ""
            next_offset = data.get(f"next_{stream}_offset")
            chunk = text.encode("utf-8", "surrogateescape")
            if chunk:
                changed = True
                if self.follow and stream in self.streams:
                    self._emit(t, stream, chunk)
            t.offsets[stream] = int(next_offset) if isinstance(next_offset, int) else t.offsets[stream] + len(chunk)
        status = data.get("status") or t.job.get("status")
        complete = data.get("complete")
        if complete is None:
            complete = status in FINISHED and not changed
        if complete:
            t.job = self.client.job(t.id)
            t.done = True
            self._flush_partial(t)
            return True
        if status and status != t.job.get("status"):
            t.job = {**t.job, "status": status}
            changed = True
        return changed

    def _emit(self, t: Tracked, stream: str, chunk: bytes) -> None:
        sink = self.sinks[stream]
        if not self.prefix:
            sink.write(chunk)
            sink.flush()
            return
        data = t.partial[stream] + chunk
        lines = data.split(b"\n")
        t.partial[stream] = lines.pop()
        if lines:
            label = t.label.encode("utf-8", "replace")
            sink.write(b"".join(label + b" | " + line + b"\n" for line in lines))
            sink.flush()

    def _flush_partial(self, t: Tracked) -> None:
        for stream, rest in t.partial.items():
            if rest and self.follow and stream in self.streams:
                self.sinks[stream].write(t.label.encode("utf-8", "replace") + b" | " + rest + b"\n")
                self.sinks[stream].flush()
            t.partial[stream] = b""


def summary_line(job: dict[str, Any]) -> str:
    """'3f2a1b2c on web-1: failed (exit 3) in 1.2s' with rich markup."""
    from remora.cli.render import fmt_duration, styled_status

    status = str(job.get("status", "?"))
    detail = ""
    if job.get("exit_code") is not None and status in ("completed", "failed"):
        detail = f" (exit {job['exit_code']})"
    error = str(job.get("error") or "")
    if error and status != "completed" and not error.startswith("exit code"):
        detail += f": {error}"
    took = fmt_duration(job.get("duration"))
    return f"{short(job.get('id'))} on {server_name(job)}: {styled_status(status)}{detail}" + (f" in {took}" if took else "")
