"""System routes: health, info, enhanced stats, workers, queue view and DLQ, audit, metrics, OpenAPI."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from remora import models, procstats
from remora.api.http import Request, Response, dumps
from remora.api.router import Param, Route
from remora.api.schema import array, obj
from remora.config import Settings
from remora.errors import QueueError, QueueUnavailable, Unavailable, ValidationError
from remora.services import audit, queries
from remora.services.jobs import default_timeout

if TYPE_CHECKING:
    from remora.api.app import App

log = logging.getLogger(__name__)
QUEUE_ERRORS = (QueueError, QueueUnavailable, OSError)


def _queue(app: App) -> Any:
    if app.ctx.queue is None:
        raise QueueUnavailable("no queue configured", retry_after=5)
    return app.ctx.queue


def _queue_stats(app: App) -> dict[str, Any] | None:
    try:
        return dict(_queue(app).stats())
    except QUEUE_ERRORS as exc:
        log.debug("queue stats unavailable: %s", exc)
        return None


def health(app: App, req: Request) -> Response:
    result = {"status": "healthy", "database": "ok", "queue": "ok", "version": _version()}
    try:
        models.Job.select(models.Job.id).limit(1).execute()
    except models.DatabaseError as exc:
        result["database"] = f"error: {exc}"
    try:
        _queue(app).ping()
    except QUEUE_ERRORS as exc:
        result["queue"] = f"error: {exc}"
    if result["database"] != "ok" or result["queue"] != "ok":
        down = [part for part in ("database", "queue") if result[part] != "ok"]
        body = {
            **result,
            "status": "unhealthy",
            "error": f"{' and '.join(down)} unavailable",
            "code": "SERVICE_UNAVAILABLE",
            "details": {"down": down},
        }
        return Response(status=503, body=dumps(body)).header("Retry-After", "5")
    return Response(status=200, body=dumps(result))


def _version() -> str:
    from remora import __version__

    return __version__


def whoami(app: App, req: Request) -> dict[str, Any]:
    """The caller's token name and role (``anonymous`` / ``admin`` with --no-auth)."""
    identity = req.identity or app.authenticator.authenticate(req.header("Authorization"))
    return {"name": identity.name, "role": identity.role}


def _limits(settings: Settings) -> dict[str, Any]:
    """What a job submission may ask for: the shells a script may name and the timeout range."""
    return {
        "allowed_shells": list(settings.security.allowed_shells),
        "max_timeout": int(settings.api.max_timeout),
        "default_timeout": default_timeout(settings),
    }


def system_info(app: App, req: Request) -> dict[str, Any]:
    return {**queries.system_info(), **_limits(app.settings)}


def system_timeline(app: App, req: Request) -> dict[str, Any]:
    raw = req.arg("minutes") or "60"
    try:
        minutes = int(raw)
    except ValueError:
        raise ValidationError("minutes must be an integer", details={"minutes": "must be an integer"}) from None
    if not 1 <= minutes <= queries.MAX_TIMELINE_MINUTES:
        limit = queries.MAX_TIMELINE_MINUTES
        raise ValidationError("minutes out of range", details={"minutes": f"must be between 1 and {limit}"})
    return {"minutes": queries.timeline(minutes)}


def _workers(app: App) -> list[dict[str, Any]] | None:
    try:
        workers = _queue(app).workers()
    except QUEUE_ERRORS:
        return None
    out = []
    for worker in workers:
        item = dict(worker)
        item.setdefault("running", len(item.get("jobs") or []))
        out.append(item)
    return out


def system_enhanced(app: App, req: Request) -> dict[str, Any]:
    stats = _queue_stats(app)
    workers = _workers(app)
    return {
        **queries.system_info(),
        **_limits(app.settings),
        "queue": stats if stats is not None else {"error": "queue unavailable"},
        "queue_available": stats is not None,
        "workers": workers or [],
        "api": {"uptime_seconds": round(time.time() - app.started_at, 3), "process": procstats.sample()},
    }


def workers_stats(app: App, req: Request) -> dict[str, Any]:
    workers = _workers(app)
    if workers is None:
        raise QueueUnavailable("the queue is unavailable", retry_after=5)
    return {
        "workers": workers,
        "total_workers": len(workers),
        "active_workers": sum(1 for w in workers if w.get("active", (w.get("heartbeat_age") or 0) < 30)),
    }


MONITOR_INTERVAL = 1.0  # seconds between two events of a live monitor
MONITOR_LIFETIME = 300.0  # a live monitor ends after this (the dashboard opens a new one): its thread is not held for ever


