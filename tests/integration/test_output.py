"""Output is appended as ordered chunks and read back by byte range, byte-exact."""

from __future__ import annotations

import os

import pytest

from remora import models, output
from remora.executor.base import Stream
from tests.support.waits import wait_for


@pytest.fixture
def job(sqlite_url):
    models.init_db(sqlite_url)
    server = models.Server.create(name="local", hostname="localhost", auth_type="local")
    yield models.Job.create(command="x", server=server)
    models.close_db()


def test_bytes_survive_exactly_and_streams_stay_apart(job):
    out = output.JobOutput(job.id, flush_lines=1000, flush_interval=60)
    pieces = [(Stream.STDOUT, b"line 1\r\n\n"), (Stream.STDERR, b"\xff\xfe bad utf8\n"), (Stream.STDOUT, b"\x00binary\x01")]
    for stream, data in pieces:
        out.write(stream, data)
    out.close()
    assert output.read_stream(job.id, Stream.STDOUT) == b"line 1\r\n\n\x00binary\x01"
    assert output.read_stream(job.id, Stream.STDERR) == b"\xff\xfe bad utf8\n"
    assert output.read_combined(job.id) == b"".join(d for _, d in pieces)
    row = models.Job.get_by_id(job.id)
    assert (row.stdout_bytes, row.stderr_bytes) == (17, 12)


def test_slices_by_offset_match_the_whole_stream(job):
    blob = os.urandom(3 * output.MAX_CHUNK + 12345)
    out = output.JobOutput(job.id, flush_lines=10**9, flush_interval=60)
    for i in range(0, len(blob), 5000):
        out.write(Stream.STDOUT, blob[i : i + 5000])
    out.close()
    assert output.read_stream(job.id, Stream.STDOUT) == blob
    for start, limit in [(0, 10), (output.MAX_CHUNK - 3, 7), (len(blob) - 5, 100), (len(blob), 10), (123456, 400000)]:
        assert output.read_stream(job.id, Stream.STDOUT, start, limit) == blob[start : start + limit]
    assert output.stream_length(job.id, Stream.STDOUT) == len(blob)


def test_flushes_after_flush_lines_lines(job):
    out = output.JobOutput(job.id, flush_lines=3, flush_interval=60)
    out.write(Stream.STDOUT, b"a\nb\n")
    assert output.read_stream(job.id, Stream.STDOUT) == b""
    out.write(Stream.STDOUT, b"c\n")
    assert output.read_stream(job.id, Stream.STDOUT) == b"a\nb\nc\n"
    out.close()


def test_quiet_output_is_flushed_within_the_interval(job):
    out = output.JobOutput(job.id, flush_lines=1000, flush_interval=0.2)
    out.write(Stream.STDOUT, b"partial line without newline")
    wait_for(lambda: output.read_stream(job.id, Stream.STDOUT) == b"partial line without newline", 3, what="timed flush")
    out.close()


def test_output_beyond_the_cap_is_dropped_with_a_marker(job):
    out = output.JobOutput(job.id, max_bytes=100, flush_lines=1000)
    out.write(Stream.STDOUT, b"x" * 80)
    out.write(Stream.STDERR, b"y" * 80)
    out.write(Stream.STDOUT, b"z" * 80)
    out.close()
    assert output.read_stream(job.id, Stream.STDOUT) == b"x" * 80
    assert output.read_stream(job.id, Stream.STDERR) == b"y" * 20 + output.truncation_marker(100)
    assert models.Job.get_by_id(job.id).output_truncated


def test_a_second_writer_appends_after_existing_output(job):
    first = output.JobOutput(job.id)
    first.write(Stream.STDOUT, b"attempt 1\n")
    first.close()
    second = output.JobOutput(job.id)
    second.write(Stream.STDOUT, b"attempt 2\n")
    second.close()
    assert output.read_stream(job.id, Stream.STDOUT) == b"attempt 1\nattempt 2\n"
    assert output.read_combined(job.id) == b"attempt 1\nattempt 2\n"
