"""The change feed's rows: one ``Change`` row per job or batch status transition, written and read.

``remora.jobstate`` calls ``job_changes`` / ``batch_change`` inside the write
transaction of each transition, so a change row exists exactly when the
transition committed.  The rows are read by ``remora.services.events``
(``id > cursor``).  Ids must become visible in id order for a cursor to never
skip a row: SQLite has one writer at a time; on PostgreSQL the writer takes a
transaction-level advisory lock first, so change rows commit one transaction
at a time in id order.

``NOTIFY`` is a process-local condition: the feed's waiters in this process
wake at once when a change of a kind they follow is written here (or, for
those following output, when ``remora.output.flush_many`` has committed an
output chunk); changes made by other processes (workers elsewhere) are found
by their periodic query.

``after`` and ``newest`` are the feed's reads, compiled once per kind of
database like the writes: every waiter runs them on each wake-up, and
building them with peewee's query builder cost 7 to 20 times what the
compiled statements cost.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterable

import peewee as pw

from remora.models import Change, database_proxy

# Any constant: the key of the PostgreSQL advisory lock that orders change rows.
_PG_LOCK_KEY = 0x52454D4F5241
_SQL: dict[tuple[type, str], str] = {}
# the columns ``after`` returns, in order
COLUMNS = ("id", "at", "kind", "job_id", "batch_id", "status", "exit_code")
ChangeRow = tuple[int, dt.datetime, str, "str | None", "str | None", str, "int | None"]


class _Notify:
    """Generation counters per kind of write, and the waiters to wake: ``bump`` after a write, ``wait_past`` until it.

    A kind is ``job`` or ``batch`` (change rows written in this process) or ``output`` (output
    chunks, ``bump("output")``).  A waiter names the kinds it follows and only their writes wake it:
    a watcher of batch ends (``kind=batch``) sleeps through the job changes of a fan-out.
    """

    KINDS = ("job", "batch", "output")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(self.KINDS, 0)
        self._waiters: dict[threading.Event, frozenset[str]] = {}

    def mark(self, kinds: frozenset[str]) -> int:
        """The generation of ``kinds``: it moves with every write of one of them."""
        counts = self._counts
        return sum(counts[kind] for kind in kinds)

    def bump(self, kind: str = "job") -> None:
        with self._lock:
            self._counts[kind] += 1
            for event, kinds in self._waiters.items():
                if kind in kinds:
                    event.set()

    def wait_past(self, generation: int, timeout: float, kinds: frozenset[str]) -> int:
        """Wait up to ``timeout`` seconds for the generation of ``kinds`` to move past ``generation``; the new one."""
        event = threading.Event()
        with self._lock:
            if self.mark(kinds) != generation:
                return self.mark(kinds)
            self._waiters[event] = kinds
        try:
            event.wait(timeout)
        finally:
            with self._lock:
                del self._waiters[event]
        return self.mark(kinds)


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
    NOTIFY.bump("batch")


def newest() -> int:
    """The newest change id (0 when there is none)."""
    database = database_proxy.obj
    key = (type(database), "newest")
    sql = _SQL.get(key)
    if sql is None:
        sql = _SQL[key] = 'SELECT MAX("id") FROM "change"'
    row = database.execute_sql(sql).fetchone()
    return int(row[0] or 0) if row else 0


def after(
    cursor: int, *, top: int | None = None, kind: str | None = None, batch_id: str | None = None, job_ids: tuple[str, ...] = (), limit: int
) -> list[ChangeRow]:
    """Changes with ``cursor < id`` (``<= top`` when given) of ``kind``, ``batch_id`` and ``job_ids`` when given, oldest first."""
    database = database_proxy.obj
    shape = f"after:{top is not None}:{kind is not None}:{batch_id is not None}:{len(job_ids)}"
    key = (type(database), shape)
    sql = _SQL.get(key)
    if sql is None:
        p = database.param
        where = [f'"id" > {p}']
        if top is not None:
            where.append(f'"id" <= {p}')
        if kind is not None:
            where.append(f'"kind" = {p}')
        if batch_id is not None:
            where.append(f'"batch_id" = {p}')
        if job_ids:
            where.append(f'"job_id" IN ({", ".join([p] * len(job_ids))})')
        columns = ", ".join(f'"{name}"' for name in COLUMNS)
        sql = _SQL[key] = f'SELECT {columns} FROM "change" WHERE {" AND ".join(where)} ORDER BY "id" LIMIT {p}'
    params: list[object] = [cursor]
    if top is not None:
        params.append(top)
    if kind is not None:
        params.append(kind)
    if batch_id is not None:
        params.append(batch_id)
    params += job_ids
    params.append(limit)
    stamp = Change.at.python_value
    return [
        (int(cid), stamp(at), kind_, job_id, batch, status, exit_code)
        for cid, at, kind_, job_id, batch, status, exit_code in database.execute_sql(sql, params).fetchall()
    ]
