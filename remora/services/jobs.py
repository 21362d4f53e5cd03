"""Job use-cases: submit (one server or a fan-out), cancel, rerun, duplicate, re-prioritise.

The database is the source of truth: a job is recorded (``queued``) before
its id is put on NetQueue.  When the queue is unreachable the job stays
recorded and the reconciler puts it later; when the queue is full the rows
are removed again and the caller gets QueueFull (503 + Retry-After).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import logging
import shlex
from typing import Any

from remora import jobmessage, jobstate, models
from remora.auth import ROLE_RANK
from remora.config import Settings, job_env_name_problem
from remora.crypto import SecretBox
from remora.errors import Conflict, Forbidden, NotFound, QueueError, QueueFull, QueueUnavailable, Unavailable, ValidationError
from remora.jobfile import JobSpec
from remora.masking import MIN_SECRET_BYTES
from remora.models import AuthType, Job, JobStatus, Server
from remora.services.batches import check_rollout, resolve, summary
from remora.services.context import Context
from remora.services.servers import forget_servers, resolve_servers

log = logging.getLogger(__name__)

COPY_FIELDS = ("name", "command", "args", "script", "shell", "env", "workdir", "pty", "queue", "priority", "timeout", "retries")
MASK = "***"
LOCAL_RULE = "security.local_server_role"


def default_timeout(settings: Settings) -> int:
    """The timeout of a job that does not set one: ssh.execution_timeout, at most api.max_timeout."""
    return int(min(settings.ssh.execution_timeout, settings.api.max_timeout)) or 300


SPEC_FIELDS = tuple(name for name in JobSpec.__dataclass_fields__ if name != "source")


def job_spec(data: dict[str, Any], ctx: Context) -> JobSpec:
    """A validated ``JobSpec`` from an API body (or CLI values): unset fields get the defaults."""
    spec = JobSpec(**{k: v for k, v in data.items() if k in SPEC_FIELDS and v is not None})
    if isinstance(data.get("args"), list):
        spec.args = shlex.join(str(a) for a in data["args"])
    fill_defaults(spec, ctx.settings)
    validate_spec(spec, ctx)
    return spec


def fill_defaults(spec: JobSpec, settings: Settings) -> JobSpec:
    """Unset fields of ``spec`` -> the defaults: priority 5, ``default_timeout``, no retries, no pty."""
    if spec.priority is None:
        spec.priority = 5
    if spec.timeout is None:
        spec.timeout = default_timeout(settings)
    if spec.retries is None:
        spec.retries = 0
    if spec.pty is None:
        spec.pty = False
    return spec


def validate_spec(spec: JobSpec, ctx: Context) -> None:
    """Raise ValidationError (the first problem as the message, all of them in ``details``)."""
    fill_defaults(spec, ctx.settings)
    assert spec.priority is not None and spec.timeout is not None and spec.retries is not None
    errors: dict[str, str] = {}
    if spec.script is None and not spec.command.strip():
        errors["command"] = "is required"
    if spec.script is not None and not spec.script.strip():
        errors["script"] = "must not be empty"
    if not 1 <= spec.priority <= 10:
        errors["priority"] = "must be between 1 and 10"
    if not 1 <= spec.timeout <= ctx.settings.api.max_timeout:
        errors["timeout"] = f"must be between 1 and {ctx.settings.api.max_timeout}"
    if not 0 <= spec.retries <= 10:
        errors["retries"] = "must be between 0 and 10"
    if spec.shell is not None and spec.shell not in ctx.settings.security.allowed_shells:
        errors["shell"] = "must be one of " + ", ".join(ctx.settings.security.allowed_shells)
    if not (spec.server_id or spec.server_ids or spec.servers):
        errors["server_id"] = "is required (or server_ids / servers)"
    if spec.run_at is not None:
        try:
            spec.run_at = parse_run_at(spec.run_at)
        except ValidationError as exc:
            errors["run_at"] = str(exc.details.get("run_at", exc))
    try:
        spec.rollout = check_rollout(spec.rollout) or None
    except ValidationError as exc:
        errors["rollout"] = str(exc).removeprefix("invalid rollout: ")
    env_error = check_env(spec.env)
    if env_error:
        errors["env"] = env_error
    if not env_error:
        patterns = ctx.settings.security.secret_env_patterns
        shown = next((n for n, v in spec.env.items() if v == MASK and not is_secret_name(n, patterns)), None)
        if shown:
            errors["env"] = f'variable {shown!r} reads "***", which stands for a hidden value: give the real value (or use secret_env)'
    secret_error = check_secret_env(spec.secret_env, spec.env)
    if secret_error:
        errors["secret_env"] = secret_error
    if errors:
        field_name, message = next(iter(errors.items()))
        raise ValidationError(f"invalid job: {field_name} {message}", details=errors)


RUN_AT_SLACK = 5.0  # seconds a ``run_at`` may lie in the past (clock skew between client and API)


def parse_run_at(value: Any, *, now: dt.datetime | None = None) -> dt.datetime:
    """A job's ``run_at`` as naive UTC: RFC 3339 text (or a datetime), in the future give or take ``RUN_AT_SLACK``.

    A time without an offset is refused (it would be read in an unknown zone); ValidationError names ``run_at``.
    """

    def fail(message: str) -> ValidationError:
        return ValidationError(f"invalid job: run_at {message}", details={"run_at": message})

    if isinstance(value, dt.datetime):
        when = value
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        text = text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text
        try:
            when = dt.datetime.fromisoformat(text)
        except ValueError:
            raise fail(f"must be an RFC 3339 time such as 2026-12-24T03:00:00Z, got {value!r}") from None
    else:
        raise fail(f"must be an RFC 3339 time such as 2026-12-24T03:00:00Z, got {value!r}")
    if when.tzinfo is None:
        if isinstance(value, dt.datetime):
            when = when.replace(tzinfo=dt.UTC)  # internal callers pass naive UTC
        else:
            raise fail(f"needs a UTC offset (Z or +HH:MM), got {value!r}")
    when = when.astimezone(dt.UTC).replace(tzinfo=None)
    now = now or models.utcnow()
    if when < now - dt.timedelta(seconds=RUN_AT_SLACK):
        raise fail(f"is in the past ({models.to_rfc3339(when)}; now is {models.to_rfc3339(now)})")
    return when


def check_env(env: dict[str, Any]) -> str | None:
    """What is wrong with a job's ``env`` (None when nothing): names must be shell identifiers."""
    for name, value in env.items():
        problem = job_env_name_problem(name)
        if problem:
            return problem
        if not isinstance(value, str) or "\0" in value:
            return f"variable {name!r} must be a string without NUL characters"
    return None


