"""``GET /batches/:id?output=true`` reads a batch's results in a fixed number of queries (no query per host)."""

from __future__ import annotations

from typing import Any

import pytest

from remora import jobstate
from remora import models as m
from remora.executor.base import Stream
from remora.models import JobStatus
from remora.output import JobOutput
from remora.services import batches

PER_HOST = batches.HOST_OUTPUT


@pytest.fixture
def db(tmp_path):
    database = m.init_db(f"sqlite:///{tmp_path / 'r.db'}")
    yield database
    m.close_db()


def make_batch(hosts: int, big: int = -1, prefix: str = "h") -> str:
    """A finished batch of ``hosts`` jobs, each with stdout ``out-N`` and stderr ``err-N``; host ``big`` prints more than PER_HOST."""
    servers = [m.Server.create(name=f"{prefix}{n:03d}", hostname="10.0.0.1", user="u") for n in range(hosts)]
    batch_id = m.new_id()
    rows = [jobstate.new_job(server=s.id, command="echo", batch_id=batch_id).__data__ for s in servers]
    jobstate.record_batch({"id": batch_id, "command": "echo", "total": hosts}, rows)
    for n, row in enumerate(rows):
        jobstate.claim(row["id"], "w")
        out = JobOutput(row["id"], close_timeout=5)
        out.write(Stream.STDOUT, f"out-{n}\n".encode())
        out.write(Stream.STDERR, f"err-{n}\n".encode())
        if n == big:
            for _ in range(3):
                out.write(Stream.STDOUT, b"x" * PER_HOST)
        out.close()
        jobstate.finish(row["id"], "w", 1, JobStatus.COMPLETED, exit_code=0)
    jobstate.batch_step(batch_id)
    return batch_id


def counted(fn: Any) -> tuple[Any, int]:
    database = m.get_database()
    calls = 0
    original = database.execute_sql

    def counting(*args: Any, **kw: Any) -> Any:
        nonlocal calls
        calls += 1
        return original(*args, **kw)

    database.execute_sql = counting
    try:
        return fn(), calls
    finally:
        database.execute_sql = original


def test_a_batch_with_output_costs_the_same_queries_for_5_or_60_hosts(db):
    small, large = make_batch(5, prefix="s"), make_batch(60, big=7)
    _, few = counted(lambda: batches.batch_detail(batches.get_batch(small), output=True))
    detail, many = counted(lambda: batches.batch_detail(batches.get_batch(large), output=True))
    assert few == many <= 3, (few, many)
    hosts = {h["server_name"]: h for h in detail["hosts"]}
    assert len(hosts) == 60 and detail["status"] == "completed"
    assert hosts["h003"]["stdout"] == "out-3\n" and hosts["h003"]["stderr"] == "err-3\n"
    assert hosts["h003"]["output_truncated"] is False and hosts["h003"]["stdout_bytes"] == len("out-3\n")
    big = hosts["h007"]
    assert big["output_truncated"] is True and len(big["stdout"]) == PER_HOST and big["stdout"].startswith("out-7\nxxx")
    assert big["stdout_bytes"] == len("out-7\n") + 3 * PER_HOST and big["stderr"] == "err-7\n"
