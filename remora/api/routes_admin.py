"""Admin routes: retention (``POST /api/v1/jobs/prune``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from remora import models
from remora.api.http import Request
from remora.api.router import Route
from remora.api.schema import obj
from remora.config import Settings
from remora.errors import ValidationError
from remora.units import parse_duration
from remora.upkeep import retention

if TYPE_CHECKING:
    from remora.api.app import App

FINISHED = ["completed", "failed", "canceled"]
PRUNE_BODY = obj(
    {
        "older_than": {
            "type": ["string", "number"],
            "description": "Age of the finished jobs to delete: a duration such as 30d, 12h, 90m, or seconds.",
            "maxLength": 32,
            "minimum": 0,
        },
        "status": {"type": "array", "items": {"type": "string", "enum": FINISHED}, "maxItems": 3, "description": "Default: all three."},
        "dry_run": {"type": "boolean", "description": "Only count what would be deleted."},
    },
    ["older_than"],
)
PRUNE_RESULT = obj(
    {
        "deleted": {"type": "integer"},
        "dry_run": {"type": "boolean"},
        "older_than": {"type": "number"},
        "status": {"type": "array", "items": {"type": "string"}},
        "cutoff": {"type": "string"},
    },
    closed=False,
)


def _seconds(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        try:
            seconds = parse_duration(str(value))
        except ValueError as exc:
            raise ValidationError(f"older_than {value!r}: expected {exc}", details={"older_than": "a duration such as 30d"}) from None
    if not 0 <= seconds < 1e10:
        raise ValidationError("older_than out of range", details={"older_than": "must be >= 0"})
    return seconds


def prune_jobs(app: App, req: Request, body: dict[str, Any]) -> dict[str, Any]:
    """Delete (or count) finished jobs older than ``older_than``, with their output; audited."""
    import datetime as dt

    seconds = _seconds(body["older_than"])
    statuses = sorted(set(body.get("status") or FINISHED))
    dry_run = bool(body.get("dry_run", False))
    cutoff = models.to_rfc3339(models.utcnow() - dt.timedelta(seconds=seconds))
    count = retention.count_prunable(seconds, statuses) if dry_run else retention.prune_jobs(seconds, statuses)
    req.audit_target = ("jobs", "prune")
    req.audit_details = {"older_than": seconds, "status": statuses, "dry_run": dry_run, "deleted": count}
    return {"deleted": count, "dry_run": dry_run, "older_than": seconds, "status": statuses, "cutoff": cutoff}


def routes(settings: Settings) -> list[Route]:
    return [
        Route(
            "POST",
            "/api/v1/jobs/prune",
            prune_jobs,
            "admin",
            "Delete finished jobs older than a cut-off, with their output (retention)",
            tag="jobs",
            body=PRUNE_BODY,
            response=PRUNE_RESULT,
            errors=(400,),
        ),
    ]