def check_secret_env(secret_env: dict[str, Any], env: dict[str, Any]) -> str | None:
    """What is wrong with a job's ``secret_env`` (None when nothing).

    Besides ``check_env``'s rules: a value must be at least ``MIN_SECRET_BYTES`` long (it is masked
    in the output, and masking a one-letter value would destroy the output), and a name may not be
    in ``env`` too.
    """
    problem = check_env(secret_env)
    if problem:
        return problem
    for name, value in secret_env.items():
        if len(value.encode()) < MIN_SECRET_BYTES:
            return f"variable {name!r} is too short to mask in output: a secret value needs at least {MIN_SECRET_BYTES} bytes"
        if name in env:
            return f"variable {name!r} is in env too: give it once"
    return None


def is_secret_name(name: str, patterns: list[str]) -> bool:
    """Whether an env name looks secret: it matches one of ``security.secret_env_patterns`` (globs, any case)."""
    upper = name.upper()
    return any(fnmatch.fnmatchcase(upper, pattern.upper()) for pattern in patterns)


def split_env(ctx: Context, env: dict[str, str], secret_env: dict[str, str] | None = None) -> tuple[dict[str, str], bytes | None]:
    """``env`` as stored: secret values replaced by ``***``, and those values encrypted (JSON) apart.

    Secret values are those of ``secret_env`` and of the secret-looking names of ``env``; every
    name is listed in the stored ``env`` (the secret ones read ``***``), the values only in the
    encrypted JSON {name: value} (``Job.secret_env``).
    """
    patterns = ctx.settings.security.secret_env_patterns
    secret = {name: value for name, value in env.items() if is_secret_name(name, patterns)}
    secret.update(secret_env or {})
    if not secret:
        return dict(env), None
    shown = {name: (MASK if name in secret else value) for name, value in env.items()}
    shown.update((name, MASK) for name in secret_env or {})
    return shown, ctx.secrets.encrypt(json.dumps(secret, separators=(",", ":")))


