"""Read use-cases: job lists (filters, search, sort, pages), logs by byte range, statistics.

Lists are one query for the page (jobs joined with their server: no N+1)
plus one COUNT; output bodies are never loaded for a list.  Logs are read by
byte range from ``remora.output`` so a 64 MiB job is never loaded at once.
"""

from __future__ import annotations

import codecs
import dataclasses
import datetime as dt
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from remora import models
from remora.errors import ValidationError
from remora.executor.base import Stream
from remora.models import FINISHED_STATUSES, Job, JobStatus, OutputChunk, Server
from remora.output import decode_chunk, read_combined, read_interleaved, read_stream
from remora.services.render import job_dict, text

SORT_FIELDS = ("created_at", "updated_at", "started_at", "finished_at", "priority", "status", "name", "command", "exit_code")
MAX_PAGE = 1_000_000_000
LOG_SLICE = 1024 * 1024  # bytes per stream per /logs answer unless ?max_bytes=
MAX_LOG_SLICE = 8 * 1024 * 1024
DETAIL_BODY = 256 * 1024  # bytes of each stream a job's detail view carries
# search_output=true is bounded: it looks at the first SEARCH_OUTPUT_BYTES of each stream of the
# SEARCH_OUTPUT_JOBS newest jobs (with output) that match the other filters.
SEARCH_OUTPUT_JOBS = 500
SEARCH_OUTPUT_BYTES = 16 * 1024
MAX_EXIT_CODE = 255


@dataclass
class JobFilters:
    page: int = 1
    limit: int = 20
    status: list[str] = field(default_factory=list)
    server_id: str | None = None
    batch_id: str | None = None
    search: str | None = None
    id_prefix: str | None = None
    sort_by: str = "created_at"
    sort_order: str = "desc"
    search_output: bool = False
    created_after: dt.datetime | None = None
    created_before: dt.datetime | None = None
    exit_code: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": ",".join(self.status) or None,
            "server_id": self.server_id,
            "batch_id": self.batch_id,
            "search": self.search,
            "search_output": self.search_output,
            "created_after": models.to_rfc3339(self.created_after),
            "created_before": models.to_rfc3339(self.created_before),
            "exit_code": self.exit_code,
            "id_prefix": self.id_prefix,
            "sort_by": self.sort_by,
            "sort_order": self.sort_order,
        }


def _int_arg(args: dict[str, str | None], name: str, default: int, lo: int, hi: int) -> int:
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValidationError(f"{name} must be an integer", details={name: "must be an integer"}) from None
    if not lo <= value <= hi:
        raise ValidationError(f"{name} must be between {lo} and {hi}", details={name: f"must be between {lo} and {hi}"})
    return value


