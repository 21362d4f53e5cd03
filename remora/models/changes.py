"""The change feed's writes: one ``Change`` row per job or batch status transition.

``remora.jobstate`` calls ``job_changes`` / ``batch_change`` inside the write
transaction of each transition, so a change row exists exactly when the
transition committed.  The rows are read by ``remora.services.events``
(``id > cursor``).  Ids must become visible in id order for a cursor to never
skip a row: SQLite has one writer at a time; on PostgreSQL the writer takes a
transaction-level advisory lock first, so change rows commit one transaction
at a time in id order.

``NOTIFY`` is a process-local condition: the feed's waiters in this process
wake at once when a change (or, for those following output, an output chunk:
``remora.models.hot.append_output``) is written here; changes made by other processes
(workers elsewhere) are found by their periodic query.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterable

import peewee as pw

from remora.models import database_proxy

# Any constant: the key of the PostgreSQL advisory lock that orders change rows.
_PG_LOCK_KEY = 0x52454D4F5241
_SQL: dict[tuple[type, str], str] = {}


class _Notify:
    """Generation counters with a condition: ``bump`` after a write, ``wait_past`` until the generation moves.

    ``generation`` counts change rows written in this process, ``output_generation`` output chunks
    (``bump(output=True)``): a waiter that follows output too waits on both (``mark(output=True)``).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.generation = 0
        self.output_generation = 0

    def mark(self, output: bool = False) -> int:
        return self.generation + (self.output_generation if output else 0)

    def bump(self, *, output: bool = False) -> None:
        with self._cond:
            if output:
                self.output_generation += 1
            else:
                self.generation += 1
            self._cond.notify_all()

    def wait_past(self, generation: int, timeout: float, *, output: bool = False) -> int:
        with self._cond:
            self._cond.wait_for(lambda: self.mark(output) != generation, timeout)
            return self.mark(output)


NOTIFY = _Notify()


def _sql(database: pw.Database, name: str, count: int = 1) -> str:
    key = (type(database), f"{name}:{count}")
    sql = _SQL.get(key)
    if sql is None:
        p = database.param
        if name == "jobs":
            marks = ", ".join([p] * count)
            sql = (
                'INSERT INTO "change" ("at", "kind", "job_id", "batch_id", "status", "exit_code") '
                f'SELECT {p}, \'job\', "id", "batch_id", "status", "exit_code" FROM "job" WHERE "id" IN ({marks}) ORDER BY "id"'
            )
        elif name == "rows":
            row = f"({p}, 'job', {p}, {p}, {p}, {p})"
            sql = 'INSERT INTO "change" ("at", "kind", "job_id", "batch_id", "status", "exit_code") VALUES ' + ", ".join([row] * count)
        else:
            sql = f'INSERT INTO "change" ("at", "kind", "job_id", "batch_id", "status", "exit_code") VALUES ({p}, \'batch\', NULL, {p}, {p}, NULL)'
        _SQL[key] = sql
    return sql


def _lock(database: pw.Database) -> None:
    if isinstance(database, pw.PostgresqlDatabase):
        database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK_KEY,))


def _stamp(now: dt.datetime) -> str | dt.datetime:
    from remora.models import Change

    return Change.at.db_value(now)  # type: ignore[no-any-return]


def job_changes(job_ids: Iterable[str], now: dt.datetime) -> None:
    """Record the current status (and exit code) of these jobs as changes; run it in the transition's write transaction."""
    ids = list(job_ids)
    if not ids:
        return
    database = database_proxy.obj
    _lock(database)
    stamp = _stamp(now)
    for start in range(0, len(ids), 100):
        chunk = ids[start : start + 100]
        database.execute_sql(_sql(database, "jobs", len(chunk)), (stamp, *chunk))
    NOTIFY.bump()


def job_rows(rows: Iterable[tuple[str, str | None, str, int | None]], now: dt.datetime) -> None:
    """``job_changes`` from values the caller has in hand: (job id, batch id, status, exit code) per job.

    One ``INSERT ... VALUES`` per 100 jobs and no read of the job rows; the rows go in job id order,
    as ``job_changes`` writes them.  Run it in the transition's write transaction.
    """
    ordered = sorted(rows)
    if not ordered:
        return
    database = database_proxy.obj
    _lock(database)
    stamp = _stamp(now)
    for start in range(0, len(ordered), 100):
        chunk = ordered[start : start + 100]
        params: list[object] = []
        for job_id, batch_id, status, exit_code in chunk:
            params += (stamp, job_id, batch_id, status, exit_code)
        database.execute_sql(_sql(database, "rows", len(chunk)), params)
    NOTIFY.bump()


def batch_change(batch_id: str, status: str, now: dt.datetime) -> None:
    """Record a batch's new status as a change; run it in the transition's write transaction."""
    database = database_proxy.obj
    _lock(database)
    database.execute_sql(_sql(database, "batch"), (_stamp(now), batch_id, status))
    NOTIFY.bump()
