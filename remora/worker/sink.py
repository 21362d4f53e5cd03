"""The worker's output sink for one job: what an executor writes to, stored through ``remora.output.JobOutput``."""

from __future__ import annotations

import collections
import logging
import math
import queue as queue_mod
import threading
import time
from collections.abc import Callable
from typing import Any

from remora import models
from remora.config import Settings
from remora.executor.base import Stream
from remora.executor.loop import EventLoop
from remora.masking import SecretMasker
from remora.output import JobOutput, flush_many
from remora.worker.held import HeldJob

log = logging.getLogger(__name__)


class OutputWriter:
    """The one thread that stores the output of every job a worker runs (the event loop never waits for the database).

    Work is done in the order it was handed in: a job's end (``JobSink.then``) comes after its last bytes.
    The queue is bounded by BYTES (``MAX_BYTES`` of output waiting, whatever the number of reads):
    when the database lags, the event loop waits here, so memory stays flat even for a job printing
    hundreds of megabytes.
    """

    MAX_BYTES = 8 * 1024 * 1024
    ITEM_COST = 256  # what an item without data counts for (a job's end, a tiny read)

    def __init__(self, name: str = "output-writer", loop: EventLoop | None = None) -> None:
        self._handing = loop  # what its thread hands in wakes the writer once per pass of that loop
        self._kick_pending = False
        self.idle = False  # waiting for work (tests)
        self.wakeups = 0  # times work woke it up
        self._items: collections.deque[tuple[Callable[..., Any], tuple[Any, ...], int] | None] = collections.deque()
        self._bytes = 0
        self._cond = threading.Condition()
        self._dirty: dict[JobOutput, None] = {}  # outputs with bytes pending (the writer's thread only)
        self._due_at = math.inf  # when the first of them is due (or earlier: one flushed since by a finisher)
        self._retry_at = 0.0  # after a failed group flush: when to try again
        self._failing = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def dirty(self, output: JobOutput) -> None:
        """``output`` has bytes pending: flush it with the others when it is due.

        Only the writer's thread keeps this list; bytes stored from another thread (a job's last
        masked tail, at its end) are written by the finisher with the job's final status.
        """
        if threading.get_ident() == self._thread.ident:
            self._dirty[output] = None
            now = time.monotonic()
            wait = output.due_in(now)
            if wait is not None:
                self._due_at = min(self._due_at, now + wait)

    @property
    def waiting_bytes(self) -> int:
        return self._bytes

    def put(self, fn: Callable[..., Any], *args: Any, size: int = 0) -> None:
        """Queue ``fn(*args)``; ``size``: the bytes it carries (the caller waits while too many are queued)."""
        cost = size + self.ITEM_COST
        with self._cond:
            while self._bytes and self._bytes + cost > self.MAX_BYTES and self._thread.is_alive():
                self._cond.notify_all()  # what this pass handed in so far (the writer may not know yet)
                self._cond.wait(0.5)
            self._bytes += cost
            self._items.append((fn, args, cost))
            if self._handing is None or not self._handing.running_here():
                self._cond.notify_all()
            elif not self._kick_pending:
                self._kick_pending = True
                self._handing.after_pass(self._kick)

    def _kick(self) -> None:
        with self._cond:
            self._kick_pending = False
            self._cond.notify_all()

    def close(self, timeout: float = 30.0) -> None:
        with self._cond:
            self._items.append(None)
            self._cond.notify_all()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._items:
                    wait = self._due_in()
                    if wait is not None and wait <= 0:
                        break
                    self.idle = True
                    self._cond.wait(wait)
                    self.idle = False
                    if self._items:
                        self.wakeups += 1
                item = self._items.popleft() if self._items else ()
            if item is None:
                self._flush_due(final=True)
                return
            if item:
                fn, args, cost = item
                try:
                    fn(*args)
                except Exception:
                    log.exception("output writer: storing output failed")
                finally:
                    with self._cond:
                        self._bytes -= cost
                        self._cond.notify_all()
            if self._dirty and self._due_in() == 0:
                self._flush_due()

    def _due_in(self) -> float | None:
        """Seconds until the first pending output is due (None: none pending).

        Kept as one time (``_due_at``) rather than asked of every pending output: the writer asks
        after each item it stores, and a fan-out has hundreds of outputs pending at once.
        """
        if not self._dirty or self._due_at == math.inf:
            return None
        now = time.monotonic()
        return max(self._due_at - now, self._retry_at - now, 0.0)

    def _flush_due(self, *, final: bool = False) -> None:
        """Once some output is due (or ``final``): write every pending output in ONE transaction.

        The others would be due within the interval anyway: writing them now keeps it to about
        one transaction per ``output.flush_interval`` however many jobs print.
        """
        now = time.monotonic()
        if not final and now < self._retry_at:
            return
        due = []
        first = None
        for output in list(self._dirty):
            wait = output.due_in(now)
            if wait is None:
                del self._dirty[output]
            else:
                due.append(output)
                first = wait if first is None else min(first, wait)
        self._due_at = math.inf if first is None else now + first
        if not due or (first and not final):
            return
        try:
            flush_many(due)
        except models.DatabaseError as exc:
            if not self._failing:
                log.warning("cannot write output yet (%s); keeping that of %d job(s) in memory", exc, len(due))
                self._failing = True
            self._retry_at = now + 0.5
            return
        if self._failing:
            log.info("output writes resumed")
            self._failing = False
        self._due_at = math.inf
        for output in due:
            wait = output.due_in(now)
            if wait is None:
                self._dirty.pop(output, None)
            else:
                self._due_at = min(self._due_at, now + wait)


