"""Live output on the change feed (``GET /api/v1/events?output=true``).

Besides the status changes of ``remora.services.events``, the feed then
carries ``output`` events: a piece of a job's stdout or stderr with its byte
``offset`` in that stream, in order per job and stream.

Where a client is, is all in its cursor: the change cursor, then ``~`` and,
for each job that is running in the client's view and has printed, the next
byte of its stdout and of its stderr (``C~<job ref>:<stdout>:<stderr>,...``,
a job ref being the first 12 hex digits of its id).  A job's final status
event always comes after all of its output, so a job leaves the cursor with
it; a job not in the cursor is read from its first byte.  Resuming from a
cursor therefore loses and repeats nothing, whatever process answers.

A job's stdout and stderr pieces come in the order it wrote them (the chunks'
sequence), so a combined view can be built from them.

Each wake costs one query for the status changes, one for the filter's
running jobs (and the jobs those changes name) with their byte counts, and,
only when some have new bytes, one for the new chunks of all of them.  What
one answer carries is bounded (``MAX_EVENT_BYTES`` per event,
``MAX_RESPONSE_BYTES`` per answer); the rest follows in the next one, and a
job's final status waits until its output is out.
"""

from __future__ import annotations

import base64
import dataclasses
import re
from collections.abc import Iterable
from typing import Any

from remora import models
from remora.errors import ValidationError
from remora.executor.base import Stream
from remora.models import Job, JobStatus, OutputChunk
from remora.output import decode_chunk
from remora.services import events
from remora.services.queries import _utf8_cut

REF_LEN = 12  # hex digits of a job id naming it in a cursor
MAX_EVENT_BYTES = 64 * 1024  # output bytes per event
MAX_RESPONSE_BYTES = 1024 * 1024  # output bytes per answer (a long-poll answer, one write of a stream)
MAX_POSITIONS = 20000  # jobs a cursor may carry positions for
_CONDITIONS = 100  # job streams per chunk query (bound parameters stay well under any database's limit)
_ENTRY = re.compile(r"^([0-9a-f]{12}):(\d{1,18}):(\d{1,18})$")  # REF_LEN hex digits
STREAMS = ((Stream.STDOUT, "stdout"), (Stream.STDERR, "stderr"))


@dataclasses.dataclass
class Cursor:
    change: int
    positions: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)  # job ref -> (stdout, stderr) next bytes

    def __str__(self) -> str:
        if not self.positions:
            return str(self.change)
        entries = ",".join(f"{ref}:{out}:{err}" for ref, (out, err) in sorted(self.positions.items()))
        return f"{self.change}~{entries}"


def ref(job_id: str) -> str:
    return job_id.replace("-", "")[:REF_LEN].lower()


def parse_cursor(raw: str | None) -> Cursor | None:
    """A cursor of the output feed: None (from now), else the change cursor and the positions; 400 for anything malformed."""
    if raw is None or raw.strip() == "":
        return None
    head, sep, tail = raw.strip().partition("~")
    change = events.parse_cursor(head)
    if change is None:
        raise ValidationError("invalid cursor: use the cursor of a previous answer, or 0", details={"cursor": "invalid"})
    positions: dict[str, tuple[int, int]] = {}
    for entry in tail.split(",") if sep else ():
        match = _ENTRY.match(entry)
        if match is None:
            raise ValidationError("invalid cursor: use the cursor of a previous answer, or 0", details={"cursor": "invalid position"})
        positions[match.group(1)] = (int(match.group(2)), int(match.group(3)))
    if len(positions) > MAX_POSITIONS:
        raise ValidationError(f"invalid cursor: more than {MAX_POSITIONS} positions", details={"cursor": "too long"})
    return Cursor(change, positions)


@dataclasses.dataclass
class _Range:
    job_id: str
    batch_id: str | None
    stream: Stream
    start: int
    end: int  # exclusive: what this answer reads
    length: int  # the stream's stored length
    final: bool  # the job is in a final state (nothing more will be written)


