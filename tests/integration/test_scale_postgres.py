"""Scale-out on PostgreSQL: one queue, two `remora api` and three `remora worker` processes.

2,000 jobs are submitted alternately through both APIs; each job appends a
line to a shared file when it runs, so a job run twice (even one whose
second run was never recorded) shows up as a duplicate line.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from remora import auth, models, output, services
from remora.executor.base import Stream
from remora.models import Job, JobStatus
from remora.services.context import Context
from remora.upkeep.reconciler import Reconciler
from tests.support.cluster import Cluster, postgres_cluster
from tests.support.http import Http
from tests.support.waits import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

JOBS = 2000
SUBMITTERS = 8


@pytest.fixture
def cluster(tmp_path, postgres):
    with postgres_cluster(tmp_path, postgres, "remora_scale") as cluster:
        yield cluster


def submit_all(cluster: Cluster, token: str, server_id: str, ran_log: str) -> dict[str, int]:
    """Submit JOBS jobs, job i through API i % 2; returns {job_id: i}."""
    ids: dict[str, int] = {}
    lock = threading.Lock()
    local = threading.local()

    def one(i: int) -> None:
        port = cluster.api_ports[i % 2]
        clients = local.__dict__.setdefault("clients", {})
        client = clients.setdefault(port, Http(port, token))
        command = f"echo job-{i}; echo job-{i} >> {ran_log}"
        status, body = client.request("POST", "/api/v1/jobs", {"command": command, "server_id": server_id, "name": f"scale-{i}"})
        assert status == 201, body
        with lock:
            ids[body["id"]] = i

    with ThreadPoolExecutor(SUBMITTERS) as pool:
        list(pool.map(one, range(JOBS)))
    return ids


def test_two_apis_three_workers_run_every_job_exactly_once(cluster, tmp_path):
    started = time.monotonic()
    cluster.start_queue()
    cluster.start_api()
    cluster.start_api()
    for n in range(3):
        cluster.start_worker(f"w{n + 1}", concurrency=4)
    cluster.wait_workers(3)
    token = auth.create_token("scale-admin", "admin")[1]
    server_id = services.ensure_local_server().id
    ran_log = str(tmp_path / "ran.log")

    ids = submit_all(cluster, token, server_id, ran_log)
    submitted = time.monotonic()
    assert len(ids) == JOBS

    def all_finished() -> bool:
        return Job.select().where(Job.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value])).count() == 0

    try:
        wait_until(all_finished, 120, "every job to finish")
    except TimeoutError:
        pytest.fail(f"jobs still unfinished: {Counter(j.status for j in Job.select(Job.status))}\n{cluster.logs()}")
    finished = time.monotonic()

    jobs = list(Job.select().where(Job.id.in_(list(ids))))
    assert Counter(j.status for j in jobs) == {"completed": JOBS}, cluster.logs()
    assert all(j.attempts == 1 and j.exit_code == 0 and j.error == "" for j in jobs)
    assert {j.worker for j in jobs} == {"w1", "w2", "w3"}  # every worker took part, each job names its one worker
    assert all(j.started_at and j.finished_at for j in jobs)
    for job in jobs:
        assert output.read_stream(job.id, Stream.STDOUT) == f"job-{ids[job.id]}\n".encode(), job.id
        assert job.stdout_bytes == len(f"job-{ids[job.id]}\n") and job.stderr_bytes == 0

    runs = Counter(line for line in open(ran_log).read().splitlines())
    assert len(runs) == JOBS and set(runs.values()) == {1}, [k for k, v in runs.items() if v > 1][:10]

    # Output is served complete by either API; the queue holds nothing any more.
    sample = list(ids.items())[:: JOBS // 10]
    for n, (job_id, i) in enumerate(sample):
        status, text = Http(cluster.api_ports[n % 2], token).request("GET", f"/api/v1/jobs/{job_id}/stdout")
        assert (status, text) == (200, f"job-{i}\n")
    status, stats = cluster.queue_http("/stats")
    assert status == 200 and stats["jobs"] == 0 and stats["dead"] == 0
    print(
        f"\nscale: {JOBS} jobs submitted in {submitted - started:.1f}s since start, "
        f"all finished {finished - submitted:.1f}s later ({JOBS / (finished - started):.0f} jobs/s end to end)"
    )


def test_two_reconcilers_never_run_a_pass_at_the_same_time(postgres):
    """Several API instances each run a reconciler; the lease row lets one pass run at a time."""
    url = postgres.new_database("remora_reconcilers")
    models.init_db(url)
    active: list[str] = []
    overlaps: list[tuple[str, str]] = []
    guard = threading.Lock()

    class Probe(Reconciler):
        def _requeue(self) -> int:
            with guard:
                if active:
                    overlaps.append((active[0], self.holder))
                active.append(self.holder)
            time.sleep(0.02)
            with guard:
                active.remove(self.holder)
            return 0

        def _resend_cancels(self) -> int:
            return 0

        def _lost_workers(self) -> int:
            return 0

    ctx = Context(models_settings(), queue=object())
    probes = [Probe(ctx, interval=0.01, holder=f"api-{n}") for n in range(3)]
    try:
        for probe in probes:
            probe.start()
        wait_until(lambda: sum(p.passes for p in probes) >= 30, 20, "30 reconciler passes", interval=0.05)
        holders = {p.holder for p in probes if p.passes}
        assert len(holders) == 1  # the holder keeps its lease while it lives
        first = next(p for p in probes if p.passes)
        first.stop()  # releases the lease: another instance takes over
        wait_until(lambda: any(p.passes for p in probes if p is not first), 20, "another instance to take over")
    finally:
        for probe in probes:
            probe.stop()
        models.close_db()
    assert overlaps == []


def models_settings():
    from remora.config import Settings

    return Settings()
