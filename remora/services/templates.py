"""Job templates: saved, parameterised jobs run by name.

A template is a job spec (command or script, targets, priority, env ...) plus
typed parameters (``string``, ``int``, ``bool``, ``choice``).  Running it
turns the parameters into text that can never become shell syntax:

- ``{{ name }}`` in ``command``, ``args`` and ``script`` is replaced by the
  value quoted for a POSIX shell (``shlex.quote``): a value is always one word,
  read literally;
- every parameter is also exported as ``REMORA_PARAM_<NAME>`` (upper case);
  a ``secret`` parameter only so, as a secret variable (stored encrypted,
  masked in output), and a ``{{ }}`` of a secret parameter is refused when the
  template is saved (it would put the value in the job's command in clear).

Parameters are checked when the template is saved (types, defaults, choices,
placeholders naming unknown parameters) and again on every run (missing,
mistyped, out-of-choice or unknown parameters are a 400 naming them).
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from remora import models
from remora.errors import Conflict, NotFound, ValidationError
from remora.jobfile import JobSpec
from remora.masking import MIN_SECRET_BYTES
from remora.models import Job, Server, Template
from remora.services.context import Context
from remora.services.jobs import MASK, create_jobs, job_spec, split_env, validate_spec
from remora.services.servers import resolve_servers

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
PARAM_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
PLACEHOLDER_RE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
TYPES = ("string", "int", "bool", "choice")
MAX_STRING = 65536
MAX_PARAMETERS = 100
ENV_PREFIX = "REMORA_PARAM_"
TEXT_FIELDS = ("command", "args", "script")


def _fail(field: str, message: str) -> ValidationError:
    return ValidationError(f"invalid template: {field} {message}", details={field: message})


def _param_error(name: str, message: str) -> ValidationError:
    return ValidationError(f"parameter {name!r} {message}", details={"params": {name: message}, "parameter": name})


def coerce(param: dict[str, Any], value: Any) -> str:
    """A parameter's value as text (what is quoted and exported); raises ValidationError naming it."""
    name, kind = param["name"], param["type"]
    if kind == "int":
        if isinstance(value, bool) or isinstance(value, float):
            raise _param_error(name, "must be an integer")
        if isinstance(value, str):
            text = value.strip()
            if not re.fullmatch(r"[+-]?[0-9]{1,18}", text):
                raise _param_error(name, "must be an integer")
            value = int(text)
        if not isinstance(value, int):
            raise _param_error(name, "must be an integer")
        return str(value)
    if kind == "bool":
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower()
        raise _param_error(name, "must be true or false")
    if not isinstance(value, str):
        raise _param_error(name, "must be a string")
    if "\0" in value or len(value) > MAX_STRING:
        raise _param_error(name, f"must be at most {MAX_STRING} characters, without NUL")
    if kind == "choice" and value not in param["choices"]:
        raise _param_error(name, "must be one of " + ", ".join(param["choices"]))
    if param.get("secret") and len(value.encode()) < MIN_SECRET_BYTES:
        raise _param_error(name, f"is secret: its value needs at least {MIN_SECRET_BYTES} bytes (it is masked in output)")
    return value


def check_parameters(raw: Any) -> list[dict[str, Any]]:
    """The template's parameters, normalised; a ValidationError names the first bad one."""
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_PARAMETERS:
        raise _fail("parameters", f"must be a list of at most {MAX_PARAMETERS} parameters")
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for item in raw:
        if not isinstance(item, dict):
            raise _fail("parameters", "each parameter must be an object")
        name = item.get("name")
        if not isinstance(name, str) or not PARAM_NAME_RE.match(name):
            raise _fail("parameters", f"name {name!r} must be a letter or _ then letters, digits or _ (at most 64)")
        if name.upper() in seen:
            raise _fail("parameters", f"{name!r} is declared twice")
        seen.add(name.upper())
        unknown = sorted(set(item) - {"name", "type", "default", "required", "secret", "description", "choices"})
        if unknown:
            raise _fail("parameters", f"{name!r} has unknown field(s): {', '.join(unknown)}")
        kind = item.get("type", "string")
        if kind not in TYPES:
            raise _fail("parameters", f"{name!r} has type {kind!r}: use one of {', '.join(TYPES)}")
        param: dict[str, Any] = {
            "name": name,
            "type": kind,
            "required": bool(item.get("required", False)),
            "secret": bool(item.get("secret", False)),
            "description": str(item.get("description") or ""),
        }
        for flag in ("required", "secret"):
            if not isinstance(item.get(flag, False), bool):
                raise _fail("parameters", f"{name!r}: {flag} must be true or false")
        if kind == "choice":
            choices = item.get("choices")
            if not isinstance(choices, list) or not choices or not all(isinstance(c, str) and c for c in choices):
                raise _fail("parameters", f"{name!r} is a choice: give choices, a list of non-empty strings")
            param["choices"] = list(dict.fromkeys(choices))
        elif "choices" in item:
            raise _fail("parameters", f"{name!r}: only a choice parameter has choices")
        if item.get("default") is not None:
            if param["secret"]:
                raise _fail("parameters", f"{name!r} is secret: it cannot have a default (it would be stored in clear)")
            try:
                coerce(param, item["default"])
            except ValidationError as exc:
                raise _fail("parameters", f"{name!r}: default {item['default']!r} {exc.details['params'][name]}") from None
            param["default"] = item["default"]
        else:
            param["default"] = None
        out.append(param)
    return out