def _time_arg(args: dict[str, str | None], name: str) -> dt.datetime | None:
    """An RFC 3339 timestamp (``2026-01-31T12:00:00Z``, an offset, or a date) as naive UTC."""
    raw = (args.get(name) or "").strip()
    if not raw:
        return None
    try:
        value = dt.datetime.fromisoformat(raw.replace("z", "Z"))
    except ValueError:
        raise ValidationError(
            f"{name} must be an RFC 3339 timestamp", details={name: "must be an RFC 3339 timestamp such as 2026-01-31T12:00:00Z"}
        ) from None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _bool_arg(args: dict[str, str | None], name: str) -> bool:
    raw = (args.get(name) or "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise ValidationError(f"{name} must be true or false", details={name: "must be true or false"})


def parse_filters(args: dict[str, str | None]) -> JobFilters:
    """Query parameters -> JobFilters; out-of-range values are errors, never silently clamped."""
    statuses = [s.strip() for s in (args.get("status") or "").split(",") if s.strip()]
    valid = {s.value for s in JobStatus}
    bad = [s for s in statuses if s not in valid]
    if bad:
        raise ValidationError(f"unknown status {bad[0]!r}", details={"status": "must be one of " + ", ".join(sorted(valid))})
    sort_by = args.get("sort_by") or "created_at"
    if sort_by not in SORT_FIELDS:
        raise ValidationError(f"cannot sort by {sort_by!r}", details={"sort_by": "must be one of " + ", ".join(SORT_FIELDS)})
    sort_order = (args.get("sort_order") or "desc").lower()
    if sort_order not in ("asc", "desc"):
        raise ValidationError("sort_order must be asc or desc", details={"sort_order": "must be asc or desc"})
    search = (args.get("search") or "").strip() or None
    if search and len(search) > 200:
        raise ValidationError("search is too long", details={"search": "must be at most 200 characters"})
    id_prefix = (args.get("id_prefix") or "").strip().lower() or None
    if id_prefix and not re.fullmatch(r"[0-9a-f-]{1,36}", id_prefix):
        raise ValidationError("id_prefix must be the start of a job id", details={"id_prefix": "must be hexadecimal digits and dashes"})
    created_after, created_before = _time_arg(args, "created_after"), _time_arg(args, "created_before")
    if created_after and created_before and created_after > created_before:
        raise ValidationError("created_after is later than created_before", details={"created_after": "must not be after created_before"})
    exit_code = None if (args.get("exit_code") or "").strip() == "" else _int_arg(args, "exit_code", 0, -MAX_EXIT_CODE, MAX_EXIT_CODE)
    return JobFilters(
        search_output=_bool_arg(args, "search_output"),
        created_after=created_after,
        created_before=created_before,
        exit_code=exit_code,
        page=_int_arg(args, "page", 1, 1, MAX_PAGE),
        limit=_int_arg(args, "limit", 20, 1, 100),
        status=statuses,
        server_id=args.get("server_id") or None,
        batch_id=args.get("batch_id") or None,
        search=search,
        id_prefix=id_prefix,
        sort_by=sort_by,
        sort_order=sort_order,
    )


def _contains(column: Any, needle: str) -> Any:
    """Case-insensitive substring test without LIKE wildcards (user text is literal)."""
    position = models.fn.strpos if models.is_postgres() else models.fn.instr
    return position(models.fn.LOWER(column), needle.lower()) > 0


def _where(query: Any, f: JobFilters, *, joined: bool, output_ids: list[str] | None = None) -> Any:
    if f.status:
        query = query.where(Job.status.in_(f.status))
    if f.server_id:
        query = query.where(Job.server == f.server_id)
    if f.batch_id:
        query = query.where(Job.batch_id == f.batch_id)
    if f.id_prefix:
        # A range on the primary key, so the index answers it (ids are lower-case text).
        query = query.where(Job.id >= f.id_prefix, Job.id < f.id_prefix + "\uffff")
    if f.created_after is not None:
        query = query.where(Job.created_at >= f.created_after)
    if f.created_before is not None:
        query = query.where(Job.created_at < f.created_before)
    if f.exit_code is not None:
        query = query.where(Job.exit_code == f.exit_code)
    if f.search:
        cond = _contains(Job.command, f.search) | _contains(Job.args, f.search) | _contains(models.fn.COALESCE(Job.name, ""), f.search)
        if joined:
            cond = cond | _contains(Server.name, f.search)
        if output_ids:  # search_output: jobs whose output holds the text (see _jobs_with_output_text)
            cond = cond | Job.id.in_(output_ids)
        query = query.where(cond)
    return query


def _jobs_with_output_text(f: JobFilters) -> list[str]:
    """Ids of jobs whose output contains ``f.search`` (case-insensitive), within the documented bound.

    Only the ``SEARCH_OUTPUT_JOBS`` newest jobs with output that match the
    other filters are looked at, and only the first ``SEARCH_OUTPUT_BYTES`` of
    each of their streams: two queries, however large the table.
    """
    assert f.search
    others = dataclasses.replace(f, search=None, search_output=False)
    candidates = [
        row[0]
        for row in _where(Job.select(Job.id), others, joined=False)
        .where((Job.stdout_bytes > 0) | (Job.stderr_bytes > 0))
        .order_by(Job.created_at.desc())
        .limit(SEARCH_OUTPUT_JOBS)
        .tuples()
    ]
    if not candidates:
        return []
    needle = f.search.lower().encode()
    texts: dict[str, dict[int, bytearray]] = {}
    chunks: Any = (
        OutputChunk.select(OutputChunk.job, OutputChunk.stream, OutputChunk.data, OutputChunk.encoding)
        .where(OutputChunk.job.in_(candidates), OutputChunk.offset < SEARCH_OUTPUT_BYTES)
        .order_by(OutputChunk.job, OutputChunk.stream, OutputChunk.offset)
    )
    for chunk in chunks:
        buf = texts.setdefault(str(chunk.job_id), {}).setdefault(int(chunk.stream), bytearray())
        if len(buf) < SEARCH_OUTPUT_BYTES:
            buf += decode_chunk(chunk)[: SEARCH_OUTPUT_BYTES - len(buf)]
    return [job_id for job_id, streams in texts.items() if any(needle in bytes(b).lower() for b in streams.values())]


def list_jobs(f: JobFilters) -> tuple[list[dict[str, Any]], int]:
    """One page of jobs (with their server, without output) and the total matching."""
    column = getattr(Job, f.sort_by)
    order = [column.desc() if f.sort_order == "desc" else column.asc()]
    if f.sort_by != "created_at":
        order.append(Job.created_at.desc())
    order.append(Job.id.desc() if f.sort_order == "desc" else Job.id.asc())
    page_query = Job.select(Job, Server.id, Server.name, Server.hostname).join(Server)
    output_ids = _jobs_with_output_text(f) if f.search and f.search_output else None
    page_query = _where(page_query, f, joined=True, output_ids=output_ids).order_by(*order).limit(f.limit).offset((f.page - 1) * f.limit)
    jobs = [job_dict(job, job.server) for job in page_query]
    count_query = Job.select(models.fn.COUNT(models.SQL("*")))
    if f.search:
        count_query = count_query.join(Server)
    total = int(_where(count_query, f, joined=bool(f.search), output_ids=output_ids).scalar() or 0)
    return jobs, total


def pagination(f: JobFilters, total: int) -> dict[str, Any]:
    pages = max(1, -(-total // f.limit))
    return {"page": f.page, "limit": f.limit, "total": total, "total_pages": pages, "has_next": f.page < pages, "has_prev": f.page > 1}


def change_marker() -> str:
    """A cheap marker of the job and server tables' state: ETags of lists derive from it.

    One statement: MAX(job.updated_at) is one lookup at the end of its index;
    COUNT(*) (which catches deletions) counts the smallest index's entries
    (SQLite counts b-tree pages without reading rows: ~0.15 ms for 100,000
    jobs); the server table is small.  Every job write sets updated_at.
    """
    row = Server.select(
        Job.select(models.fn.MAX(Job.updated_at)),
        Job.select(models.fn.COUNT(models.SQL("*"))),
        models.fn.MAX(Server.updated_at),
        models.fn.COUNT(models.SQL("*")),
    ).tuples()[0]
    return hashlib.sha1(repr(row).encode()).hexdigest()[:20]


def _utf8_cut(data: bytes) -> bytes:
    """Drop an incomplete UTF-8 sequence at the end so the next slice starts on a character."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:  # continuation byte: keep looking for the lead byte
            continue
        need = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4 if byte & 0xF8 == 0xF0 else 1
        return data[:-back] if need > back else data
    return data


def _pieces(job_id: str, ranges: dict[Stream, tuple[int, int]]) -> list[dict[str, str]]:
    """The returned slices of both streams as ordered {stream, text} pieces (the combined view's order)."""
    decoders = {s: codecs.getincrementaldecoder("utf-8")(errors="replace") for s in ranges}
    out = []
    for stream, data in read_interleaved(job_id, ranges):
        piece = decoders[stream].decode(data)  # a character split across chunks is completed by the next piece
        if piece:
            out.append({"stream": "stdout" if stream == Stream.STDOUT else "stderr", "text": piece})
    return out


def job_logs(job: Job, stdout_offset: int | None, stderr_offset: int | None, max_bytes: int = LOG_SLICE) -> dict[str, Any]:
    """Logs of a job: everything (up to ``max_bytes`` per stream) or what follows the given byte offsets."""
    incremental = stdout_offset is not None or stderr_offset is not None
    finished = JobStatus(job.status).finished
    lengths = {Stream.STDOUT: int(job.stdout_bytes or 0), Stream.STDERR: int(job.stderr_bytes or 0)}
    starts = {
        Stream.STDOUT: min(stdout_offset or 0, lengths[Stream.STDOUT]),
        Stream.STDERR: min(stderr_offset or 0, lengths[Stream.STDERR]),
    }
    slices = {}
    for stream in (Stream.STDOUT, Stream.STDERR):
        data = read_stream(job.id, stream, starts[stream], max_bytes) if starts[stream] < lengths[stream] else b""
        if starts[stream] + len(data) < lengths[stream] or not finished:
            data = _utf8_cut(data)
        slices[stream] = data
    nexts = {s: starts[s] + len(slices[s]) for s in slices}
    complete = finished and all(nexts[s] >= lengths[s] for s in nexts)
    stdout, stderr = text(slices[Stream.STDOUT]), text(slices[Stream.STDERR])
    pieces = _pieces(job.id, {s: (starts[s], nexts[s]) for s in slices})
    if incremental:
        output = "".join(p["text"] for p in pieces)
    else:
        output = text(_utf8_cut(read_combined(job.id, limit=2 * max_bytes)))
    return {
        "job_id": job.id,
        "status": job.status,
        "stdout": stdout,
        "stderr": stderr,
        "output": output,
        "pieces": pieces,
        "exit_code": job.exit_code,
        "error": job.error or "",
        "started_at": models.to_rfc3339(job.started_at),
        "finished_at": models.to_rfc3339(job.finished_at),
        "duration": job.duration,
        "stdout_offset": starts[Stream.STDOUT],
        "stderr_offset": starts[Stream.STDERR],
        "next_stdout_offset": nexts[Stream.STDOUT],
        "next_stderr_offset": nexts[Stream.STDERR],
        "complete": complete,
        "output_truncated": bool(job.output_truncated),
        "metadata": {
            "stdout_length": lengths[Stream.STDOUT],
            "stderr_length": lengths[Stream.STDERR],
            "has_output": lengths[Stream.STDOUT] > 0,
            "has_errors": lengths[Stream.STDERR] > 0,
        },
    }


def job_detail(job: Job) -> dict[str, Any]:
    """A job with its server and output bodies (the first ``DETAIL_BODY`` bytes of each stream)."""
    server = Server.get_or_none(Server.id == job.server_id)
    data = job_dict(job, server)
    out = read_stream(job.id, Stream.STDOUT, 0, DETAIL_BODY) if job.stdout_bytes else b""
    err = read_stream(job.id, Stream.STDERR, 0, DETAIL_BODY) if job.stderr_bytes else b""
    combined = read_combined(job.id, limit=2 * DETAIL_BODY) if (job.stdout_bytes or job.stderr_bytes) else b""
    data["stdout"], data["stderr"], data["output"] = text(out), text(err), text(combined)
    data["bodies_truncated"] = len(out) < (job.stdout_bytes or 0) or len(err) < (job.stderr_bytes or 0)
    return data


def counts_by_status() -> dict[str, int]:
    rows: Any = Job.select(Job.status, models.fn.COUNT(Job.id)).group_by(Job.status).tuples()
    counts = {s.value: 0 for s in JobStatus}
    for status, count in rows:
        counts[status] = int(count)
    return counts


def finished_recently(window: float) -> dict[str, int]:
    """Jobs per finished status whose ``finished_at`` lies within the last ``window`` seconds (zeros included)."""
    cutoff = models.utcnow() - dt.timedelta(seconds=window)
    finished = [s.value for s in JobStatus if s.finished]
    counts = dict.fromkeys(finished, 0)
    query: Any = (
        Job.select(Job.status, models.fn.COUNT(Job.id))
        .where(Job.status.in_(finished), Job.updated_at >= cutoff, Job.finished_at >= cutoff)
        .group_by(Job.status)
        .tuples()
    )
    for status, count in query:
        counts[status] = int(count)
    return counts


def _duration_expr() -> Any:
    if models.is_postgres():
        return models.fn.date_part("epoch", Job.finished_at - Job.started_at)
    return (models.fn.julianday(Job.finished_at) - models.fn.julianday(Job.started_at)) * 86400.0


def job_duration_buckets(bounds: tuple[float, ...]) -> tuple[list[int], float, int]:
    """(cumulative counts of finished jobs' run times per bound, sum, count), in one query."""
    duration = _duration_expr()
    columns = [models.fn.SUM(models.Case(None, [(duration <= bound, 1)], 0)) for bound in bounds]
    columns += [models.fn.SUM(duration), models.fn.COUNT(Job.id)]
    finished = [s.value for s in JobStatus if s.finished]
    row = (
        Job.select(*columns).where(Job.status.in_(finished), Job.started_at.is_null(False), Job.finished_at.is_null(False)).tuples().first()
    )
    if not row:
        return [0] * len(bounds), 0.0, 0
    counts = [int(v or 0) for v in row[: len(bounds)]]
    return counts, float(row[-2] or 0.0), int(row[-1] or 0)


def system_info() -> dict[str, Any]:
    counts = counts_by_status()
    total = sum(counts.values())
    finished = counts["completed"] + counts["failed"]
    return {
        "total_jobs": total,
        "queued_jobs": counts["queued"],
        "running_jobs": counts["running"],
        "completed_jobs": counts["completed"],
        "failed_jobs": counts["failed"],
        "canceled_jobs": counts["canceled"],
        "total_servers": Server.select().count(),
        "active_servers": Server.select().where(Server.is_active == True).count(),  # noqa: E712
        "success_rate": round(counts["completed"] / finished * 100, 2) if finished else 0,
        "timestamp": models.to_rfc3339(models.utcnow()),
    }


MAX_TIMELINE_MINUTES = 24 * 60


def _minute_of(column: Any) -> Any:
    """SQL for the UTC minute of a timestamp column as ``YYYY-MM-DDTHH:MM`` (same text on both databases)."""
    if models.is_postgres():
        return models.fn.to_char(column, 'YYYY-MM-DD"T"HH24:MI').coerce(False)  # text, not the column's datetime
    return models.fn.strftime("%Y-%m-%dT%H:%M", column).coerce(False)


def timeline(minutes: int = 60, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Finished jobs per minute (completed, failed, canceled) over the last ``minutes`` minutes, oldest first.

    One GROUP BY query.  Every write that sets ``finished_at`` sets
    ``updated_at`` to the same time or later, so ``updated_at >= start`` is a
    superset that lets the (status, updated_at) index find the rows of the
    window without scanning the table; ``finished_at`` then decides.
    """
    now = now or models.utcnow()
    start = now.replace(second=0, microsecond=0) - dt.timedelta(minutes=minutes - 1)
    finished = sorted(s.value for s in FINISHED_STATUSES)
    minute = _minute_of(Job.finished_at)
    rows: Any = (
        Job.select(minute, Job.status, models.fn.COUNT(models.SQL("*")))
        .where(Job.status.in_(finished), Job.updated_at >= start, Job.finished_at >= start)
        .group_by(minute, Job.status)
        .tuples()
    )
    buckets: dict[str, dict[str, Any]] = {}
    for i in range(minutes):
        at = start + dt.timedelta(minutes=i)
        buckets[at.strftime("%Y-%m-%dT%H:%M")] = {"t": at.strftime("%Y-%m-%dT%H:%M:00Z"), **dict.fromkeys(finished, 0)}
    for key, status, count in rows:
        bucket = buckets.get(str(key))
        if bucket is not None:  # a clock ahead of ours may have finished a job "in the future"
            bucket[status] += int(count)
    return list(buckets.values())