def job_env(job: Job, box: SecretBox) -> tuple[dict[str, str], dict[str, str]]:
    """A job's real environment as (plain env, secret env): decrypted to run or copy it, never to show."""
    env = {str(k): str(v) for k, v in (job.env or {}).items()}
    if not job.secret_env:
        return env, {}
    secret = {str(k): str(v) for k, v in json.loads(box.decrypt_str(job.secret_env)).items()}
    return {name: value for name, value in env.items() if name not in secret}, secret


def may_see_script(role: str) -> bool:
    """Script bodies are shown to operators and admins; viewers read every other field of a job."""
    return ROLE_RANK.get(role, 0) >= ROLE_RANK["operator"]


def check_local_role(ctx: Context, spec: JobSpec, servers: list[Server], role: str) -> None:
    """Running on a ``local`` server needs ``security.local_server_role``: 403 naming the rule, never a silent drop."""
    required = ctx.settings.security.local_server_role
    if ROLE_RANK.get(role, 0) >= ROLE_RANK[required]:
        return
    local = next((s for s in servers if s.auth_type == AuthType.LOCAL.value), None)
    if local is None:
        return
    tags = [ref for ref in spec.servers if ref.startswith("tag:") and ref[4:] in (local.tags or [])]
    via = f" ({', '.join(tags)} includes it)" if tags else ""
    raise Forbidden(
        f"running on the {local.name!r} server needs role {required} ({LOCAL_RULE}){via}",
        details={"required_role": required, "setting": LOCAL_RULE, "server": local.name},
    )


def put_items(ctx: Context, jobs: list[tuple[Job, Server]]) -> list[Any]:
    """The queue client's ``PutItem`` of each job, from the one message builder (``jobmessage.queue_message``)."""
    ttr = ctx.settings.queue.worker_timeout
    return [jobmessage.queue_message(job, server, ttr=ttr, default_queue=ctx.queue_name).put_item() for job, server in jobs]


def put_jobs(ctx: Context, jobs: list[tuple[Job, Server]]) -> bool:
    """Put jobs on the queue. False when the queue is unreachable (the reconciler will); QueueFull propagates."""
    if ctx.queue is None or not jobs:
        return False
    items = put_items(ctx, jobs)
    try:
        if len(items) == 1:
            item = items[0]
            ctx.queue.put(
                item.job_id,
                queue=item.queue,
                priority=item.priority,
                ttr=item.ttr,
                max_attempts=item.max_attempts,
                body=item.body,
                group=item.group,
                limit=item.limit,
                delay=item.delay,
            )
        else:
            ctx.queue.put_many(items)
    except QueueFull:
        raise
    except (QueueUnavailable, QueueError, OSError) as exc:
        log.warning("queue unavailable (%s): %d job(s) recorded, the reconciler will queue them", exc, len(items))
        ctx.put_failed.set()
        return False
    return True


