"""Waiting for jobs and following their output live (``--wait``, ``--follow``, ``jobs wait``).

Waiting (no output followed) reads the change feed (``GET /api/v1/events`` as
Server-Sent Events): one stream for all the jobs -- filtered by their batch
when they are one -- after one snapshot of their state, so a fan-out costs a
few requests however many hosts it has.  A whole batch just submitted, waited
on without a progress bar, follows only the batch's own changes (``kind=batch``):
one event for its end instead of three per host.  An API without the feed (404) is
polled job by job as before.  At the end a batch's jobs are read as one list
and its output in one request (``GET /batches/:id?output=true``).

Following output (``--follow``) reads the same stream with ``output=true``: the jobs'
output arrives as ``output`` events (each with its byte offset), so following
20 hosts costs the same few requests as one.  An API without output on the
feed is polled job by job by byte offsets (``GET /jobs/:id/logs?stdout_offset=N&stderr_offset=M``),
and so is the rest of a job whose output the feed did not carry.
Output is written to the matching local stream.  One job: byte for byte.  Several:
each line prefixed with the job's label (its server name).  Exit codes follow
``remora.errors.ExitCode``: a job that ran exits with its own code.
"""

from __future__ import annotations

import base64
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from remora.cli.render import FINISHED, server_name, short
from remora.errors import ExitCode, Gone, NotFound, RemoraError, Unavailable

if TYPE_CHECKING:
    from remora.client import Client

# How the worker words a job that hit its own timeout (not an SSH connect timeout).
JOB_TIMEOUT_ERROR = re.compile(r"\b(timeout|timed out) after\b", re.IGNORECASE)
POLL_MIN = 0.05
POLL_MAX = 0.5
STREAM_READ_TIMEOUT = 45.0  # seconds without a byte from the feed (it sends a heartbeat every 15 s) before giving up
MAX_JOB_FILTER = 200  # jobs named in the feed's job_id filter; beyond, the client filters
# A finished job's fields that a batch view's host entry carries (what the summary and the exit code need)
FINAL_FIELDS = ("status", "exit_code", "error", "duration", "started_at", "finished_at", "stdout_bytes", "stderr_bytes")


