"""The change feed (``GET /api/v1/events``): job and batch status changes after a cursor.

Rows come from ``remora.models.Change``, appended by ``remora.jobstate`` in
the transaction of each transition.  A cursor is the id of the last change a
client saw, sent as an opaque string: no cursor means "from now", ``0`` the
oldest change still kept.  A cursor older than what is kept (pruned by the
maintenance loop after ``api.events_retention``) is ``Gone`` (410): the client
reloads its view and starts again from now.

``wait`` blocks until there is at least one matching change or the timeout
passes: a change of a kind it follows written by this process wakes it at once
(a process-local condition; a ``kind=batch`` watcher sleeps through the job
changes of its fan-out); changes written elsewhere (workers on other machines)
are found by an indexed ``id > cursor`` query every ``POLL_INTERVAL`` seconds.
Its reads are statements compiled once (``remora.models.changes.after``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import Any

from remora import models
from remora.errors import Gone, ValidationError
from remora.models import Change, changes
from remora.models.changes import NOTIFY

POLL_INTERVAL = 0.25  # seconds between two queries for changes made by other processes
SETTLE_POLL = 0.02  # after a local wake-up the writer may not have committed yet: look again this soon ...
SETTLE_TIME = 0.3  # ... for this long after the wake-up
MIN_GAP = 0.02  # a waiter queries at most this often, however many changes this process writes
MAX_EVENTS = 1000  # changes per answer (a client with more to read asks again at once)
MAX_FILTER_IDS = 500


KINDS = ("job", "batch")


@dataclasses.dataclass(frozen=True)
class Filters:
    batch_id: str | None = None
    job_ids: tuple[str, ...] = ()
    kind: str | None = None  # "job" | "batch": only changes of that kind


def parse_cursor(raw: str | None) -> int | None:
    """A client's cursor: None (from now), or a change id (0: from the start of what is kept); 400 for anything else."""
    if raw is None or raw.strip() == "":
        return None
    text = raw.strip()
    if not text.isdigit() or len(text) > 18:
        raise ValidationError("invalid cursor: use the cursor of a previous answer, or 0", details={"cursor": "invalid"})
    return int(text)


def latest() -> int:
    """The newest change id (0 when there is none): the cursor of "from now"."""
    return changes.newest()


def check_cursor(cursor: int) -> None:
    """Gone when changes after ``cursor`` may have been pruned already."""
    if cursor == 0:
        return
    oldest = Change.select(models.fn.MIN(Change.id)).scalar()
    if oldest is None or cursor < int(oldest) or cursor > latest():
        raise Gone(
            "cursor expired: changes after it are no longer kept; reload the current state and follow from now (no cursor)",
            details={"cursor": str(cursor)},
        )


def event_dict(row: changes.ChangeRow) -> dict[str, Any]:
    """One change (a row of ``changes.after``) as the feed's JSON object."""
    change_id, at, kind, job_id, batch_id, status, exit_code = row
    event: dict[str, Any] = {"id": str(change_id), "at": models.to_rfc3339(at), "kind": kind, "status": status}
    if kind == "job":
        event["job_id"] = job_id
        event["exit_code"] = exit_code
    event["batch_id"] = batch_id
    return event


def read(cursor: int, filters: Filters, limit: int = MAX_EVENTS) -> tuple[list[dict[str, Any]], int]:
    """Changes after ``cursor`` that match ``filters`` (oldest first) and the cursor after them.

    With filters the query is served by the batch or job index, and the cursor moves on to the newest
    change looked past, so a filtered client never rescans changes of other jobs (or of the other kind).
    """
    if filters.batch_id is None and not filters.job_ids and filters.kind is None:
        rows = changes.after(cursor, limit=limit)
        return [event_dict(row) for row in rows], rows[-1][0] if rows else cursor
    top = latest()  # read first: every change up to it is committed, so none below it can appear later
    rows = changes.after(cursor, top=top, kind=filters.kind, batch_id=filters.batch_id, job_ids=filters.job_ids, limit=limit)
    if len(rows) < limit:
        return [event_dict(row) for row in rows], max(top, cursor)
    return [event_dict(row) for row in rows], rows[-1][0]


def wait(
    cursor: Any, filters: Filters, timeout: float, *, stop: Any = None, reader: Any = None, output: bool = False
) -> tuple[list[dict[str, Any]], Any]:
    """Changes after ``cursor`` matching ``filters``, waiting up to ``timeout`` seconds for the first one.

    ``reader`` (default ``read``) reads them; ``output``: output written in this process wakes the wait too.
    """
    read_events = reader or read
    kinds = frozenset((filters.kind,) if filters.kind else KINDS) | ({"output"} if output else set())  # writes that wake it
    deadline = time.monotonic() + max(0.0, timeout)
    settle_until = 0.0
    while True:
        generation = NOTIFY.mark(kinds)
        events, cursor = read_events(cursor, filters)
        models.release_connection()
        queried = now = time.monotonic()
        if events or now >= deadline or (stop is not None and stop()):
            return events, cursor
        pause = SETTLE_POLL if now < settle_until else POLL_INTERVAL
        woken = NOTIFY.wait_past(generation, min(pause, deadline - now), kinds)
        if woken != generation:
            settle_until = time.monotonic() + SETTLE_TIME
            time.sleep(max(0.0, min(queried + MIN_GAP, deadline) - time.monotonic()))


def prune(older_than: float, batch: int = 5000) -> int:
    """Delete changes older than ``older_than`` seconds (by id range), always keeping the newest one (the cursor of "from now")."""
    cutoff = models.utcnow() - dt.timedelta(seconds=older_than)
    newest = latest()
    old = Change.select(models.fn.MAX(Change.id)).where(Change.at < cutoff).scalar()
    if old is None:
        return 0
    bound = min(int(old), newest - 1)
    start = int(Change.select(models.fn.MIN(Change.id)).scalar() or 0)
    total = 0
    while start <= bound:
        end = min(start + batch - 1, bound)
        with models.write_transaction():
            total += Change.delete().where(Change.id >= start, Change.id <= end).execute()
        start = end + 1
    return total