def placeholders(text: str | None) -> list[str]:
    return [m.group(1) for m in PLACEHOLDER_RE.finditer(text or "")]


def check_placeholders(data: dict[str, Any], params: list[dict[str, Any]]) -> None:
    by_name = {p["name"]: p for p in params}
    for field in TEXT_FIELDS:
        for ref in placeholders(data.get(field)):
            param = by_name.get(ref)
            if param is None:
                raise _fail(field, f"names {{{{ {ref} }}}}, which is not a declared parameter")
            if param["secret"]:
                raise _fail(
                    field,
                    f"uses {{{{ {ref} }}}}, a secret parameter: it would be stored in the job's {field} in clear; "
                    f"use ${ENV_PREFIX}{ref.upper()} instead",
                )


def normalise(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """The stored fields of a template from an API body; raises ValidationError (400) naming the problem."""
    name = data.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise _fail("name", "must be 1..128 letters, digits, '_', '.' or '-'")
    if data.get("script") is None and not str(data.get("command") or "").strip():
        raise _fail("command", "is required (or script)")
    params = check_parameters(data.get("parameters"))
    args = data.get("args") or ""
    if isinstance(args, list):
        args = shlex.join(str(a) for a in args)
    data = {**data, "args": args}
    check_placeholders(data, params)
    servers = list(data.get("servers") or [])
    # The job part is checked as a job would be (placeholders left in: they become one quoted word).
    probe = JobSpec(
        command=str(data.get("command") or ""),
        args=args,
        script=data.get("script"),
        shell=data.get("shell"),
        env=dict(data.get("env") or {}),
        secret_env=dict(data.get("secret_env") or {}),
        priority=data.get("priority"),
        timeout=data.get("timeout"),
        retries=data.get("retries"),
        servers=servers or ["-"],
        rollout=data.get("rollout"),
    )
    validate_spec(probe, ctx)
    clash = [p["name"] for p in params if ENV_PREFIX + p["name"].upper() in {**probe.env, **probe.secret_env}]
    if clash:
        raise _fail("env", f"sets {ENV_PREFIX}{clash[0].upper()}, the variable of parameter {clash[0]!r}")
    env, secret = split_env(ctx, dict(data.get("env") or {}), dict(data.get("secret_env") or {}))
    return {
        "name": name,
        "description": str(data.get("description") or ""),
        "command": str(data.get("command") or ""),
        "args": args,
        "script": data.get("script"),
        "shell": data.get("shell"),
        "servers": servers,
        "priority": data.get("priority"),
        "timeout": data.get("timeout"),
        "retries": data.get("retries"),
        "env": env,
        "secret_env": secret,
        "rollout": probe.rollout or None,
        "parameters": params,
    }


def template_dict(row: Template) -> dict[str, Any]:
    """A template as shown: secret variables read ``***`` (their values are never returned)."""
    env = row.env or {}
    return {
        "id": row.id,
        "name": row.name,
        "description": row.description or "",
        "command": row.command,
        "args": row.args or "",
        "script": row.script,
        "shell": row.shell,
        "servers": list(row.servers or []),
        "priority": row.priority,
        "timeout": row.timeout,
        "retries": row.retries,
        "env": env,
        "secret_env": {name: MASK for name, value in env.items() if value == MASK} if row.secret_env else {},
        "rollout": row.rollout,
        "parameters": row.parameters or [],
        "created_by": row.created_by or "",
        "created_at": models.to_rfc3339(row.created_at),
        "updated_at": models.to_rfc3339(row.updated_at),
    }


def get_template(name: str) -> Template:
    row = Template.get_or_none(Template.name == name)
    if row is None:
        raise NotFound(f"template not found: {name}")
    return row


def list_templates() -> list[Template]:
    return list(Template.select().order_by(Template.name))


def create_template(ctx: Context, data: dict[str, Any], actor: str) -> Template:
    fields = normalise(data, ctx)
    try:
        with models.write_transaction():
            if Template.select().where(Template.name == fields["name"]).exists():
                raise Conflict(f"a template named {fields['name']!r} exists", details={"name": fields["name"]})
            return Template.create(**fields, created_by=actor)
    except models.IntegrityError:
        raise Conflict(f"a template named {fields['name']!r} exists", details={"name": fields["name"]}) from None


def update_template(ctx: Context, name: str, data: dict[str, Any]) -> Template:
    """Replace a template's definition (every field; a rename to a taken name is a 409)."""
    row = get_template(name)
    fields = normalise({**data, "name": data.get("name") or name}, ctx)
    try:
        with models.write_transaction():
            if fields["name"] != name and Template.select().where(Template.name == fields["name"]).exists():
                raise Conflict(f"a template named {fields['name']!r} exists", details={"name": fields["name"]})
            Template.update(**fields, updated_at=models.utcnow()).where(Template.id == row.id).execute()
    except models.IntegrityError:
        raise Conflict(f"a template named {fields['name']!r} exists", details={"name": fields["name"]}) from None
    return Template.get_by_id(row.id)


def delete_template(name: str) -> Template:
    row = get_template(name)
    with models.write_transaction():
        Template.delete().where(Template.id == row.id).execute()
    return row


def bind(params: list[dict[str, Any]], given: dict[str, Any] | None) -> dict[str, str]:
    """Each declared parameter's value as text (given, else its default); 400 naming a missing/bad/unknown one."""
    given = dict(given or {})
    declared = {p["name"] for p in params}
    unknown = sorted(set(given) - declared)
    if unknown:
        raise ValidationError(
            f"unknown parameter(s): {', '.join(unknown)}",
            details={"params": {n: "is not a parameter of this template" for n in unknown}, "parameter": unknown[0]},
        )
    values: dict[str, str] = {}
    for param in params:
        name = param["name"]
        value = given.get(name, param.get("default"))
        if value is None:
            if param["required"]:
                raise _param_error(name, "is required")
            values[name] = "false" if param["type"] == "bool" else ""  # an optional parameter left out
            continue
        values[name] = coerce(param, value)
    return values


def substitute(text: str, values: dict[str, str]) -> str:
    """``text`` with every ``{{ name }}`` replaced by the shell-quoted value: always one literal word."""
    return PLACEHOLDER_RE.sub(lambda m: shlex.quote(values[m.group(1)]), text)


def render(ctx: Context, row: Template, given: dict[str, Any] | None, servers: list[str] | None) -> tuple[JobSpec, dict[str, Any]]:
    """The job spec of one run of ``row`` and the parameters to record (secret ones ``***``)."""
    params = row.parameters or []
    values = bind(params, given)
    secret_names = {p["name"] for p in params if p.get("secret")}
    env = dict(row.env or {})
    secret_env: dict[str, str] = {}
    if row.secret_env:
        stored = {str(k): str(v) for k, v in json.loads(ctx.secrets.decrypt_str(row.secret_env)).items()}
        env = {k: v for k, v in env.items() if k not in stored}
        secret_env.update(stored)
    for name, value in values.items():
        target = secret_env if name in secret_names else env
        if name in secret_names and not value:
            continue  # an optional secret left out: no variable
        target[ENV_PREFIX + name.upper()] = value
    data = {
        "name": row.name,
        "command": substitute(row.command or "", values),
        "args": substitute(row.args or "", values),
        "script": substitute(row.script, values) if row.script is not None else None,
        "shell": row.shell,
        "env": env,
        "secret_env": secret_env,
        "priority": row.priority,
        "timeout": row.timeout,
        "retries": row.retries,
        "servers": list(servers) if servers else list(row.servers or []),
        "rollout": row.rollout,
    }
    if not data["servers"]:
        raise ValidationError(
            "the template names no target servers: give servers", details={"servers": "is required (the template names none)"}
        )
    spec = job_spec(data, ctx)
    recorded = {name: (MASK if name in secret_names else value) for name, value in values.items()}
    return spec, recorded


def run_template(
    ctx: Context, name: str, given: dict[str, Any] | None, servers: list[str] | None, actor: str, *, role: str
) -> tuple[list[Job], list[Server], bool]:
    """Record and queue the jobs of one run; returns (jobs, their servers, whether it is a batch)."""
    row = get_template(name)
    spec, recorded = render(ctx, row, given, servers)
    targets = resolve_servers(None, [], spec.servers)
    batch = len(targets) > 1 or any(ref.startswith("tag:") for ref in spec.servers)
    jobs = create_jobs(ctx, spec, targets, actor, role=role, batch=batch, template=row.name, params=recorded)
    return jobs, targets, batch
