"""The notification outbox: delivery rows written in the transaction of the event they announce.

Writing (``emit``, ``emit_job``, ``emit_batch``) runs inside the caller's write
transaction -- the one that makes a job or a batch final -- so a final state
and its notifications commit together or not at all: a crash after the commit
cannot lose a notification, a rolled-back transition never announces one.
Each emit looks up the enabled webhooks subscribed to the event (one small
query for any number of jobs -- ``emit_finals``; nothing more when none is), keeps those whose filter matches
(``template``: the job's template; ``tag``: a tag of the job's server) and
inserts one ``Delivery`` per webhook with the event's data as it is now.

Sending (``due_webhooks``, ``claim_next``, ``record_attempt``) is the delivery
loop's side (``remora.upkeep.deliveries``): a sender claims the oldest due
delivery of a webhook whose subject has no earlier delivery still pending
(in order per job), sends it outside any transaction, and records the attempt.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import peewee as pw

from remora.models import Batch, Delivery, Job, Server, Webhook, database_proxy, new_id, to_rfc3339, utcnow
from remora.models.db import write_transaction

EVENTS = ("job.completed", "job.failed", "job.canceled", "batch.finished", "schedule.missed")
PING = "ping"
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
JOB_EVENTS = {"completed": "job.completed", "failed": "job.failed", "canceled": "job.canceled"}
COMMAND_CHARS = 1000  # of a job's command in a notification


# -- writing, in the caller's transaction ------------------------------------------------------------

_SUBSCRIBED_SQL: dict[type, str] = {}


def _enabled() -> list[tuple[str, list[str], dict[str, Any]]]:
    """(id, events, filter) of every enabled webhook -- one compiled query."""
    database = database_proxy.obj
    sql = _SUBSCRIBED_SQL.get(type(database))
    if sql is None:
        sql = _SUBSCRIBED_SQL[type(database)] = f'SELECT "id", "events", "filter" FROM "webhook" WHERE "enabled" = {database.param}'
    rows = database.execute_sql(sql, (Webhook.enabled.db_value(True),)).fetchall()
    return [
        (webhook_id, Webhook.events.python_value(events) or [], Webhook.filter.python_value(filter_) or {})
        for webhook_id, events, filter_ in rows
    ]


def subscribed(event: str, enabled: list[tuple[str, list[str], dict[str, Any]]] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(id, filter) of the enabled webhooks that want ``event`` (``enabled``: ``_enabled()`` already read)."""
    return [(webhook_id, filter_) for webhook_id, events, filter_ in (_enabled() if enabled is None else enabled) if event in events]


def matches(filter_: dict[str, Any], template: str | None, tags: Iterable[str]) -> bool:
    """A webhook's filter against an event's template and server tags (an absent key matches everything)."""
    if filter_.get("template") and filter_["template"] != template:
        return False
    return not (filter_.get("tag") and filter_["tag"] not in set(tags))


def emit(
    event: str,
    subject: str,
    payload: dict[str, Any],
    *,
    template: str | None = None,
    tags: Iterable[str] = (),
    hooks: list[tuple[str, dict[str, Any]]] | None = None,
) -> int:
    """Insert one pending delivery of ``event`` per enabled, subscribed, matching webhook; how many.

    Call it inside the write transaction of the event. ``subject`` orders deliveries
    (``job:<id>``, ``batch:<id>``, ``schedule:<name>``); ``payload`` is the event's data.
    """
    hooks = subscribed(event) if hooks is None else hooks
    tags = list(tags)
    now = utcnow()
    rows = [
        {
            "uid": new_id(),
            "webhook": webhook_id,
            "event": event,
            "subject": subject[:128],
            "payload": {"event": event, "at": to_rfc3339(now), **payload},
            "status": PENDING,
            "attempts": 0,
            "error": "",
            "created_at": now,
            "next_attempt_at": now,
            "locked_by": "",
        }
        for webhook_id, filter_ in hooks
        if matches(filter_, template, tags)
    ]
    if rows:
        Delivery.insert_many(rows).execute()
    return len(rows)


def job_data(job: Job, server: Server | None) -> dict[str, Any]:
    duration = job.duration
    return {
        "id": job.id,
        "name": job.name,
        "command": (job.command or "")[:COMMAND_CHARS] if job.script is None else "script",
        "status": job.status,
        "exit_code": job.exit_code,
        "error": job.error or "",
        "server": {"id": server.id, "name": server.name, "hostname": server.hostname} if server is not None else None,
        "batch_id": job.batch_id,
        "template": job.template,
        "attempts": job.attempts,
        "created_at": to_rfc3339(job.created_at),
        "started_at": to_rfc3339(job.started_at),
        "finished_at": to_rfc3339(job.finished_at),
        "duration": round(duration, 3) if duration is not None else None,
    }


def emit_job(job_id: str, status: str) -> int:
    """A job became final (``completed`` / ``failed`` / ``canceled``): its ``job.<status>`` deliveries."""
    return emit_finals({status: [job_id]})


def emit_jobs(job_ids: Iterable[str], status: str) -> int:
    return emit_finals({status: list(job_ids)})


