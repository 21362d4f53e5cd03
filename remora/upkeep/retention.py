"""Retention: compress finished jobs' output and prune old jobs.

``compress_job_output`` rewrites a finished job's chunks as zlib-compressed
runs (consecutive chunks of one stream, up to ``RUN_BYTES`` each), keeping
the write order and every byte offset, so readers (remora.output) serve the
same bytes transparently.  ``prune_jobs`` deletes finished jobs older than a
cut-off with their output.  Both work in small batches so they never hold
the database for long; the API's maintenance loop calls them.
"""

from __future__ import annotations

import datetime as dt
import logging
import zlib

from remora import models, output
from remora.models import FINISHED_STATUSES, Job, OutputChunk

log = logging.getLogger(__name__)

RUN_BYTES = 1024 * 1024
MIN_BYTES = 4096  # smaller outputs are not worth a rewrite
OVERLAP = 60.0  # seconds compress_since looks back past its mark (clock skew between workers)


def compress_job_output(job_id: str) -> bool:
    """Compress one finished job's output in place; True when it was rewritten."""
    job = Job.get_or_none(Job.id == job_id)
    if job is None or job.output_compressed or models.JobStatus(job.status) not in FINISHED_STATUSES:
        return False
    if job.stdout_bytes + job.stderr_bytes < MIN_BYTES:
        Job.update(output_compressed=True).where(Job.id == job_id).execute()
        return False
    chunks = list(OutputChunk.select().where(OutputChunk.job == job_id).order_by(OutputChunk.seq))
    runs: list[dict] = []
    for chunk in chunks:
        data = output._decode(chunk)
        last = runs[-1] if runs else None
        if last and last["stream"] == chunk.stream and len(last["raw"]) + len(data) <= RUN_BYTES:
            last["raw"] += data
        else:
            runs.append({"stream": chunk.stream, "offset": chunk.offset, "raw": bytearray(data)})
    rows = []
    stored_before = sum(len(bytes(c.data)) for c in chunks)
    for seq, run in enumerate(runs):
        packed = zlib.compress(bytes(run["raw"]), 6)
        rows.append(
            {
                "job": job_id,
                "seq": seq,
                "stream": run["stream"],
                "offset": run["offset"],
                "length": len(run["raw"]),
                "data": packed,
                "encoding": output.ENCODING_ZLIB,
                "created_at": models.utcnow(),
            }
        )
    if sum(len(r["data"]) for r in rows) >= stored_before:
        Job.update(output_compressed=True).where(Job.id == job_id).execute()
        return False
    with models.write_transaction():
        OutputChunk.delete().where(OutputChunk.job == job_id).execute()
        for start in range(0, len(rows), 50):
            OutputChunk.insert_many(rows[start : start + 50]).execute()
        Job.update(output_compressed=True).where(Job.id == job_id).execute()
    return True


def compress_finished(limit: int = 50, min_age: float = 5.0) -> int:
    """Compress up to ``limit`` jobs that finished more than ``min_age`` seconds ago."""
    cutoff = models.utcnow() - dt.timedelta(seconds=min_age)
    ids = [
        row.id
        for row in Job.select(Job.id)
        .where(Job.output_compressed == False, Job.status.in_([s.value for s in FINISHED_STATUSES]), Job.finished_at < cutoff)  # noqa: E712
        .limit(limit)
    ]
    done = 0
    for job_id in ids:
        try:
            done += compress_job_output(job_id)
        except models.DatabaseError as exc:
            log.warning("compressing output of job %s failed: %s", job_id, exc)
    return done


def compress_since(since: dt.datetime | None, *, min_age: float = 5.0, limit: int = 200) -> tuple[int, dt.datetime, bool]:
    """Compress jobs finished since ``since`` (by ``updated_at``, which the (status, updated_at) index serves).

    Outputs under ``MIN_BYTES`` are only marked, in one UPDATE.  Returns
    (jobs rewritten, where the next call should start, whether more are
    waiting).  A caller keeps the returned mark between calls so steady state
    never rescans old jobs.
    """
    cutoff = models.utcnow() - dt.timedelta(seconds=min_age)
    finished = [s.value for s in FINISHED_STATUSES]
    query = Job.select(Job.id, Job.updated_at, Job.stdout_bytes, Job.stderr_bytes).where(
        Job.status.in_(finished),
        Job.updated_at < cutoff,
        Job.output_compressed == False,  # noqa: E712
    )
    if since is not None:
        query = query.where(Job.updated_at >= since)
    rows = list(query.order_by(Job.updated_at).limit(limit))
    small = [r.id for r in rows if r.stdout_bytes + r.stderr_bytes < MIN_BYTES]
    if small:
        Job.update(output_compressed=True).where(Job.id.in_(small)).execute()
    done = 0
    for row in rows:
        if row.stdout_bytes + row.stderr_bytes >= MIN_BYTES:
            try:
                done += compress_job_output(row.id)
            except models.DatabaseError as exc:
                log.warning("compressing output of job %s failed: %s", row.id, exc)
                Job.update(output_compressed=True).where(Job.id == row.id).execute()  # do not retry it forever
    if len(rows) == limit:
        return done, rows[-1].updated_at, True
    return done, cutoff - dt.timedelta(seconds=OVERLAP), False


def count_prunable(older_than: float, statuses: list[str] | None = None) -> int:
    """How many jobs ``prune_jobs`` would delete now."""
    wanted = _prunable_statuses(statuses)
    cutoff = models.utcnow() - dt.timedelta(seconds=older_than)
    return Job.select().where(Job.status.in_(sorted(wanted)), Job.finished_at < cutoff).count()


def _prunable_statuses(statuses: list[str] | None) -> set[str]:
    allowed = {s.value for s in FINISHED_STATUSES}
    wanted = set(statuses or allowed)
    bad = wanted - allowed
    if bad:
        from remora.errors import ValidationError

        raise ValidationError(
            f"only finished jobs can be pruned, not {', '.join(sorted(bad))}", details={"status": "must be completed, failed or canceled"}
        )
    return wanted


def prune_jobs(older_than: float, statuses: list[str] | None = None, batch: int = 500) -> int:
    """Delete finished jobs (and their output) that finished more than ``older_than`` seconds ago."""
    wanted = _prunable_statuses(statuses)
    cutoff = models.utcnow() - dt.timedelta(seconds=older_than)
    total = 0
    while True:
        ids = [row.id for row in Job.select(Job.id).where(Job.status.in_(sorted(wanted)), Job.finished_at < cutoff).limit(batch)]
        if not ids:
            return total
        with models.write_transaction():
            OutputChunk.delete().where(OutputChunk.job.in_(ids)).execute()
            total += Job.delete().where(Job.id.in_(ids)).execute()
