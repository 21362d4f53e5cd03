"""Binding the models to a database: SQLite (default) or pooled PostgreSQL.

``init_db(url)`` makes the database (``make_database``), binds every model
through ``database_proxy``, creates the schema at ``SCHEMA_VERSION`` or
upgrades an older one (``remora.models.migrations``).  SQLite runs in WAL mode
with a busy timeout and foreign keys on, its files 0600 in a 0700 directory, and
its connections' page caches within one budget for the process (``SQLITE_HEAP_LIMIT``);
PostgreSQL connections are pooled and reconnect after the server restarts.
``write_transaction`` is how every writer opens a transaction;
``insert_rows`` is the cached bulk insert of the hot paths.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlparse

import peewee as pw
from playhouse.migrate import PostgresqlMigrator, SqliteMigrator
from playhouse.pool import PooledPostgresqlDatabase
from playhouse.shortcuts import ReconnectMixin

from remora.errors import ConfigError, DatabaseMissing, Unavailable
from remora.models import MODELS, SCHEMA_VERSION, BaseModel, SchemaVersion, database_proxy
from remora.models.migrations import MIGRATIONS

log = logging.getLogger(__name__)

MiB = 1024 * 1024
SQLITE_CACHE_KIB = 4000
"""Page cache of one SQLite connection at most: a list or a fan-out's claim finds its pages there."""
SQLITE_HEAP_LIMIT = 32 * MiB
"""What every SQLite connection of the process holds together, caches included (SQLite's soft heap limit).

Each thread that touches the database has its own connection (``remora up``: the API's request threads,
the worker's, the upkeep tasks': about 26), and each one's cache fills up to ``SQLITE_CACHE_KIB`` as the
database grows: without this limit the process would grow by that much per thread.  Near the limit a
connection reuses its own oldest pages instead of taking more memory.  The limit is SQLite's, for the
whole process; every new connection sets it again (the same value)."""


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
            "cache_size": -SQLITE_CACHE_KIB,
            "soft_heap_limit": SQLITE_HEAP_LIMIT,
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
