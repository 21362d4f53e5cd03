"""The data model (peewee): servers, jobs, their output, keys, tokens, audit.

This is the one module that knows peewee.  ``init_db(url)`` binds every model
to SQLite (the default, in WAL mode with a busy timeout and foreign keys on)
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
import logging
import os
import sqlite3
import stat
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlparse

import peewee as pw
from playhouse.migrate import PostgresqlMigrator, SqliteMigrator, migrate
from playhouse.pool import PooledPostgresqlDatabase
from playhouse.shortcuts import ReconnectMixin

from remora.errors import ConfigError, DatabaseMissing, Unavailable

log = logging.getLogger(__name__)

database_proxy = pw.DatabaseProxy()

SCHEMA_VERSION = 6


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

    class Meta:
        indexes = (
            (("status", "created_at"), False),
            (("server", "created_at"), False),
            (("status", "updated_at"), False),
            (("updated_at",), False),  # MAX(updated_at): the cheap change marker behind list ETags
        )

    @property
    def duration(self) -> float | None:
        if self.started_at and self.finished_at:
            return max(0.0, (self.finished_at - self.started_at).total_seconds())
        return None


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


class OutputChunk(BaseModel):
    """One ordered piece of a job's output.

    ``seq`` orders chunks across both streams (the combined view);
    ``offset`` is the chunk's first byte within its own stream, so a slice
    ``[a, b)`` of stdout is the chunks with ``offset < b`` and
    ``offset + length > a``.  ``encoding`` 0 is raw bytes, 1 is zlib.
    """

    id = pw.BigAutoField()
    job = pw.ForeignKeyField(Job, backref="chunks", on_delete="CASCADE")
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


class Change(BaseModel):
    """One job or batch status change, appended in the transaction that made it (the change feed, ``/api/v1/events``)."""

    id = pw.BigAutoField()
    at = pw.DateTimeField(default=utcnow, index=True)
    kind = pw.CharField(max_length=8)  # "job" | "batch"
    job_id = pw.CharField(max_length=36, null=True, index=True)
    batch_id = pw.CharField(max_length=36, null=True, index=True)
    status = pw.CharField(max_length=16)
    exit_code = pw.IntegerField(null=True)


MODELS: list[type[BaseModel]] = [SchemaVersion, PemKey, Server, Job, Batch, Template, OutputChunk, ApiToken, AuditEvent, Lock, Change]


def _add_job_secret_env(migrator: Any, database: pw.Database) -> None:
    run_migration(migrator, ("add_column", "job", "secret_env", pw.BlobField(null=True)))


def _add_server_jump_server(migrator: Any, database: pw.Database) -> None:
    """``Server.jump_server_id``: the server to connect through (NULL: connect directly)."""
    if "jump_server_id" in [c.name for c in database.get_columns("server")]:
        return
    field = pw.ForeignKeyField(Server, field=Server.id, null=True, on_delete="RESTRICT", index=False)
    run_migration(migrator, ("add_column", "server", "jump_server_id", field))


def _add_batches(migrator: Any, database: pw.Database) -> None:
    """The ``batch`` table (a fan-out as an object) and ``job.held`` (a rollout's jobs not yet released)."""
    database.create_tables([Batch], safe=True)
    if "held" not in [column.name for column in database.get_columns("job")]:
        run_migration(migrator, ("add_column", "job", "held", pw.BooleanField(default=False)))


def _add_templates(migrator: Any, database: pw.Database) -> None:
    """The ``template`` table, and ``job.template`` / ``job.params`` (what a job was run from, with which parameters)."""
    database.create_tables([Template], safe=True)
    columns = [column.name for column in database.get_columns("job")]
    if "template" not in columns:
        run_migration(migrator, ("add_column", "job", "template", pw.CharField(max_length=128, null=True)))
    if "params" not in columns:
        run_migration(migrator, ("add_column", "job", "params", JSONField(null=True)))


def _add_changes(migrator: Any, database: pw.Database) -> None:
    """The ``change`` table: the change feed of job and batch statuses."""
    database.create_tables([Change], safe=True)


# version -> function(migrator, database) applied by upgrade() to reach that version.
MIGRATIONS: dict[int, Callable[[Any, pw.Database], None]] = {
    2: _add_job_secret_env,
    3: _add_server_jump_server,
    4: _add_batches,
    5: _add_templates,
    6: _add_changes,
}


class _ReconnectingPostgres(ReconnectMixin, PooledPostgresqlDatabase):
    """Pooled PostgreSQL that reconnects once when the server went away."""

    reconnect_errors = (
        *ReconnectMixin.reconnect_errors,
        (pw.OperationalError, "server closed the connection"),
        (pw.OperationalError, "terminating connection"),
        (pw.OperationalError, "connection already closed"),
        (pw.InterfaceError, "connection already closed"),
        (pw.OperationalError, "could not connect"),
        (pw.OperationalError, "connection refused"),
        (pw.OperationalError, "the database system is"),
    )


def _sqlite_path(url: str) -> str:
    if url.startswith("sqlite:///"):
        return unquote(url[len("sqlite:///") - 1 :]) if url.startswith("sqlite:////") else unquote(url[len("sqlite:///") :])
    if url.startswith("sqlite://"):
        return unquote(url[len("sqlite://") :]) or ":memory:"
    if url in (":memory:", "sqlite://:memory:"):
        return ":memory:"
    return url


def make_database(url: str, *, busy_timeout: float = 10.0, pool_size: int = 20) -> pw.Database:
    """A peewee ``Database`` for ``url`` (not yet bound to the models)."""
    if url.startswith(("postgres://", "postgresql://")):
        parsed = urlparse(url)
        params = dict(parse_qsl(parsed.query))
        connect_timeout = int(params.pop("connect_timeout", "5"))
        return _ReconnectingPostgres(
            (parsed.path or "/postgres").lstrip("/") or "postgres",
            user=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password) if parsed.password else None,
            host=parsed.hostname or "localhost",
            port=parsed.port or 5432,
            max_connections=pool_size,
            stale_timeout=300,
            timeout=busy_timeout,
            connect_timeout=connect_timeout,
            **params,
        )
    if "://" in url and not url.startswith("sqlite:"):
        raise ConfigError(f"database.url: unsupported scheme in {url.split('://')[0]}:// (use sqlite:/// or postgres://)")
    path = _sqlite_path(url)
    if path != ":memory:":
        path = str(Path(path).expanduser())
        _private_sqlite_files(Path(path))
    return pw.SqliteDatabase(
        path,
        timeout=busy_timeout,
        check_same_thread=False,
        pragmas={
            "journal_mode": "wal",
            "synchronous": "normal",
            "foreign_keys": 1,
            "busy_timeout": int(busy_timeout * 1000),
            "cache_size": -16000,
        },
    )