def _candidates(filters: events.Filters, changed: Iterable[str]) -> list[Any]:
    """The filter's running jobs and the jobs these changes name, with their byte counts (one query).

    Written as ``(filter AND running) OR (filter AND id IN changed)`` so each side has its index
    (``job (batch_id, status)``, the primary key): a batch's finished and queued jobs are not read.
    """
    selected = Job.batch_id == filters.batch_id if filters.batch_id is not None else Job.id.in_(list(filters.job_ids))
    if filters.batch_id is not None and filters.job_ids:
        selected = selected & Job.id.in_(list(filters.job_ids))
    wanted = selected & (Job.status == JobStatus.RUNNING.value)
    ids = list(dict.fromkeys(changed))
    if ids:
        wanted = wanted | (selected & Job.id.in_(ids))
    query = Job.select(Job.id, Job.batch_id, Job.status, Job.stdout_bytes, Job.stderr_bytes).where(wanted)
    return list(query.order_by(Job.id))


def _load(ranges: list[_Range]) -> dict[tuple[str, int], list[Any]]:
    """The chunks covering every range, by (job, stream), in offset order: one query per ``_CONDITIONS`` ranges.

    Each range starts at the chunk holding its first byte (the last chunk starting at or before it, an
    index seek), so however much a job printed before, only the chunks of the new bytes are read.
    """
    found: dict[tuple[str, int], list[Any]] = {}
    for first in range(0, len(ranges), _CONDITIONS):
        condition = None
        for r in ranges[first : first + _CONDITIONS]:
            holder = OutputChunk.alias()
            start = (
                holder.select(holder.offset)
                .where(holder.job == r.job_id, holder.stream == int(r.stream), holder.offset <= r.start)
                .order_by(holder.offset.desc())
                .limit(1)
            )
            one = (
                (OutputChunk.job == r.job_id)
                & (OutputChunk.stream == int(r.stream))
                & (OutputChunk.offset >= models.fn.COALESCE(start, 0))
                & (OutputChunk.offset < r.end)
            )
            condition = one if condition is None else condition | one
        query = OutputChunk.select().where(condition).order_by(OutputChunk.job, OutputChunk.stream, OutputChunk.offset)
        for chunk in query:
            found.setdefault((str(chunk.job_id), int(chunk.stream)), []).append(chunk)  # type: ignore[attr-defined]
    return found


def _slices(r: _Range, chunks: list[Any]) -> list[tuple[int, _Range, bytes]]:
    """(chunk seq, range, bytes) covering ``[r.start, r.end)`` from its first byte on, as long as they follow each other."""
    out = []
    at = r.start
    for chunk in chunks:
        data = decode_chunk(chunk)
        lo, hi = max(at - chunk.offset, 0), min(len(data), r.end - chunk.offset)
        if hi <= lo:
            continue
        if chunk.offset + lo != at:
            break
        out.append((int(chunk.seq), r, data[lo:hi]))
        at += hi - lo
    return out


