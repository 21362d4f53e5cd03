"""SIGKILL and restart of the API while clients submit and read: no acknowledged job is lost or run twice.

Queue, API and worker are separate processes.  Submitters post fan-outs of 20
jobs; readers list jobs and fetch single jobs by id.  The API is SIGKILLed in
the middle and started again on the same port.  Afterwards: every job the API
acknowledged exists and ran exactly once, a fan-out exists whole or not at all
(one transaction), jobs recorded by a request whose answer was lost are
queued by the new API's reconciler, and clients only ever saw connection
errors -- never an error status or a wrong answer.
"""

from __future__ import annotations

import collections
import random
import threading
import time

import pytest

from remora import models
from remora.errors import RemoraError, Unavailable
from tests.support.cluster import Cluster, local_fleet, status_counts
from tests.support.waits import wait_for

pytestmark = pytest.mark.slow

TOTAL = 1000
FANOUT = 20
STATUSES = {"queued", "running", "completed", "failed", "canceled"}


def test_sigkill_of_the_api_under_load_loses_and_duplicates_nothing(tmp_path):
    cluster = Cluster(tmp_path / "stack")
    runs = tmp_path / "runs.log"
    try:
        cluster.queue().start()
        api = cluster.api()
        api.start()
        cluster.worker("w1", concurrency=8).start()
        local_fleet(cluster.client(), FANOUT, "fleet")
        spec = {"command": f"echo $REMORA_JOB_ID >> {runs}", "servers": ["tag:fleet"], "timeout": 60}
        accepted: list[str] = []
        conn_errors = collections.Counter()
        wrong: list[str] = []
        done = threading.Event()

        def submit() -> None:
            with cluster.client(timeout=10) as c:
                while not done.is_set():
                    try:
                        accepted.extend(job["id"] for job in c.submit(spec))
                    except Unavailable:
                        conn_errors["submit"] += 1
                        time.sleep(0.02)
                    except RemoraError as exc:
                        wrong.append(f"submit: {type(exc).__name__}: {exc}")

        def read() -> None:
            with cluster.client(timeout=10) as c:
                while not done.is_set():
                    try:
                        if accepted and random.random() < 0.7:
                            job_id = random.choice(accepted)
                            job = c.job(job_id)
                            if job["id"] != job_id or job["status"] not in STATUSES:
                                wrong.append(f"job {job_id}: {job}")
                        else:
                            page = c.list_jobs(limit=20)
                            if not all(j["status"] in STATUSES for j in page["jobs"]) or page["pagination"]["total"] < len(page["jobs"]):
                                wrong.append(f"list: {page}")
                    except Unavailable:
                        conn_errors["read"] += 1
                        time.sleep(0.02)
                    except RemoraError as exc:
                        wrong.append(f"read: {type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=submit) for _ in range(2)] + [threading.Thread(target=read) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            wait_for(lambda: len(accepted) >= TOTAL // 2, 60, interval=0.01, what="half of the jobs submitted")
            api.kill9()
            wait_for(lambda: conn_errors["read"] >= 4 and conn_errors["submit"] >= 2, 10, what="clients to notice the dead API")
            api.start()
            wait_for(lambda: len(accepted) >= TOTAL, 60, interval=0.01, what="the rest submitted to the new API")
        finally:
            done.set()
            for thread in threads:
                thread.join(30)
        assert not wrong, wrong[:5]
        assert len(accepted) == len(set(accepted))

        recorded = [row.id for row in models.Job.select(models.Job.id).where(models.Job.command == spec["command"])]
        assert set(accepted) <= set(recorded), "an acknowledged job is missing"
        batches = collections.Counter(row.batch_id for row in models.Job.select(models.Job.batch_id))
        assert set(batches.values()) == {FANOUT}, "a fan-out was recorded in part"
        wait_for(lambda: status_counts(recorded).get("completed") == len(recorded), 120, interval=0.5, what="every recorded job completed")
        counts = collections.Counter(runs.read_text().split())
        assert set(counts) == set(recorded) and max(counts.values()) == 1
        print(
            f"\nAPI SIGKILL: {len(accepted)} acknowledged, {len(recorded) - len(accepted)} recorded by answers lost in the kill, "
            f"all ran once; client connection errors {dict(conn_errors)}, no wrong answers"
        )
    finally:
        cluster.close()
