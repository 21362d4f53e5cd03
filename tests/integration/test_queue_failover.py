"""Queue failover: the queue server restarts (with its log, or with its data directory lost) and a
standby takes over from a copied data directory.

The database is the source of truth: a restarted queue recovers its jobs from
its log at once; a queue that lost its directory is refilled by the API's
reconciler, which re-puts every recorded ``queued`` job the queue lacks.
Either way every job runs exactly once.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from remora import auth, services
from remora.models import Job
from remora.netqueue.client import QueueClient
from tests.support.cluster import QUEUE_TOKEN, Cluster, postgres_cluster
from tests.support.http import Http
from tests.support.waits import wait_until

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cluster(tmp_path, postgres, request):
    with postgres_cluster(tmp_path, postgres, "remora_failover") as cluster:
        yield cluster


def submit(cluster: Cluster, token: str, count: int, ran_log: Path, start: int = 0) -> list[str]:
    client = Http(cluster.api_ports[0], token)
    server_id = services.ensure_local_server().id
    ids = []
    for i in range(start, start + count):
        status, body = client.request(
            "POST", "/api/v1/jobs", {"command": f"echo job-{i}; echo job-{i} >> {ran_log}", "server_id": server_id}
        )
        assert status == 201, body
        ids.append(body["id"])
    client.close()
    return ids


def queue_jobs(cluster: Cluster) -> int:
    status, body = cluster.queue_http("/stats")
    return body["jobs"] if status == 200 else -1


def assert_ran_once(cluster: Cluster, ids: list[str], ran_log: Path) -> None:
    try:
        wait_until(lambda: Job.select().where(Job.id.in_(ids), Job.status == "completed").count() == len(ids), 60, "every job to complete")
    except TimeoutError:
        pytest.fail(f"{Counter(j.status for j in Job.select().where(Job.id.in_(ids)))}\n{cluster.logs()}")
    assert {j.attempts for j in Job.select().where(Job.id.in_(ids))} == {1}
    runs = Counter(ran_log.read_text().splitlines())
    assert len(runs) == len(ids) and set(runs.values()) == {1}


@pytest.mark.slow
@pytest.mark.postgres
def test_queue_killed_and_restarted_recovers_its_jobs_from_its_log(cluster, tmp_path):
    queue = cluster.start_queue()
    api = cluster.start_api()
    token = auth.create_token("failover", "admin")[1]
    ran_log = tmp_path / "ran.log"
    ids = submit(cluster, token, 40, ran_log)
    assert queue_jobs(cluster) == 40
    api.stop()  # no reconciler: whatever the restarted queue holds comes from its own log
    queue.stop(signal.SIGKILL)

    cluster.start_queue(name="queue-restarted")
    assert queue_jobs(cluster) == 40
    cluster.start_worker("w1")
    assert_ran_once(cluster, ids, ran_log)


@pytest.mark.slow
@pytest.mark.postgres
def test_queue_that_lost_its_data_dir_is_refilled_by_the_reconciler(cluster, tmp_path):
    queue = cluster.start_queue()
    cluster.start_api()
    token = auth.create_token("failover", "admin")[1]
    ran_log = tmp_path / "ran.log"
    ids = submit(cluster, token, 30, ran_log)
    queue.stop(signal.SIGKILL)
    shutil.rmtree(cluster.queue_data)
    ids += submit(cluster, token, 10, ran_log, start=30)  # accepted and recorded while the queue is down

    cluster.start_queue(name="queue-empty")
    try:
        wait_until(lambda: queue_jobs(cluster) == 40, 40, "the reconciler to re-put every queued job")
    except TimeoutError:
        pytest.fail(f"queue holds {queue_jobs(cluster)} of 40 jobs\n{cluster.logs()}")
    cluster.start_worker("w1")
    assert_ran_once(cluster, ids, ran_log)


def test_standby_started_on_a_copied_data_dir_serves_the_same_jobs(tmp_path):
    cluster = Cluster(tmp_path, queue_token=QUEUE_TOKEN)
    try:
        cluster.start_queue()
        client = QueueClient(cluster.queue_addr, token=QUEUE_TOKEN, name="t")
        for i in range(200):
            client.put(f"job-{i}", priority=1 + i % 10, body=b'{"n": %d}' % i)
        client.register_worker("w", host="h", concurrency=2)
        for reservation in client.reserve(["job_queue"], timeout=1, count=5, worker_id="w"):
            client.ack(reservation.id)
        held = client.reserve(["job_queue"], timeout=1, count=2, worker_id="w")
        env = cluster.env
        snap = subprocess.run(
            [sys.executable, "-m", "remora", "queue", "snapshot", "--addr", cluster.queue_addr, "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert snap.returncode == 0, snap.stderr
        before = {j.id: (j.priority, j.state, j.body) for j in client.list_jobs(limit=1000)}
        standby_dir = tmp_path / "standby"
        shutil.copytree(cluster.queue_data, standby_dir)
        client.put("after-the-copy")
        client.close()

        standby = Cluster(tmp_path / "b", queue_token=QUEUE_TOKEN)
        standby.start_queue(standby_dir)
        copy = QueueClient(standby.queue_addr, token=QUEUE_TOKEN, name="t")
        after = {j.id: (j.priority, j.state, j.body) for j in copy.list_jobs(limit=1000)}
        assert len(before) == 195 and after == before  # the copy holds exactly what the primary held
        assert {held[0].id, held[1].id} <= {k for k, v in after.items() if v[1] == "reserved"}
        first = copy.reserve(["job_queue"], timeout=1, worker_id="w2")[0]
        assert first.priority == 1  # priorities and FIFO order survive the copy
        copy.close()
        standby.stop()
    finally:
        cluster.stop()
        cluster.close()
