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
from pathlib import Path
from typing import Any

from remora import models
from remora.errors import Conflict, NotFound, ValidationError
from remora.jobfile import JobSpec
from remora.models import Job, Server, Template
from remora.params import (
    ENV_PREFIX,
    bind,
    check_parameters,
    check_placeholders,
    export,
    placeholders,
    recorded,
    substitute,
)
from remora.services.context import Context
from remora.services.jobs import MASK, create_jobs, job_spec, split_env, validate_spec
from remora.services.servers import resolve_servers

POSIX_SHELLS = ("sh", "bash", "dash", "ksh", "zsh", "ash", "mksh")
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def _fail(field: str, message: str) -> ValidationError:
    return ValidationError(f"invalid template: {field} {message}", details={field: message})


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
    shell = data.get("shell")
    if shell and data.get("script") is not None and placeholders(data["script"]) and Path(shell).name not in POSIX_SHELLS:
        raise _fail("script", f"uses {{{{ }}}} placeholders, which are quoted for POSIX shells, not for {shell}: use $REMORA_PARAM_<NAME>")
    for field in ("secret_env", "env"):
        masked = next((n for n, v in (data.get(field) or {}).items() if v == MASK), None)
        if masked:
            raise _fail(
                field, f'variable {masked!r} reads "***", which stands for a hidden value this template does not hold: give the value'
            )
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


def keep_masked(ctx: Context, row: Template, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with each secret variable given as ``***`` (as a GET shows it) set to the value ``row`` holds.

    A name left out of both ``env`` and ``secret_env`` is dropped; a ``***`` the template holds no
    value for is left for ``normalise`` to refuse.
    """
    stored = {str(k): str(v) for k, v in json.loads(ctx.secrets.decrypt_str(row.secret_env)).items()} if row.secret_env else {}
    env = dict(data.get("env") or {})
    secret = dict(data.get("secret_env") or {})
    for name, value in secret.items():
        if value == MASK and name in stored:
            secret[name] = stored[name]
    for name, value in list(env.items()):
        if value == MASK and name in stored:
            del env[name]
            secret.setdefault(name, stored[name])
    return {**data, "env": env, "secret_env": secret}


def update_template(ctx: Context, name: str, data: dict[str, Any]) -> Template:
    """Replace a template's definition (every field; a rename to a taken name is a 409); ``***`` keeps a stored secret."""
    row = get_template(name)
    fields = normalise(keep_masked(ctx, row, {**data, "name": data.get("name") or name}), ctx)
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


def render(
    ctx: Context, row: Template, given: dict[str, Any] | None, servers: list[str] | None, run_at: Any = None
) -> tuple[JobSpec, dict[str, Any]]:
    """The job spec of one run of ``row`` and the parameters to record (secret ones ``***``)."""
    params = row.parameters or []
    values = bind(params, given)
    env = dict(row.env or {})
    secret_env: dict[str, str] = {}
    if row.secret_env:
        stored = {str(k): str(v) for k, v in json.loads(ctx.secrets.decrypt_str(row.secret_env)).items()}
        env = {k: v for k, v in env.items() if k not in stored}
        secret_env.update(stored)
    plain, secret = export(params, values)
    env.update(plain)
    secret_env.update(secret)
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
        "run_at": run_at,
    }
    if not data["servers"]:
        raise ValidationError(
            "the template names no target servers: give servers", details={"servers": "is required (the template names none)"}
        )
    spec = job_spec(data, ctx)
    return spec, recorded(params, values)


def run_template(
    ctx: Context, name: str, given: dict[str, Any] | None, servers: list[str] | None, actor: str, *, role: str, run_at: Any = None
) -> tuple[list[Job], list[Server], bool]:
    """Record and queue the jobs of one run; returns (jobs, their servers, whether it is a batch).

    ``run_at``: start no earlier than this (RFC 3339 text or naive UTC; ``services.jobs.parse_run_at``).
    """
    row = get_template(name)
    spec, params = render(ctx, row, given, servers, run_at)
    targets = resolve_servers(None, [], spec.servers)
    batch = len(targets) > 1 or any(ref.startswith("tag:") for ref in spec.servers)
    jobs = create_jobs(ctx, spec, targets, actor, role=role, batch=batch, template=row.name, params=params)
    return jobs, targets, batch
