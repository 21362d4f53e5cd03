"""Model round trips on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import uuid

import pytest

from remora import models as m
from remora.executor.base import Stream


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'r.db'}"
    server = request.getfixturevalue("postgres")
    return server.new_database(f"models_{abs(hash(str(tmp_path))) % 10**8}")


@pytest.fixture
def db(db_url):
    database = m.init_db(db_url)
    yield database
    m.close_db()


def test_job_server_and_output_round_trip(db):
    server = m.Server.create(name="web-1", hostname="10.0.0.1", user="deploy", tags=["web", "prod"])
    job = m.Job.create(command="echo", args="hi", server=server, env={"A": "1"})
    for seq, (stream, data) in enumerate([(Stream.STDOUT, b"hello\r\n"), (Stream.STDERR, b"\xff\xfe oops\n"), (Stream.STDOUT, b"\n\nbye")]):
        offset = sum(c.length for c in m.OutputChunk.select().where(m.OutputChunk.job == job, m.OutputChunk.stream == stream))
        m.OutputChunk.create(job=job, seq=seq, stream=stream, offset=offset, length=len(data), data=data)
    got = m.Job.get_by_id(job.id)
    assert got.server.name == "web-1" and got.server.tags == ["web", "prod"]
    assert got.env == {"A": "1"}
    assert got.status == m.JobStatus.QUEUED
    stdout = b"".join(
        bytes(c.data)
        for c in m.OutputChunk.select().where(m.OutputChunk.job == job, m.OutputChunk.stream == 1).order_by(m.OutputChunk.offset)
    )
    assert stdout == b"hello\r\n\n\nbye"


def test_output_seq_is_unique_per_job(db):
    server = m.Server.create(name="s", hostname="h")
    job = m.Job.create(command="true", server=server)
    m.OutputChunk.create(job=job, seq=0, stream=1, offset=0, length=1, data=b"a")
    with pytest.raises(m.IntegrityError), m.get_database().atomic():
        m.OutputChunk.create(job=job, seq=0, stream=1, offset=1, length=1, data=b"b")


def test_deleting_a_server_cascades_to_jobs_and_output(db):
    server = m.Server.create(name="gone", hostname="h")
    job = m.Job.create(command="true", server=server)
    m.OutputChunk.create(job=job, seq=0, stream=1, offset=0, length=1, data=b"a")
    server.delete_instance()
    assert m.Job.select().count() == 0 and m.OutputChunk.select().count() == 0


def test_conditional_claim_lets_only_one_writer_win(db):
    server = m.Server.create(name="c", hostname="h")
    job = m.Job.create(command="true", server=server)
    claims = [m.Job.update(status="running", attempts=1).where(m.Job.id == job.id, m.Job.status == "queued").execute() for _ in range(2)]
    assert claims == [1, 0]


def test_schema_version_recorded_and_upgrade_is_idempotent(db):
    assert m.current_version() == m.SCHEMA_VERSION
    assert m.upgrade() == m.SCHEMA_VERSION
    assert m.ensure_schema(m.get_database()) == m.SCHEMA_VERSION


def test_a_version_3_database_gains_the_batch_table_and_job_held(db):
    """A database made before batches (schema 3): opening it adds ``batch`` and ``job.held``, keeping its jobs."""
    server = m.Server.create(name="old", hostname="h")
    job = m.Job.create(command="true", server=server)
    database = m.get_database()
    database.execute_sql('ALTER TABLE "job" DROP COLUMN "held"')
    database.drop_tables([m.Batch])
    m.SchemaVersion.update(version=3).execute()
    assert m.ensure_schema(database) == m.SCHEMA_VERSION
    assert "held" in [c.name for c in database.get_columns("job")] and database.table_exists("batch")
    assert m.Job.get_by_id(job.id).held is False


def test_a_version_4_database_gains_the_template_table_and_job_template_params(db):
    """A database made before templates (schema 4): opening it adds ``template``, ``job.template`` and ``job.params``, keeping its jobs."""
    server = m.Server.create(name="old", hostname="h")
    job = m.Job.create(command="true", server=server)
    database = m.get_database()
    database.execute_sql('ALTER TABLE "job" DROP COLUMN "template"')
    database.execute_sql('ALTER TABLE "job" DROP COLUMN "params"')
    database.drop_tables([m.Template])
    m.SchemaVersion.update(version=4).execute()
    assert m.ensure_schema(database) == m.SCHEMA_VERSION
    columns = [c.name for c in database.get_columns("job")]
    assert "template" in columns and "params" in columns and database.table_exists("template")
    row = m.Job.get_by_id(job.id)
    assert row.template is None and row.params is None and row.command == "true"
    m.Template.create(name="t", command="echo")
    assert m.Template.get(m.Template.name == "t").parameters == []


def test_a_version_7_database_gains_the_webhook_and_outbox_tables(db):
    """A database made before webhooks (schema 7): opening it adds ``webhook`` and ``outbox``, keeping its jobs."""
    server = m.Server.create(name="old", hostname="h")
    job = m.Job.create(command="true", server=server)
    database = m.get_database()
    database.drop_tables([m.Delivery, m.Webhook])
    m.SchemaVersion.update(version=7).execute()
    assert m.ensure_schema(database) == m.SCHEMA_VERSION
    assert database.table_exists("webhook") and database.table_exists("outbox")
    hook = m.Webhook.create(name="ops", url="https://example.com/h", events=["job.failed"])
    with m.write_transaction():
        assert m.outbox.emit("job.failed", f"job:{job.id}", {"job": {"id": job.id}}) == 1
    assert m.Delivery.get().webhook_id == hook.id and m.Job.get_by_id(job.id).command == "true"


def test_a_version_1_database_is_upgraded_with_the_job_secret_env_column(db):
    """A database made before ``Job.secret_env`` (schema 1): opening it adds the column, keeping its jobs."""
    server = m.Server.create(name="old", hostname="h")
    job = m.Job.create(command="true", server=server, env={"A": "1"})
    database = m.get_database()
    database.execute_sql('ALTER TABLE "job" DROP COLUMN "secret_env"')
    m.SchemaVersion.update(version=1).execute()
    assert "secret_env" not in [c.name for c in database.get_columns("job")]
    assert m.ensure_schema(database) == m.SCHEMA_VERSION
    assert "secret_env" in [c.name for c in database.get_columns("job")]
    row = m.Job.get_by_id(job.id)
    assert row.env == {"A": "1"} and row.secret_env is None
    m.Job.update(secret_env=b"ciphertext").where(m.Job.id == job.id).execute()
    assert bytes(m.Job.get_by_id(job.id).secret_env) == b"ciphertext"


def test_unsupported_database_scheme_is_a_config_error():
    from remora.errors import ConfigError

    with pytest.raises(ConfigError, match="unsupported scheme"):
        m.make_database("mysql://x/y")


def test_a_version_5_database_gains_job_run_at_and_the_schedule_tables(db):
    """A database made before delayed jobs and schedules (schema 5): opening it adds ``job.run_at``, ``schedule`` and ``schedule_run``."""
    server = m.Server.create(name="old", hostname="h")
    job = m.Job.create(command="true", server=server)
    database = m.get_database()
    database.execute_sql('ALTER TABLE "job" DROP COLUMN "run_at"')
    database.drop_tables([m.ScheduleRun, m.Schedule])
    m.SchemaVersion.update(version=5).execute()
    assert m.ensure_schema(database) == m.SCHEMA_VERSION >= 7
    assert "run_at" in [c.name for c in database.get_columns("job")]
    assert database.table_exists("schedule") and database.table_exists("schedule_run")
    assert m.Job.get_by_id(job.id).run_at is None


def test_a_version_5_database_gains_the_change_table(db):
    """A database made before the change feed (schema 5): opening it adds ``change``; transitions then record changes."""
    database = m.get_database()
    database.drop_tables([m.Change])
    m.SchemaVersion.update(version=5).execute()
    assert m.ensure_schema(database) == m.SCHEMA_VERSION >= 6
    assert database.table_exists("change")
    server = m.Server.create(name="old", hostname="h")
    from remora import jobstate

    row = jobstate.new_job(command="true", server=server.id).__data__
    jobstate.record([row])
    assert [(c.kind, c.job_id, c.status) for c in m.Change.select()] == [("job", row["id"], "queued")]


@pytest.fixture
def sqlite_db(tmp_path):
    database = m.init_db(f"sqlite:///{tmp_path / 'old.db'}")
    yield database
    m.close_db()


def test_a_version_2_database_gains_the_jump_server_column(sqlite_db):
    """A database made before ``Server.jump_server`` (schema 2) is upgraded in place, keeping its servers."""
    database = sqlite_db
    sql = database.execute_sql("SELECT sql FROM sqlite_master WHERE name = 'server'").fetchone()[0]
    old = sql.replace(', "jump_server_id" VARCHAR(36)', "").replace(
        ', FOREIGN KEY ("jump_server_id") REFERENCES "server" ("id") ON DELETE RESTRICT', ""
    )
    assert "jump_server_id" not in old
    database.execute_sql("PRAGMA foreign_keys = OFF")
    database.execute_sql('DROP TABLE "server"')
    database.execute_sql(old)
    database.execute_sql("PRAGMA foreign_keys = ON")
    database.execute_sql("INSERT INTO server (id, name, hostname, port, user, auth_type, tags, max_concurrent_jobs, is_active, description, "
                         "created_at, updated_at, last_test_message, host_key_fingerprint, last_status) VALUES "
                         "('00000000-0000-0000-0000-000000000001', 'kept', 'h', 22, 'u', 'key', '[]', 0, 1, '', '2026-01-01', '2026-01-01', '', '', '')")  # fmt: skip
    m.SchemaVersion.update(version=2).execute()
    assert m.ensure_schema(database) == m.SCHEMA_VERSION >= 3
    assert "jump_server_id" in [c.name for c in database.get_columns("server")]
    kept = m.Server.get(m.Server.name == "kept")
    assert kept.jump_server_id is None
    behind = m.Server.create(name="behind", hostname="h2", jump_server=kept)
    with pytest.raises(m.IntegrityError):  # RESTRICT: a jump server in use cannot be deleted, even around the API
        kept.delete_instance()
    assert m.Server.get_by_id(behind.id).jump_server_id == kept.id


def test_postgres_schema_and_upgrade_keep_jump_servers_restricted(postgres):
    database = m.init_db(postgres.new_database(f"jump_{uuid.uuid4().hex[:8]}"))
    try:
        database.execute_sql('ALTER TABLE "server" DROP COLUMN "jump_server_id"')
        m.SchemaVersion.update(version=2).execute()
        assert m.ensure_schema(database) == m.SCHEMA_VERSION
        bastion = m.Server.create(name="bastion", hostname="h")
        m.Server.create(name="inner", hostname="h2", jump_server=bastion)
        with pytest.raises(m.IntegrityError), database.atomic():
            bastion.delete_instance()
        assert m.Server.get(m.Server.name == "inner").jump_server_id == bastion.id
    finally:
        m.close_db()


def test_a_version_8_database_loses_the_redundant_output_chunk_job_index_and_keeps_its_output(db):
    """Schema 8 indexed ``output_chunk.job_id`` alone as well as ``(job_id, seq)``: opening it drops the extra index."""
    server = m.Server.create(name="old", hostname="h")
    job = m.Job.create(command="true", server=server)
    m.OutputChunk.create(job=job, seq=0, stream=Stream.STDOUT, offset=0, length=3, data=b"hi\n")
    database = m.get_database()
    assert "output_chunk_job_id" not in [i.name for i in database.get_indexes("output_chunk")]  # a new database
    database.execute_sql('CREATE INDEX "output_chunk_job_id" ON "output_chunk" ("job_id")')
    m.SchemaVersion.update(version=8).execute()
    assert m.ensure_schema(database) == m.SCHEMA_VERSION >= 9
    names = [i.name for i in database.get_indexes("output_chunk")]
    assert "output_chunk_job_id" not in names and "output_chunk_job_id_seq" in names
    assert bytes(m.OutputChunk.get(m.OutputChunk.job == job.id).data) == b"hi\n"
    if isinstance(database, m.pw.SqliteDatabase):  # a lookup by job alone still goes through an index
        plan = " ".join(
            str(row) for row in database.execute_sql('EXPLAIN QUERY PLAN SELECT * FROM "output_chunk" WHERE "job_id" = ?', (job.id,))
        )
        assert "USING INDEX output_chunk_job_id_" in plan, plan
