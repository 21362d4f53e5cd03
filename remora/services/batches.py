"""Batches (a fan-out as an object): the rollout's limits, list, show, cancel, rerun.

A batch's rows change in ``remora.jobstate`` (``record_batch``, ``batch_step``); this module parses
rollouts, renders batches and runs the use-cases, putting released jobs on the queue after the
transaction that released them (the reconciler puts them when that PUT is lost).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
from typing import Any, cast

from remora import jobmessage, jobstate, models
from remora.errors import Conflict, NotFound, QueueError, QueueUnavailable, ValidationError
from remora.executor.base import Stream
from remora.models import Batch, BatchStatus, Job, JobStatus, OutputChunk, Server
from remora.output import decode_chunk
from remora.services.context import Context
from remora.services.render import text

log = logging.getLogger(__name__)

LIMIT = re.compile(r"^\s*(\d{1,9})\s*(%?)\s*$")
HOST_OUTPUT = 64 * 1024  # bytes of each stream per host in ``?output=true``
COUNTED = ("queued", "running", "completed", "failed", "canceled")


def parse_limit(value: Any, name: str, *, minimum: int) -> tuple[int, bool]:
    """``N`` or ``"P%"`` -> (number, is_percent); ValidationError naming the field otherwise."""
    if isinstance(value, bool):
        value = None
    if isinstance(value, int):
        number, percent = value, False
    else:
        match = LIMIT.match(value) if isinstance(value, str) else None
        if match is None:
            raise ValidationError(
                f"invalid rollout: {name} must be a number or a percentage like 25%", details={f"rollout.{name}": "invalid"}
            )
        number, percent = int(match.group(1)), bool(match.group(2))
    if percent and not (minimum <= number <= 100 and (number > 0 or minimum == 0)):
        raise ValidationError(
            f"invalid rollout: {name} must be a percentage between {max(minimum, 1)}% and 100%", details={f"rollout.{name}": "out of range"}
        )
    if not percent and number < minimum:
        raise ValidationError(f"invalid rollout: {name} must be at least {minimum}", details={f"rollout.{name}": "out of range"})
    return number, percent


def check_rollout(rollout: Any) -> dict[str, Any]:
    """A rollout as stored (``{"concurrency": ..., "max_failures": ...}``, unset keys left out); 400 when invalid."""
    if rollout is None:
        return {}
    if not isinstance(rollout, dict):
        raise ValidationError("invalid rollout: must be an object", details={"rollout": "must be an object"})
    unknown = sorted(set(rollout) - {"concurrency", "max_failures"})
    if unknown:
        raise ValidationError(f"invalid rollout: unknown key {unknown[0]!r}", details={"rollout": f"unknown key {unknown[0]}"})
    out: dict[str, Any] = {}
    for name, minimum in (("concurrency", 1), ("max_failures", 0)):
        value = rollout.get(name)
        if value is None:
            continue
        parse_limit(value, name, minimum=minimum)
        out[name] = value
    return out


def resolve(rollout: dict[str, Any], total: int) -> tuple[int | None, int | None]:
    """(concurrency, max_failures) in hosts: percentages of ``total`` rounded up (concurrency at least 1)."""
    resolved: list[int | None] = []
    for name, minimum in (("concurrency", 1), ("max_failures", 0)):
        value = rollout.get(name)
        if value is None:
            resolved.append(None)
            continue
        number, percent = parse_limit(value, name, minimum=minimum)
        resolved.append(max(minimum, math.ceil(number * total / 100)) if percent else number)
    return resolved[0], resolved[1]


def summary(command: str, script: str | None) -> str:
    """What a batch runs, in one line: the command, or the script's first meaningful line."""
    if script is None:
        return command[:1000]
    lines = [line.strip() for line in script.splitlines() if line.strip() and not line.startswith("#!")]
    return ("script: " + (lines[0] if lines else ""))[:1000]


# -- after a transition ---------------------------------------------------------------------------