class _NoOutput(RemoraError):
    """The API's change feed has no output events (an older API): follow by polling logs."""


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
    current: bool = False  # ``job`` is the API's full view of the job in its final state

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
        use_feed: bool = False,
        fresh: bool = False,
        with_output: bool = False,
    ) -> None:
        """``use_feed``: with ``follow`` and several jobs, skip the logs of jobs the change feed says are still queued
        (when they are polled).  ``fresh``: the jobs were just submitted, all of their batch when several (the feed
        has every change of theirs).
        ``with_output``: a batch's final states come from its view with output (kept in ``hosts`` for
        ``print_outputs``), one request instead of the job list's pages and then the view."""
        self.client = client
        self.fresh = fresh
        self.with_output = with_output
        self.hosts: dict[str, dict[str, Any]] | None = None  # job id -> the batch view's host entry (``with_output``)
        self.use_feed = use_feed and len(jobs) > 1
        labels = labels_for(jobs)
        self.tracked = [Tracked(job=j, label=label) for j, label in zip(jobs, labels, strict=True)]
        self.follow = follow
        self.streams = streams
        self.timeout = timeout
        self.progress = progress
        self.prefix = (len(jobs) > 1) if prefix is None else prefix
        self.sinks: dict[str, IO[bytes]] = {"stdout": sys.stdout.buffer, "stderr": sys.stderr.buffer}

    @property
    def batch_id(self) -> str | None:
        """The batch all the tracked jobs (several) belong to; None for one job (its own view is read) or jobs of no one batch."""
        ids = {t.job.get("batch_id") for t in self.tracked}
        return str(next(iter(ids))) if len(self.tracked) > 1 and len(ids) == 1 and None not in ids else None

    def run(self) -> list[dict[str, Any]]:
        """Block until every job finished; returns the final job objects."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        if self.progress:
            return self._run_with_progress(deadline)
        self._wait(deadline, None)
        return [t.job for t in self.tracked]

    def _wait(self, deadline: float | None, on_change: Any) -> None:
        if self.follow:
            self._follow(deadline, on_change)
            return
        try:
            self._wait_on_feed(deadline, on_change)
        except RemoraError as exc:
            # An API without the change feed (404), or none of its watcher slots free (429, 503): poll
            # job by job.  Not reachable at all, or out of time: that is the answer.
            slots_full = exc.status == 429 or (isinstance(exc, Unavailable) and not exc.details.get("url"))
            if isinstance(exc, WaitTimeout) or not (isinstance(exc, NotFound) or slots_full):
                raise
            self._loop(deadline, on_change)
        self._final_jobs()

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

            self._wait(deadline, update)
        return [t.job for t in self.tracked]

    # -- waiting on the change feed --------------------------------------------
    def _wait_on_feed(self, deadline: float | None, on_change: Any) -> None:
        """Follow the feed until every tracked job is final: open the stream, read the jobs' state once, apply changes."""
        by_id = {t.id: t for t in self.tracked}
        batch = self.batch_id
        job_ids = None if batch or len(by_id) > MAX_JOB_FILTER else list(by_id)
        # A whole batch just submitted, with no progress to show: only the batch's own end matters (one
        # event, however many hosts); its jobs' final states are read once at the end.  The stream starts
        # at cursor 0 (every change kept): the batch's end is on it even if it came before the stream
        # opened, so there is no state to read first.
        batch_end = bool(batch and self.fresh and on_change is None)
        cursor: str | None = "0" if batch_end else None
        fresh = not batch_end  # no state read yet since the stream's start: read it after ``ready``
        while not all(t.done for t in self.tracked):
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                self._gave_up()
            read_timeout = STREAM_READ_TIMEOUT if left is None else max(0.5, min(STREAM_READ_TIMEOUT, left + 0.5))
            kind = "batch" if batch_end else None
            stream = self.client.event_stream(cursor, batch_id=batch, job_ids=job_ids, read_timeout=read_timeout, kind=kind)
            try:
                for message in stream:
                    cursor = message.get("id") or cursor
                    changed = False
                    data = message.get("data")
                    if message["event"] == "ready" and fresh:
                        hosts = self._snapshot(batch)
                        fresh, changed = False, True
                        if batch_end and hosts != len(self.tracked):  # not the whole batch: its jobs' changes after all
                            batch_end = False
                            break
                    elif message["event"] == "message" and isinstance(data, dict):
                        if data.get("kind") == "batch":
                            if batch_end and data.get("status") in FINISHED:
                                for t in self.tracked:
                                    t.done = True  # their final states: ``_final_jobs``
                        else:
                            changed = self._apply(by_id, data)
                    if changed and on_change:
                        on_change()
                    if all(t.done for t in self.tracked):
                        return
                    if deadline is not None and time.monotonic() >= deadline:
                        self._gave_up()
                    if message["event"] == "end":
                        break
            except Gone:  # our cursor is older than what the API keeps: start over from now
                cursor, fresh = None, True
            except Unavailable:
                if deadline is not None and time.monotonic() >= deadline:
                    self._gave_up()
                raise
            finally:
                stream.close()

    # -- following output on the change feed -------------------------------------
    def _follow(self, deadline: float | None, on_change: Any) -> None:
        """Output and states from one stream (``output=true``); polling logs where the API has no such stream."""
        batch = self.batch_id
        if batch is None and len(self.tracked) > MAX_JOB_FILTER:
            self._loop(deadline, on_change)
            return
        if not self.fresh:  # jobs that may have finished long ago (their changes pruned): those are read from their logs
            for t in self.tracked:
                if t.job.get("status") not in FINISHED:
                    t.job = self.client.job(t.id)
            if any(t.job.get("status") in FINISHED for t in self.tracked):
                self._loop(deadline, on_change)
                return
        try:
            self._output_on_feed(deadline, on_change, batch)
        except RemoraError as exc:
            slots_full = exc.status == 429 or (isinstance(exc, Unavailable) and not exc.details.get("url"))
            if isinstance(exc, WaitTimeout) or not (isinstance(exc, (NotFound, Gone, _NoOutput)) or slots_full):
                raise
            self._loop(deadline, on_change)  # goes on from the offsets the feed reached
            return
        self._final_jobs()
        rest = [t for t in self.tracked if self._missing(t)]
        for t in rest:  # output the feed did not carry (written after the job's end): read from the logs
            t.done = False
        if rest:
            self._loop(deadline, on_change)
        for t in self.tracked:
            self._flush_partial(t)

    def _missing(self, t: Tracked) -> bool:
        return any(int(t.job.get(f"{stream}_bytes") or 0) > t.offsets[stream] for stream in ("stdout", "stderr"))

    def _output_on_feed(self, deadline: float | None, on_change: Any, batch: str | None) -> None:
        """Read the stream from the jobs' start (cursor 0 with their batch or ids) until each job's final status."""
        by_id = {t.id: t for t in self.tracked}
        job_ids = None if batch else list(by_id)
        cursor = "0"
        while not all(t.done for t in self.tracked):
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                self._gave_up()
            read_timeout = STREAM_READ_TIMEOUT if left is None else max(0.5, min(STREAM_READ_TIMEOUT, left + 0.5))
            stream = self.client.event_stream(cursor, batch_id=batch, job_ids=job_ids, read_timeout=read_timeout, output=True)
            try:
                for message in stream:
                    data = message.get("data")
                    if message["event"] == "ready" and not (isinstance(data, dict) and data.get("output")):
                        raise _NoOutput("the API's change feed carries no output")
                    cursor = message.get("id") or cursor
                    if message["event"] == "events" and isinstance(data, dict):
                        for event in data.get("events") or []:
                            self._feed_event(by_id, event, on_change)
                    if all(t.done for t in self.tracked):
                        return
                    if deadline is not None and time.monotonic() >= deadline:
                        self._gave_up()
                    if message["event"] == "end":
                        break
            except Unavailable:
                if deadline is not None and time.monotonic() >= deadline:
                    self._gave_up()
                raise
            finally:
                stream.close()

    def _feed_event(self, by_id: dict[str, Tracked], event: dict[str, Any], on_change: Any) -> None:
        if event.get("kind") == "output":
            self._output(by_id.get(str(event.get("job_id"))), event)
        elif self._apply(by_id, event):
            t = by_id[str(event["job_id"])]
            if t.done:  # a job's final status comes after all its output
                self._flush_partial(t)
            if on_change:
                on_change()

    def _output(self, t: Tracked | None, event: dict[str, Any]) -> None:
        """Write one output event's bytes that follow what was written already (a repeat is skipped)."""
        stream = str(event.get("stream"))
        if t is None or stream not in t.offsets:
            return
        raw = str(event.get("data") or "")
        chunk = base64.b64decode(raw) if event.get("encoding") == "base64" else raw.encode("utf-8", "surrogateescape")
        skip = t.offsets[stream] - int(event.get("offset") or 0)
        if skip < 0 or skip >= len(chunk):
            return
        chunk = chunk[skip:]
        t.offsets[stream] += len(chunk)
        if stream in self.streams:
            self._emit(t, stream, chunk)

    def _gave_up(self) -> None:
        pending = ", ".join(short(t.id) for t in self.tracked if not t.done)
        raise WaitTimeout(f"gave up waiting after {self.timeout:g}s; still running: {pending}")

    def _snapshot(self, batch: str | None) -> int:
        """The tracked jobs' state now: their batch in one request (returns how many jobs it has), else one request per job."""
        if batch:
            hosts = {h["job_id"]: h for h in self.client.batch(batch).get("hosts") or []}
            for t in self.tracked:
                host = hosts.get(t.id)
                if host is not None:
                    self._apply({t.id: t}, {"job_id": t.id, "status": host.get("status"), "exit_code": host.get("exit_code")})
            return len(hosts)
        for t in self.tracked:
            t.job = self.client.job(t.id)
            t.done = t.current = t.job.get("status") in FINISHED
        return len(self.tracked)

    @staticmethod
    def _apply(by_id: dict[str, Tracked], event: dict[str, Any]) -> bool:
        t = by_id.get(str(event.get("job_id")))
        if t is None or t.done:
            return False
        t.job = {**t.job, "status": event.get("status"), "exit_code": event.get("exit_code")}
        t.done = event.get("status") in FINISHED
        return True

    def _final_jobs(self) -> None:
        """The finished jobs as the API shows them: a batch's as one list (100 a page), others one by one."""
        batch = self.batch_id
        if batch and self.with_output:
            self.hosts = hosts_with_output(self.client, batch)
            for t in self.tracked:
                host = self.hosts.get(t.id)
                t.job = {**t.job, **{k: host[k] for k in FINAL_FIELDS if k in host}} if host else self.client.job(t.id)
            return
        if batch:
            listed = {j["id"]: j for j in self.client.iter_jobs(batch_id=batch)}
            for t in self.tracked:
                t.job = listed.get(t.id) or self.client.job(t.id)
            return
        for t in self.tracked:
            if not t.current:
                t.job = self.client.job(t.id)

    def _loop(self, deadline: float | None, on_change: Any) -> None:
        feed = _QueuedJobs(self.client, self.batch_id, [t.id for t in self.tracked]) if self.follow and self.use_feed else None
        try:
            self._polls(deadline, on_change, feed)
        finally:
            if feed is not None:
                feed.stop()

    def _polls(self, deadline: float | None, on_change: Any, feed: _QueuedJobs | None) -> None:
        delay = POLL_MIN
        while True:
            active = [t for t in self.tracked if not t.done]
            if not active:
                return
            changed = False
            for tracked in active:
                if feed is None or not feed.queued(tracked.id):
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


