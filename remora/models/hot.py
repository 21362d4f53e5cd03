"""The worker's hot statements: SQL built once per database, not per call.

Part of the model layer (peewee lives only in ``remora.models``): claiming,
finishing and writing output run for every job, and peewee's query builder
costs more than the statements themselves, so these compile their SQL once.
"""

from __future__ import annotations

import datetime as dt
import functools
import sqlite3
from collections.abc import Callable
from typing import Any, NamedTuple

import peewee as pw

from remora.models import Job, JobStatus, OutputChunk, database_proxy

# -- the worker's hot statements: SQL built once per database, not per call ---------------
#
# Building a query with peewee costs more CPU than SQLite needs to run it; the
# statements the worker makes for every job are compiled here once (per
# kind of database, per column set) and run with ``execute_sql``.  Values go through
# each field's ``db_value`` and rows through ``python_value``, exactly as
# peewee does.  Callers hold the write transaction.

_COMPILED: dict[tuple, str] = {}


def _compiled(key: tuple, build: Callable[[pw.Database], str]) -> tuple[pw.Database, str]:
    database = database_proxy.obj
    full = (type(database), database.param, *key)
    sql = _COMPILED.get(full)
    if sql is None:
        sql = _COMPILED[full] = build(database)
    return database, sql


def _quote(name: str) -> str:
    return '"' + name + '"'


def _supports_returning(database: pw.Database) -> bool:
    return not isinstance(database, pw.SqliteDatabase) or sqlite3.sqlite_version_info >= (3, 35)


def _job_from_row(fields: tuple[pw.Field, ...], row: tuple) -> Job:
    data = {f.name: (f.python_value(v) if v is not None else None) for f, v in zip(fields, row, strict=True)}
    job = Job(__no_default__=1)
    job.__data__ = data
    return job


@functools.lru_cache(maxsize=64)
def _job_columns(names: tuple[str, ...]) -> tuple[tuple[pw.Field, ...], str]:
    fields = tuple(Job._meta.fields[n] for n in names)
    return fields, ", ".join(_quote(f.column_name) for f in fields)


def claim_job(job_id: str, worker_id: str, now: dt.datetime, fields: tuple[str, ...]) -> tuple[bool, Job | None]:
    """``queued`` -> ``running`` for ``worker_id`` (attempts + 1) if the row is queued and not cancel-requested.

    Returns (claimed, the row's ``fields`` after the update) -- read in the
    same statement where the database supports ``RETURNING``.  When not
    claimed the row is not read: (False, None).  Run it in a write transaction.
    """
    cols, col_sql = _job_columns(fields)

    def build(database: pw.Database) -> str:
        p = database.param
        sql = (
            f'UPDATE "job" SET "status" = {p}, "attempts" = ("attempts" + 1), "worker" = {p}, "started_at" = {p}, '
            f'"finished_at" = NULL, "exit_code" = NULL, "signal" = NULL, "remote_pid" = NULL, "updated_at" = {p} '
            f'WHERE "id" = {p} AND "status" = {p} AND "cancel_requested" = {p}'
        )
        return sql + f" RETURNING {col_sql}" if _supports_returning(database) else sql

    database, sql = _compiled(("claim", fields), build)
    stamp = Job.started_at.db_value(now)
    params = (JobStatus.RUNNING.value, worker_id, stamp, stamp, job_id, JobStatus.QUEUED.value, Job.cancel_requested.db_value(False))
    cursor = database.execute_sql(sql, params)
    if _supports_returning(database):
        rows = cursor.fetchall()
        return (True, _job_from_row(cols, rows[0])) if rows else (False, None)
    if not cursor.rowcount:
        return False, None
    return True, select_job(job_id, fields)


def claim_jobs(job_ids: list[str], worker_id: str, now: dt.datetime, fields: tuple[str, ...]) -> list[Job]:
    """``claim_job`` for many rows in one statement: the rows claimed, with their ``fields`` after the update.

    Rows not queued, or with a cancel requested, are left alone and not returned.  Run it in a write
    transaction.  Without ``RETURNING`` the claimed rows are read back by worker and claim time.
    """
    if not job_ids:
        return []
    cols, col_sql = _job_columns(fields)
    count = len(job_ids)

    def build(database: pw.Database) -> str:
        p = database.param
        marks = ", ".join([p] * count)
        sql = (
            f'UPDATE "job" SET "status" = {p}, "attempts" = ("attempts" + 1), "worker" = {p}, "started_at" = {p}, '
            f'"finished_at" = NULL, "exit_code" = NULL, "signal" = NULL, "remote_pid" = NULL, "updated_at" = {p} '
            f'WHERE "id" IN ({marks}) AND "status" = {p} AND "cancel_requested" = {p}'
        )
        return sql + f" RETURNING {col_sql}" if _supports_returning(database) else sql

    database, sql = _compiled(("claim_many", fields, count), build)
    stamp = Job.started_at.db_value(now)
    params = (JobStatus.RUNNING.value, worker_id, stamp, stamp, *job_ids, JobStatus.QUEUED.value, Job.cancel_requested.db_value(False))
    cursor = database.execute_sql(sql, params)
    if _supports_returning(database):
        return [_job_from_row(cols, row) for row in cursor.fetchall()]
    if not cursor.rowcount:
        return []
    marks = ", ".join([database.param] * count)
    p = database.param
    again = f'SELECT {col_sql} FROM "job" WHERE "id" IN ({marks}) AND "status" = {p} AND "worker" = {p} AND "started_at" = {p}'
    rows = database.execute_sql(again, (*job_ids, JobStatus.RUNNING.value, worker_id, stamp)).fetchall()
    return [_job_from_row(cols, row) for row in rows]


