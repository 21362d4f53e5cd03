"""The data model (peewee): servers, jobs, their output, keys, tokens, audit.

This package is the one place that knows peewee: the models are here, the
binding to a database in ``db.py``, the schema migrations in
``migrations.py``, the worker's precompiled statements in ``hot.py`` (all
re-exported here).  ``init_db(url)`` binds every model to SQLite (the default, in WAL mode with a busy timeout and foreign keys on)
or PostgreSQL (``postgres://`` URLs; pooled connections that reconnect after
the server restarts).  Output is stored as ``OutputChunk`` rows appended in
order -- never by rewriting a job's whole text -- each carrying its byte
offset in its stream, so a reader can fetch any byte range of a job's stdout
or stderr without loading the rest.

Schema changes are numbered migrations (``MIGRATIONS``) applied by
``upgrade()`` (``remora db upgrade``); a new database is created at the
current version.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import sqlite3
import uuid
from typing import Any

import peewee as pw

database_proxy = pw.DatabaseProxy()

SCHEMA_VERSION = 9


class JobStatus(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def finished(self) -> bool:
        return self in FINISHED_STATUSES


FINISHED_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED})


class AuthType(str, enum.Enum):
    PASSWORD = "password"
    KEY = "key"
    PEM = "pem"
    LOCAL = "local"


class Role(str, enum.Enum):
    ADMIN = "admin"
    OPERATOR = "operator"
    RUNNER = "runner"
    VIEWER = "viewer"


def utcnow() -> dt.datetime:
    """Naive UTC, microsecond precision: what every timestamp column stores."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def new_id() -> str:
    return str(uuid.uuid4())


class JSONField(pw.TextField):
    """A JSON document in a text column (portable across SQLite and PostgreSQL)."""

    def db_value(self, value: Any) -> str | None:
        return None if value is None else json.dumps(value, separators=(",", ":"), sort_keys=True)

    def python_value(self, value: Any) -> Any:
        return None if value is None else json.loads(value)


class BaseModel(pw.Model):
    class Meta:
        database = database_proxy
        legacy_table_names = False


class SchemaVersion(BaseModel):
    version = pw.IntegerField()
    applied_at = pw.DateTimeField(default=utcnow)


class PemKey(BaseModel):
    """An uploaded private key file; ``content`` is encrypted (see remora.crypto)."""

    id: int  # implicit auto-increment primary key

    filename = pw.CharField(max_length=255, unique=True)
    content = pw.BlobField()
    size = pw.IntegerField()
    fingerprint = pw.CharField(max_length=128, default="")
    key_type = pw.CharField(max_length=32, default="")
    uploaded_at = pw.DateTimeField(default=utcnow)
    uploaded_by = pw.CharField(max_length=128, default="")


class Server(BaseModel):
    """A host jobs run on. Secret columns hold ciphertext, never plain text."""

    id = pw.CharField(max_length=36, primary_key=True, default=new_id)
    name = pw.CharField(max_length=255, unique=True)
    hostname = pw.CharField(max_length=255)
    port = pw.IntegerField(default=22)
    user = pw.CharField(max_length=255, default="")
    auth_type = pw.CharField(max_length=16, default=AuthType.KEY.value)
    password = pw.BlobField(null=True)
    private_key = pw.BlobField(null=True)
    passphrase = pw.BlobField(null=True)
    pem_file = pw.CharField(max_length=255, null=True)
    host_key_policy = pw.CharField(max_length=16, null=True)
    tags = JSONField(default=list)
    max_concurrent_jobs = pw.IntegerField(default=0)
    is_active = pw.BooleanField(default=True)
    description = pw.TextField(default="")
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)
    last_test_at = pw.DateTimeField(null=True)
    last_test_ok = pw.BooleanField(null=True)
    last_test_message = pw.TextField(default="")
    last_latency_ms = pw.FloatField(null=True)
    host_key_fingerprint = pw.CharField(max_length=128, default="")
    last_status = pw.CharField(max_length=16, default="")
    last_status_at = pw.DateTimeField(null=True)
    # Connect through this server (ProxyJump; it may have a jump server of its own). RESTRICT: a jump server
    # in use cannot be deleted (the API answers 409 naming the servers behind it).
    jump_server = pw.ForeignKeyField(
        "self", null=True, on_delete="RESTRICT", backref="jumped_from", column_name="jump_server_id", index=False
    )  # no index: create_tables(safe=True) runs before the migrations and must not index a column an old table lacks
    jump_server_id: str | None  # the foreign key's raw value, added by peewee