def apply_step(ctx: Context, step: jobstate.Step) -> None:
    """Put the jobs a step released and drop the messages of the jobs it stopped (the queue may be down)."""
    if ctx.queue is None:
        return
    try:
        if step.released:
            messages = jobmessage.released_messages(step.released, ttr=ctx.settings.queue.worker_timeout, default_queue=ctx.queue_name)
            ctx.queue.put_many([m.put_item() for m in messages])
        for job_id in step.stopped:
            ctx.queue.cancel(job_id)
    except (QueueError, QueueUnavailable, OSError) as exc:
        log.warning("batch: queue unavailable (%s); the reconciler puts released jobs later", exc)
        ctx.put_failed.set()


def step(ctx: Context, batch_id: str | None) -> None:
    if batch_id:
        apply_step(ctx, jobstate.batch_step(batch_id))


# -- reading ----------------------------------------------------------------------------------------


def get_batch(batch_id: str) -> Batch:
    batch = Batch.get_or_none(Batch.id == batch_id)
    if batch is None:
        raise NotFound(f"batch not found: {batch_id}")
    return batch


def _counts(batch_ids: list[str]) -> dict[str, dict[str, int]]:
    out = {bid: dict.fromkeys(COUNTED, 0) for bid in batch_ids}
    for row in Job.select(Job.batch_id, Job.status).where(Job.batch_id.in_(batch_ids)):
        counts = out[str(row.batch_id)]
        counts[row.status] = counts.get(row.status, 0) + 1
    return out


def batch_dict(batch: Batch, counts: dict[str, int], started_at: Any = None) -> dict[str, Any]:
    return {
        "id": batch.id,
        "name": batch.name,
        "command": batch.command,
        "status": batch.status,
        "error": batch.error or "",
        "total": batch.total,
        "counts": counts,
        "rollout": batch.rollout or {},
        "concurrency": batch.concurrency,
        "max_failures": batch.max_failures,
        "parent_id": batch.parent_id,
        "created_at": models.to_rfc3339(batch.created_at),
        "created_by": batch.created_by or "",
        "started_at": models.to_rfc3339(started_at),
        "finished_at": models.to_rfc3339(batch.finished_at),
    }


