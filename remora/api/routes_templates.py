"""Template routes: list, show, create, replace, delete (operators), run (runners and up); every change audited."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from remora import params
from remora.api.http import Request
from remora.api.router import Route
from remora.api.routes_jobs import RUN_AT, SUBMITTED, _for_reader, _job_fields, submitted
from remora.api.schema import NULLABLE_STR, TIMESTAMP, UUID, array, obj
from remora.config import Settings
from remora.services import templates

if TYPE_CHECKING:
    from remora.api.app import App

PARAMETER = obj(
    {
        "name": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,63}$"},
        "type": {"type": "string", "enum": list(params.TYPES)},
        "default": {"type": ["string", "integer", "boolean", "null"]},
        "required": {"type": "boolean"},
        "secret": {"type": "boolean", "description": "Exported only as a secret REMORA_PARAM_<NAME> (masked); no {{ }} placeholder."},
        "description": {"type": ["string", "null"], "maxLength": 4096},
        "choices": {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 1000},
    },
    ["name"],
)


def template_body(settings: Settings) -> dict[str, Any]:
    fields = _job_fields(settings)
    shells = {"type": ["string", "null"], "enum": [*settings.security.allowed_shells, None]}
    props = {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,128}$"},
        "description": {"type": ["string", "null"], "maxLength": 65536},
        "command": {"type": ["string", "null"], "maxLength": 65536},
        "script": {"type": ["string", "null"], "maxLength": 1024 * 1024},
        "shell": shells,
        "parameters": {"type": ["array", "null"], "items": PARAMETER, "maxItems": params.MAX_PARAMETERS},
        **{k: fields[k] for k in ("args", "env", "secret_env", "priority", "timeout", "retries", "servers", "rollout")},
    }
    return obj(props, ["name"])


def update_body(settings: Settings) -> dict[str, Any]:
    body = template_body(settings)
    return {**body, "required": []}


TEMPLATE = obj(
    {
        "id": UUID,
        "name": {"type": "string"},
        "description": {"type": "string"},
        "command": {"type": "string"},
        "args": {"type": "string"},
        "script": {**NULLABLE_STR, "description": "The script body: null for viewers and runners (then script_hidden is true)."},
        "script_hidden": {
            "type": "boolean",
            "description": "Present (true) when the caller's role may not see the script (viewers, runners).",
        },
        "shell": NULLABLE_STR,
        "servers": {"type": "array", "items": {"type": "string"}},
        "priority": {"type": ["integer", "null"]},
        "timeout": {"type": ["integer", "null"]},
        "retries": {"type": ["integer", "null"]},
        "env": {"type": "object"},
        "secret_env": {"type": "object", "description": "The names of the template's secret variables, each ***."},
        "rollout": {"type": ["object", "null"]},
        "parameters": array(PARAMETER),
        "created_by": {"type": "string"},
        "created_at": TIMESTAMP,
        "updated_at": TIMESTAMP,
    },
    closed=False,
)
TEMPLATE_LIST = obj({"templates": array(TEMPLATE)}, ["templates"])
RUN_BODY = obj(
    {
        "params": {
            "type": ["object", "null"],
            "additionalProperties": {"type": ["string", "integer", "boolean"]},
            "maxProperties": params.MAX_PARAMETERS,
        },
        "servers": {
            "type": ["array", "null"],
            "items": {"type": "string", "minLength": 1, "maxLength": 255},
            "maxItems": 1000,
            "description": "Run on these servers (names, ids, tag:T) instead of the template's.",
        },
        "run_at": RUN_AT,
    }
)
DELETED = obj({"message": {"type": "string"}, "name": {"type": "string"}})


def _actor(req: Request) -> str:
    return req.identity.name if req.identity else "anonymous"


def _role(req: Request) -> str:
    return req.identity.role if req.identity else "admin"


def _shown(req: Request, row: Any) -> dict[str, Any]:
    """A template as the caller may see it: like a job's, its script body is for operators and admins."""
    return _for_reader(req, templates.template_dict(row))


def list_templates(app: App, req: Request) -> dict[str, Any]:
    return {"templates": [_shown(req, row) for row in templates.list_templates()]}


def get_template(app: App, req: Request) -> dict[str, Any]:
    return _shown(req, templates.get_template(req.path_params["name"]))


def create_template(app: App, req: Request, body: dict[str, Any]) -> dict[str, Any]:
    row = templates.create_template(app.ctx, body, _actor(req))
    req.audit_target = ("template", row.name)
    return templates.template_dict(row)


def update_template(app: App, req: Request, body: dict[str, Any]) -> dict[str, Any]:
    row = templates.update_template(app.ctx, req.path_params["name"], body)
    req.audit_target = ("template", row.name)
    if row.name != req.path_params["name"]:
        req.audit_details = {"renamed_from": req.path_params["name"]}
    return templates.template_dict(row)


def delete_template(app: App, req: Request) -> dict[str, Any]:
    row = templates.delete_template(req.path_params["name"])
    req.audit_target = ("template", row.name)
    return {"message": "template deleted", "name": row.name}


def run_template(app: App, req: Request, body: dict[str, Any] | None) -> dict[str, Any]:
    body = body or {}
    name = req.path_params["name"]
    jobs, servers, batch = templates.run_template(
        app.ctx, name, body.get("params"), body.get("servers"), _actor(req), role=_role(req), run_at=body.get("run_at")
    )
    return submitted(req, jobs, servers, batch, {"template": name, "params": jobs[0].params or {}})


def routes(settings: Settings) -> list[Route]:
    base = "/api/v1/templates"
    one = base + "/{name:str}"
    common = {"tag": "templates", "resource": "template"}
    return [
        Route("GET", base, list_templates, "viewer", "Job templates", response=TEMPLATE_LIST, **common),
        Route(
            "POST",
            base,
            create_template,
            "operator",
            "Save a job template (typed parameters checked now)",
            body=template_body(settings),
            response=TEMPLATE,
            status=201,
            errors=(400, 409, 413, 415),
            name="template_create",
            **common,
        ),
        Route("GET", one, get_template, "viewer", "A job template", response=TEMPLATE, errors=(404,), **common),
        Route(
            "PUT",
            one,
            update_template,
            "operator",
            "Replace a job template's definition (a secret variable given as *** keeps its stored value)",
            body=update_body(settings),
            response=TEMPLATE,
            errors=(400, 404, 409, 413, 415),
            name="template_update",
            **common,
        ),
        Route(
            "DELETE",
            one,
            delete_template,
            "operator",
            "Delete a job template",
            response=DELETED,
            errors=(404,),
            name="template_delete",
            **common,
        ),
        Route(
            "POST",
            one + "/run",
            run_template,
            "runner",
            "Run a template: parameters are quoted into its command and exported as REMORA_PARAM_<NAME>",
            body=RUN_BODY,
            body_required=False,
            response=SUBMITTED,
            status=201,
            errors=(400, 403, 404, 409, 413, 415, 503),
            name="template_run",
            **common,
        ),
    ]
