"""Schedules: a template run on a calendar (cron in an IANA timezone), each slot fired exactly once.

A schedule names a template and the parameters to run it with (checked
against the template when saved, as a run would check them; secret parameter
values are stored encrypted, like ``secret_env``, and shown ``***``).  The
scheduler (``remora.upkeep.scheduler``, in the API process under a database
lock) handles every slot once:

1. it *claims* the slot: a ``ScheduleRun`` row ``claimed`` inserted in a
   transaction of its own, unique on (schedule, slot) -- however many API
   processes run, one insert wins;
2. it decides: ``skipped`` when ``overlap`` is ``skip`` and the previous run
   of the schedule is still queued or running; ``pending`` when ``overlap``
   is ``queue`` (fired once the previous run ended);
3. it runs the template (``services.templates.run_template``) and records
   the slot ``fired`` with the job id (one server) or the batch id.

A slot found later than ``api.schedule_grace`` (the scheduler was down) is
recorded ``missed``; with ``catch_up: last`` the most recent missed slot is
run once all the same.  A ``claimed`` row without a job found later (the
process stopped between claim and job) is recorded ``missed`` with that
reason: the job is never created twice.  Every ``missed`` record calls
``on_missed`` in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from typing import Any

from remora import cron, models
from remora.errors import Conflict, NotFound, RemoraError, ValidationError
from remora.models import Batch, BatchStatus, Job, JobStatus, Schedule, ScheduleRun, Server
from remora.services import notify, templates
from remora.services.context import Context
from remora.services.jobs import MASK, check_local_role
from remora.services.servers import resolve_servers

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
OVERLAP = ("skip", "queue", "allow")
CATCH_UP = ("none", "last")
NEXT_RUNS = 5


class RunStatus:
    """The outcome of a slot (``ScheduleRun.status``)."""

    CLAIMED = "claimed"  # taken by a scheduler; its job is being created
    PENDING = "pending"  # overlap "queue": waits for the previous run to end
    FIRED = "fired"
    SKIPPED = "skipped"
    MISSED = "missed"
    FAILED = "failed"  # the run was refused (template gone, parameters no longer valid ...)


def on_missed(schedule: Schedule, slot: dt.datetime, reason: str, *, status: str = "missed") -> None:
    """Called once per missed or skipped slot, inside the transaction that records it.

    Queues a ``schedule.missed`` notification for the webhooks that want it
    (``remora.services.notify``: written in this transaction, delivered later).
    It must not commit or roll back, and an exception it raises undoes the
    record (the slot is looked at again on the next pass).
    """
    data = {
        "schedule": {
            "name": schedule.name,
            "template": schedule.template,
            "slot": models.to_rfc3339(slot),
            "status": status,
            "reason": reason,
        }
    }
    notify.emit("schedule.missed", data, subject=f"schedule:{schedule.name}", template=schedule.template)


def _fail(field: str, message: str) -> ValidationError:
    return ValidationError(f"invalid schedule: {field} {message}", details={field: message})


def actor_of(schedule: Schedule) -> str:
    return f"schedule:{schedule.name}"


# -- definition -------------------------------------------------------------------------------------


def normalise(ctx: Context, data: dict[str, Any], *, role: str, current: Schedule | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The stored fields of a schedule from an API body, and its parameter values (secret ones included).

    ``current``: the schedule being edited (PUT is partial: missing fields keep their value, and a secret
    parameter given ``***`` or left out keeps its stored value).  Raises ValidationError naming the field.
    """
    given = dict(data)
    name = given.get("name", current.name if current else None)
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise _fail("name", "must be 1..128 letters, digits, '_', '.' or '-'")
    template_name = given.get("template", current.template if current else None)
    if not isinstance(template_name, str) or not template_name:
        raise _fail("template", "is required")
    row = models.Template.get_or_none(models.Template.name == template_name)
    if row is None:
        raise _fail("template", f"names no template: {template_name!r}")
    expr = given.get("cron", current.cron if current else None)
    try:
        cron.expand(expr)  # type: ignore[arg-type]
    except cron.CronError as exc:
        raise _fail("cron", str(exc)) from None
    timezone = given.get("timezone", current.timezone if current else None) or "UTC"
    try:
        cron.zone(timezone)
    except cron.CronError as exc:
        raise _fail("timezone", str(exc)) from None
    overlap = given.get("overlap", current.overlap if current else None) or "skip"
    if overlap not in OVERLAP:
        raise _fail("overlap", f"must be one of {', '.join(OVERLAP)}")
    catch_up = given.get("catch_up", current.catch_up if current else None) or "none"
    if catch_up not in CATCH_UP:
        raise _fail("catch_up", f"must be one of {', '.join(CATCH_UP)}")
    enabled = given.get("enabled", current.enabled if current else True)
    if not isinstance(enabled, bool):
        raise _fail("enabled", "must be true or false")
    values = _param_values(ctx, given, current, row)
    try:
        spec, _ = templates.render(ctx, row, values, None)  # what a run would check: types, choices, required, targets
    except ValidationError as exc:
        details = dict(exc.details or {})
        raise ValidationError(f"invalid schedule: {exc}", details=details or {"params": str(exc)}) from None
    check_local_role(ctx, spec, resolve_servers(None, [], spec.servers), role)
    fields = {
        "name": name,
        "template": template_name,
        "cron": " ".join(str(expr).split()),
        "timezone": timezone,
        "overlap": overlap,
        "catch_up": catch_up,
        "enabled": enabled,
    }
    return fields, values