class Job(BaseModel):
    id = pw.CharField(max_length=36, primary_key=True, default=new_id)
    name = pw.CharField(max_length=255, null=True)
    command = pw.TextField(default="")
    args = pw.TextField(default="")
    script = pw.TextField(null=True)
    shell = pw.CharField(max_length=255, null=True)
    env = JSONField(default=dict)  # values of secret-looking names are "***" here ...
    secret_env = pw.BlobField(null=True)  # ... and here, encrypted: JSON {name: value} (see remora.crypto)
    workdir = pw.TextField(null=True)
    pty = pw.BooleanField(default=False)
    server = pw.ForeignKeyField(Server, backref="jobs", on_delete="CASCADE")
    server_id: str  # the foreign key's raw value, added by peewee
    batch_id = pw.CharField(max_length=36, null=True, index=True)
    parent_id = pw.CharField(max_length=36, null=True)
    queue = pw.CharField(max_length=128, default="job_queue")
    status = pw.CharField(max_length=16, default=JobStatus.QUEUED.value)
    priority = pw.SmallIntegerField(default=5)
    timeout = pw.IntegerField(default=300)
    retries = pw.IntegerField(default=0)
    attempts = pw.IntegerField(default=0)
    exit_code = pw.IntegerField(null=True)
    signal = pw.CharField(max_length=16, null=True)
    error = pw.TextField(default="")
    stdout_bytes = pw.BigIntegerField(default=0)
    stderr_bytes = pw.BigIntegerField(default=0)
    output_truncated = pw.BooleanField(default=False)
    output_compressed = pw.BooleanField(default=False)
    created_at = pw.DateTimeField(default=utcnow, index=True)
    updated_at = pw.DateTimeField(default=utcnow)
    started_at = pw.DateTimeField(null=True)
    finished_at = pw.DateTimeField(null=True)
    worker = pw.CharField(max_length=255, null=True)
    remote_pid = pw.IntegerField(null=True)
    created_by = pw.CharField(max_length=128, default="")
    cancel_requested = pw.BooleanField(default=False)
    attempt_errors = JSONField(default=list)
    held = pw.BooleanField(default=False)  # a rollout keeps it back: recorded ``queued``, not yet on the queue
    template = pw.CharField(max_length=128, null=True)  # the template it was run from
    params = JSONField(null=True)  # that run's parameters (secret ones "***")
    run_at = pw.DateTimeField(null=True)  # start no earlier than this (naive UTC): PUT with the queue's delay

    class Meta:
        indexes = (
            (("status", "created_at"), False),
            (("server", "created_at"), False),
            (("status", "updated_at"), False),
            (("updated_at",), False),  # MAX(updated_at): the cheap change marker behind list ETags
            (("batch_id", "status"), False),  # a batch's running jobs, each wake of a feed that follows output
        )

    @property
    def duration(self) -> float | None:
        return run_seconds(self.started_at, self.finished_at)


