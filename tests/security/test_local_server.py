"""The built-in `local` server is code execution as Remora's own account, so by
default only admins may run on it, and its jobs cannot read Remora's data.

- An operator that submits ``cat <data-dir>/admin.token`` on `local` -- by id,
  by name, as a script, through a tag, by rerunning or duplicating a job --
  gets 403 naming ``security.local_server_role``, and no job is recorded.
- ``security.local_server_role = "operator"`` (a single-user install) lets
  the operator run there again.
- When the worker runs as root, a real `remora up` runs local jobs as
  ``worker.local_user`` (nobody): ``id -u`` prints nobody's uid, and even the
  admin's ``cat <data-dir>/admin.token`` fails without printing the token.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from pathlib import Path

import pytest

from remora import models
from remora.client import Client
from remora.models import Job, JobStatus
from tests.support.api import assert_envelope, running_api
from tests.support.cluster import make_remora
from tests.support.waits import wait_for

RULE = "security.local_server_role"


def _forbidden(reply, *names: str) -> dict:
    data = assert_envelope(reply, 403, "FORBIDDEN")
    assert RULE in data["error"] and "admin" in data["error"], data
    for name in names:
        assert name in data["error"], data
    return data


def test_operator_may_not_run_on_local_by_any_path(tmp_path):
    with running_api(tmp_path) as api:
        local = api.local_server_id()
        exploit = f"cat {api.settings.data_dir}/admin.token {api.settings.data_dir}/secret.key"
        for body in (
            {"command": exploit, "server_id": local},
            {"command": exploit, "server_id": "local"},
            {"command": exploit, "server_ids": [local]},
            {"command": exploit, "servers": ["local"]},
        ):
            _forbidden(api.post("/api/v1/jobs", body, token="operator"), "'local'")
        _forbidden(api.post("/api/v1/jobs/script", {"script": exploit, "server_id": local}, token="operator"))
        assert Job.select().count() == 0

        # a fan-out by a tag that `local` carries is refused as a whole, never silently narrowed
        other = api.post(
            "/api/v1/servers",
            {"name": "web-1", "hostname": "127.0.0.1", "port": 1, "user": "u", "auth_type": "password", "password": "pw", "tags": ["all"]},
        )
        assert other.status == 201, other
        assert api.request("PUT", f"/api/v1/servers/{local}", {"tags": ["all"]}).status == 200
        _forbidden(api.post("/api/v1/jobs", {"command": exploit, "servers": ["tag:all"]}, token="operator"), "tag:all")
        assert Job.select().count() == 0
        ok = api.post("/api/v1/jobs", {"command": "true", "servers": ["web-1"]}, token="operator")
        assert ok.status == 201, ok  # the operator still runs on ordinary servers

        # rerun and duplicate of an admin's local job, and a duplicate moved onto `local`
        admin_job = api.post("/api/v1/jobs", {"command": exploit, "server_id": local})
        assert admin_job.status == 201, admin_job
        job_id = admin_job.json()["id"]
        Job.update(status=JobStatus.COMPLETED.value, exit_code=0).where(Job.id == job_id).execute()
        before = Job.select().count()
        _forbidden(api.post(f"/api/v1/jobs/{job_id}/rerun", token="operator"))
        _forbidden(api.post(f"/api/v1/jobs/{job_id}/duplicate", token="operator"))
        remote_job = ok.json()["jobs"][0]["id"]
        _forbidden(api.post(f"/api/v1/jobs/{remote_job}/duplicate", {"server_id": local}, token="operator"))
        assert Job.select().count() == before
        assert api.post(f"/api/v1/jobs/{job_id}/rerun").status == 201  # the admin may


def test_local_server_role_operator_lets_an_operator_use_local(tmp_path):
    with running_api(tmp_path, **{"security.local_server_role": "operator"}) as api:
        reply = api.post("/api/v1/jobs", {"command": "true", "server_id": api.local_server_id()}, token="operator")
        assert reply.status == 201, reply


@pytest.fixture
def open_base():
    """A base directory every user may traverse, so only Remora's own modes protect its data directory."""
    base = Path(tempfile.mkdtemp(prefix="remora-local-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="running local jobs as another user needs root")
def test_local_jobs_of_a_root_worker_run_as_nobody_and_cannot_read_the_data_dir(open_base):
    nobody = pwd.getpwnam("nobody")
    remora = make_remora("checkout", open_base, None)
    remora.start(workers=2)
    try:
        data_dir = remora.data_dir
        assert data_dir.stat().st_mode & 0o777 == 0o700
        token = (data_dir / "admin.token").read_text().strip()
        client = Client(remora.url, token)
        jobs = {
            "token": client.submit({"command": f"cat {data_dir}/admin.token", "server_id": "local"})[0]["id"],
            "key": client.submit({"command": f"cat {data_dir}/secret.key", "server_id": "local"})[0]["id"],
            "id": client.submit({"command": "id -u; echo $HOME $USER", "server_id": "local"})[0]["id"],
        }
        wait_for(lambda: all(client.job(j)["status"] in ("completed", "failed") for j in jobs.values()), 30, what="local jobs")
        secret_key = (data_dir / "secret.key").read_text().strip()
        for name in ("token", "key"):
            job = client.job(jobs[name])
            assert job["status"] == "failed", job
            assert "Permission denied" in job["stderr"], job
            assert token not in job["output"] and secret_key not in job["output"], job
        who = client.job(jobs["id"])
        assert who["status"] == "completed", who
        assert who["stdout"].split() == [str(nobody.pw_uid), nobody.pw_dir, "nobody"], who
    finally:
        assert remora.stop() == 0
    models.close_db()