def _param_values(ctx: Context, given: dict[str, Any], current: Schedule | None, row: models.Template) -> dict[str, Any]:
    params = given.get("params")
    if params is None:
        return stored_params(ctx, current) if current else {}
    if not isinstance(params, dict):
        raise _fail("params", "must be an object of parameter values")
    secret = {p["name"] for p in row.parameters or [] if p.get("secret")}
    old = stored_params(ctx, current) if current else {}
    values = dict(params)
    for name in secret:
        if values.get(name) == MASK and name in old:
            values[name] = old[name]  # "***" read back from a GET: keep the stored secret
    return values


def _split_params(ctx: Context, template_name: str, values: dict[str, Any]) -> tuple[dict[str, Any], bytes | None]:
    """(plain values with secret ones ``***``, the secret values encrypted as JSON) for storage."""
    row = models.Template.get_or_none(models.Template.name == template_name)
    secret = {p["name"] for p in (row.parameters if row else []) or [] if p.get("secret")}
    hidden = {name: value for name, value in values.items() if name in secret}
    shown = {name: (MASK if name in secret else value) for name, value in values.items()}
    return shown, (ctx.secrets.encrypt(json.dumps(hidden, separators=(",", ":"))) if hidden else None)


def stored_params(ctx: Context, schedule: Schedule | None) -> dict[str, Any]:
    """A schedule's parameter values, secret ones decrypted: to run it, never to show."""
    if schedule is None:
        return {}
    values = dict(schedule.params or {})
    if schedule.secret_params:
        values.update(json.loads(ctx.secrets.decrypt_str(schedule.secret_params)))
    return values


def first_slot(schedule_cron: str, timezone: str, after: dt.datetime) -> dt.datetime | None:
    found = cron.next_slots(schedule_cron, timezone, after, 1)
    return found[0] if found else None


def get_schedule(name: str) -> Schedule:
    row = Schedule.get_or_none(Schedule.name == name)
    if row is None:
        raise NotFound(f"schedule not found: {name}")
    return row


def list_schedules() -> list[Schedule]:
    return list(Schedule.select().order_by(Schedule.name))


def _conflict(name: str) -> Conflict:
    return Conflict(f"a schedule named {name!r} exists", details={"name": name})


def create_schedule(ctx: Context, data: dict[str, Any], actor: str, *, role: str) -> Schedule:
    fields, values = normalise(ctx, data, role=role)
    params, secret = _split_params(ctx, fields["template"], values)
    now = models.utcnow()
    try:
        with models.write_transaction():
            if Schedule.select().where(Schedule.name == fields["name"]).exists():
                raise _conflict(fields["name"])
            return Schedule.create(
                **fields,
                params=params,
                secret_params=secret,
                role=role,
                next_slot=first_slot(fields["cron"], fields["timezone"], now),
                created_by=actor,
                created_at=now,
                updated_at=now,
            )
    except models.IntegrityError:
        raise _conflict(fields["name"]) from None


def update_schedule(ctx: Context, name: str, data: dict[str, Any], *, role: str) -> Schedule:
    """Change a schedule (PUT is partial).  A new calendar, or enabling it, starts from now: no slot before is missed.

    A body of ``enabled`` alone pauses or resumes (``set_enabled``): the definition is not checked again.
    """
    if set(data) == {"enabled"} and isinstance(data["enabled"], bool):
        return set_enabled(ctx, name, data["enabled"])
    row = get_schedule(name)
    fields, values = normalise(ctx, data, role=role, current=row)
    params, secret = _split_params(ctx, fields["template"], values)
    now = models.utcnow()
    changes: dict[str, Any] = {**fields, "params": params, "secret_params": secret, "role": role, "updated_at": now}
    calendar_changed = (fields["cron"], fields["timezone"]) != (row.cron, row.timezone)
    if calendar_changed or (fields["enabled"] and not row.enabled):
        changes["next_slot"] = first_slot(fields["cron"], fields["timezone"], now)
    try:
        with models.write_transaction():
            if fields["name"] != name and Schedule.select().where(Schedule.name == fields["name"]).exists():
                raise _conflict(fields["name"])
            Schedule.update(**changes).where(Schedule.id == row.id).execute()
    except models.IntegrityError:
        raise _conflict(fields["name"]) from None
    return Schedule.get_by_id(row.id)