class BatchStatus(str, enum.Enum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"  # every host finished, at least one failed
    ABORTED = "aborted"  # the rollout's max_failures stopped it
    CANCELED = "canceled"


class Batch(BaseModel):
    """A fan-out: one job per host sharing ``Job.batch_id``; its rollout and its own status (``remora.jobstate``)."""

    id = pw.CharField(max_length=36, primary_key=True, default=new_id)
    name = pw.CharField(max_length=255, null=True)
    command = pw.TextField(default="")  # the command, or the script's first line
    status = pw.CharField(max_length=16, default=BatchStatus.RUNNING.value, index=True)
    total = pw.IntegerField(default=0)
    rollout = JSONField(default=dict)  # as given: {"concurrency": N | "P%", "max_failures": N | "P%"}
    concurrency = pw.IntegerField(null=True)  # resolved against ``total``; None: every host at once
    max_failures = pw.IntegerField(null=True)  # resolved; None: no threshold
    error = pw.TextField(default="")
    parent_id = pw.CharField(max_length=36, null=True)
    cancel_requested = pw.BooleanField(default=False)
    created_by = pw.CharField(max_length=128, default="")
    created_at = pw.DateTimeField(default=utcnow, index=True)
    updated_at = pw.DateTimeField(default=utcnow)
    finished_at = pw.DateTimeField(null=True)


class Template(BaseModel):
    """A saved, parameterised job: run by name with typed parameters (``remora.services.templates``)."""

    id = pw.CharField(max_length=36, primary_key=True, default=new_id)
    name = pw.CharField(max_length=128, unique=True)
    description = pw.TextField(default="")
    command = pw.TextField(default="")
    args = pw.TextField(default="")
    script = pw.TextField(null=True)
    shell = pw.CharField(max_length=255, null=True)
    servers = JSONField(default=list)  # server names and ``tag:T``
    priority = pw.SmallIntegerField(null=True)
    timeout = pw.IntegerField(null=True)
    retries = pw.IntegerField(null=True)
    env = JSONField(default=dict)  # values of secret variables are "***" here ...
    secret_env = pw.BlobField(null=True)  # ... and here, encrypted: JSON {name: value}
    rollout = JSONField(null=True)
    parameters = JSONField(default=list)  # [{"name", "type", "default", "required", "secret", "description", "choices"}]
    created_by = pw.CharField(max_length=128, default="")
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)


class Schedule(BaseModel):
    """A template run on a calendar (``remora.services.schedules``): cron in an IANA timezone."""

    id = pw.CharField(max_length=36, primary_key=True, default=new_id)
    name = pw.CharField(max_length=128, unique=True)
    template = pw.CharField(max_length=128)
    params = JSONField(default=dict)  # plain parameter values; secret ones are "***" here ...
    secret_params = pw.BlobField(null=True)  # ... and here, encrypted: JSON {name: value}
    cron = pw.CharField(max_length=255)
    timezone = pw.CharField(max_length=64, default="UTC")
    enabled = pw.BooleanField(default=True)
    overlap = pw.CharField(max_length=8, default="skip")  # skip | queue | allow
    catch_up = pw.CharField(max_length=8, default="none")  # none | last
    next_slot = pw.DateTimeField(null=True)  # the first slot not yet handled (naive UTC); None: from now
    role = pw.CharField(max_length=16, default="operator")  # the role its runs have: its creator's (or last editor's)
    created_by = pw.CharField(max_length=128, default="")
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)


class ScheduleRun(BaseModel):
    """One slot of a schedule and its outcome; unique on (schedule, slot): a slot is claimed once.

    ``status``: ``claimed`` (inserted before the job is created), ``fired`` (``job_id`` or
    ``batch_id``), ``skipped`` (overlap), ``missed`` (the scheduler was down, or it crashed between
    the claim and the job: ``reason`` says which), ``failed`` (the run was refused: ``reason``).
    A manual run (``POST /schedules/:name/run``) is a row with ``manual`` set.
    """

    id = pw.BigAutoField()
    schedule = pw.ForeignKeyField(Schedule, backref="runs", on_delete="CASCADE")
    schedule_id: str
    slot = pw.DateTimeField()  # naive UTC
    status = pw.CharField(max_length=16)
    job_id = pw.CharField(max_length=36, null=True)
    batch_id = pw.CharField(max_length=36, null=True)
    reason = pw.TextField(default="")
    manual = pw.BooleanField(default=False)
    claimed_by = pw.CharField(max_length=128, default="")
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("schedule", "slot"), True),)


