"""The worker's output sink for one job: what an executor writes to, stored through ``remora.output.JobOutput``."""

from __future__ import annotations

import logging
import queue as queue_mod
import threading
import time
from collections.abc import Callable
from typing import Any

from remora import models
from remora.config import Settings
from remora.executor.base import Stream
from remora.masking import SecretMasker
from remora.output import JobOutput
from remora.worker.held import HeldJob

log = logging.getLogger(__name__)


class OutputWriter:
    """The one thread that stores the output of every job a worker runs (the event loop never waits for the database).

    Work is done in the order it was handed in: a job's end (``JobSink.then``) comes after its last bytes.
    A bounded queue keeps memory flat: when the database lags, the event loop waits here.
    """

    QUEUE_ITEMS = 1024

    def __init__(self, name: str = "output-writer") -> None:
        self._queue: queue_mod.Queue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = queue_mod.Queue(self.QUEUE_ITEMS)
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def put(self, fn: Callable[..., Any], *args: Any) -> None:
        self._queue.put((fn, args))

    def close(self, timeout: float = 30.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            fn, args = item
            try:
                fn(*args)
            except Exception:
                log.exception("output writer: storing output failed")


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
            self.writer.put(self._stored, stream, data)
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
