"""Retention over real HTTP: POST /api/v1/jobs/prune (admin, audited), `remora jobs prune`, the maintenance loop."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from remora import models, output
from remora.executor.base import Stream
from remora.models import Job
from remora.upkeep.maintenance import Maintenance
from tests.support.api import assert_envelope, running_api
from tests.support.waits import wait_for

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def api(tmp_path):
    with running_api(tmp_path, **{"api.retention": 3600.0}) as api:
        api.server.maintenance.stop()  # the tests drive their own, faster loop
        yield api


def finished(api, status: str, age: float, out: bytes = b"done\n") -> str:
    local = api.local_server_id()
    job = Job.create(command="echo", server=local, status=status)
    writer = output.JobOutput(job.id, flush_lines=10**9, flush_interval=60)
    for i in range(0, len(out), 1000):
        writer.write(Stream.STDOUT, out[i : i + 1000])
    writer.close()
    when = models.utcnow() - dt.timedelta(seconds=age)
    Job.update(started_at=when, finished_at=when, updated_at=when).where(Job.id == job.id).execute()
    return job.id


def exists(job_id: str) -> bool:
    return Job.select().where(Job.id == job_id).exists()


def test_prune_route_is_admin_only_counts_deletes_and_audits(api):
    day = 86400
    old_ok, old_failed, young = finished(api, "completed", 40 * day), finished(api, "failed", 40 * day), finished(api, "completed", day)
    queued = Job.create(command="echo", server=api.local_server_id()).id
    Job.update(created_at=models.utcnow() - dt.timedelta(days=90)).where(Job.id == queued).execute()

    assert_envelope(api.post("/api/v1/jobs/prune", {"older_than": "30d"}, token="operator"), 403)
    assert_envelope(api.post("/api/v1/jobs/prune", {"older_than": "soon"}), 400, "VALIDATION_ERROR")
    assert_envelope(api.post("/api/v1/jobs/prune", {"older_than": "30d", "status": ["running"]}), 400)
    assert_envelope(api.post("/api/v1/jobs/prune", {}), 400)
    assert api.request("GET", "/api/v1/jobs/prune").status == 405

    dry = api.post("/api/v1/jobs/prune", {"older_than": "30d", "dry_run": True}).json()
    assert dry["deleted"] == 2 and dry["dry_run"] and exists(old_ok)
    only_failed = api.post("/api/v1/jobs/prune", {"older_than": 30 * day, "status": ["failed"]}).json()
    assert only_failed == {**only_failed, "deleted": 1, "status": ["failed"], "older_than": 30 * day}
    assert not exists(old_failed) and exists(old_ok)
    assert api.post("/api/v1/jobs/prune", {"older_than": "30d"}).json()["deleted"] == 1
    assert not exists(old_ok) and exists(young) and exists(queued)  # never a queued or running job
    assert not models.OutputChunk.select().where(models.OutputChunk.job == old_ok).exists()

    def audited() -> list:
        events = api.get("/api/v1/audit?action=prune_jobs").json()["events"]
        return events if len(events) == 3 else []

    events = wait_for(audited, 5, what="three prune audit events")
    assert {e["details"]["deleted"] for e in events} == {2, 1} and all(e["target_type"] == "jobs" for e in events)
    assert "/api/v1/jobs/prune" in api.get("/api/v1/openapi.json").json()["paths"]


def test_jobs_prune_command_over_http(api):
    old = finished(api, "canceled", 3 * 86400)
    env = {**os.environ, "PYTHONPATH": str(REPO), "REMORA_TOKEN": api.tokens["admin"], "REMORA_API_URL": f"http://{api.host}:{api.port}"}
    argv = [sys.executable, "-m", "remora", "jobs", "prune", "--older-than", "2d", "--status", "canceled"]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "deleted 1 canceled job(s)" in result.stderr and not exists(old)
    env["REMORA_TOKEN"] = api.tokens["viewer"]
    denied = subprocess.run([*argv, "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert denied.returncode != 0 and "admin" in denied.stderr


def test_maintenance_prunes_by_api_retention_and_compresses_output_transparently(api):
    old = finished(api, "completed", 2 * 3600)  # api.retention is 1h
    chatty = b"".join(b"step %05d: configuring the thing\r\n" % i for i in range(4000))
    fresh = finished(api, "completed", 10, chatty)
    before = api.get(f"/api/v1/jobs/{fresh}/stdout").body
    slice_before = api.get(f"/api/v1/jobs/{fresh}/logs?stdout_offset=70000&stderr_offset=0").json()
    assert before == chatty

    loop = Maintenance(api.settings, interval=0.05, compress_min_age=0.0)
    loop.start()
    try:
        wait_for(lambda: not exists(old) and Job.get_by_id(fresh).output_compressed, 10, what="prune and compression")
    finally:
        loop.stop()
    stored = sum(len(bytes(c.data)) for c in models.OutputChunk.select().where(models.OutputChunk.job == fresh))
    assert stored < len(chatty) / 5
    assert api.get(f"/api/v1/jobs/{fresh}/stdout").body == chatty
    assert api.get(f"/api/v1/jobs/{fresh}/logs?stdout_offset=70000&stderr_offset=0").json() == slice_before
    assert api.get(f"/api/v1/jobs/{fresh}").json()["stdout"] == chatty.decode()


def test_only_one_maintenance_loop_holds_the_lease(api):
    first = Maintenance(api.settings, holder="api-1")
    second = Maintenance(api.settings, holder="api-2")
    assert first.acquire() and not second.acquire()
    assert second.run_once() == {"compressed": 0, "pruned": 0}
    first.release()
    assert second.acquire()
    second.release()