def set_enabled(ctx: Context, name: str, enabled: bool) -> Schedule:
    """Pause or resume; a resumed schedule runs from its next slot after now (paused slots are not missed)."""
    row = get_schedule(name)
    changes: dict[str, Any] = {"enabled": enabled, "updated_at": models.utcnow()}
    if enabled and not row.enabled:
        changes["next_slot"] = first_slot(row.cron, row.timezone, models.utcnow())
    with models.write_transaction():
        Schedule.update(**changes).where(Schedule.id == row.id).execute()
    return Schedule.get_by_id(row.id)


def delete_schedule(name: str) -> Schedule:
    row = get_schedule(name)
    with models.write_transaction():
        ScheduleRun.delete().where(ScheduleRun.schedule == row.id).execute()
        Schedule.delete().where(Schedule.id == row.id).execute()
    return row


# -- runs -------------------------------------------------------------------------------------------


def run_state(run: ScheduleRun) -> str | None:
    """The status of the job (one server) or batch a run started; None when it started none."""
    if run.job_id:
        return Job.select(Job.status).where(Job.id == run.job_id).scalar()  # type: ignore[no-any-return]
    if run.batch_id:
        return Batch.select(Batch.status).where(Batch.id == run.batch_id).scalar()  # type: ignore[no-any-return]
    return None


def run_dict(run: ScheduleRun, state: str | None = None) -> dict[str, Any]:
    return {
        "id": run.id,
        "slot": models.to_rfc3339(run.slot),
        "status": run.status,
        "job_id": run.job_id,
        "batch_id": run.batch_id,
        "job_status": state if state is not None else run_state(run),
        "reason": run.reason or "",
        "manual": bool(run.manual),
        "created_at": models.to_rfc3339(run.created_at),
        "updated_at": models.to_rfc3339(run.updated_at),
    }


def list_runs(name: str, limit: int = 50) -> list[dict[str, Any]]:
    row = get_schedule(name)
    runs = ScheduleRun.select().where(ScheduleRun.schedule == row.id).order_by(ScheduleRun.slot.desc(), ScheduleRun.id.desc()).limit(limit)
    return [run_dict(run) for run in runs]


def last_run(schedule: Schedule) -> dict[str, Any] | None:
    run = (
        ScheduleRun.select()
        .where(ScheduleRun.schedule == schedule.id, ScheduleRun.status == RunStatus.FIRED)
        .order_by(ScheduleRun.slot.desc(), ScheduleRun.id.desc())
        .first()
    )
    if run is None:
        return None
    out: dict[str, Any] = {"at": models.to_rfc3339(run.slot), "status": run_state(run), "manual": bool(run.manual)}
    out["batch_id" if run.batch_id else "job_id"] = run.batch_id or run.job_id
    return out


def schedule_dict(schedule: Schedule, now: dt.datetime | None = None) -> dict[str, Any]:
    """A schedule as shown: secret parameter values ``***``; ``next_runs`` (RFC 3339 UTC; none while paused) and ``last_run``."""
    now = now or models.utcnow()
    start = max(now, schedule.next_slot - dt.timedelta(seconds=1)) if schedule.next_slot else now
    upcoming = cron.next_slots(schedule.cron, schedule.timezone, start, NEXT_RUNS) if schedule.enabled else []
    return {
        "id": schedule.id,
        "name": schedule.name,
        "template": schedule.template,
        "params": dict(schedule.params or {}),
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "enabled": bool(schedule.enabled),
        "overlap": schedule.overlap,
        "catch_up": schedule.catch_up,
        "next_runs": [models.to_rfc3339(slot) for slot in upcoming],
        "last_run": last_run(schedule),
        "created_by": schedule.created_by or "",
        "created_at": models.to_rfc3339(schedule.created_at),
        "updated_at": models.to_rfc3339(schedule.updated_at),
    }


# -- firing -----------------------------------------------------------------------------------------


def claim(schedule: Schedule, slot: dt.datetime, holder: str, *, manual: bool = False) -> ScheduleRun | None:
    """Insert the slot's ``claimed`` row in a transaction of its own; None when it was claimed already (by anyone)."""
    now = models.utcnow()
    try:
        with models.write_transaction():
            return ScheduleRun.create(
                schedule=schedule.id, slot=slot, status=RunStatus.CLAIMED, manual=manual, claimed_by=holder, created_at=now, updated_at=now
            )
    except models.IntegrityError:
        return None