class OutputChunk(BaseModel):
    """One ordered piece of a job's output.

    ``seq`` orders chunks across both streams (the combined view);
    ``offset`` is the chunk's first byte within its own stream, so a slice
    ``[a, b)`` of stdout is the chunks with ``offset < b`` and
    ``offset + length > a``.  ``encoding`` 0 is raw bytes, 1 is zlib.
    """

    id = pw.BigAutoField()
    # No index of its own: (job, seq) below serves every lookup by job.  A job id is random, so each
    # index on it takes a write to a random page per chunk (migration 9 dropped the one that was here).
    job = pw.ForeignKeyField(Job, backref="chunks", on_delete="CASCADE", index=False)
    seq = pw.IntegerField()
    stream = pw.SmallIntegerField()
    offset = pw.BigIntegerField()
    length = pw.IntegerField()
    data = pw.BlobField()
    encoding = pw.SmallIntegerField(default=0)
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = (
            (("job", "seq"), True),
            (("job", "stream", "offset"), False),
        )


class ApiToken(BaseModel):
    """An API token: only its SHA-256 is stored; the token is shown once."""

    id = pw.CharField(max_length=36, primary_key=True, default=new_id)
    name = pw.CharField(max_length=128, unique=True)
    token_hash = pw.CharField(max_length=64, unique=True)
    prefix = pw.CharField(max_length=16, default="")
    role = pw.CharField(max_length=16, default=Role.VIEWER.value)
    created_at = pw.DateTimeField(default=utcnow)
    expires_at = pw.DateTimeField(null=True)
    last_used_at = pw.DateTimeField(null=True)
    revoked = pw.BooleanField(default=False)


class AuditEvent(BaseModel):
    id = pw.BigAutoField()
    at = pw.DateTimeField(default=utcnow, index=True)
    actor = pw.CharField(max_length=128, default="")
    action = pw.CharField(max_length=64)
    target_type = pw.CharField(max_length=32, default="")
    target_id = pw.CharField(max_length=255, default="")
    details = JSONField(default=dict)
    request_id = pw.CharField(max_length=64, default="")


class Lock(BaseModel):
    """A named lock in the database: one holder at a time (e.g. the reconciler; see remora.upkeep.dblock)."""

    name = pw.CharField(max_length=64, primary_key=True)
    holder = pw.CharField(max_length=128)
    expires_at = pw.DateTimeField()


class Webhook(BaseModel):
    """Where notifications of events go: an http(s) URL (format json or slack) or ``mailto:`` (format email)."""

    id = pw.CharField(max_length=36, primary_key=True, default=new_id)
    name = pw.CharField(max_length=128, unique=True)
    url = pw.TextField()
    events = JSONField(default=list)  # a subset of remora.models.outbox.EVENTS
    format = pw.CharField(max_length=16, default="json")  # json | slack | email
    secret = pw.BlobField(null=True)  # the HMAC key, encrypted (see remora.crypto); never returned
    filter = JSONField(default=dict)  # {"template"?: name, "tag"?: server tag}
    enabled = pw.BooleanField(default=True)
    base_url = pw.TextField(default="")  # the dashboard's address as the creating request saw it (links when api.public_url is unset)
    created_by = pw.CharField(max_length=128, default="")
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)


