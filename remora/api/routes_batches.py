"""Batch routes: list, show (optionally with each host's output), cancel, rerun."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from remora.api.http import Request, Response, dumps
from remora.api.router import Param, Route
from remora.api.schema import NULLABLE_STR, TIMESTAMP, UUID, array, obj
from remora.config import Settings
from remora.errors import ValidationError
from remora.models import BatchStatus
from remora.services import batches, queries

if TYPE_CHECKING:
    from remora.api.app import App

STATUSES = [s.value for s in BatchStatus]
HOST = obj(
    {
        "server_id": UUID,
        "server_name": {"type": "string"},
        "job_id": UUID,
        "status": {"type": "string"},
        "exit_code": {"type": ["integer", "null"]},
        "duration": {"type": ["number", "null"]},
        "error": {"type": "string"},
        "stdout": {"type": "string"},
        "stderr": {"type": "string"},
        "output_truncated": {"type": "boolean"},
    },
    ["server_id", "server_name", "job_id", "status", "exit_code", "duration"],
    closed=False,
)
BATCH = obj(
    {
        "id": UUID,
        "name": NULLABLE_STR,
        "command": {"type": "string"},
        "status": {"type": "string", "enum": STATUSES},
        "error": {"type": "string"},
        "total": {"type": "integer"},
        "counts": {"type": "object"},
        "rollout": {"type": "object"},
        "parent_id": NULLABLE_STR,
        "created_at": TIMESTAMP,
        "created_by": {"type": "string"},
        "started_at": TIMESTAMP,
        "finished_at": TIMESTAMP,
        "hosts": array(HOST),
    },
    ["id", "command", "status", "total", "counts", "rollout", "created_at", "created_by", "started_at", "finished_at"],
    closed=False,
)
BATCH_LIST = obj({"batches": array(BATCH), "pagination": {"type": "object"}}, ["batches", "pagination"], closed=False)
RERUN_BODY = obj({"only": {"type": "string", "enum": ["failed", "all"]}})


def _actor(req: Request) -> str:
    return req.identity.name if req.identity else "anonymous"


def _role(req: Request) -> str:
    return req.identity.role if req.identity else "admin"


def _int(req: Request, name: str, default: int, top: int) -> int:
    raw = req.arg(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= top:
        raise ValidationError(f"{name} must be a whole number between 1 and {top}", details={name: "out of range"})
    return value


def list_batches(app: App, req: Request) -> dict[str, Any]:
    return batches.list_batches(_int(req, "page", 1, 10**6), _int(req, "limit", 50, 500), req.arg("status") or None)


def get_batch(app: App, req: Request) -> Response | dict[str, Any]:
    raw = (req.arg("output") or "false").strip().lower()
    if raw not in ("true", "false", "1", "0"):
        raise ValidationError("output must be true or false", details={"output": "must be true or false"})
    batch = batches.get_batch(req.path_params["id"])
    if raw in ("true", "1"):
        return batches.batch_detail(batch, output=True)
    # Without output the answer changes only with the batch row or a job (every job write sets its
    # updated_at, which the jobs marker covers): a dashboard polling a finished batch gets 304s.
    state = (queries.change_marker(), batch.status, batch.updated_at, batch.finished_at, batch.error)
    etag = 'W/"' + hashlib.sha1(repr(state).encode()).hexdigest()[:24] + '"'
    if req.header("If-None-Match") == etag:
        return Response(status=304).header("ETag", etag)
    body = dumps(batches.batch_detail(batch))
    return Response(status=200, body=body).header("ETag", etag).header("Cache-Control", "no-cache")


def cancel_batch(app: App, req: Request) -> dict[str, Any]:
    batch = batches.cancel_batch(app.ctx, req.path_params["id"], _actor(req))
    req.audit_target = ("batch", batch.id)
    return batches.batch_detail(batch)


def rerun_batch(app: App, req: Request, body: dict[str, Any] | None) -> dict[str, Any]:
    only = (body or {}).get("only") or "failed"
    batch = batches.rerun_batch(app.ctx, req.path_params["id"], _actor(req), role=_role(req), only=only)
    req.audit_target = ("batch", batch.id)
    req.audit_details = {"parent": req.path_params["id"], "only": only}
    return batches.batch_detail(batch)


def routes(settings: Settings) -> list[Route]:
    base = "/api/v1/batches"
    one = base + "/{id:uuid}"
    common = {"tag": "batches", "resource": "batch"}
    return [
        Route(
            "GET",
            base,
            list_batches,
            "viewer",
            "List batches (fan-outs), newest first",
            response=BATCH_LIST,
            query=[
                Param("page", {"type": "integer", "minimum": 1}, "Page (default 1)."),
                Param("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "Batches per page (default 50)."),
                Param("status", {"type": "string", "enum": STATUSES}, "Only batches with this status."),
            ],
            errors=(400,),
            **common,
        ),
        Route(
            "GET",
            one,
            get_batch,
            "viewer",
            "A batch with its counts and each host's job",
            response=BATCH,
            query=[Param("output", {"type": "boolean", "default": False}, "true: each host with its stdout and stderr (bounded).")],
            errors=(400, 404),
            **common,
        ),
        Route(
            "POST",
            one + "/cancel",
            cancel_batch,
            "operator",
            "Cancel every unfinished job of the batch",
            response=BATCH,
            errors=(404, 409),
            **common,
        ),
        Route(
            "POST",
            one + "/rerun",
            rerun_batch,
            "operator",
            "A new batch on the failed and canceled hosts (or all)",
            body=RERUN_BODY,
            body_required=False,
            response=BATCH,
            status=201,
            errors=(400, 404, 409, 503),
            **common,
        ),
    ]
