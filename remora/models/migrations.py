"""Schema migrations: ``MIGRATIONS[v]`` takes a database from version ``v - 1`` to ``v``.

``remora.models.db.upgrade`` applies, in order and each in its own
transaction, every migration newer than the stored ``SchemaVersion``.
Migrations only add (tables, nullable or defaulted columns) or drop a redundant
index; they never drop data, and each checks what exists first, so a half-applied step can run again.
A new database is created at ``SCHEMA_VERSION`` directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import peewee as pw
from playhouse.migrate import migrate

from remora.models import Batch, Change, Delivery, JSONField, Schedule, ScheduleRun, Server, Template, Webhook


def run_migration(migrator: Any, *operations: Any) -> None:
    """Run ``(operation, *args)`` tuples of peewee's migrator, e.g. ``("add_column", "job", "x", field)``."""
    migrate(*[getattr(migrator, op)(*args) for op, *args in operations])


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


def _add_schedules(migrator: Any, database: pw.Database) -> None:
    """``job.run_at`` (a delayed job), the ``schedule`` table and ``schedule_run`` (each slot's outcome)."""
    if "run_at" not in [column.name for column in database.get_columns("job")]:
        run_migration(migrator, ("add_column", "job", "run_at", pw.DateTimeField(null=True)))
    database.create_tables([Schedule, ScheduleRun], safe=True)


def _add_webhooks(migrator: Any, database: pw.Database) -> None:
    """The ``webhook`` table and the ``outbox`` of their deliveries."""
    database.create_tables([Webhook, Delivery], safe=True)


def _drop_output_chunk_job_index(migrator: Any, database: pw.Database) -> None:
    """``output_chunk_job_id`` repeated the first column of ``(job_id, seq)``: every chunk paid a write to one more random page."""
    database.execute_sql('DROP INDEX IF EXISTS "output_chunk_job_id"')


# version -> function(migrator, database) applied by upgrade() to reach that version.
MIGRATIONS: dict[int, Callable[[Any, pw.Database], None]] = {
    2: _add_job_secret_env,
    3: _add_server_jump_server,
    4: _add_batches,
    5: _add_templates,
    6: _add_changes,
    7: _add_schedules,
    8: _add_webhooks,
    9: _drop_output_chunk_job_index,
}
