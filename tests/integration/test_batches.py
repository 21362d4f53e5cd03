"""Batches and rolling fan-outs over real sshd: separate queue, API and worker processes (tests/support/cluster.py).

Each host's job appends ``start``/``end`` lines with timestamps to a ledger file the test reads: the
ledger shows how many of the batch's hosts ran at once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from remora import jobstate
from remora.errors import ValidationError
from remora.models import JobStatus
from remora.services.batches import resolve
from remora.upkeep.reconciler import Reconciler
from tests.support.api import running_api
from tests.support.cluster import Cluster
from tests.support.waits import wait_for


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, sshd) -> Iterator[Cluster]:
    if shutil.which("ssh") is None:
        pytest.skip("OpenSSH client missing")
    stack = Cluster(tmp_path_factory.mktemp("batches"), settings={"queue.worker_timeout": "3s"})
    stack.start_queue()
    stack.start_api()
    stack.start_worker("w1", concurrency=8)
    stack.wait_workers(1)
    yield stack
    stack.stop()
    stack.close()


@pytest.fixture
def ledger() -> Iterator[Path]:
    where = Path(tempfile.mkdtemp(prefix="remora-ledger-"))
    os.chmod(where, 0o777)  # the sshd account writes here (pytest's tmp_path is root's own)
    yield where / "log"
    shutil.rmtree(where)


def fleet(cluster: Cluster, sshd, count: int) -> str:
    """``count`` servers on the fixture sshd carrying a fresh tag; the tag."""
    tag = "t" + uuid.uuid4().hex[:8]
    client = cluster.client()
    for n in range(count):
        client.create_server(
            {"name": f"{tag}-{n}", "hostname": sshd.host, "port": sshd.port, "user": sshd.user, "auth_type": "key",
             "private_key": sshd.private_key, "tags": [tag]}
        )  # fmt: skip
    return tag


def ledger_command(path: Path, seconds: float, code: int = 0) -> str:
    return f'set -e; echo "start $(date +%s.%N)" >> {path}; sleep {seconds}; echo "end $(date +%s.%N)" >> {path}; exit {code}'


def most_at_once(path: Path) -> int:
    events = []
    for line in path.read_text().splitlines():
        kind, at = line.split()
        events.append((float(at), 0 if kind == "end" else 1))
    running = peak = 0
    for _, delta in sorted(events):
        running += 1 if delta else -1
        peak = max(peak, running)
    return peak


def finished(cluster: Cluster, batch_id: str, timeout: float = 60) -> dict:
    client = cluster.client()
    wait_for(lambda: client.get(f"/api/v1/batches/{batch_id}")["status"] != "running", timeout, 0.1, f"batch {batch_id} to finish")
    return client.get(f"/api/v1/batches/{batch_id}")


def submit(cluster: Cluster, tag: str, command: str, rollout: dict | None = None) -> str:
    body = {"command": command, "servers": [f"tag:{tag}"]}
    if rollout is not None:
        body["rollout"] = rollout
    return cluster.client().post("/api/v1/jobs", body)["batch_id"]


def test_rollout_runs_at_most_and_exactly_concurrency_hosts_at_once(cluster, sshd, ledger):
    tag = fleet(cluster, sshd, 6)
    batch_id = submit(cluster, tag, ledger_command(ledger, 0.8), {"concurrency": 2})
    batch = finished(cluster, batch_id)
    assert batch["status"] == "completed" and batch["counts"]["completed"] == 6, cluster.client().get(
        f"/api/v1/batches/{batch_id}", output="true"
    )
    assert batch["concurrency"] == 2
    assert ledger.exists(), cluster.client().get(f"/api/v1/batches/{batch_id}", output="true")
    assert most_at_once(ledger) == 2, ledger.read_text()


def test_percentages_are_of_the_batch_hosts_rounded_up(cluster, sshd, ledger):
    assert resolve({"concurrency": "25%", "max_failures": "10%"}, 6) == (2, 1)
    assert resolve({"concurrency": "1%"}, 6) == (1, None)
    assert resolve({"max_failures": "0%"}, 6) == (None, 0)
    tag = fleet(cluster, sshd, 5)
    batch_id = submit(cluster, tag, ledger_command(ledger, 0.8), {"concurrency": "50%"})  # 2.5 -> 3
    batch = finished(cluster, batch_id)
    assert batch["concurrency"] == 3 and batch["status"] == "completed", batch
    assert most_at_once(ledger) == 3, ledger.read_text()


def test_invalid_rollouts_are_refused(cluster, sshd):
    tag = fleet(cluster, sshd, 2)
    client = cluster.client()
    for rollout in ({"concurrency": 0}, {"concurrency": "150%"}, {"concurrency": "abc"}, {"max_failures": -1}, {"speed": 2}):
        with pytest.raises(ValidationError) as err:
            client.post("/api/v1/jobs", {"command": "true", "servers": [f"tag:{tag}"], "rollout": rollout})
        assert "rollout" in str(err.value)


def test_past_max_failures_the_rest_are_canceled_unstarted_and_the_batch_aborted(cluster, sshd):
    tag = fleet(cluster, sshd, 6)
    batch_id = submit(cluster, tag, "exit 3", {"concurrency": 1, "max_failures": 1})
    batch = finished(cluster, batch_id)
    assert batch["status"] == "aborted", batch
    assert batch["counts"]["failed"] == 2 and batch["counts"]["canceled"] == 4, batch
    canceled = [h for h in batch["hosts"] if h["status"] == "canceled"]
    for host in canceled:
        job = cluster.client().job(host["job_id"])
        assert job["started_at"] is None and job["attempts"] == 0, job
        assert job["error"] == "not started: batch stopped after 2 failed hosts (max_failures 1)", job
    assert all(h["exit_code"] == 3 for h in batch["hosts"] if h["status"] == "failed")


def test_rerun_failed_takes_failed_and_canceled_hosts_and_all_takes_every_host(cluster, sshd):
    tag = fleet(cluster, sshd, 4)
    client = cluster.client()
    names = [s["name"] for s in client.servers() if tag in (s.get("tags") or [])]
    bad = sorted(names)[:2]
    batch_id = client.post("/api/v1/jobs", {"command": "exit 1", "server_ids": bad})["batch_id"]
    first = finished(cluster, batch_id)
    assert first["status"] == "failed" and first["counts"]["failed"] == 2
    good = client.post("/api/v1/jobs", {"command": "echo ok; echo err >&2", "servers": [f"tag:{tag}"]})["batch_id"]
    assert finished(cluster, good)["status"] == "completed"
    hosts = client.get(f"/api/v1/batches/{good}", output="true")["hosts"]
    assert [(h["stdout"], h["stderr"], h["output_truncated"]) for h in hosts] == [("ok\n", "err\n", False)] * 4
    assert "stdout" not in client.get(f"/api/v1/batches/{good}")["hosts"][0]
    rerun = client.post(f"/api/v1/batches/{batch_id}/rerun", {"only": "failed"})
    assert rerun["parent_id"] == batch_id and rerun["total"] == 2
    assert sorted(h["server_name"] for h in rerun["hosts"]) == bad
    again = client.post(f"/api/v1/batches/{good}/rerun", {"only": "all"})
    assert again["parent_id"] == good and again["total"] == 4
    assert finished(cluster, again["id"])["status"] == "completed"
    with pytest.raises(Exception, match="no failed"):
        client.post(f"/api/v1/batches/{good}/rerun", {})


def test_batch_cancel_cancels_running_and_held_hosts(cluster, sshd):
    tag = fleet(cluster, sshd, 4)
    client = cluster.client()
    batch_id = submit(cluster, tag, "sleep 30", {"concurrency": 2})
    wait_for(lambda: client.get(f"/api/v1/batches/{batch_id}")["counts"]["running"] == 2, 30, 0.1, "two hosts running")
    canceled = client.post(f"/api/v1/batches/{batch_id}/cancel")
    assert canceled["id"] == batch_id
    batch = finished(cluster, batch_id, timeout=30)
    assert batch["status"] == "canceled" and batch["counts"]["canceled"] == 4, batch
    assert sum(1 for h in batch["hosts"] if h["duration"] is None) >= 2  # the held ones never started
    listed = client.get("/api/v1/batches", status="canceled")["batches"]
    assert batch_id in [b["id"] for b in listed]


def test_rollout_survives_a_kill_9_of_the_worker_and_the_api_mid_batch(cluster, sshd, ledger):
    tag = fleet(cluster, sshd, 5)
    client = cluster.client()
    batch_id = submit(cluster, tag, ledger_command(ledger, 1.5), {"concurrency": 2})
    wait_for(lambda: client.get(f"/api/v1/batches/{batch_id}")["counts"]["running"] == 2, 30, 0.1, "two hosts running")
    worker = next(s for s in cluster.services if s.name == "w1")
    api = next(s for s in cluster.services if s.name.startswith("api"))
    worker.kill9()
    api.kill9()
    worker.start()
    api.start()
    batch = finished(cluster, batch_id, timeout=90)
    assert batch["total"] == 5 and batch["counts"]["queued"] == batch["counts"]["running"] == 0, batch
    assert batch["counts"]["completed"] + batch["counts"]["failed"] == 5, batch
    assert most_at_once(ledger) <= 2 + 2, ledger.read_text()  # the killed worker's remote commands may outlive it


def test_reconciler_never_puts_held_jobs_and_releases_what_a_crash_left_held(tmp_path):
    """A job ended by someone who died before stepping its batch: the reconciler releases and puts the next host."""
    with running_api(tmp_path) as api:
        api.server.reconciler.stop()
        ids = [
            api.post("/api/v1/servers", {"name": f"h{n}", "hostname": "10.0.0.1", "user": "u", "auth_type": "password", "password": "p", "tags": ["r"]}).json()["id"]
            for n in range(3)
        ]  # fmt: skip
        assert len(ids) == 3
        reply = api.post("/api/v1/jobs", {"command": "true", "servers": ["tag:r"], "rollout": {"concurrency": 1}})
        assert reply.status == 201, reply.body
        jobs = [j["id"] for j in reply.json()["jobs"]]
        batch_id = reply.json()["batch_id"]
        reconciler = Reconciler(api.server.app.ctx, settle=0.0)
        reconciler._start_sweep()
        reconciler.run_once()
        assert [api.queue.peek(j) is not None for j in jobs] == [True, False, False]
        assert jobstate.claim(jobs[0], "gone").action is jobstate.Action.RUN
        assert jobstate.finish(jobs[0], "gone", 1, JobStatus.COMPLETED)  # ... and the worker dies before batch_step
        api.queue.cancel(jobs[0])
        reconciler.run_once()
        assert api.queue.peek(jobs[1]) is not None and api.queue.peek(jobs[2]) is None
        detail = api.get(f"/api/v1/batches/{batch_id}").json()
        assert detail["counts"] == {"queued": 2, "running": 0, "completed": 1, "failed": 0, "canceled": 0}
        assert detail["hosts"][0]["job_id"] == jobs[0] and detail["rollout"] == {"concurrency": 1}
        assert api.get("/api/v1/batches/" + batch_id, token="viewer").status == 200
        assert api.post(f"/api/v1/batches/{batch_id}/cancel", token="viewer").status == 403
        assert api.post(f"/api/v1/batches/{batch_id}/rerun", token="operator").status == 409  # still running
