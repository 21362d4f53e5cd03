"""Job ``env`` values whose names look secret are stored encrypted and shown as ``***``;
viewers do not see script bodies; env names are checked at submit.

Through a real API, NetQueue and worker: a job with ``env: {"DB_PASSWORD": ...}``
on `local` and on a real sshd still gets the real value in its environment
(it prints a digest of it, so that the database grep below is not fooled by
the output: masking output is not promised here), while every role reads
``***`` in the job, the plaintext is nowhere in the SQLite files, and a rerun
still gets the value (copied encrypted, server-side).
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

import pytest

from remora import models
from remora.worker import Worker
from tests.support.api import ROLES, assert_envelope, running_api
from tests.support.waits import wait_for

pytestmark = [pytest.mark.ssh]


def _database_bytes(data_dir: Path) -> bytes:
    models.get_database().execute_sql("PRAGMA wal_checkpoint(FULL)")
    return b"".join(p.read_bytes() for p in sorted(data_dir.glob("remora.db*")))


def _finished(api, job_id: str) -> dict:
    wait_for(
        lambda: api.get(f"/api/v1/jobs/{job_id}?output=false").json()["status"] in ("completed", "failed"), timeout=30, what=f"job {job_id}"
    )
    return api.get(f"/api/v1/jobs/{job_id}").json()


def test_secret_looking_env_is_encrypted_masked_and_still_reaches_the_job(tmp_path, sshd):
    password = "hunter2-" + secrets.token_hex(8)
    api_key = "ak-" + secrets.token_hex(8)
    overrides = {"output.flush_interval": 0.1, "worker.heartbeat_interval": 0.2}
    with running_api(tmp_path, **overrides) as api:
        worker = Worker(api.settings, concurrency=2)
        worker.start()
        try:
            remote = api.post(
                "/api/v1/servers",
                {
                    "name": "sshd",
                    "hostname": sshd.host,
                    "port": sshd.port,
                    "user": sshd.user,
                    "auth_type": "key",
                    "private_key": sshd.private_key,
                },
            )
            assert remote.status == 201, remote
            env = {"DB_PASSWORD": password, "Api_Key": api_key, "GREETING": "hello"}
            command = 'printf %s "$DB_PASSWORD:$Api_Key" | sha256sum; echo "greeting=$GREETING"'
            jobs = {}
            for name, server in (("local", api.local_server_id()), ("ssh", remote.json()["id"])):
                reply = api.post("/api/v1/jobs", {"command": command, "env": env, "server_id": server})
                assert reply.status == 201, reply
                assert reply.json()["env"] == {"DB_PASSWORD": "***", "Api_Key": "***", "GREETING": "hello"}, reply
                jobs[name] = reply.json()["id"]
            digest = hashlib.sha256(f"{password}:{api_key}".encode()).hexdigest()
            expected = f"{digest}  -\ngreeting=hello"
            for name, job_id in jobs.items():
                job = _finished(api, job_id)
                assert job["status"] == "completed" and job["stdout"].strip() == expected, (name, job)

            for role in ROLES:
                shown = api.get(f"/api/v1/jobs/{jobs['local']}", token=role).json()
                assert shown["env"] == {"DB_PASSWORD": "***", "Api_Key": "***", "GREETING": "hello"}, (role, shown["env"])
                listed = api.get("/api/v1/jobs", token=role).json()["jobs"]
                assert all(j["env"].get("DB_PASSWORD") == "***" for j in listed), role
                assert password.encode() not in api.get("/api/v1/jobs?limit=100", token=role).body

            rerun = api.post(f"/api/v1/jobs/{jobs['ssh']}/rerun")
            assert rerun.status == 201, rerun
            again = _finished(api, rerun.json()["new_job"]["id"])
            assert again["status"] == "completed" and again["stdout"].strip() == expected, again
            assert again["env"]["DB_PASSWORD"] == "***"

            data = _database_bytes(tmp_path)
            assert len(data) > 10000
            assert password.encode() not in data and api_key.encode() not in data
            assert b'"DB_PASSWORD":"***"' in data  # the env column keeps the names, with *** for the values
            assert digest.encode() in data or models.Job.select().where(models.Job.output_compressed == True).exists()  # noqa: E712
        finally:
            worker.stop(graceful=False, timeout=5)


def test_secret_env_patterns_are_configurable(tmp_path):
    with running_api(tmp_path, **{"security.secret_env_patterns": ["*_CRED"]}) as api:
        api.local_server_id()
        reply = api.post("/api/v1/jobs", {"command": "true", "env": {"DB_CRED": "c1", "DB_PASSWORD": "p1"}, "server_id": "local"})
        assert reply.status == 201, reply
        assert reply.json()["env"] == {"DB_CRED": "***", "DB_PASSWORD": "p1"}


def test_viewers_do_not_see_script_bodies_operators_and_admins_do(tmp_path):
    script = "#!/bin/sh\necho deploy-" + secrets.token_hex(4) + "\n"
    with running_api(tmp_path, **{"security.local_server_role": "operator"}) as api:
        api.local_server_id()
        reply = api.post("/api/v1/jobs/script", {"script": script, "server_id": "local"}, token="operator")
        assert reply.status == 201, reply
        job_id = reply.json()["id"]
        for role in ("operator", "admin"):
            assert api.get(f"/api/v1/jobs/{job_id}", token=role).json()["script"] == script
            assert api.get("/api/v1/jobs", token=role).json()["jobs"][0]["script"] == script
        shown = api.get(f"/api/v1/jobs/{job_id}", token="viewer")
        assert shown.status == 200 and shown.json()["script"] is None and shown.json()["script_hidden"] is True, shown
        listed = api.get("/api/v1/jobs", token="viewer")
        assert listed.json()["jobs"][0]["script"] is None
        assert script.encode() not in shown.body and script.encode() not in listed.body
        meta = api.get(f"/api/v1/jobs/{job_id}?output=false", token="viewer")
        assert meta.json()["script"] is None and script.encode() not in meta.body


@pytest.mark.parametrize("name", ["BAD NAME", "1X", "A-B", "X" * 300, ""])
def test_invalid_env_names_are_400_naming_the_variable(tmp_path, name):
    with running_api(tmp_path) as api:
        api.local_server_id()
        for path, body in (
            ("/api/v1/jobs", {"command": "true", "server_id": "local", "env": {name: "v"}}),
            ("/api/v1/jobs/script", {"script": "true", "server_id": "local", "env": {name: "v"}}),
        ):
            data = assert_envelope(api.post(path, body), 400, "VALIDATION_ERROR")
            assert name[:30] in data["error"] and "env" in data["details"], data
        assert models.Job.select().count() == 0