class JobSink:
    """The job's output (a ``JobOutput``, opened at the first byte) plus the pid hook the executors call.

    A job that prints nothing costs no output queries at all.  Output is
    written inline until a job has printed ``ASYNC_AFTER`` bytes; from then on
    a writer thread stores it, so reading the next bytes from the network
    overlaps writing the previous ones to the database (a bounded queue keeps
    memory flat: the reader waits when the database lags).

    With a shared ``OutputWriter`` (the worker's event loop calls ``write``),
    every byte is stored by that writer thread instead, in order, and ``then``
    queues what must follow the job's last byte (its end).

    A job with secret values (``mask``) has them replaced by ``***`` before
    its output goes anywhere (``remora.masking``): the stored bytes, and so the
    byte counts and offsets, are the masked ones.  A job without has no masker
    and no per-read cost.
    """

    ASYNC_AFTER = 1024 * 1024
    QUEUE_ITEMS = 16  # reads of <= 256 KiB: at most ~4 MiB waiting for the database
    EARLY_LIMIT = 8 * 1024 * 1024  # output held while the database cannot even open the job's output

    def __init__(
        self,
        job_id: str,
        settings: Settings,
        active: HeldJob,
        offsets: tuple[int, int] | None = None,
        writer: OutputWriter | None = None,
    ) -> None:
        self.job_id = job_id
        self.writer = writer
        self.offsets = offsets
        self.settings = settings
        self.active = active
        self.output: JobOutput | None = None
        self._early: list[tuple[Stream, bytes]] = []
        self._early_bytes = 0
        self._written = 0
        self._queue: queue_mod.Queue[tuple[Stream, bytes] | None] | None = None
        self._writer: threading.Thread | None = None
        self._masker: SecretMasker | None = None
        self._handed = 0  # writes handed to the writer (counted by the event loop's thread only)
        self._done = 0  # of those, stored (counted by the writer's thread only)

    def mask(self, secrets: list[str]) -> None:
        """Mask these values in everything written from now on (values too short to mask are left: see remora.masking)."""
        masker = SecretMasker(secrets)
        self._masker = masker if masker else None

    def _end_masking(self) -> None:
        """Write the tails the masker held back (the output has ended)."""
        masker = self._masker
        if masker is None:
            return
        for stream in masker.streams():
            self._store(stream, masker.finish(stream))  # type: ignore[arg-type]

    def _open(self, *, block: bool) -> JobOutput | None:
        while self.output is None:
            out = self.settings.output
            try:
                self.output = JobOutput(
                    self.job_id,
                    flush_interval=out.flush_interval,
                    flush_lines=out.flush_lines,
                    max_bytes=out.max_bytes,
                    offsets=self.offsets,
                    grouped=self.writer is not None,
                )
            except models.DatabaseError as exc:
                if not block:
                    return None
                log.warning("job %s: cannot open its output yet (%s); retrying", self.job_id, exc)
                time.sleep(0.5)
                continue
            for stream, data in self._early:
                self.output.write(stream, data)
            self._early.clear()
        return self.output

    def write(self, stream: Stream, data: bytes) -> None:
        if self._masker is not None:
            data = self._masker.feed(stream, data)
            if not data:
                return
        if self.writer is not None:
            self._handed += 1
            self.writer.put(self._stored, stream, data, size=len(data))
        else:
            self._store(stream, data)

    def _stored(self, stream: Stream, data: bytes) -> None:
        try:
            self._store(stream, data)
        finally:
            self._done += 1

    def then(self, fn: Callable[..., Any], *args: Any) -> None:
        """Call ``fn(*args)`` once everything written so far is handed to the output (on the writer's thread if some is waiting)."""
        if self.writer is not None and self._done != self._handed:
            self.writer.put(fn, *args)
        else:
            fn(*args)  # nothing waits for the writer (a quiet job): no trip through its queue

    def _store(self, stream: Stream, data: bytes) -> None:
        if self._queue is not None:
            self._queue.put((stream, data))
            return
        output = self._open(block=self._early_bytes >= self.EARLY_LIMIT)
        if output is None:
            self._early.append((stream, data))
            self._early_bytes += len(data)
            return
        output.write(stream, data)
        if self.writer is not None:
            self.writer.dirty(output)
        self._written += len(data)
        if self._written >= self.ASYNC_AFTER and self.writer is None:
            self._queue = queue_mod.Queue(self.QUEUE_ITEMS)
            self._writer = threading.Thread(target=self._drain, name=f"output-{self.active.job_id[:8]}", daemon=True)
            self._writer.start()

    def _drain(self) -> None:
        assert self._queue is not None and self.output is not None
        while (item := self._queue.get()) is not None:
            self.output.write(*item)

    def started(self, pid: int | None) -> None:
        self.active.pid = pid

    def last_write(self) -> JobOutput | None:
        """The output, when its last bytes can be written together with the job's status (inline output only)."""
        self._end_masking()
        if self._queue is None and not self._early and self.output is not None:
            return self.output
        return None

    def close(self) -> None:
        """Store every accepted byte (the JobOutput retries while the database is down)."""
        self._end_masking()
        if self._queue is not None and self._writer is not None:
            self._queue.put(None)
            self._writer.join()
        if self._early:
            self._open(block=True)
        if self.output is not None:
            try:
                self.output.close()
            except models.DatabaseError as exc:
                log.error("job %s: output could not be stored: %s", self.job_id, exc)