def record(run: ScheduleRun, status: str, *, reason: str = "", job_id: str | None = None, batch_id: str | None = None) -> None:
    with models.write_transaction():
        ScheduleRun.update(status=status, reason=reason, job_id=job_id, batch_id=batch_id, updated_at=models.utcnow()).where(
            ScheduleRun.id == run.id
        ).execute()
    run.status, run.reason, run.job_id, run.batch_id = status, reason, job_id, batch_id


def record_skipped(schedule: Schedule, run: ScheduleRun, reason: str) -> None:
    """Record a claimed slot ``skipped`` (overlap) and call ``on_missed`` in the same transaction."""
    with models.write_transaction():
        record(run, RunStatus.SKIPPED, reason=reason)
        on_missed(schedule, run.slot, reason, status=RunStatus.SKIPPED)


def record_missed(schedule: Schedule, slot: dt.datetime, reason: str, *, run: ScheduleRun | None = None) -> bool:
    """Record a slot ``missed`` (a new row, or ``run`` turned missed) and call ``on_missed`` in the same transaction.

    False when another scheduler recorded the slot first.
    """
    now = models.utcnow()
    try:
        with models.write_transaction():
            if run is None:
                ScheduleRun.create(schedule=schedule.id, slot=slot, status=RunStatus.MISSED, reason=reason, created_at=now, updated_at=now)
            else:
                changed = (
                    ScheduleRun.update(status=RunStatus.MISSED, reason=reason, updated_at=now)
                    .where(ScheduleRun.id == run.id, ScheduleRun.status == RunStatus.CLAIMED)
                    .execute()
                )
                if not changed:
                    return False
            on_missed(schedule, slot, reason)
    except models.IntegrityError:
        return False
    log.warning("schedule %s: slot %s missed: %s", schedule.name, models.to_rfc3339(slot), reason)
    return True


def busy(schedule: Schedule, *, before: ScheduleRun | None = None) -> bool:
    """Whether a previous run of the schedule is still queued or running (or waiting, for overlap ``queue``)."""
    query = ScheduleRun.select().where(
        ScheduleRun.schedule == schedule.id, ScheduleRun.status.in_([RunStatus.FIRED, RunStatus.PENDING, RunStatus.CLAIMED])
    )
    if before is not None:
        query = query.where(ScheduleRun.id != before.id, ScheduleRun.slot <= before.slot)
    for run in query.order_by(ScheduleRun.slot.desc()).limit(20):
        if run.status != RunStatus.FIRED:
            return True
        state = run_state(run)
        if state in (JobStatus.QUEUED.value, JobStatus.RUNNING.value, BatchStatus.RUNNING.value):
            return True
    return False


def fire(ctx: Context, schedule: Schedule, run: ScheduleRun, *, reason: str = "") -> ScheduleRun:
    """Run the template for a claimed (or pending) slot and record the outcome: ``fired`` with the job or batch, else ``failed``."""
    try:
        values = stored_params(ctx, schedule)
        jobs, _, batch = templates.run_template(ctx, schedule.template, values, None, actor_of(schedule), role=schedule.role or "operator")
    except RemoraError as exc:
        log.warning("schedule %s: slot %s not run: %s", schedule.name, models.to_rfc3339(run.slot), exc)
        record(run, RunStatus.FAILED, reason=str(exc))
        return run
    if batch:
        record(run, RunStatus.FIRED, reason=reason, batch_id=jobs[0].batch_id)
    else:
        record(run, RunStatus.FIRED, reason=reason, job_id=jobs[0].id)
    return run


def run_now(ctx: Context, name: str, actor: str) -> tuple[ScheduleRun, list[Job], list[Server], bool]:
    """Run a schedule now, outside its calendar (a ``manual`` run row); errors propagate to the caller (4xx)."""
    schedule = get_schedule(name)
    now = models.utcnow()
    run = claim(schedule, now, actor, manual=True)
    if run is None:  # the same microsecond twice: practically never
        raise Conflict("the schedule was just run: try again")
    try:
        values = stored_params(ctx, schedule)
        jobs, targets, batch = templates.run_template(ctx, schedule.template, values, None, actor, role=schedule.role or "operator")
    except RemoraError as exc:
        record(run, RunStatus.FAILED, reason=str(exc))
        raise
    record(run, RunStatus.FIRED, batch_id=jobs[0].batch_id if batch else None, job_id=None if batch else jobs[0].id)
    return run, jobs, targets, batch


__all__ = [
    "CATCH_UP",
    "OVERLAP",
    "RunStatus",
    "claim",
    "create_schedule",
    "delete_schedule",
    "fire",
    "get_schedule",
    "last_run",
    "list_runs",
    "list_schedules",
    "on_missed",
    "record_missed",
    "run_now",
    "schedule_dict",
    "set_enabled",
    "update_schedule",
]