def _is_text(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _split(data: bytes) -> tuple[list[tuple[bytes, bool]], bytes]:
    """``data`` as (bytes, is_text) pieces of at most MAX_EVENT_BYTES cut between characters, and the bytes of a
    character split at its end (left over: its other bytes are still to come)."""
    out: list[tuple[bytes, bool]] = []
    pos = 0
    while pos < len(data):
        piece = data[pos : pos + MAX_EVENT_BYTES]
        if not _is_text(piece):
            cut = _utf8_cut(piece)
            if cut != piece and _is_text(cut):  # text but for a character split at the end
                if not cut:
                    return out, data[pos:]
                piece = cut
        out.append((piece, _is_text(piece)))
        pos += len(piece)
    return out, b""


def _event(r: _Range, offset: int, data: bytes, text: bool) -> dict[str, Any]:
    event: dict[str, Any] = {
        "kind": "output",
        "job_id": r.job_id,
        "batch_id": r.batch_id,
        "stream": "stdout" if r.stream == Stream.STDOUT else "stderr",
        "offset": offset,
        "length": len(data),
        "data": data.decode("utf-8") if text else base64.b64encode(data).decode("ascii"),
    }
    if not text:
        event["encoding"] = "base64"
    return event


class _Reader:
    """One answer's output: reads the ranges in order within the byte budget and moves the positions."""

    def __init__(self, cursor: Cursor, budget: int) -> None:
        self.positions = dict(cursor.positions)
        self.budget = budget

    def ranges(self, job: Any) -> list[_Range]:
        start = self.positions.get(ref(job.id), (0, 0))
        lengths = (int(job.stdout_bytes or 0), int(job.stderr_bytes or 0))
        final = JobStatus(job.status).finished
        return [
            _Range(job.id, job.batch_id, stream, start[i], lengths[i], lengths[i], final)
            for i, (stream, _) in enumerate(STREAMS)
            if lengths[i] > start[i]
        ]

    def read(self, ranges: list[_Range]) -> tuple[list[dict[str, Any]], bool]:
        """Output events for one job's ranges (budget permitting), stdout and stderr in the order the job wrote
        them (the chunks' sequence), and whether all of them were read to their end."""
        planned: list[_Range] = []
        for r in ranges:
            if self.budget <= 0:
                break
            r.end = min(r.length, r.start + self.budget)
            self.budget -= r.end - r.start
            planned.append(r)
        chunks = _load(planned) if planned else {}
        ordered = sorted((s for r in planned for s in _slices(r, chunks.get((r.job_id, int(r.stream))) or [])), key=lambda s: s[0])
        slices: list[tuple[int, _Range, bytes]] = []
        for seq, r, data in ordered:  # consecutive chunks of one stream make one piece
            if slices and slices[-1][1] is r:
                slices[-1] = (slices[-1][0], r, slices[-1][2] + data)
            else:
                slices.append((seq, r, data))
        offsets = {int(r.stream): r.start for r in planned}
        carry = {int(r.stream): b"" for r in planned}
        out: list[dict[str, Any]] = []
        for _, r, data in slices:
            key = int(r.stream)
            pieces, carry[key] = _split(carry[key] + data)
            for piece, text in pieces:
                out.append(_event(r, offsets[key], piece, text))
                offsets[key] += len(piece)
        for r in planned:  # a stream that ends with a broken character: nothing more will come, send its bytes
            key = int(r.stream)
            if carry[key] and r.final and r.end == r.length:
                out.append(_event(r, offsets[key], carry[key], False))
                offsets[key] += len(carry[key])
        complete = len(planned) == len(ranges)
        for r in planned:
            old = self.positions.get(ref(r.job_id), (0, 0))
            new = offsets[int(r.stream)]
            self.positions[ref(r.job_id)] = (new, old[1]) if r.stream == Stream.STDOUT else (old[0], new)
            complete = complete and new >= r.length
        return out, complete


FINAL = frozenset(s.value for s in JobStatus if s.finished)


def read(cursor: Cursor, filters: events.Filters, budget: int = MAX_RESPONSE_BYTES) -> tuple[list[dict[str, Any]], Cursor]:
    """Status changes and output events after ``cursor`` that match ``filters``, and the cursor after them.

    A job's output up to its final status comes before that status; when the budget ends first, the
    answer ends there (the change cursor stays before that status) and the next one goes on.
    """
    changes, after = events.read(cursor.change, filters)
    jobs = {job.id: job for job in _candidates(filters, (e["job_id"] for e in changes if e["kind"] == "job"))}
    reader = _Reader(cursor, budget)
    found: list[dict[str, Any]] = []
    change = cursor.change
    for event in changes:
        job = jobs.get(event.get("job_id") or "") if event["kind"] == "job" else None
        if job is not None and event["status"] in FINAL:
            output, complete = reader.read(reader.ranges(job))
            found += output
            if not complete:
                return found, Cursor(change, reader.positions)
            reader.positions.pop(ref(job.id), None)
        found.append(event)
        change = int(event["id"])
    for job in jobs.values():
        if reader.budget <= 0:
            break
        if JobStatus(job.status) == JobStatus.RUNNING:
            found += reader.read(reader.ranges(job))[0]
    return found, Cursor(after, reader.positions)


def wait(cursor: Cursor, filters: events.Filters, timeout: float, *, stop: Any = None) -> tuple[list[dict[str, Any]], Cursor]:
    """``read``, waiting up to ``timeout`` seconds for the first event (woken by changes and output written here)."""
    return events.wait(cursor, filters, timeout, stop=stop, reader=read, output=True)
