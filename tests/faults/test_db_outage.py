"""PostgreSQL stopped for 10 s while jobs stream output: every job finishes with all its output, in order.

Queue, API and worker are separate processes on a real PostgreSQL.  Four jobs
print numbered lines on both streams for about 12 s; the database is stopped
for 10 s in the middle.  The worker keeps their output in memory and writes it
when the database is back; the API answers 503 meanwhile (never crashes); every
job finishes and each stream holds exactly the lines printed, in order.
"""

from __future__ import annotations

import time

import pytest

from remora import output, services
from remora.errors import Unavailable
from remora.executor.base import Stream
from tests.support.cluster import Cluster, status_counts
from tests.support.waits import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

LINES = 240
SCRIPT = f"for i in $(seq 1 {LINES}); do echo out-$i; echo err-$i >&2; sleep 0.05; done"


def expected(prefix: str) -> bytes:
    return b"".join(f"{prefix}-{i}\n".encode() for i in range(1, LINES + 1))


def test_database_down_for_10s_loses_and_reorders_no_output(tmp_path, postgres):
    if postgres.pg_ctl is None:
        pytest.skip("an external PostgreSQL (REMORA_TEST_POSTGRES_URL) cannot be stopped by the test")
    cluster = Cluster(tmp_path / "stack", db_url=postgres.new_database("faults_outage"))
    try:
        cluster.queue().start()
        cluster.api().start()
        cluster.worker("w1", concurrency=4).start()
        client = cluster.client(timeout=15)
        local = services.ensure_local_server().id
        jobs = [client.submit({"command": SCRIPT, "server_id": local, "timeout": 120})[0]["id"] for _ in range(4)]
        wait_for(
            lambda: all(output.stream_length(j, Stream.STDOUT) >= 20 * 6 for j in jobs), 20, what="every job to have stored some output"
        )
        postgres.stop()
        stopped = time.monotonic()
        try:
            with pytest.raises(Unavailable, match="database"):
                client.submit({"command": "true", "server_id": local})
            time.sleep(max(0.0, 10 - (time.monotonic() - stopped)))  # the outage itself lasts 10 s
        finally:
            postgres.start()
        wait_for(lambda: status_counts(jobs).get("completed") == 4, 60, interval=0.3, what="every job to finish after the outage")
        for job_id in jobs:
            assert output.read_stream(job_id, Stream.STDOUT) == expected("out")
            assert output.read_stream(job_id, Stream.STDERR) == expected("err")
            combined = output.read_combined(job_id).split()
            assert [x for x in combined if x.startswith(b"out-")] == expected("out").split()
        after = client.submit({"command": "echo back", "server_id": local})[0]["id"]
        wait_for(lambda: status_counts([after]).get("completed") == 1, 20, what="a job submitted after the outage to run")
        worker_log = cluster.services[2].logs()
        assert "cannot write output yet" in worker_log and "output writes resumed" in worker_log
        print("\n" + "\n".join(line for line in worker_log.splitlines() if "database" in line or "output" in line)[:2000])
    finally:
        cluster.close()