def monitor_snapshot(app: App) -> dict[str, Any]:
    """What a live monitor event carries: the queue's stats and workers (``queue_error`` when it did not answer) and this API's process."""
    data: dict[str, Any] = {"time": round(time.time(), 3), "api": {"process": procstats.sample()}}
    try:
        queue = _queue(app)
        data["stats"] = dict(queue.stats())
        data["workers"] = [dict(w) for w in queue.workers()]
    except QUEUE_ERRORS as exc:
        data["queue_error"] = str(exc) or type(exc).__name__
    return data


def _monitor_events(app: App, interval: float, lifetime: float) -> Iterator[bytes]:
    ends = time.monotonic() + lifetime
    while True:
        yield b"event: monitor\ndata: " + dumps(monitor_snapshot(app)) + b"\n\n"
        if time.monotonic() + interval >= ends:
            yield b'event: end\ndata: {"reason":"reconnect"}\n\n'
            return
        time.sleep(interval)


def queue_monitor(app: App, req: Request) -> Response | dict[str, Any]:
    """With ``Accept: text/event-stream`` a live stream (Server-Sent Events) of the queue's stats and workers, one event
    a second, for a few minutes; otherwise one snapshot as JSON."""
    if "text/event-stream" not in (req.header("Accept") or ""):
        return monitor_snapshot(app)
    app.monitors.acquire(req.client)
    # waitress sends each chunk as it is yielded (send_bytes = 1 since waitress 3): an event is never held back
    response = Response(status=200, body=_monitor_events(app, MONITOR_INTERVAL, MONITOR_LIFETIME), content_type="text/event-stream")
    response.on_close.append(lambda: app.monitors.release(req.client))
    return response.header("Cache-Control", "no-store").header("X-Accel-Buffering", "no")


def queue_stats(app: App, req: Request) -> dict[str, Any]:
    stats = _queue_stats(app)
    if stats is None:
        raise QueueUnavailable("the queue is unavailable", retry_after=5)
    return stats


def _limit(req: Request) -> int:
    raw = req.arg("limit") or "100"
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError("limit must be an integer", details={"limit": "must be an integer"}) from None
    if not 1 <= value <= 1000:
        raise ValidationError("limit out of range", details={"limit": "must be between 1 and 1000"})
    return value


def queue_dlq(app: App, req: Request) -> dict[str, Any]:
    """Dead letters: jobs whose retries ran out and jobs whose workers died too often (docs/dispatch.md)."""
    from remora.services import deadletters

    return deadletters.list_dead(app.ctx, limit=_limit(req))


def dlq_kick(app: App, req: Request) -> dict[str, Any]:
    """A fresh attempt of a dead letter (409 when the job is not one)."""
    from remora.services import deadletters

    job_id = req.path_params["id"]
    job = deadletters.kick(app.ctx, job_id)
    req.audit_target = ("job", job_id)
    return {"kicked": 1, "job_id": job_id, "status": job.status, "message": "a fresh attempt is queued"}


def audit_log(app: App, req: Request) -> dict[str, Any]:
    filters = queries.parse_filters({"page": req.arg("page"), "limit": req.arg("limit")})
    events, total = audit.page(filters.page, filters.limit, req.arg("actor") or None, req.arg("action") or None)
    return {"events": events, "pagination": queries.pagination(filters, total)}


def metrics(app: App, req: Request) -> Response:
    stats = _queue_stats(app)
    body = app.metrics.render(stats, _workers(app) if stats is not None else None)
    return Response(status=200, body=body.encode(), content_type="text/plain; version=0.0.4; charset=utf-8")


def debug_report(app: App, req: Request) -> dict[str, Any]:
    """Version, configuration (masked), database, queue, workers, recent requests and errors: for bug reports."""
    from remora.services import debug

    stats = _queue_stats(app)
    return debug.report(app.settings, queue_stats=stats, workers=_workers(app) if stats is not None else None, log=app.request_log)


def openapi(app: App, req: Request) -> Response:
    from remora.api.openapi import build

    return Response(status=200, body=dumps(build(app.routes, app.settings)))


HEALTH = obj({"status": {"type": "string"}, "database": {"type": "string"}, "queue": {"type": "string"}}, closed=False)
INFO = obj(
    {
        k: {"type": "integer"}
        for k in ("total_jobs", "queued_jobs", "running_jobs", "completed_jobs", "failed_jobs", "canceled_jobs", "total_servers")
    }
    | {
        "success_rate": {"type": "number"},
        "timestamp": {"type": "string"},
        "allowed_shells": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Shells a script job may name (security.allowed_shells).",
        },
        "max_timeout": {"type": "integer", "description": "Largest job timeout in seconds (api.max_timeout)."},
        "default_timeout": {"type": "integer", "description": "Timeout of a job that does not set one, in seconds."},
    },
    ["total_jobs", "success_rate", "allowed_shells", "max_timeout"],
    closed=False,
)
ANY_OBJECT = {"type": "object"}
WHOAMI = obj({"name": {"type": "string"}, "role": {"type": "string", "enum": ["admin", "operator", "runner", "viewer"]}}, ["name", "role"])
COUNT = {"type": "integer", "minimum": 0}
TIMELINE = obj(
    {
        "minutes": array(
            obj(
                {"t": {"type": "string", "format": "date-time"}, "completed": COUNT, "failed": COUNT, "canceled": COUNT},
                ["t"],
                closed=False,
            )
        )
    },
    ["minutes"],
)
PAGE_PARAMS = [
    Param("page", {"type": "integer", "minimum": 1, "maximum": queries.MAX_PAGE}, "Page number (from 1)."),
    Param("limit", {"type": "integer", "minimum": 1, "maximum": 100}, "Entries per page (default 20)."),
    Param("actor", {"type": "string"}, "Only events of this token name."),
    Param("action", {"type": "string"}, "Only this action (route name)."),
]


