"""Job output: appended in order as ``OutputChunk`` rows, read back by byte range.

Writer (the worker): ``JobOutput`` buffers what a running job prints and
writes it to the database once its oldest pending byte has waited
``flush_interval`` seconds or ``flush_lines`` lines are pending, whichever
comes first, as chunks that carry a global
sequence number (the combined view) and their byte offset in their own
stream.  A shared background thread (``_Flusher``) makes sure quiet jobs are
flushed on time.  The worker's outputs are ``grouped``: once one of them is
due, its output writer flushes all of them in ONE transaction (``flush_many``).  Output beyond ``max_bytes`` is dropped with a marker; the
job keeps running.  When the database is briefly unavailable, output is kept
in memory and written on the next successful flush (writers block once too
much is pending, so memory stays bounded).

Readers (the API): ``read_stream`` loads only the chunks that overlap the
requested byte range; ``iter_stream`` yields a stream chunk by chunk.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from remora import models
from remora.executor.base import Stream
from remora.models import Job, OutputChunk
from remora.models.changes import NOTIFY

log = logging.getLogger(__name__)

MAX_CHUNK = 256 * 1024  # bytes per stored chunk: large enough for fast bulk output
MAX_PENDING = 8 * 1024 * 1024  # pending bytes after which writers wait for the database
ENCODING_RAW = 0
ENCODING_ZLIB = 1
T = TypeVar("T")


def truncation_marker(limit: int) -> bytes:
    return f"\n[remora: output truncated: limit of {limit} bytes reached]\n".encode()


@dataclass
class _Piece:
    stream: Stream
    data: bytearray = field(default_factory=bytearray)


class JobOutput:
    """Ordered, buffered output of one job attempt (thread-safe).

    Contract: ``write`` never loses bytes it accepted; ``flush`` writes every
    accepted byte or raises (and keeps them for the next flush); ``close``
    flushes, retrying until ``close_timeout`` passes.
    """

    def __init__(
        self,
        job_id: str,
        *,
        flush_interval: float = 1.0,
        flush_lines: int = 10,
        max_bytes: int = 64 * 1024 * 1024,
        close_timeout: float = 30.0,
        offsets: tuple[int, int] | None = None,
        grouped: bool = False,
    ) -> None:
        """``offsets``: the job's stored (stdout_bytes, stderr_bytes) when the caller just read them.

        ``grouped``: the caller flushes it together with other jobs' outputs (``due`` says when;
        ``flush_many`` writes them in one transaction): ``write`` then flushes on its own only when
        too much is pending, and the shared flusher thread leaves it alone.
        """
        self.job_id = job_id
        self.flush_interval = flush_interval
        self.flush_lines = max(1, flush_lines)
        self.max_bytes = max_bytes
        self.close_timeout = close_timeout
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._pending: list[_Piece] = []
        self._pending_bytes = 0
        self._pending_lines = 0
        self._accepted = 0
        self._truncated = False
        self._pending_since = 0.0  # when the oldest pending byte was written (a burst after a quiet spell waits for its lines)
        self._failing = False
        if offsets is None:
            row = Job.select(Job.stdout_bytes, Job.stderr_bytes).where(Job.id == job_id).first()
            offsets = (row.stdout_bytes, row.stderr_bytes) if row else (0, 0)
        self._offsets = {Stream.STDOUT: offsets[0], Stream.STDERR: offsets[1]}
        # Chunks are only ever stored together with the byte counts: a job with none stored has no chunks.
        last = models.last_output_seq(job_id) if offsets[0] or offsets[1] else None
        self._seq = (last + 1) if last is not None else 0
        self._accepted = self._offsets[Stream.STDOUT] + self._offsets[Stream.STDERR]
        self._closed = False
        self.grouped = grouped
        if not grouped:
            _FLUSHER.register(self)

    @property
    def truncated(self) -> bool:
        return self._truncated

    def write(self, stream: Stream, data: bytes) -> None:
        """Accept output of ``stream``; flush when enough lines are pending."""
        if not data:
            return
        with self._lock:
            if self._truncated:
                return
            room = self.max_bytes - self._accepted
            if len(data) > room:
                data = data[: max(room, 0)] + truncation_marker(self.max_bytes)
                self._truncated = True
            if not self._pending_bytes:
                self._pending_since = time.monotonic()
            if self._pending and self._pending[-1].stream == stream and len(self._pending[-1].data) < MAX_CHUNK:
                self._pending[-1].data += data
            else:
                self._pending.append(_Piece(stream, bytearray(data)))
            self._accepted += len(data)
            self._pending_bytes += len(data)
            self._pending_lines += data.count(b"\n")
            due = not self.grouped and (self._pending_lines >= self.flush_lines or self._pending_bytes >= MAX_CHUNK)
            too_much = self._pending_bytes >= MAX_PENDING
        if due or too_much:
            self._flush_quietly(block=too_much)

    def due_in(self, now: float) -> float | None:
        """Seconds until this output is due for a flush (0: now; None: nothing pending)."""
        if not self._pending_bytes:
            return None
        if self._pending_lines >= self.flush_lines or self._pending_bytes >= MAX_CHUNK:
            return 0.0
        return max(0.0, self._pending_since + self.flush_interval - now)

    def maybe_flush(self) -> None:
        """Flush when output has waited ``flush_interval`` (called by the shared flusher)."""
        if self._pending_bytes and time.monotonic() - self._pending_since >= self.flush_interval:
            self._flush_quietly(block=False)

    def _flush_quietly(self, *, block: bool) -> None:
        while True:
            try:
                self.flush()
                return
            except models.DatabaseError as exc:
                if not self._failing:
                    log.warning("job %s: cannot write output yet (%s); keeping it in memory", self.job_id, exc)
                    self._failing = True
                if not block or self._pending_bytes < MAX_PENDING:
                    return
                time.sleep(0.5)  # backpressure: the producer waits for the database

    def flush(self, also: Callable[[], T] | None = None) -> T | None:
        """Write every pending byte as chunks, in one transaction.

        ``also`` runs in that same transaction (e.g. the job's final status,
        so a short job's output and its end cost one write); its value is returned.
        """
        return flush_many([self], also)

    def _take(self) -> _Taken:
        """The pending pieces as rows (under the flush lock, which the caller holds)."""
        with self._lock:
            pieces, self._pending = self._pending, []
            pending_bytes, self._pending_bytes, self._pending_lines = self._pending_bytes, 0, 0
            truncated = self._truncated
        rows, offsets, seq = self._rows(pieces)
        return _Taken(self, pieces, pending_bytes, truncated, rows, offsets, seq)

    def _restore(self, taken: _Taken) -> None:
        with self._lock:  # put them back in front, in order
            self._pending = taken.pieces + self._pending
            self._pending_bytes += taken.pending_bytes
            self._pending_since = 0.0  # overdue: written again as soon as the database lets it

    def _stored(self, taken: _Taken) -> None:
        self._offsets, self._seq = taken.offsets, taken.seq
        if self._failing:
            log.info("job %s: output writes resumed", self.job_id)
            self._failing = False

    def _rows(self, pieces: list[_Piece]) -> tuple[list[tuple], dict[Stream, int], int]:
        """(seq, stream, offset, data, encoding) rows for ``models.append_output``, new offsets, next seq."""
        offsets = dict(self._offsets)
        seq = self._seq
        rows = []
        for piece in pieces:
            data = bytes(piece.data)
            for start in range(0, len(data), MAX_CHUNK):
                part = data[start : start + MAX_CHUNK]
                rows.append((seq, int(piece.stream), offsets[piece.stream], part, ENCODING_RAW))
                offsets[piece.stream] += len(part)
                seq += 1
        return rows, offsets, seq

    def close(self) -> None:
        """Flush everything, retrying while the database is unavailable (up to ``close_timeout``)."""
        if self._closed:
            return
        if not self._pending:  # everything is stored (e.g. by a final flush(also=...))
            self._closed = True
            if not self.grouped:
                _FLUSHER.unregister(self)
            return
        deadline = time.monotonic() + self.close_timeout
        delay = 0.1
        try:
            while True:
                try:
                    self.flush()
                    return
                except models.DatabaseError:
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
        finally:
            self._closed = True
            if not self.grouped:
                _FLUSHER.unregister(self)


@dataclass
class _Taken:
    """One output's pending pieces taken for a flush, and what its state becomes when the flush commits."""

    output: JobOutput
    pieces: list[_Piece]
    pending_bytes: int
    truncated: bool
    rows: list[tuple]
    offsets: dict[Stream, int]
    seq: int


def flush_many(outputs: list[JobOutput], also: Callable[[], T] | None = None) -> T | None:
    """Write the pending bytes of several jobs' outputs in ONE transaction (with ``also`` in it; its value).

    Each output keeps its guarantees (order, offsets, truncation): on failure every output gets its
    pieces back, in front, and the error is raised.
    """
    outputs = sorted(set(outputs), key=id)  # once each; locks taken in one order by every caller
    locks = [output._flush_lock for output in outputs]
    for lock in locks:
        lock.acquire()
    try:
        taken = [output._take() for output in outputs]
        writing = [t for t in taken if t.rows]
        if not writing and also is None:
            return None
        value = None
        try:
            with models.write_transaction():
                now = models.utcnow()
                for t in writing:
                    stdout, stderr = t.offsets[Stream.STDOUT], t.offsets[Stream.STDERR]
                    models.append_output(t.output.job_id, t.rows, stdout, stderr, t.truncated, now)
                if also is not None:
                    value = also()
        except BaseException:
            for t in taken:
                t.output._restore(t)
            raise
        for t in taken:
            t.output._stored(t)
        if writing:
            NOTIFY.bump("output")  # committed: the change feed's output followers in this process look at once
        return value
    finally:
        for lock in reversed(locks):
            lock.release()


class _Flusher:
    """One daemon thread that flushes every open ``JobOutput`` on time."""

    def __init__(self, tick: float = 0.1) -> None:
        self._tick = tick
        self._outputs: weakref.WeakSet[JobOutput] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def register(self, output: JobOutput) -> None:
        with self._lock:
            self._outputs.add(output)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="output-flusher", daemon=True)
                self._thread.start()

    def unregister(self, output: JobOutput) -> None:
        with self._lock:
            self._outputs.discard(output)

    def _run(self) -> None:
        while True:
            time.sleep(self._tick)
            with self._lock:
                outputs = list(self._outputs)
            for output in outputs:
                try:
                    output.maybe_flush()
                except Exception:
                    log.exception("flushing output of job %s failed", output.job_id)