def emit_finals(by_status: dict[str, list[str]]) -> int:
    """Jobs became final, listed by status: their ``job.<status>`` deliveries, in job id order.

    One query for the enabled webhooks, whatever the number of jobs; when none wants these events
    that is all.  Otherwise the jobs (with their servers) are read in one query.
    """
    wanted = {status: set(ids) for status, ids in by_status.items() if ids and status in JOB_EVENTS}
    if not wanted:
        return 0
    enabled = _enabled()
    if not enabled:
        return 0
    hooks = {status: subscribed(JOB_EVENTS[status], enabled) for status in wanted}
    ids = sorted({job_id for status, job_ids in wanted.items() if hooks[status] for job_id in job_ids})
    if not ids:
        return 0
    rows: dict[str, Job] = {}
    for start in range(0, len(ids), 100):
        query = Job.select(Job, Server).join(Server, pw.JOIN.LEFT_OUTER).where(Job.id.in_(ids[start : start + 100]))
        rows.update((row.id, row) for row in query)
    done = 0
    for job_id in ids:
        row = rows.get(job_id)
        if row is None:
            continue
        for status, job_ids in wanted.items():
            if job_id not in job_ids or not hooks[status]:
                continue
            server = row.server if row.server_id else None
            tags = (server.tags or []) if server is not None else []
            data = {"job": job_data(row, server)}
            done += emit(JOB_EVENTS[status], f"job:{job_id}", data, template=row.template, tags=tags, hooks=hooks[status])
    return done


def emit_batch(batch_id: str) -> int:
    """A batch reached its final status: its ``batch.finished`` deliveries (template and tags from its jobs)."""
    hooks = subscribed("batch.finished")
    if not hooks:
        return 0
    batch = Batch.get_or_none(Batch.id == batch_id)
    if batch is None:
        return 0
    counts: dict[str, int] = {}
    template = None
    tags: set[str] = set()
    hosts: list[dict[str, Any]] = []
    query = Job.select(Job.status, Job.template, Job.exit_code, Server.name, Server.tags).join(Server).where(Job.batch_id == batch_id)
    for job in query:
        counts[job.status] = counts.get(job.status, 0) + 1
        template = template or job.template
        tags.update(job.server.tags or [])
        if job.status != "completed" and len(hosts) < 50:
            hosts.append({"server": job.server.name, "status": job.status, "exit_code": job.exit_code})
    data = {
        "id": batch.id,
        "name": batch.name,
        "command": batch.command,
        "status": batch.status,
        "error": batch.error or "",
        "total": batch.total,
        "counts": counts,
        "template": template,
        "unsuccessful_hosts": hosts,
        "created_at": to_rfc3339(batch.created_at),
        "finished_at": to_rfc3339(batch.finished_at),
    }
    return emit("batch.finished", f"batch:{batch_id}", {"batch": data}, template=template, tags=tags, hooks=hooks)


# -- sending --------------------------------------------------------------------------------------


def _claimable(now: dt.datetime) -> Any:
    return (
        (Delivery.status == PENDING) & (Delivery.next_attempt_at <= now) & (Delivery.locked_until.is_null() | (Delivery.locked_until < now))
    )


def due_webhooks(now: dt.datetime | None = None) -> list[str]:
    """Ids of enabled webhooks with a delivery that may be sent now."""
    now = now or utcnow()
    query = Delivery.select(Delivery.webhook).join(Webhook).where(_claimable(now), Webhook.enabled == True).distinct()  # noqa: E712
    return [row.webhook_id for row in query]


def claim_next(webhook_id: str, holder: str, lease: float) -> Delivery | None:
    """Claim the oldest due delivery of ``webhook_id`` whose subject has no earlier pending one (None: none)."""
    earlier = Delivery.alias("earlier")
    for _ in range(5):  # a miss means another sender claimed that row meanwhile
        now = utcnow()
        blocked = earlier.select(pw.SQL("1")).where(
            earlier.webhook == Delivery.webhook, earlier.subject == Delivery.subject, earlier.status == PENDING, earlier.seq < Delivery.seq
        )
        row = (
            Delivery.select(Delivery.seq)
            .where(Delivery.webhook == webhook_id, _claimable(now), ~pw.fn.EXISTS(blocked))
            .order_by(Delivery.seq)
            .first()
        )
        if row is None:
            return None
        with write_transaction():
            claimed = (
                Delivery.update(locked_until=now + dt.timedelta(seconds=lease), locked_by=holder)
                .where(Delivery.seq == row.seq, _claimable(now))
                .execute()
            )
        if claimed:
            return Delivery.select(Delivery, Webhook).join(Webhook).where(Delivery.seq == row.seq).first()
    return None


def record_attempt(seq: int, holder: str, *, ok: bool, status_code: int | None, error: str, retry_at: dt.datetime | None) -> bool:
    """Record one attempt of a claimed delivery: ``delivered``, pending again until ``retry_at``, or ``failed`` (no ``retry_at``)."""
    now = utcnow()
    values: dict[Any, Any] = {
        Delivery.attempts: Delivery.attempts + 1,
        Delivery.status_code: status_code,
        Delivery.error: error[:2000],
        Delivery.locked_until: None,
        Delivery.locked_by: "",
    }
    if ok:
        values.update({Delivery.status: DELIVERED, Delivery.delivered_at: now, Delivery.next_attempt_at: None})
    elif retry_at is None:
        values.update({Delivery.status: FAILED, Delivery.next_attempt_at: None})
    else:
        values[Delivery.next_attempt_at] = retry_at
    with write_transaction():
        return bool(Delivery.update(values).where(Delivery.seq == seq, Delivery.locked_by == holder).execute())


def prune(older_than: dt.datetime, limit: int = 1000) -> int:
    """Delete finished (delivered or failed) deliveries created before ``older_than``, ``limit`` at a time."""
    seqs = [
        row.seq for row in Delivery.select(Delivery.seq).where(Delivery.status != PENDING, Delivery.created_at < older_than).limit(limit)
    ]
    if not seqs:
        return 0
    with write_transaction():
        return int(Delivery.delete().where(Delivery.seq.in_(seqs)).execute())