def list_batches(page: int = 1, limit: int = 50, status: str | None = None) -> dict[str, Any]:
    if status is not None and status not in {s.value for s in BatchStatus}:
        raise ValidationError(f"invalid status: {status}", details={"status": "one of " + ", ".join(s.value for s in BatchStatus)})
    query = Batch.select()
    if status:
        query = query.where(Batch.status == status)
    total = query.count()
    rows = list(query.order_by(Batch.created_at.desc(), Batch.id).paginate(page, limit))
    counts = _counts([b.id for b in rows])
    pages = max(1, -(-total // limit))
    return {
        "batches": [batch_dict(b, counts[b.id]) for b in rows],
        "pagination": {"page": page, "limit": limit, "total": total, "total_pages": pages, "has_next": page < pages, "has_prev": page > 1},
    }


def _outputs(batch_id: str) -> dict[tuple[str, int], bytearray]:
    """The first ``HOST_OUTPUT`` bytes of each stream of every job of the batch, in one query (no query per host)."""
    mine = Job.select(Job.id).where(Job.batch_id == batch_id)
    query = (
        OutputChunk.select(OutputChunk.job, OutputChunk.stream, OutputChunk.offset, OutputChunk.data, OutputChunk.encoding)
        .where(OutputChunk.job.in_(mine), OutputChunk.offset < HOST_OUTPUT)
        .order_by(OutputChunk.job, OutputChunk.stream, OutputChunk.offset)
    )
    out: dict[tuple[str, int], bytearray] = {}
    for chunk in query:
        buf = out.setdefault((str(chunk.__data__["job"]), int(chunk.stream)), bytearray())
        if len(buf) < HOST_OUTPUT:
            buf += decode_chunk(chunk)[: HOST_OUTPUT - len(buf)]
    return out


_HOST_COLUMNS = (
    Job.id,
    Job.server,
    Server.name,
    Job.status,
    Job.exit_code,
    Job.error,
    Job.started_at,
    Job.finished_at,
    Job.stdout_bytes,
    Job.stderr_bytes,
    Job.output_truncated,
)


def batch_detail(batch: Batch, *, output: bool = False) -> dict[str, Any]:
    """The batch with one entry per host: only the columns shown, read as tuples (a batch may have thousands of hosts)."""
    query = Job.select(*_HOST_COLUMNS).join(Server).where(Job.batch_id == batch.id).order_by(Job.created_at, Job.id).tuples()
    rows = cast(list[tuple[Any, ...]], list(query))
    outputs = _outputs(batch.id) if output else {}
    counts = dict.fromkeys(COUNTED, 0)
    hosts = []
    first_start: dt.datetime | None = None
    for job_id, server_id, server_name, status, exit_code, error, started_at, finished_at, stdout_bytes, stderr_bytes, truncated in rows:
        counts[status] = counts.get(status, 0) + 1
        if started_at is not None and (first_start is None or started_at < first_start):
            first_start = started_at
        duration = models.run_seconds(started_at, finished_at)
        host: dict[str, Any] = {
            "server_id": server_id,
            "server_name": server_name,
            "job_id": job_id,
            "status": status,
            "exit_code": exit_code,
            "error": error or "",
            "duration": round(duration, 6) if duration is not None else None,
            "started_at": models.to_rfc3339(started_at),
            "finished_at": models.to_rfc3339(finished_at),
            "stdout_bytes": stdout_bytes or 0,
            "stderr_bytes": stderr_bytes or 0,
        }
        if output:
            out = bytes(outputs.get((job_id, int(Stream.STDOUT)), b""))
            err = bytes(outputs.get((job_id, int(Stream.STDERR)), b""))
            host["stdout"], host["stderr"] = text(out), text(err)
            host["output_truncated"] = bool(truncated) or len(out) < (stdout_bytes or 0) or len(err) < (stderr_bytes or 0)
        hosts.append(host)
    data = batch_dict(batch, counts, first_start)
    data["hosts"] = hosts
    return data


# -- cancel and rerun --------------------------------------------------------------------------------


def cancel_batch(ctx: Context, batch_id: str, actor: str) -> Batch:
    """Cancel every unfinished job of the batch (queued ones at once, running ones by their worker)."""
    batch = get_batch(batch_id)
    if batch.status != BatchStatus.RUNNING.value:
        raise Conflict(f"batch is already {batch.status}", details={"status": batch.status})
    with models.write_transaction():
        Batch.update({Batch.cancel_requested: True, Batch.updated_at: models.utcnow()}).where(Batch.id == batch_id).execute()
    unfinished = Job.select(Job.id).where(Job.batch_id == batch_id, Job.status.in_((JobStatus.QUEUED.value, JobStatus.RUNNING.value)))
    for row in list(unfinished):
        outcome = jobstate.cancel(row.id, actor)
        if outcome in (jobstate.Cancel.CANCELED, jobstate.Cancel.REQUESTED) and ctx.queue is not None:
            try:
                ctx.queue.cancel(row.id)
            except (QueueError, QueueUnavailable, OSError) as exc:
                log.warning("cannot send cancel of job %s to the queue: %s", row.id, exc)
    step(ctx, batch_id)
    return get_batch(batch_id)


def rerun_batch(ctx: Context, batch_id: str, actor: str, *, role: str, only: str = "failed") -> Batch:
    """A new batch (``parent_id`` = this one) of the same job on its failed and canceled hosts, or on all."""
    from remora.services.jobs import copy_spec, create_jobs

    if only not in ("failed", "all"):
        raise ValidationError("only must be 'failed' or 'all'", details={"only": "failed or all"})
    batch = get_batch(batch_id)
    if batch.status == BatchStatus.RUNNING.value:
        raise Conflict("batch is still running: only finished batches can be rerun", details={"status": batch.status})
    jobs = list(Job.select().where(Job.batch_id == batch_id).order_by(Job.created_at, Job.id))
    if only == "failed":
        jobs = [j for j in jobs if j.status in (JobStatus.FAILED.value, JobStatus.CANCELED.value)]
    if not jobs:
        raise Conflict("no failed or canceled hosts to rerun", details={"only": only})
    servers = list(Server.select().where(Server.id.in_([j.server_id for j in jobs])))
    by_id = {s.id: s for s in servers}
    spec = copy_spec(ctx, jobs[0])
    spec.rollout = dict(batch.rollout or {}) or None
    new = create_jobs(
        ctx, spec, [by_id[j.server_id] for j in jobs if j.server_id in by_id], actor, role=role, batch=True, batch_parent=batch_id
    )
    return get_batch(str(new[0].batch_id))
