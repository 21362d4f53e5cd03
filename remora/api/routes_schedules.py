"""Schedule routes: list, show, runs (viewers and up); create, change, pause/resume, delete, run now (operators); every change audited."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from remora.api.http import Request
from remora.api.router import Param, Route
from remora.api.routes_jobs import SUBMITTED, submitted
from remora.api.schema import NULLABLE_STR, TIMESTAMP, UUID, array, obj
from remora.config import Settings
from remora.errors import ValidationError
from remora.services import schedules

if TYPE_CHECKING:
    from remora.api.app import App

FIELDS = {
    "name": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,128}$"},
    "template": {"type": "string", "minLength": 1, "maxLength": 128},
    "params": {"type": ["object", "null"], "additionalProperties": {"type": ["string", "integer", "boolean"]}, "maxProperties": 100},
    "cron": {
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "description": "5 fields (minute hour day-of-month month day-of-week) or @hourly, @daily, @weekly, @monthly, @yearly.",
    },
    "timezone": {"type": ["string", "null"], "maxLength": 64, "description": "IANA name (default UTC), e.g. Europe/Berlin."},
    "enabled": {"type": "boolean"},
    "overlap": {
        "type": "string",
        "enum": list(schedules.OVERLAP),
        "description": "While the previous run is queued/running: skip the slot (default), queue it, or allow.",
    },
    "catch_up": {
        "type": "string",
        "enum": list(schedules.CATCH_UP),
        "description": "After downtime: none (default) or run the last missed slot once.",
    },
}
CREATE_BODY = obj(FIELDS, ["name", "template", "cron"])
UPDATE_BODY = obj(FIELDS)
LAST_RUN = {
    "type": ["object", "null"],
    "properties": {
        "at": TIMESTAMP,
        "job_id": NULLABLE_STR,
        "batch_id": NULLABLE_STR,
        "status": NULLABLE_STR,
        "manual": {"type": "boolean"},
    },
}
SCHEDULE = obj(
    {
        "id": UUID,
        "name": {"type": "string"},
        "template": {"type": "string"},
        "params": {"type": "object", "description": "Parameter values; secret ones read ***."},
        "cron": {"type": "string"},
        "timezone": {"type": "string"},
        "enabled": {"type": "boolean"},
        "overlap": {"type": "string"},
        "catch_up": {"type": "string"},
        "next_runs": {"type": "array", "items": {"type": "string"}, "description": "The next 5 slots (RFC 3339 UTC); empty while paused."},
        "last_run": LAST_RUN,
        "created_by": {"type": "string"},
        "created_at": TIMESTAMP,
        "updated_at": TIMESTAMP,
    },
    closed=False,
)
SCHEDULE_LIST = obj({"schedules": array(SCHEDULE)}, ["schedules"])
RUN = obj(
    {
        "id": {"type": "integer"},
        "slot": TIMESTAMP,
        "status": {"type": "string", "enum": ["claimed", "pending", "fired", "skipped", "missed", "failed"]},
        "job_id": NULLABLE_STR,
        "batch_id": NULLABLE_STR,
        "job_status": NULLABLE_STR,
        "reason": {"type": "string"},
        "manual": {"type": "boolean"},
        "created_at": TIMESTAMP,
        "updated_at": TIMESTAMP,
    },
    closed=False,
)
RUN_LIST = obj({"runs": array(RUN)}, ["runs"])
DELETED = obj({"message": {"type": "string"}, "name": {"type": "string"}})


def _actor(req: Request) -> str:
    return req.identity.name if req.identity else "anonymous"


def _role(req: Request) -> str:
    return req.identity.role if req.identity else "admin"


def list_schedules(app: App, req: Request) -> dict[str, Any]:
    return {"schedules": [schedules.schedule_dict(row) for row in schedules.list_schedules()]}


def get_schedule(app: App, req: Request) -> dict[str, Any]:
    return schedules.schedule_dict(schedules.get_schedule(req.path_params["name"]))


def list_runs(app: App, req: Request) -> dict[str, Any]:
    raw = req.arg("limit") or "50"
    if not raw.isdigit() or not 1 <= int(raw) <= 500:
        raise ValidationError("limit must be between 1 and 500", details={"limit": "must be between 1 and 500"})
    return {"runs": schedules.list_runs(req.path_params["name"], int(raw))}


def create_schedule(app: App, req: Request, body: dict[str, Any]) -> dict[str, Any]:
    row = schedules.create_schedule(app.ctx, body, _actor(req), role=_role(req))
    req.audit_target = ("schedule", row.name)
    req.audit_details = {"template": row.template, "cron": row.cron, "timezone": row.timezone}
    return schedules.schedule_dict(row)


def update_schedule(app: App, req: Request, body: dict[str, Any]) -> dict[str, Any]:
    row = schedules.update_schedule(app.ctx, req.path_params["name"], body, role=_role(req))
    req.audit_target = ("schedule", row.name)
    req.audit_details = {k: v for k, v in body.items() if k != "params"}
    if row.name != req.path_params["name"]:
        req.audit_details["renamed_from"] = req.path_params["name"]
    return schedules.schedule_dict(row)


def delete_schedule(app: App, req: Request) -> dict[str, Any]:
    row = schedules.delete_schedule(req.path_params["name"])
    req.audit_target = ("schedule", row.name)
    return {"message": "schedule deleted", "name": row.name}


def run_schedule(app: App, req: Request) -> dict[str, Any]:
    name = req.path_params["name"]
    _, jobs, servers, batch = schedules.run_now(app.ctx, name, _actor(req))
    return submitted(req, jobs, servers, batch, {"schedule": name})


def routes(settings: Settings) -> list[Route]:
    base = "/api/v1/schedules"
    one = base + "/{name:str}"
    common = {"tag": "schedules", "resource": "schedule"}
    return [
        Route("GET", base, list_schedules, "viewer", "Schedules, with their next runs and last run", response=SCHEDULE_LIST, **common),
        Route(
            "POST",
            base,
            create_schedule,
            "operator",
            "Schedule a template: cron in an IANA timezone (parameters checked against the template now)",
            body=CREATE_BODY,
            response=SCHEDULE,
            status=201,
            errors=(400, 403, 409, 413, 415),
            name="schedule_create",
            **common,
        ),
        Route("GET", one, get_schedule, "viewer", "A schedule", response=SCHEDULE, errors=(404,), **common),
        Route(
            "GET",
            one + "/runs",
            list_runs,
            "viewer",
            "A schedule's recent slots: fired (job or batch), skipped, missed, failed",
            response=RUN_LIST,
            query=[Param("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "Most recent first (default 50).")],
            errors=(400, 404),
            name="schedule_runs",
            **common,
        ),
        Route(
            "PUT",
            one,
            update_schedule,
            "operator",
            "Change a schedule (fields left out keep their value; enabled: false pauses it)",
            body=UPDATE_BODY,
            response=SCHEDULE,
            errors=(400, 403, 404, 409, 413, 415),
            name="schedule_update",
            **common,
        ),
        Route(
            "DELETE",
            one,
            delete_schedule,
            "operator",
            "Delete a schedule",
            response=DELETED,
            errors=(404,),
            name="schedule_delete",
            **common,
        ),
        Route(
            "POST",
            one + "/run",
            run_schedule,
            "operator",
            "Run a schedule now, outside its calendar",
            response=SUBMITTED,
            status=201,
            errors=(400, 403, 404, 409, 503),
            name="schedule_run",
            **common,
        ),
    ]