_FLUSHER = _Flusher()


# -- readers ---------------------------------------------------------------


def _decode(chunk: OutputChunk) -> bytes:
    data = bytes(chunk.data)
    return zlib.decompress(data) if chunk.encoding == ENCODING_ZLIB else data


def decode_chunk(chunk: OutputChunk) -> bytes:
    """A stored chunk's bytes (decompressed when it was stored compressed)."""
    return _decode(chunk)


def stream_length(job_id: str, stream: Stream) -> int:
    row = Job.select(Job.stdout_bytes, Job.stderr_bytes).where(Job.id == job_id).first()
    if row is None:
        return 0
    return int(row.stdout_bytes if stream == Stream.STDOUT else row.stderr_bytes)


def _first_offset(job_id: str, stream: Stream, start: int) -> int:
    """Offset of the chunk that contains byte ``start`` (0 when none starts before it)."""
    value = (
        OutputChunk.select(models.fn.MAX(OutputChunk.offset))
        .where(OutputChunk.job == job_id, OutputChunk.stream == int(stream), OutputChunk.offset <= start)
        .scalar()
    )
    return int(value or 0)


def _iter_pieces(job_id: str, stream: Stream, start: int, end: int | None, page: int = 64) -> Iterator[tuple[int, bytes]]:
    """Yield (chunk seq, bytes) covering bytes ``[start, end)`` of a stream, a page of chunks at a time."""
    cursor = _first_offset(job_id, stream, start)
    while True:
        query = (
            OutputChunk.select()
            .where(OutputChunk.job == job_id, OutputChunk.stream == int(stream), OutputChunk.offset >= cursor)
            .order_by(OutputChunk.offset)
            .limit(page)
        )
        if end is not None:
            query = query.where(OutputChunk.offset < end)
        chunks = list(query)
        if not chunks:
            return
        for chunk in chunks:
            data = _decode(chunk)
            lo = max(start - chunk.offset, 0)
            hi = len(data) if end is None else min(len(data), end - chunk.offset)
            if hi > lo:
                yield chunk.seq, data[lo:hi]
        last = chunks[-1]
        cursor = last.offset + max(last.length, 1)
        if len(chunks) < page:
            return


