"""Dead letters with real processes: jobs whose retries ran out and jobs whose workers died too often, one view, one kick.

The view is the API's ``GET /api/v1/queue/dlq`` (also the dashboard's) and
``remora queue dlq list``; a kick writes a fresh attempt to the row (attempts,
worker, exit code, error and times reset) and queues the job again.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from remora.errors import Conflict
from remora.jobmessage import message_body
from remora.models import Job, Server
from tests.support.cluster import Cluster
from tests.support.waits import wait_for
from tests.support.workerkit import wait_status

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path / "stack")
    c.queue().start()
    c.api().start()
    yield c
    c.close()


def _cli(c: Cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "remora", *args], env=c.env, capture_output=True, text=True, timeout=60)


def test_a_job_whose_retries_ran_out_is_a_dead_letter_and_a_kick_runs_it_afresh(cluster):
    c = cluster
    c.worker("w", concurrency=2).start()
    client = c.client()
    local = client.create_server({"name": "here", "hostname": "localhost", "user": "r", "auth_type": "local"})["id"]
    job_id = client.submit({"command": "exit 3", "server_id": local, "retries": 1})[0]["id"]
    row = wait_status(job_id, timeout=30)
    assert (row.status, row.attempts) == ("failed", 2)
    dead = {d["id"]: d for d in client.get("/api/v1/queue/dlq")["jobs"]}
    assert dead[job_id]["kind"] == "retries exhausted"
    assert "exit code 3" in dead[job_id]["reason"]
    listed = _cli(c, "queue", "dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert job_id in [d["id"] for d in json.loads(listed.stdout)]
    reply = client.post(f"/api/v1/queue/dlq/{job_id}/kick")
    assert reply["kicked"] == 1
    wait_for(lambda: Job.get_by_id(job_id).status == "failed" and Job.get_by_id(job_id).attempts == 2, 30, what="the fresh attempts to run")
    again = Job.get_by_id(job_id)
    assert again.exit_code == 3 and again.worker == "w"
    assert len(again.attempt_errors) >= 2  # the history of the first round is kept


def test_a_job_whose_workers_died_too_often_is_a_dead_letter_and_a_kick_queues_it(cluster):
    c = cluster
    client = c.client()
    local = client.create_server({"name": "here", "hostname": "localhost", "user": "r", "auth_type": "local"})["id"]
    server = Server.get_by_id(local)
    job = Job.create(server=server, command="true", queue="limbo")  # a queue no worker watches
    with c.queue_client() as q:
        q.put(job.id, queue="limbo", ttr=0.5, max_attempts=1, body=message_body(server), group=server.id)
        with c.queue_client() as ghost:  # a "worker" that starts the job and dies without a heartbeat
            (res,) = ghost.reserve(["limbo"], timeout=1, worker_id="ghost")
            assert ghost.start([res.id], worker_id="ghost") == [True]
        wait_for(lambda: q.peek(job.id).state == "dead", 10, what="the lease to expire into the dead-letter queue")
        dead = {d["id"]: d for d in client.get("/api/v1/queue/dlq")["jobs"]}
        assert dead[job.id]["kind"] == "worker died too often"
        assert "lease expired" in dead[job.id]["reason"]
        kicked = _cli(c, "queue", "dlq", "kick", job.id)
        assert kicked.returncode == 0, kicked.stderr
        assert q.peek(job.id).state == "ready"
    row = Job.get_by_id(job.id)
    assert (row.status, row.attempts, row.worker) == ("queued", 0, None)
    assert job.id not in {d["id"] for d in client.get("/api/v1/queue/dlq")["jobs"]}


def test_kicking_a_job_that_is_not_a_dead_letter_is_a_conflict(cluster):
    c = cluster
    client = c.client()
    local = client.create_server({"name": "here", "hostname": "localhost", "user": "r", "auth_type": "local"})["id"]
    job_id = client.submit({"command": "true", "server_id": local})[0]["id"]  # no worker: stays queued
    with pytest.raises(Conflict):
        client.post(f"/api/v1/queue/dlq/{job_id}/kick")
    assert Job.get_by_id(job_id).status == "queued"