def routes(settings: Settings) -> list[Route]:
    sys: dict[str, Any] = {"tag": "system"}
    q: dict[str, Any] = {"tag": "queue"}
    return [
        Route("GET", "/health", health, None, "Health of the API, database and queue", response=HEALTH, errors=(503,), **sys),
        Route("GET", "/api/v1/health", health, None, "Health (alias)", response=HEALTH, errors=(503,), name="health_v1", **sys),
        Route("GET", "/api/v1/auth/whoami", whoami, "viewer", "The calling token's name and role", response=WHOAMI, **sys),
        Route("GET", "/api/v1/system/info", system_info, "viewer", "Job and server counts", response=INFO, **sys),
        Route(
            "GET",
            "/api/v1/system/timeline",
            system_timeline,
            "viewer",
            "Jobs finished per minute (completed, failed, canceled), oldest minute first",
            response=TIMELINE,
            query=[
                Param(
                    "minutes",
                    {"type": "integer", "minimum": 1, "maximum": queries.MAX_TIMELINE_MINUTES},
                    "How many minutes back, the current minute included (default 60).",
                )
            ],
            errors=(400,),
            **sys,
        ),
        Route(
            "GET", "/api/v1/system/enhanced", system_enhanced, "viewer", "Counts, queue statistics and workers", response=ANY_OBJECT, **sys
        ),
        Route(
            "GET",
            "/api/v1/workers/stats",
            workers_stats,
            "viewer",
            "Workers and their jobs",
            response=obj({"workers": array(ANY_OBJECT)}, closed=False),
            errors=(503,),
            **sys,
        ),
        Route(
            "GET", "/api/v1/queue/stats", queue_stats, "viewer", "Queue depth, rates, priorities", response=ANY_OBJECT, errors=(503,), **q
        ),
        Route(
            "GET",
            "/api/v1/queue/monitor",
            queue_monitor,
            "viewer",
            "Live queue stats and workers: with Accept: text/event-stream, Server-Sent Events (an event `monitor` every second,"
            " `end` after a few minutes); otherwise one snapshot as JSON",
            content_type="text/event-stream",
            errors=(429, 503),
            **q,
        ),
        Route(
            "GET",
            "/api/v1/queue/dlq",
            queue_dlq,
            "viewer",
            "Dead-letter queue",
            response=obj({"jobs": array(ANY_OBJECT)}, closed=False),
            query=[Param("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "Most entries.")],
            errors=(400, 503),
            **q,
        ),
        Route(
            "POST",
            "/api/v1/queue/dlq/{id:uuid}/kick",
            dlq_kick,
            "operator",
            "Queue a fresh attempt of a dead letter",
            response=ANY_OBJECT,
            errors=(404, 409, 503),
            resource="dead-lettered job",
            **q,
        ),
        Route(
            "GET",
            "/api/v1/audit",
            audit_log,
            "admin",
            "Audit log (newest first)",
            response=obj({"events": array(ANY_OBJECT), "pagination": ANY_OBJECT}, closed=False),
            query=PAGE_PARAMS,
            errors=(400,),
            **sys,
        ),
        Route(
            "GET",
            "/api/v1/debug",
            debug_report,
            "admin",
            "Debug report: version, configuration with sources (secrets masked), database, queue, workers, recent requests and errors",
            response=obj(
                {k: ANY_OBJECT for k in ("build", "config", "database", "queue")}
                | {"workers": {"type": ["array", "null"]}, "requests": array(ANY_OBJECT), "errors": array(ANY_OBJECT)},
                ["build", "config", "database", "queue", "requests", "errors"],
                closed=False,
            ),
            **sys,
        ),
        Route("GET", "/metrics", metrics, "viewer", "Prometheus metrics", content_type="text/plain", **sys),
        Route("GET", "/api/v1/openapi.json", openapi, "viewer", "This API's OpenAPI 3.1 document", response=ANY_OBJECT, **sys),
    ]


__all__ = ["Unavailable", "routes"]