def create_jobs(
    ctx: Context,
    spec: JobSpec,
    servers: list[Server],
    actor: str,
    *,
    role: str,
    parent_id: str | None = None,
    batch: bool | None = None,
    batch_parent: str | None = None,
    template: str | None = None,
    params: dict[str, Any] | None = None,
) -> list[Job]:
    """Record one job per server (one transaction), then queue them; a batch shares a ``batch_id``.

    ``role`` is the caller's: a ``local`` target needs ``security.local_server_role``.
    ``template`` / ``params``: the template a run came from and its parameters (secret ones ``***``).
    ``secret_env`` and secret-looking ``env`` values are stored encrypted (``Job.secret_env``), ``***`` in ``env``.
    Concurrent calls share the transaction and the queue batch (``ctx.group``, see group_commit).
    A fan-out records its ``Batch`` row in the same transaction as its jobs; with a rollout only the
    first ``concurrency`` jobs go on the queue now, the others are ``held`` (``jobstate.batch_step``).
    """
    fill_defaults(spec, ctx.settings)
    check_local_role(ctx, spec, servers, role)
    env, secret_env = split_env(ctx, spec.env, spec.secret_env)
    batch_id = models.new_id() if (batch if batch is not None else len(servers) > 1) else None
    now = models.utcnow()
    jobs = [
        jobstate.new_job(
            id=models.new_id(),
            name=spec.name,
            command=spec.command,
            args=spec.args,
            script=spec.script,
            shell=spec.shell,
            env=env,
            secret_env=secret_env,
            workdir=spec.workdir,
            pty=spec.pty,
            server=server.id,
            batch_id=batch_id,
            parent_id=parent_id,
            queue=spec.queue or ctx.queue_name,
            priority=spec.priority,
            timeout=spec.timeout,
            retries=spec.retries,
            created_by=actor,
            created_at=now,
            template=template,
            params=params,
            run_at=spec.run_at if isinstance(spec.run_at, dt.datetime) else None,
        )
        for server in servers
    ]
    if batch_id is not None:
        return _create_batch(ctx, spec, servers, jobs, actor, batch_id, now, batch_parent)
    try:
        ctx.group.submit(
            [job.__data__ for job in jobs], list(zip(jobs, servers, strict=True)), jobstate.record, lambda pairs: put_jobs(ctx, pairs)
        )
    except models.IntegrityError as exc:  # a target server was deleted meanwhile (another API instance)
        forget_servers()
        log.warning("cannot record job(s): %s", exc)
        raise ValidationError("a target server no longer exists", details={"server_id": "the server was deleted"}) from None
    except models.DatabaseError as exc:
        log.error("cannot record job(s): %s", exc)
        raise Unavailable("cannot record the job: the database is unavailable", retry_after=5) from None
    except QueueFull:
        _unrecord(ctx, jobs)
        raise QueueFull("the queue is full: try again later", details={"retry_after": 5}) from None
    return jobs


def _create_batch(
    ctx: Context, spec: JobSpec, servers: list[Server], jobs: list[Job], actor: str, batch_id: str, now: Any, parent: str | None
) -> list[Job]:
    rollout = check_rollout(spec.rollout)
    concurrency, max_failures = resolve(rollout, len(jobs))
    for n, job in enumerate(jobs):  # submit order is release order
        job.created_at = job.updated_at = now + dt.timedelta(microseconds=n)
        job.held = concurrency is not None and n >= concurrency
    row = {
        "id": batch_id,
        "name": spec.name,
        "command": summary(spec.command, spec.script),
        "status": models.BatchStatus.RUNNING.value,
        "total": len(jobs),
        "rollout": rollout,
        "concurrency": concurrency,
        "max_failures": max_failures,
        "error": "",
        "parent_id": parent,
        "cancel_requested": False,
        "created_by": actor,
        "created_at": now,
        "updated_at": now,
        "finished_at": None,
    }
    try:
        jobstate.record_batch(row, [job.__data__ for job in jobs])
    except models.IntegrityError as exc:
        forget_servers()
        log.warning("cannot record job(s): %s", exc)
        raise ValidationError("a target server no longer exists", details={"server_id": "the server was deleted"}) from None
    except models.DatabaseError as exc:
        log.error("cannot record job(s): %s", exc)
        raise Unavailable("cannot record the job: the database is unavailable", retry_after=5) from None
    try:
        put_jobs(ctx, [(job, server) for job, server in zip(jobs, servers, strict=True) if not job.held])
    except QueueFull:
        _unrecord(ctx, jobs)
        with models.write_transaction():
            models.Batch.delete().where(models.Batch.id == batch_id).execute()
        raise QueueFull("the queue is full: try again later", details={"retry_after": 5}) from None
    return jobs


def _unrecord(ctx: Context, jobs: list[Job]) -> None:
    ids = [job.id for job in jobs]
    if ctx.queue is not None:  # a batch spanning several frames may be partly queued
        for job_id in ids:
            try:
                ctx.queue.cancel(job_id)
            except (QueueError, QueueUnavailable, OSError):
                break
    with models.write_transaction():
        Job.delete().where(Job.id.in_(ids)).execute()


def submit_jobs(ctx: Context, spec: JobSpec | dict[str, Any], actor: str, *, role: str) -> list[Job]:
    """Record and queue one job per target server (``server_id``, ``server_ids``, ``servers``)."""
    if isinstance(spec, dict):
        spec = job_spec(spec, ctx)
    servers = resolve_servers(spec.server_id, spec.server_ids, spec.servers)
    return create_jobs(ctx, spec, servers, actor, role=role)