def select_job(job_id: str, fields: tuple[str, ...]) -> Job | None:
    """One job row with only ``fields`` loaded (None when it does not exist)."""
    cols, col_sql = _job_columns(fields)
    database, sql = _compiled(("select", fields), lambda db: f'SELECT {col_sql} FROM "job" WHERE "id" = {db.param}')
    row = database.execute_sql(sql, (job_id,)).fetchone()
    return _job_from_row(cols, row) if row is not None else None


def update_held_job(job_id: str, worker_id: str, attempt: int, values: dict[str, Any]) -> bool:
    """Set ``values`` (field name -> value) on a row ``worker_id`` runs as attempt ``attempt``; False when not ours."""
    names = tuple(values)

    def build(database: pw.Database) -> str:
        p = database.param
        sets = ", ".join(f"{_quote(Job._meta.fields[n].column_name)} = {p}" for n in names)
        return f'UPDATE "job" SET {sets} WHERE "id" = {p} AND "status" = {p} AND "worker" = {p} AND "attempts" = {p}'

    database, sql = _compiled(("held", names), build)
    fields = Job._meta.fields
    params = [None if v is None else fields[n].db_value(v) for n, v in values.items()]
    params += [job_id, JobStatus.RUNNING.value, worker_id, attempt]
    return bool(database.execute_sql(sql, params).rowcount)


def append_output(job_id: str, rows: list[tuple], stdout_bytes: int, stderr_bytes: int, truncated: bool, now: dt.datetime) -> None:
    """Insert output chunks ``(seq, stream, offset, data, encoding)`` and the job's new byte counts.

    Run it in a write transaction.
    """

    def build_insert(database: pw.Database) -> str:
        p = database.param
        return (
            'INSERT INTO "output_chunk" ("job_id", "seq", "stream", "offset", "length", "data", "encoding", "created_at") '
            f"VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p})"
        )

    def build_update(database: pw.Database) -> str:
        p = database.param
        return f'UPDATE "job" SET "stdout_bytes" = {p}, "stderr_bytes" = {p}, "output_truncated" = {p}, "updated_at" = {p} WHERE "id" = {p}'

    database, insert = _compiled(("chunk",), build_insert)
    _, update = _compiled(("counts",), build_update)
    stamp = OutputChunk.created_at.db_value(now)
    blob = OutputChunk.data.db_value
    for seq, stream, offset, data, encoding in rows:
        database.execute_sql(insert, (job_id, seq, stream, offset, len(data), blob(data), encoding, stamp))
    database.execute_sql(update, (stdout_bytes, stderr_bytes, Job.output_truncated.db_value(truncated), stamp, job_id))


def last_output_seq(job_id: str) -> int | None:
    """The highest chunk ``seq`` of a job (None when it has no output)."""
    database, sql = _compiled(("last_seq",), lambda db: f'SELECT MAX("seq") FROM "output_chunk" WHERE "job_id" = {db.param}')
    row = database.execute_sql(sql, (job_id,)).fetchone()
    return None if row is None or row[0] is None else int(row[0])


class BatchState(NamedTuple):
    """A batch's columns a step looks at, and what its jobs are (see ``batch_state``)."""

    status: str
    concurrency: int | None
    max_failures: int | None
    total: int
    cancel_requested: bool
    failed: int  # failed jobs, counted only when max_failures is set (else 0)
    queued: bool  # any job queued
    held: bool  # any queued job held back by the rollout
    unfinished: bool  # any job queued or running


def batch_state(batch_id: str) -> BatchState | None:
    """What ``jobstate`` needs to know whether a batch's step would change anything, in one statement.

    None when there is no such batch.  Every job end of a fan-out asks this.
    """

    def build(database: pw.Database) -> str:
        p = database.param
        mine = f'FROM "job" WHERE "batch_id" = {p} AND "status"'
        return (
            'SELECT b."status", b."concurrency", b."max_failures", b."total", b."cancel_requested", '
            f'CASE WHEN b."max_failures" IS NULL THEN 0 ELSE (SELECT COUNT(*) {mine} = {p}) END, '
            f"EXISTS (SELECT 1 {mine} = {p}), "
            f'EXISTS (SELECT 1 {mine} = {p} AND "held" = {p}), '
            f"EXISTS (SELECT 1 {mine} IN ({p}, {p})) "
            f'FROM "batch" b WHERE b."id" = {p}'
        )

    database, sql = _compiled(("batch_state",), build)
    queued, running = JobStatus.QUEUED.value, JobStatus.RUNNING.value
    is_held = Job.held.db_value(True)
    params = (batch_id, JobStatus.FAILED.value, batch_id, queued, batch_id, queued, is_held, batch_id, queued, running, batch_id)
    row = database.execute_sql(sql, params).fetchone()
    if row is None:
        return None
    status, concurrency, max_failures, total, cancel_requested, failed, any_queued, any_held, unfinished = row
    return BatchState(
        status,
        concurrency,
        max_failures,
        int(total or 0),
        bool(cancel_requested),
        int(failed or 0),
        bool(any_queued),
        bool(any_held),
        bool(unfinished),
    )