class _QueuedJobs:
    """Which followed jobs are still queued, kept current from the change feed in a thread of its own.

    ``--follow`` on a rollout reads the logs of the running jobs only: a queued job prints nothing.
    Unknown (no feed, stream down) counts as not queued, so those jobs are polled as before.
    """

    def __init__(self, client: Client, batch_id: str | None, job_ids: list[str]) -> None:
        from remora.client import Client as ClientType

        self._client = ClientType(client.base_url, client.token, timeout=client.timeout)  # a Client is not thread-safe
        self._batch_id = batch_id
        self._ids = set(job_ids)
        self._status: dict[str, str] = {}
        self._live = False
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="remora-feed", daemon=True)
        self._thread.start()

    def queued(self, job_id: str) -> bool:
        return self._live and self._status.get(job_id) == "queued"

    def stop(self) -> None:
        self._stopped = True

    def _run(self) -> None:
        job_ids = None if self._batch_id else sorted(self._ids)[:MAX_JOB_FILTER]
        try:
            for message in self._client.event_stream(None, batch_id=self._batch_id, job_ids=job_ids, read_timeout=STREAM_READ_TIMEOUT):
                if self._stopped or message["event"] == "end":
                    break
                if message["event"] == "ready":
                    if self._batch_id:
                        hosts = self._client.batch(self._batch_id).get("hosts") or []
                        self._status.update({h["job_id"]: h["status"] for h in hosts if h["job_id"] in self._ids})
                    self._live = True
                elif isinstance(message.get("data"), dict) and message["data"].get("job_id") in self._ids:
                    self._status[message["data"]["job_id"]] = message["data"]["status"]
        except RemoraError:
            pass
        finally:
            self._live = False
            self._client.close()


