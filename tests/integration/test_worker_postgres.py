"""The worker on PostgreSQL, including a database outage in the middle of a job."""

from __future__ import annotations

import logging
import time
import uuid

import pytest

from remora import models, output
from remora.executor.base import Stream
from remora.netqueue.client import QueueClient
from remora.netqueue.server import QueueServer
from remora.worker import Worker
from tests.support.waits import wait_for
from tests.support.workerkit import local_server, make_settings, submit, wait_status

pytestmark = pytest.mark.postgres


@pytest.fixture
def env(tmp_path, postgres):
    url = postgres.new_database(f"worker_{uuid.uuid4().hex[:8]}")
    models.init_db(url)
    qs = QueueServer(host="127.0.0.1", port=0, persistence=False)
    qs.start()
    host, port = qs.address
    settings = make_settings(tmp_path, {"database.url": url, "queue.addr": f"{host}:{port}", "worker.heartbeat_interval": 0.2})
    client = QueueClient(settings.queue.addr)
    worker = Worker(settings, concurrency=2)
    worker.start()
    yield settings, client, worker, postgres
    worker.stop(graceful=False)
    client.close()
    qs.stop()
    models.close_db()


def test_jobs_run_on_postgres(env):
    settings, q, _, _ = env
    local = local_server()
    job = submit(q, local, settings, command="printf 'a\\nb\\n'; exit 3")
    row = wait_status(job.id)
    assert row.status == "failed" and row.exit_code == 3
    assert output.read_stream(job.id, Stream.STDOUT) == b"a\nb\n"


def test_database_outage_mid_job_is_survived(env, caplog):
    caplog.set_level(logging.INFO, logger="remora")
    settings, q, _, postgres = env
    local = local_server()
    job = submit(q, local, settings, command="for i in 1 2 3 4 5 6; do echo line $i; sleep 0.5; done")
    wait_for(lambda: output.read_stream(job.id, Stream.STDOUT).startswith(b"line 1\n"), 5, what="job running")
    postgres.stop()
    try:
        time.sleep(1.5)
    finally:
        postgres.start()
    row = wait_status(job.id, timeout=30)
    assert row.status == "completed"
    assert output.read_stream(job.id, Stream.STDOUT) == b"".join(f"line {i}\n".encode() for i in range(1, 7))
    later = submit(q, local, settings, command="echo after")
    assert wait_status(later.id, timeout=20).status == "completed"