def iter_stream(job_id: str, stream: Stream, start: int = 0, end: int | None = None, page: int = 64) -> Iterator[bytes]:
    """Yield bytes ``[start, end)`` of a stream, a page of chunks at a time."""
    for _, data in _iter_pieces(job_id, stream, start, end, page):
        yield data


def read_interleaved(job_id: str, ranges: dict[Stream, tuple[int, int]]) -> list[tuple[Stream, bytes]]:
    """Byte ranges ``[start, end)`` of both streams as (stream, bytes) pieces in the order they were written.

    Pieces come from the chunks' global sequence, so stdout and stderr lines
    interleave as the job printed them; consecutive pieces of one stream are merged.
    """
    pieces: list[tuple[int, Stream, bytes]] = []
    for stream, (start, end) in ranges.items():
        if end > start:
            pieces += [(seq, stream, data) for seq, data in _iter_pieces(job_id, stream, start, end)]
    pieces.sort(key=lambda p: p[0])
    out: list[tuple[Stream, bytes]] = []
    for _, stream, data in pieces:
        if out and out[-1][0] == stream:
            out[-1] = (stream, out[-1][1] + data)
        else:
            out.append((stream, data))
    return out


def read_stream(job_id: str, stream: Stream, start: int = 0, limit: int | None = None) -> bytes:
    """Bytes ``[start, start+limit)`` of a job's stdout or stderr; only overlapping chunks are loaded."""
    end = None if limit is None else start + limit
    return b"".join(iter_stream(job_id, stream, start, end))


def read_combined(job_id: str, limit: int | None = None) -> bytes:
    """Both streams interleaved in the order they were written (the ``output`` view)."""
    out = bytearray()
    cursor = -1
    while True:
        chunks = list(OutputChunk.select().where(OutputChunk.job == job_id, OutputChunk.seq > cursor).order_by(OutputChunk.seq).limit(64))
        if not chunks:
            break
        for chunk in chunks:
            out += _decode(chunk)
            if limit is not None and len(out) >= limit:
                return bytes(out[:limit])
        cursor = chunks[-1].seq
    return bytes(out)