def hosts_with_output(client: Client, batch_id: str) -> dict[str, dict[str, Any]]:
    """A batch's view with output (one request): job id -> its host entry (final state, stdout, stderr)."""
    return {h["job_id"]: h for h in client.batch(batch_id, output=True).get("hosts") or []}


def print_outputs(client: Client, jobs: list[dict[str, Any]], hosts: dict[str, dict[str, Any]] | None = None) -> None:
    """The finished jobs' stdout and stderr, as ``--wait`` prints them (lines prefixed by server when several).

    A batch's output comes in one request (``?output=true``, bounded per host; ``hosts``: that view's
    entries, already read); a host whose output was cut there, or jobs that are not one batch, are read
    through their logs.
    """
    batch_ids = {j.get("batch_id") for j in jobs}
    batch = next(iter(batch_ids)) if len(batch_ids) == 1 and None not in batch_ids else None
    if batch is None or len(jobs) == 1:
        Watcher(client, jobs, follow=True).run()
        return
    if hosts is None:
        hosts = hosts_with_output(client, str(batch))
    printer = Watcher(client, jobs, follow=True)
    for t in printer.tracked:
        host = hosts.get(t.id)
        if host is None or host.get("output_truncated"):
            one = Watcher(client, [t.job], follow=True, prefix=True)
            one.tracked[0].label = t.label
            one.run()
            continue
        for stream in ("stdout", "stderr"):
            chunk = str(host.get(stream) or "").encode("utf-8", "surrogateescape")
            if chunk:
                printer._emit(t, stream, chunk)
        printer._flush_partial(t)


def with_bodies(client: Client, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A batch's finished jobs (list form) with ``stdout`` / ``stderr`` as the job view carries them, from one request."""
    batch_ids = {j.get("batch_id") for j in jobs}
    if len(jobs) == 1 or len(batch_ids) != 1 or None in batch_ids or all("stdout" in j for j in jobs):
        return jobs
    hosts = hosts_with_output(client, str(next(iter(batch_ids))))
    out = []
    for job in jobs:
        host = hosts.get(job["id"]) or {}
        bodies = {
            "stdout": host.get("stdout", ""),
            "stderr": host.get("stderr", ""),
            "bodies_truncated": bool(host.get("output_truncated")),
        }
        out.append({**job, **bodies})
    return out


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