def private_dir(path: Path) -> None:
    """Create ``path`` (and parents) if missing and make it 0700, whatever the umask or its mode before.

    Only a directory this user owns is changed.
    """
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = path.stat()
    if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)


def _private_sqlite_files(db: Path) -> None:
    """The SQLite database and its -wal/-shm are 0600; a directory created for it is 0700.

    SQLite gives -wal and -shm the mode of the database file, so creating the
    file 0600 first covers them; files that exist already are tightened.
    """
    if not db.parent.exists():
        private_dir(db.parent)
    if not db.exists():
        try:
            os.close(os.open(db, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
    for candidate in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"), db.with_name(db.name + "-journal")):
        try:
            info = candidate.stat()
        except FileNotFoundError:
            continue
        if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) & 0o077:
            os.chmod(candidate, stat.S_IMODE(info.st_mode) & 0o700)


def init_db(
    url: str, *, busy_timeout: float = 10.0, pool_size: int = 20, create: bool = True, new: bool = True, data_dir: Path | None = None
) -> pw.Database:
    """Bind the models to ``url``; create the schema at the current version when new.

    An existing database older than ``SCHEMA_VERSION`` is upgraded in place
    (migrations only add; they never drop data).  ``data_dir``: Remora's data
    directory, made 0700 (``private_dir``) before the database is opened.

    ``new=False`` is for commands that need a database someone else made: a
    database that does not exist -- SQLite: its file is missing; PostgreSQL
    (or an existing SQLite file): Remora's tables are missing -- raises
    ``DatabaseMissing`` naming where it looked, and nothing is created (no
    file, no directory, no table); ``data_dir`` is made only once the database
    was found.
    """
    if not new:
        _require_sqlite_file(url)  # before anything below can create the file or its directory
    elif data_dir is not None:
        private_dir(Path(data_dir))
    database = make_database(url, busy_timeout=busy_timeout, pool_size=pool_size)
    database_proxy.initialize(database)
    if create or not new:
        try:
            with database.connection_context():
                if not new:
                    if not database.table_exists("schema_version"):
                        where = describe_url(url)
                        raise DatabaseMissing(
                            f"no Remora database at {where} (its tables are missing); nothing was created", location=where
                        )
                    if data_dir is not None:
                        private_dir(Path(data_dir))
                if create:
                    ensure_schema(database)
        except pw.OperationalError as exc:
            raise Unavailable(f"database unavailable: {exc}") from None
    return database


def describe_url(url: str) -> str:
    """Where ``url`` points, for a message: the SQLite file, or PostgreSQL's host:port/database (never a password)."""
    if url.startswith(("postgres://", "postgresql://")):
        parsed = urlparse(url)
        return f"postgres://{parsed.hostname or 'localhost'}:{parsed.port or 5432}/{(parsed.path or '/postgres').lstrip('/') or 'postgres'}"
    path = _sqlite_path(url)
    return path if path == ":memory:" else str(Path(path).expanduser())


def _require_sqlite_file(url: str) -> None:
    if url.startswith(("postgres://", "postgresql://")) or ("://" in url and not url.startswith("sqlite:")):
        return
    path = _sqlite_path(url)
    if path != ":memory:" and not Path(path).expanduser().is_file():
        where = describe_url(url)
        raise DatabaseMissing(f"no Remora database at {where} (the file does not exist); nothing was created", location=where)


def ensure_schema(database: pw.Database) -> int:
    with database.atomic():
        fresh = not database.table_exists("schema_version")
        database.create_tables(MODELS, safe=True)
        if fresh or not SchemaVersion.select().exists():
            SchemaVersion.create(version=SCHEMA_VERSION)
            return SCHEMA_VERSION
    return upgrade(database)


def current_version() -> int:
    row = SchemaVersion.select(pw.fn.MAX(SchemaVersion.version)).scalar()
    return int(row or 0)


def upgrade(database: pw.Database | None = None) -> int:
    """Apply every migration newer than the stored version; return the version reached."""
    database = database or database_proxy.obj
    migrator = PostgresqlMigrator(database) if is_postgres(database) else SqliteMigrator(database)
    version = current_version()
    for target in sorted(v for v in MIGRATIONS if v > version):
        with database.atomic():
            log.info("applying schema migration %d", target)
            MIGRATIONS[target](migrator, database)
            SchemaVersion.create(version=target)
        version = target
    return version


def run_migration(migrator: Any, *operations: Any) -> None:
    migrate(*[getattr(migrator, op)(*args) for op, *args in operations])


def is_postgres(database: pw.Database | None = None) -> bool:
    database = database or database_proxy.obj
    return isinstance(database, pw.PostgresqlDatabase)


def get_database() -> pw.Database:
    return database_proxy.obj


_SQLITE_WRITERS = threading.RLock()  # reentrant: nested write transactions become savepoints


@contextmanager
def write_transaction() -> Iterator[None]:
    """A write transaction that takes SQLite's write lock up front.

    ``BEGIN IMMEDIATE`` makes a SQLite writer wait (busy timeout) for the lock
    at the start instead of failing with ``database is locked`` when it
    upgrades a read transaction later; on PostgreSQL it is a plain transaction.

    On SQLite the writers of one process also queue on a process-wide lock
    first: SQLite's busy handler sleeps in growing steps (1, 2, 5, 10 ms ...)
    while it waits, so threads contending inside SQLite lose milliseconds per
    write, while a Python lock hands over at once.  Other processes still meet
    at SQLite's own lock.
    """
    database = database_proxy.obj
    if isinstance(database, pw.SqliteDatabase):
        with _SQLITE_WRITERS, database.atomic("IMMEDIATE"):
            yield
    else:
        with database.atomic():
            yield


_INSERTS: dict[tuple[type[BaseModel], type[pw.Database], int], str] = {}
INSERT_CHUNK = 100  # rows per INSERT statement


def _row_values(fields: list[pw.Field], row: dict[str, Any]) -> list[Any]:
    """One row's parameters in ``fields`` order: given values or the field defaults, through ``db_value``."""
    out = []
    for f in fields:
        if f.name in row:
            value = row[f.name]
        else:
            value = f.default() if callable(f.default) else f.default
        out.append(f.db_value(value))
    return out


def insert_rows(model: type[BaseModel], rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts by field name; missing fields take their defaults) with cached SQL.

    Building a peewee INSERT of a wide model costs more CPU than SQLite's
    insert itself, so the statement text is made once per (model, database kind,
    rows per statement) -- by peewee, so quoting and placeholders match -- and
    only the parameters are computed per call.  Auto-increment keys are left
    to the database.  Errors are peewee's (IntegrityError, OperationalError).
    """
    database = database_proxy.obj
    fields = [f for f in model._meta.sorted_fields if not isinstance(f, pw.AutoField)]
    for start in range(0, len(rows), INSERT_CHUNK):
        chunk = rows[start : start + INSERT_CHUNK]
        key = (model, type(database), len(chunk))  # the SQL text depends only on the dialect
        sql = _INSERTS.get(key)
        if sql is None:
            full = [
                {f.name: (r[f.name] if f.name in r else f.default() if callable(f.default) else f.default) for f in fields} for r in chunk
            ]
            sql = _INSERTS[key] = model.insert_many(full, fields=fields).sql()[0]
        database.execute_sql(sql, [value for row in chunk for value in _row_values(fields, row)])


def release_connection() -> None:
    """Give the calling thread's PostgreSQL connection back to the pool (threads that outlive a request call it).

    peewee keeps one connection per thread; a background thread that ends a
    pass (or a response that finished streaming) returns it here so the pool
    never runs dry.  SQLite's single shared connection is left open.
    """
    database = database_proxy.obj
    if database is not None and is_postgres(database) and not database.is_closed():
        database.close()


def close_db() -> None:
    database = database_proxy.obj
    if database is None:
        return
    if isinstance(database, PooledPostgresqlDatabase):
        database.close_all()
    else:
        database.close()


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

# The worker's hot statements live beside the models (remora/models/hot.py).
from remora.models import hot as _hot  # noqa: E402 - it needs the models above

append_output = _hot.append_output
claim_job = _hot.claim_job
last_output_seq = _hot.last_output_seq
select_job = _hot.select_job
update_held_job = _hot.update_held_job
