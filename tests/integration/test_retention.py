from __future__ import annotations

import datetime as dt
import os

import pytest

from remora import models, output
from remora.executor.base import Stream
from remora.upkeep import retention


@pytest.fixture
def server(sqlite_url):
    models.init_db(sqlite_url)
    yield models.Server.create(name="local", hostname="localhost", auth_type="local")
    models.close_db()


def finished_job(server, out: bytes, err: bytes, status="completed", age_days=0.0):
    job = models.Job.create(command="x", server=server)
    writer = output.JobOutput(job.id, flush_lines=10**9, flush_interval=60)
    for i in range(0, max(len(out), len(err)), 1000):
        writer.write(Stream.STDOUT, out[i : i + 1000])
        writer.write(Stream.STDERR, err[i : i + 1000])
    writer.close()
    when = models.utcnow() - dt.timedelta(days=age_days, seconds=10)
    models.Job.update(status=status, finished_at=when, started_at=when).where(models.Job.id == job.id).execute()
    return job


def test_compression_is_transparent_to_readers_and_saves_space(server):
    out = b"".join(b"line %d of a chatty deploy log\r\n" % i for i in range(20000))
    err = os.urandom(3000) + b"\nwarning\n" * 500
    job = finished_job(server, out, err)
    combined = output.read_combined(job.id)
    before = sum(len(bytes(c.data)) for c in models.OutputChunk.select().where(models.OutputChunk.job == job.id))
    assert retention.compress_finished(min_age=0) == 1
    after = sum(len(bytes(c.data)) for c in models.OutputChunk.select().where(models.OutputChunk.job == job.id))
    assert after < before / 3
    assert output.read_stream(job.id, Stream.STDOUT) == out
    assert output.read_stream(job.id, Stream.STDERR) == err
    assert output.read_stream(job.id, Stream.STDOUT, 12345, 777) == out[12345 : 12345 + 777]
    assert output.read_combined(job.id) == combined
    assert models.Job.get_by_id(job.id).output_compressed
    assert retention.compress_job_output(job.id) is False  # once only


def test_running_jobs_are_not_compressed(server):
    job = finished_job(server, b"x" * 10000, b"", status="running")
    assert retention.compress_job_output(job.id) is False
    assert not models.Job.get_by_id(job.id).output_compressed


def test_prune_deletes_only_old_finished_jobs_of_the_given_status(server):
    old_ok = finished_job(server, b"a", b"", "completed", age_days=40)
    old_failed = finished_job(server, b"b", b"", "failed", age_days=40)
    new_ok = finished_job(server, b"c", b"", "completed", age_days=1)
    assert retention.prune_jobs(30 * 86400, ["failed"]) == 1
    assert not models.Job.select().where(models.Job.id == old_failed.id).exists()
    assert retention.prune_jobs(30 * 86400) == 1
    remaining = {j.id for j in models.Job.select()}
    assert remaining == {new_ok.id}
    assert not models.OutputChunk.select().where(models.OutputChunk.job == old_ok.id).exists()


def test_prune_refuses_unfinished_statuses(server):
    from remora.errors import ValidationError

    with pytest.raises(ValidationError):
        retention.prune_jobs(1, ["running"])