def get_job(job_id: str) -> Job:
    job = Job.get_or_none(Job.id == job_id)
    if job is None:
        raise NotFound(f"job not found: {job_id}")
    return job


def cancel_job(ctx: Context, job_id: str, actor: str) -> tuple[Job, str]:
    """Cancel a queued job (removed from the queue) or a running one (the worker kills it)."""
    outcome = jobstate.cancel(job_id, actor)
    if outcome is jobstate.Cancel.MISSING:
        raise NotFound(f"job not found: {job_id}")
    job = get_job(job_id)
    if outcome is jobstate.Cancel.FINISHED:
        raise Conflict(f"job is already {job.status}", details={"status": job.status})
    if outcome is jobstate.Cancel.CANCELED:
        _queue_cancel(ctx, job_id)
        if job.batch_id:
            from remora.services.batches import step

            step(ctx, job.batch_id)
        return job, "job canceled"
    sent = _queue_cancel(ctx, job_id)
    message = "cancel requested: the worker stops the job" if sent != "unavailable" else "cancel recorded: delivered when the queue is back"
    return job, message


def _queue_cancel(ctx: Context, job_id: str) -> str:
    if ctx.queue is None:
        return "unavailable"
    try:
        return str(ctx.queue.cancel(job_id))
    except (QueueError, QueueUnavailable, OSError) as exc:
        log.warning("cannot send cancel of job %s to the queue: %s", job_id, exc)
        return "unavailable"


def copy_spec(ctx: Context, job: Job, **changes: Any) -> JobSpec:
    spec = JobSpec(**{name: getattr(job, name) for name in COPY_FIELDS})
    # Decrypted in memory only: create_jobs encrypts them again.  Secret-looking names go back to
    # ``env`` (they are found secret again), the explicit secret variables to ``secret_env``.
    env, secret = job_env(job, ctx.secrets)
    patterns = ctx.settings.security.secret_env_patterns
    spec.env = {**env, **{name: value for name, value in secret.items() if is_secret_name(name, patterns)}}
    spec.secret_env = {name: value for name, value in secret.items() if not is_secret_name(name, patterns)}
    for key, value in changes.items():
        if value is not None:
            setattr(spec, key, value)
    return spec


def rerun_job(ctx: Context, job_id: str, actor: str, *, role: str) -> tuple[Job, Job]:
    """A new job with the same spec on the same server; only finished jobs."""
    job = get_job(job_id)
    if not JobStatus(job.status).finished:
        raise Conflict(f"job is {job.status}: only finished jobs can be rerun", details={"status": job.status})
    server = Server.get_by_id(job.server_id)
    new = create_jobs(ctx, copy_spec(ctx, job), [server], actor, role=role, parent_id=job.id)[0]
    return new, job


def duplicate_job(ctx: Context, job_id: str, actor: str, changes: dict[str, Any] | None = None, *, role: str) -> tuple[Job, Job]:
    """A copy of any job, optionally on another server or with another timeout/priority."""
    job = get_job(job_id)
    changes = changes or {}
    spec = copy_spec(ctx, job, timeout=changes.get("timeout"), priority=changes.get("priority"))
    spec.server_id = changes.get("server_id") or job.server_id
    validate_spec(spec, ctx)
    servers = resolve_servers(spec.server_id, [], [])
    new = create_jobs(ctx, spec, servers, actor, role=role, parent_id=job.id)[0]
    return new, job


def set_priority(ctx: Context, job_id: str, priority: int, actor: str) -> Job:
    """Change a queued job's priority in the database and re-order it in the queue at once."""
    if not 1 <= priority <= 10:
        raise ValidationError("priority must be between 1 and 10", details={"priority": "must be between 1 and 10"})
    job = get_job(job_id)
    changed = (
        Job.update(priority=priority, updated_at=models.utcnow()).where(Job.id == job_id, Job.status == JobStatus.QUEUED.value).execute()
    )
    if not changed:
        raise Conflict(f"job is {job.status}: only queued jobs can change priority", details={"status": job.status})
    if ctx.queue is not None:
        try:
            ctx.queue.set_priority(job_id, priority)
        except (QueueError, QueueUnavailable, OSError) as exc:
            log.warning("cannot re-order job %s in the queue: %s", job_id, exc)
    return get_job(job_id)