class Delivery(BaseModel):
    """One notification of one event to one webhook: the outbox row, written in the transaction of the event.

    ``uid`` is the ``X-Remora-Delivery`` id (stable across retries); ``seq`` orders the deliveries of one
    ``subject`` (``job:<id>``, ``batch:<id>`` ...) to one webhook: the next waits until the previous is done.
    ``locked_until`` / ``locked_by``: a sender's claim while it sends (expired claims are taken again).
    """

    seq = pw.BigAutoField()
    uid = pw.CharField(max_length=36, unique=True, default=new_id)
    webhook = pw.ForeignKeyField(Webhook, backref="deliveries", on_delete="CASCADE")
    webhook_id: str  # the foreign key's raw value, added by peewee
    event = pw.CharField(max_length=64)
    subject = pw.CharField(max_length=128)
    payload = JSONField(default=dict)  # the event's data as it was when the event happened
    status = pw.CharField(max_length=16, default="pending")  # pending | delivered | failed
    attempts = pw.IntegerField(default=0)
    status_code = pw.IntegerField(null=True)
    error = pw.TextField(default="")
    created_at = pw.DateTimeField(default=utcnow, index=True)
    next_attempt_at = pw.DateTimeField(null=True)
    delivered_at = pw.DateTimeField(null=True)
    locked_until = pw.DateTimeField(null=True)
    locked_by = pw.CharField(max_length=128, default="")

    class Meta:
        table_name = "outbox"
        indexes = (
            (("status", "next_attempt_at"), False),
            (("webhook", "subject", "seq"), False),
        )


class Change(BaseModel):
    """One job or batch status change, appended in the transaction that made it (the change feed, ``/api/v1/events``)."""

    id = pw.BigAutoField()
    at = pw.DateTimeField(default=utcnow, index=True)
    kind = pw.CharField(max_length=8)  # "job" | "batch"
    job_id = pw.CharField(max_length=36, null=True, index=True)
    batch_id = pw.CharField(max_length=36, null=True, index=True)
    status = pw.CharField(max_length=16)
    exit_code = pw.IntegerField(null=True)


MODELS: list[type[BaseModel]] = [
    SchemaVersion,
    PemKey,
    Server,
    Job,
    Batch,
    Template,
    Schedule,
    ScheduleRun,
    OutputChunk,
    ApiToken,
    AuditEvent,
    Lock,
    Change,
    Webhook,
    Delivery,
]


def run_seconds(started_at: dt.datetime | None, finished_at: dt.datetime | None) -> float | None:
    """A job's duration from its two timestamps (None until both are set)."""
    if started_at and finished_at:
        return max(0.0, (finished_at - started_at).total_seconds())
    return None


def to_rfc3339(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds") + "Z"


DatabaseError = pw.DatabaseError
OperationalError = pw.OperationalError
IntegrityError = pw.IntegrityError
fn = pw.fn
JOIN = pw.JOIN
SQL = pw.SQL
Case = pw.Case
Value = pw.Value
DoesNotExist = pw.DoesNotExist
SqliteError = sqlite3.Error

# Binding, migrations and the worker's hot statements live beside the models; they need the models above.
from remora.models import db as _db  # noqa: E402
from remora.models import hot as _hot  # noqa: E402
from remora.models import migrations as _migrations  # noqa: E402
from remora.models import outbox as outbox  # noqa: E402
from remora.models.db import write_transaction as write_transaction  # noqa: E402

INSERT_CHUNK = _db.INSERT_CHUNK
close_db = _db.close_db
current_version = _db.current_version
describe_url = _db.describe_url
ensure_schema = _db.ensure_schema
get_database = _db.get_database
init_db = _db.init_db
insert_rows = _db.insert_rows
is_postgres = _db.is_postgres
make_database = _db.make_database
private_dir = _db.private_dir
release_connection = _db.release_connection
upgrade = _db.upgrade
MIGRATIONS = _migrations.MIGRATIONS
run_migration = _migrations.run_migration
append_output = _hot.append_output
batch_state = _hot.batch_state
claim_job = _hot.claim_job
claim_jobs = _hot.claim_jobs
last_output_seq = _hot.last_output_seq
select_job = _hot.select_job
update_held_job = _hot.update_held_job
