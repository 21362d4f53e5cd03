"""Job routes: submit (command, script, fan-out), list, show, cancel, duplicate, rerun, priority, logs."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from remora import output, services
from remora.api.http import Request, Response
from remora.api.router import Param, Route
from remora.api.schema import NULLABLE_STR, TIMESTAMP, UUID, array, obj
from remora.config import Settings
from remora.errors import ValidationError
from remora.executor.base import Stream
from remora.models import Server
from remora.services import queries

if TYPE_CHECKING:
    from remora.api.app import App

MAX_OFFSET = 2**62
RUN_AT = {
    "type": ["string", "null"],
    "maxLength": 64,
    "description": "Start no earlier than this RFC 3339 time (future; with a UTC offset): the job waits queued, delayed on the queue.",
}
NAME_LIST = {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 255}, "maxItems": 1000}


def _job_fields(settings: Settings) -> dict[str, Any]:
    return {
        "name": {"type": ["string", "null"], "maxLength": 255},
        "args": {"type": ["string", "array", "null"], "items": {"type": "string"}, "maxLength": 65536, "maxItems": 1000},
        "env": {"type": ["object", "null"], "additionalProperties": {"type": "string", "maxLength": 65536}, "maxProperties": 200},
        "secret_env": {
            "type": ["object", "null"],
            "additionalProperties": {"type": "string", "maxLength": 65536},
            "maxProperties": 200,
            "description": "Secret variables: stored encrypted, injected at run time, never returned (***), masked as *** in stored output.",
        },
        "workdir": {"type": ["string", "null"], "maxLength": 4096},
        "pty": {"type": "boolean"},
        "priority": {"type": "integer", "minimum": 1, "maximum": 10},
        "timeout": {"type": "integer", "minimum": 1, "maximum": settings.api.max_timeout},
        "retries": {"type": "integer", "minimum": 0, "maximum": 10},
        "queue": {"type": ["string", "null"], "pattern": "^[A-Za-z0-9_.-]{1,128}$"},
        "server_id": {"type": ["string", "null"], "maxLength": 255},
        "run_at": RUN_AT,
        "server_ids": NAME_LIST,
        "servers": NAME_LIST,
        "rollout": {
            "type": ["object", "null"],
            "properties": {"concurrency": {"type": ["integer", "string", "null"]}, "max_failures": {"type": ["integer", "string", "null"]}},
            "additionalProperties": False,
            "description": "A fan-out's rollout: at most concurrency (N or P% of its hosts) run at once; past max_failures failed hosts the rest are canceled.",
        },
    }


def job_schema(settings: Settings) -> dict[str, Any]:
    shells = {"type": ["string", "null"], "enum": [*settings.security.allowed_shells, None]}
    return obj(
        {
            **_job_fields(settings),
            "command": {"type": "string", "minLength": 1, "maxLength": 65536},
            "script": {"type": ["string", "null"], "maxLength": 1024 * 1024},
            "shell": shells,
        }
    )


def script_schema(settings: Settings) -> dict[str, Any]:
    shells = {"type": ["string", "null"], "enum": [*settings.security.allowed_shells, None]}
    fields = {**_job_fields(settings), "script": {"type": "string", "minLength": 1, "maxLength": 1024 * 1024}, "shell": shells}
    return obj(fields, ["script"])


SERVER_REF = obj({"id": UUID, "name": {"type": "string"}, "hostname": {"type": "string"}})
JOB = obj(
    {
        "id": UUID,
        "name": NULLABLE_STR,
        "command": {"type": "string"},
        "args": {"type": "string"},
        "script": NULLABLE_STR,
        "script_hidden": {"type": "boolean", "description": "Present (true) when the caller's role may not see the script (viewers)."},
        "shell": NULLABLE_STR,
        "env": {
            "type": "object",
            "description": "Values of secret variables (secret_env, secret-looking names: security.secret_env_patterns) read ***.",
        },
        "secret_env": {"type": "object", "description": "The names of the job's secret variables, each ***."},
        "server_id": UUID,
        "server": {"type": ["object", "null"], "properties": SERVER_REF["properties"]},
        "batch_id": NULLABLE_STR,
        "parent_id": NULLABLE_STR,
        "status": {"type": "string", "enum": ["queued", "running", "completed", "failed", "canceled"]},
        "priority": {"type": "integer"},
        "timeout": {"type": "integer"},
        "retries": {"type": "integer"},
        "attempts": {"type": "integer"},
        "exit_code": {"type": ["integer", "null"]},
        "error": {"type": "string"},
        "stdout": {"type": "string"},
        "stderr": {"type": "string"},
        "output": {"type": "string"},
        "stdout_bytes": {"type": "integer"},
        "stderr_bytes": {"type": "integer"},
        "created_at": TIMESTAMP,
        "updated_at": TIMESTAMP,
        "started_at": TIMESTAMP,
        "finished_at": TIMESTAMP,
        "duration": {"type": ["number", "null"]},
        "worker": NULLABLE_STR,
        "template": {"type": ["string", "null"], "description": "The template it was run from."},
        "run_at": {"type": ["string", "null"], "description": "A delayed job's earliest start (RFC 3339 UTC)."},
        "params": {"type": ["object", "null"], "description": "The template run's parameters (secret ones ***)."},
    },
    closed=False,
)
BATCH = obj({"batch_id": NULLABLE_STR, "jobs": array(JOB)}, ["batch_id", "jobs"], closed=False)
SUBMITTED = {"oneOf": [JOB, BATCH], "description": "One server: the job.  Several (a fan-out): the batch id and its jobs."}
JOB_LIST = obj(
    {
        "jobs": array(JOB),
        "pagination": obj(
            {
                k: {"type": t}
                for k, t in {
                    "page": "integer",
                    "limit": "integer",
                    "total": "integer",
                    "total_pages": "integer",
                    "has_next": "boolean",
                    "has_prev": "boolean",
                }.items()
            },
            closed=False,
        ),
        "filters": {"type": "object"},
    },
    ["jobs", "pagination"],
    closed=False,
)
JOB_MESSAGE = obj({"job": JOB, "message": {"type": "string"}}, closed=False)
NEW_JOB = obj({"new_job": JOB, "original_job": JOB, "message": {"type": "string"}}, closed=False)
LOGS = obj(
    {
        "job_id": UUID,
        "status": {"type": "string"},
        "stdout": {"type": "string"},
        "stderr": {"type": "string"},
        "output": {"type": "string"},
        "pieces": {
            "type": "array",
            "description": "The returned stdout and stderr as pieces in the order the job wrote them (the combined view).",
            "items": obj({"stream": {"type": "string", "enum": ["stdout", "stderr"]}, "text": {"type": "string"}}, ["stream", "text"]),
        },
        "next_stdout_offset": {"type": "integer"},
        "next_stderr_offset": {"type": "integer"},
        "complete": {"type": "boolean"},
        "metadata": {"type": "object"},
    },
    closed=False,
)
DUPLICATE_BODY = obj(
    {
        "server_id": {"type": ["string", "null"], "maxLength": 255},
        "timeout": {"type": ["integer", "null"], "minimum": 1, "maximum": 86400 * 365},
        "priority": {"type": ["integer", "null"], "minimum": 1, "maximum": 10},
    }
)
PRIORITY_BODY = obj({"priority": {"type": "integer", "minimum": 1, "maximum": 10}}, ["priority"])


def _render(job: Any) -> dict[str, Any]:
    return services.job_dict(job, Server.get_or_none(Server.id == job.server_id))


def _actor(req: Request) -> str:
    return req.identity.name if req.identity else "anonymous"


def _role(req: Request) -> str:
    return req.identity.role if req.identity else "admin"


def _hidden_mark(req: Request, job: Any) -> str:
    """Part of a job's ETag: what a viewer gets differs from an operator's only when a script is hidden."""
    return "-noscript" if job.script is not None and not services.may_see_script(_role(req)) else ""


def _for_reader(req: Request, data: dict[str, Any]) -> dict[str, Any]:
    """A job as the caller may see it: script bodies are for operators and admins (viewers get null)."""
    if not services.may_see_script(_role(req)) and data.get("script") is not None:
        data["script"] = None
        data["script_hidden"] = True
    return data


def _submit(app: App, req: Request, body: dict[str, Any]) -> Response | dict[str, Any]:
    spec = services.job_spec(body, app.ctx)
    servers = services.resolve_servers(spec.server_id, spec.server_ids, spec.servers)
    batch = bool(spec.server_ids or spec.servers)
    jobs = services.create_jobs(app.ctx, spec, servers, _actor(req), role=_role(req), batch=batch)
    return submitted(req, jobs, servers, batch)


def submitted(req: Request, jobs: list[Any], servers: list[Any], batch: bool, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """The answer to a submission (a job, or a batch with its jobs, as the caller may see them) and its audit target.

    ``details``: what the audit event records besides the number of jobs (a single job's plain submit records none).
    """
    by_id = {s.id: s for s in servers}
    rendered = [_for_reader(req, services.job_dict(job, by_id.get(job.server_id))) for job in jobs]
    if details is not None or batch:
        req.audit_details = {**(details or {}), "jobs": len(jobs)}
    if batch:
        req.audit_target = ("batch", jobs[0].batch_id or jobs[0].id)
        return {"batch_id": jobs[0].batch_id, "jobs": rendered}
    req.audit_target = ("job", jobs[0].id)
    return rendered[0]


def submit_job(app: App, req: Request, body: dict[str, Any]) -> Any:
    return _submit(app, req, body)


def submit_script(app: App, req: Request, body: dict[str, Any]) -> Any:
    return _submit(app, req, body)


LIST_ARGS = (
    "page", "limit", "status", "server_id", "batch_id", "search", "id_prefix", "sort_by", "sort_order",
    "search_output", "created_after", "created_before", "exit_code",
)  # fmt: skip


def list_jobs(app: App, req: Request) -> Response | dict[str, Any]:
    filters = queries.parse_filters({k: req.arg(k) for k in LIST_ARGS})
    etag = (
        'W/"'
        + hashlib.sha1(f"{queries.change_marker()}|{req.query_string}|{services.may_see_script(_role(req))}".encode()).hexdigest()[:24]
        + '"'
    )
    if req.header("If-None-Match") == etag:
        return Response(status=304).header("ETag", etag)
    jobs, total = queries.list_jobs(filters)
    jobs = [_for_reader(req, job) for job in jobs]
    data = {"jobs": jobs, "pagination": queries.pagination(filters, total), "filters": filters.to_dict()}
    response = Response(status=200, body=_dumps(data))
    return response.header("ETag", etag).header("Cache-Control", "no-cache")


def _dumps(data: Any) -> bytes:
    from remora.api.http import dumps

    return dumps(data)


def _flag(req: Request, name: str, default: bool) -> bool:
    raw = req.arg(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value not in ("true", "false", "1", "0"):
        raise ValidationError(f"{name} must be true or false", details={name: "must be true or false"})
    return value in ("true", "1")


def get_job(app: App, req: Request) -> Response:
    with_output = _flag(req, "output", True)
    job = services.get_job(req.path_params["id"])
    stamp = job.updated_at.timestamp() if job.updated_at else 0
    etag = f'W/"{stamp}-{job.stdout_bytes}-{job.stderr_bytes}-{job.status}{"" if with_output else "-meta"}{_hidden_mark(req, job)}"'
    if req.header("If-None-Match") == etag:
        return Response(status=304).header("ETag", etag)
    data = _for_reader(req, queries.job_detail(job) if with_output else _render(job))
    return Response(status=200, body=_dumps(data)).header("ETag", etag).header("Cache-Control", "no-cache")


def cancel_job(app: App, req: Request) -> dict[str, Any]:
    job, message = services.cancel_job(app.ctx, req.path_params["id"], _actor(req))
    req.audit_target = ("job", job.id)
    return {"job": _render(job), "message": message}


def duplicate_job(app: App, req: Request, body: dict[str, Any] | None) -> dict[str, Any]:
    new, original = services.duplicate_job(app.ctx, req.path_params["id"], _actor(req), body or {}, role=_role(req))
    req.audit_target = ("job", new.id)
    req.audit_details = {"original": original.id}
    return {"new_job": _render(new), "original_job": _render(original), "message": "job duplicated"}


def rerun_job(app: App, req: Request) -> dict[str, Any]:
    new, original = services.rerun_job(app.ctx, req.path_params["id"], _actor(req), role=_role(req))
    req.audit_target = ("job", new.id)
    req.audit_details = {"original": original.id}
    return {"new_job": _render(new), "original_job": _render(original), "message": "job queued again"}


def set_priority(app: App, req: Request, body: dict[str, Any]) -> dict[str, Any]:
    job = services.set_priority(app.ctx, req.path_params["id"], body["priority"], _actor(req))
    req.audit_details = {"priority": body["priority"]}
    return _render(job)


def _offset(req: Request, name: str) -> int | None:
    raw = req.arg(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(f"{name} must be an integer", details={name: "must be a non-negative integer"}) from None
    if not 0 <= value <= MAX_OFFSET:
        raise ValidationError(f"{name} out of range", details={name: f"must be between 0 and {MAX_OFFSET}"})
    return value


def job_logs(app: App, req: Request) -> dict[str, Any]:
    job = services.get_job(req.path_params["id"])
    max_bytes = _offset(req, "max_bytes")
    if max_bytes is not None and not 1 <= max_bytes <= queries.MAX_LOG_SLICE:
        raise ValidationError("max_bytes out of range", details={"max_bytes": f"must be between 1 and {queries.MAX_LOG_SLICE}"})
    return queries.job_logs(job, _offset(req, "stdout_offset"), _offset(req, "stderr_offset"), max_bytes or queries.LOG_SLICE)


RAW_PAGE = 4  # chunks read from the database at a time (at most 1 MiB) while a raw stream is sent


def _raw(app: App, req: Request, stream: Stream) -> Response:
    job = services.get_job(req.path_params["id"])
    length = int(job.stdout_bytes if stream == Stream.STDOUT else job.stderr_bytes)
    app.streams.acquire(req.client)
    body = output.iter_stream(job.id, stream, 0, length, page=RAW_PAGE)
    response = Response(status=200, body=body, content_type="text/plain; charset=utf-8")
    response.on_close.append(lambda: app.streams.release(req.client))
    response.header("Content-Length", str(length))
    return response.header("X-Job-Status", job.status).header("X-Content-Type-Options", "nosniff")


def job_stdout(app: App, req: Request) -> Response:
    return _raw(app, req, Stream.STDOUT)


def job_stderr(app: App, req: Request) -> Response:
    return _raw(app, req, Stream.STDERR)


LIST_PARAMS = [
    Param("page", {"type": "integer", "minimum": 1, "maximum": queries.MAX_PAGE}, "Page number (from 1)."),
    Param("limit", {"type": "integer", "minimum": 1, "maximum": 100}, "Jobs per page (default 20)."),
    Param("status", {"type": "string"}, "queued, running, completed, failed, canceled (comma-separated)."),
    Param("server_id", {"type": "string"}, "Only jobs on this server."),
    Param("batch_id", {"type": "string"}, "Only jobs of this fan-out."),
    Param("search", {"type": "string", "maxLength": 200}, "Substring of command, args, job name or server name."),
    Param(
        "search_output",
        {"type": "boolean"},
        f"With search: also match the jobs' output (case-insensitive), bounded to the first {queries.SEARCH_OUTPUT_BYTES // 1024} KiB "
        f"of each stream of the {queries.SEARCH_OUTPUT_JOBS} newest jobs with output that match the other filters.",
    ),
    Param("created_after", {"type": "string", "format": "date-time"}, "Only jobs created at or after this RFC 3339 time."),
    Param("created_before", {"type": "string", "format": "date-time"}, "Only jobs created before this RFC 3339 time."),
    Param(
        "exit_code",
        {"type": "integer", "minimum": -queries.MAX_EXIT_CODE, "maximum": queries.MAX_EXIT_CODE},
        "Only jobs that exited with this code.",
    ),
    Param(
        "id_prefix",
        {"type": "string", "maxLength": 36, "pattern": "^[0-9a-fA-F-]*$"},
        "Only jobs whose id starts with this (abbreviated ids).",
    ),
    Param("sort_by", {"type": "string", "enum": list(queries.SORT_FIELDS)}, "Sort column (default created_at)."),
    Param("sort_order", {"type": "string", "enum": ["asc", "desc"]}, "Sort order (default desc)."),
]
OFFSET = {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}
LOG_PARAMS = [
    Param("stdout_offset", OFFSET, "Byte offset in stdout: answer only what follows."),
    Param("stderr_offset", OFFSET, "Byte offset in stderr: answer only what follows."),
    Param("max_bytes", {"type": "integer", "minimum": 1, "maximum": queries.MAX_LOG_SLICE}, "Most bytes per stream (default 1 MiB)."),
]


def routes(settings: Settings) -> list[Route]:
    base = "/api/v1/jobs"
    one = base + "/{id:uuid}"
    common = {"tag": "jobs", "resource": "job"}
    return [
        Route(
            "POST",
            base,
            submit_job,
            "operator",
            "Submit a job (one server, or a fan-out with server_ids / servers)",
            body=job_schema(settings),
            response=SUBMITTED,
            status=201,
            errors=(400, 409, 413, 415, 503),
            **common,
        ),
        Route(
            "POST",
            base + "/script",
            submit_script,
            "operator",
            "Submit a shell script job",
            body=script_schema(settings),
            response=SUBMITTED,
            status=201,
            errors=(400, 413, 415, 503),
            **common,
        ),
        Route(
            "GET",
            base,
            list_jobs,
            "viewer",
            "List jobs (filters, search, sort, pages; ETag)",
            response=JOB_LIST,
            query=LIST_PARAMS,
            errors=(400,),
            **common,
        ),
        Route(
            "GET",
            one,
            get_job,
            "viewer",
            "A job with its server and output (ETag)",
            response=JOB,
            query=[
                Param(
                    "output",
                    {"type": "boolean", "default": True},
                    "false: leave out the stdout, stderr and output bodies (byte counts stay); for polling a running job.",
                )
            ],
            errors=(400, 404),
            **common,
        ),
        Route(
            "POST",
            one + "/cancel",
            cancel_job,
            "operator",
            "Cancel a queued or running job",
            response=JOB_MESSAGE,
            errors=(404, 409),
            **common,
        ),
        Route(
            "POST",
            one + "/duplicate",
            duplicate_job,
            "operator",
            "A new job copying this one",
            body=DUPLICATE_BODY,
            body_required=False,
            response=NEW_JOB,
            status=201,
            errors=(400, 404, 503),
            **common,
        ),
        Route(
            "POST",
            one + "/rerun",
            rerun_job,
            "operator",
            "Run a finished job again",
            response=NEW_JOB,
            status=201,
            errors=(404, 409, 503),
            **common,
        ),
        Route(
            "POST",
            one + "/priority",
            set_priority,
            "operator",
            "Change a queued job's priority",
            body=PRIORITY_BODY,
            response=JOB,
            errors=(400, 404, 409),
            **common,
        ),
        Route(
            "GET",
            one + "/logs",
            job_logs,
            "viewer",
            "Logs, full or from byte offsets",
            response=LOGS,
            query=LOG_PARAMS,
            errors=(400, 404),
            **common,
        ),
        Route(
            "GET", one + "/stdout", job_stdout, "viewer", "Raw stdout (byte-exact)", content_type="text/plain", errors=(404, 503), **common
        ),
        Route(
            "GET", one + "/stderr", job_stderr, "viewer", "Raw stderr (byte-exact)", content_type="text/plain", errors=(404, 503), **common
        ),
    ]
