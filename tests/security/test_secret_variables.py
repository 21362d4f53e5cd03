"""Secret variables (``secret_env``): encrypted at rest, injected at run time, never returned, masked in output.

Through a real API, NetQueue and worker, on ``local`` and on a real sshd: a job
with ``secret_env: {"API_TOKEN": ...}`` gets the value in its environment (it
prints a digest of it), while its stored stdout and stderr show ``***`` where
it printed the value -- also when the value reached the worker in two reads
(the job prints the first five bytes, sleeps past the worker's flush, prints
the rest) -- every role reads ``***`` in the job, and the queue message is the
job id only.  Through a real ``remora up``, fed by ``remora submit
--secret-env`` and a job file's ``secret_env:``, no file under the data
directory (database and its WAL, queue log and snapshots, logs) nor the logs
of ``remora up`` hold the value.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
from pathlib import Path

import pytest

from remora import jobmessage, models
from remora.worker import Worker
from tests.support.api import ROLES, assert_envelope, running_api
from tests.support.cluster import add_ssh_servers, make_remora, wait_status
from tests.support.waits import wait_for

pytestmark = [pytest.mark.ssh]

# the value: once whole on stdout, once on stderr, once split across two reads of stdout
COMMAND = (
    'echo "$API_TOKEN"; echo "x$API_TOKEN" >&2; printf %s "$API_TOKEN" | head -c 5; sleep 0.6; '
    'printf "%s\\n" "$API_TOKEN" | cut -c6-; printf %s "$API_TOKEN" | sha256sum; echo "db=$DB_PASSWORD"'
)


def _finished(api, job_id: str) -> dict:
    wait_for(
        lambda: api.get(f"/api/v1/jobs/{job_id}?output=false").json()["status"] in ("completed", "failed"), timeout=30, what=f"job {job_id}"
    )
    return api.get(f"/api/v1/jobs/{job_id}").json()


def _add_sshd(api, sshd) -> str:
    body = {
        "name": "sshd",
        "hostname": sshd.host,
        "port": sshd.port,
        "user": sshd.user,
        "auth_type": "key",
        "private_key": sshd.private_key,
    }
    reply = api.post("/api/v1/servers", body)
    assert reply.status == 201, reply
    return reply.json()["id"]


def test_secret_env_reaches_the_job_is_masked_in_its_output_and_never_returned(tmp_path, sshd):
    value = "s3cr3t-value-123"
    password = "pw-" + secrets.token_hex(6)
    digest = hashlib.sha256(value.encode()).hexdigest()
    overrides = {"output.flush_interval": 0.1, "worker.heartbeat_interval": 0.2}
    with running_api(tmp_path, **overrides) as api:
        worker = Worker(api.settings, concurrency=2)
        worker.start()
        try:
            jobs = {}
            for name, server in (("local", api.local_server_id()), ("ssh", _add_sshd(api, sshd))):
                body = {"command": COMMAND, "secret_env": {"API_TOKEN": value}, "env": {"DB_PASSWORD": password}, "server_id": server}
                reply = api.post("/api/v1/jobs", body)
                assert reply.status == 201, reply
                assert reply.json()["secret_env"] == {"API_TOKEN": "***", "DB_PASSWORD": "***"}, reply
                assert value.encode() not in reply.body
                jobs[name] = reply.json()["id"]
            script = api.post("/api/v1/jobs/script", {"script": COMMAND, "secret_env": {"API_TOKEN": value}, "server_id": "local"})
            assert script.status == 201 and script.json()["secret_env"] == {"API_TOKEN": "***"}, script
            jobs["script"] = script.json()["id"]

            for name, job_id in jobs.items():
                job = _finished(api, job_id)
                assert job["status"] == "completed", (name, job)
                db = "db=***" if name != "script" else "db="
                assert job["stdout"] == f"***\n***\n{digest}  -\n{db}\n", (name, job["stdout"])
                assert job["stderr"] == "x***\n", (name, job["stderr"])
                assert job["stdout_bytes"] == len(job["stdout"]) and job["stderr_bytes"] == len(job["stderr"]), job
                # the queue carries the job id, never a value
                row = models.Job.get_by_id(job_id)
                message = jobmessage.queue_message(row, models.Server.get_by_id(row.server_id), ttr=30, default_queue="job_queue")
                assert value not in json.dumps(dataclasses.asdict(message), default=str)

            for role in ROLES:
                for job_id in jobs.values():
                    shown = api.get(f"/api/v1/jobs/{job_id}", token=role)
                    assert shown.json()["secret_env"]["API_TOKEN"] == "***" and shown.json()["env"]["API_TOKEN"] == "***", role
                    assert value.encode() not in shown.body and password.encode() not in shown.body
                    for raw in ("stdout", "stderr", "output"):
                        body = api.get(f"/api/v1/jobs/{job_id}/{raw}", token=role).body
                        assert value.encode() not in body and value[5:].encode() not in body, (role, raw)
                listed = api.get("/api/v1/jobs?limit=100", token=role)
                assert value.encode() not in listed.body
                assert all(j["secret_env"].get("API_TOKEN") == "***" for j in listed.json()["jobs"]), role

            # rerun and duplicate copy the secret server-side: still injected, still masked, still hidden
            rerun = api.post(f"/api/v1/jobs/{jobs['ssh']}/rerun")
            assert rerun.status == 201, rerun
            again = _finished(api, rerun.json()["new_job"]["id"])
            assert again["stdout"] == f"***\n***\n{digest}  -\ndb=***\n" and again["secret_env"] == {
                "API_TOKEN": "***",
                "DB_PASSWORD": "***",
            }
            duplicate = api.post(f"/api/v1/jobs/{jobs['script']}/duplicate", {})
            assert duplicate.status == 201, duplicate
            copy = _finished(api, duplicate.json()["new_job"]["id"])
            assert copy["stdout"] == f"***\n***\n{digest}  -\ndb=\n" and copy["env"] == {"API_TOKEN": "***"}, copy
        finally:
            worker.stop(graceful=False, timeout=5)
        models.get_database().execute_sql("PRAGMA wal_checkpoint(FULL)")
        stored = b"".join(p.read_bytes() for p in sorted(tmp_path.glob("remora.db*")))
        assert len(stored) > 10000
        assert value.encode() not in stored and password.encode() not in stored


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"secret_env": {"API_TOKEN": "abc"}}, "secret_env", "too short"),
        ({"secret_env": {"BAD NAME": "long-enough"}}, "secret_env", "BAD NAME"),
        ({"secret_env": {"API_TOKEN": "long-enough"}, "env": {"API_TOKEN": "x"}}, "secret_env", "in env too"),
        ({"env": {"GREETING": "***"}}, "env", "hidden value"),
        ({"secret_env": {"API_TOKEN": 5}}, "secret_env", ""),
    ],
)
def test_bad_secret_env_is_400_naming_the_problem(tmp_path, body, field, words):
    with running_api(tmp_path) as api:
        api.local_server_id()
        for path, base in (("/api/v1/jobs", {"command": "true"}), ("/api/v1/jobs/script", {"script": "true"})):
            data = assert_envelope(api.post(path, {**base, "server_id": "local", **body}), 400, "VALIDATION_ERROR")
            assert words in data["error"], data
            assert field in data["error"] or field in json.dumps(data.get("details")), data
        assert models.Job.select().count() == 0


def _files(*roots: Path) -> list[Path]:
    return [p for root in roots for p in sorted(root.rglob("*")) if p.is_file()]


def test_the_data_directory_never_holds_a_secret_value(tmp_path, sshd):
    value = "dd-" + secrets.token_hex(10)
    remora = make_remora("checkout", tmp_path / "up", None)
    remora.start(workers=2)
    try:
        add_ssh_servers(remora, sshd, ["box"])
        command = 'echo "got $API_TOKEN"; printf %s "$API_TOKEN" | head -c 7; sleep 0.6; printf "%s\\n" "$API_TOKEN" | cut -c8-; echo "e $API_TOKEN" >&2'
        ids = []
        for server in ("local", "box"):
            res = remora.run(
                "submit", "--secret-env", "API_TOKEN", "--server", server, "--json", "--", "sh", "-c", command, env={"API_TOKEN": value}
            )
            assert res.returncode == 0, res.stderr.decode()
            ids.append(json.loads(res.stdout)["id"])
        missing = remora.run("submit", "--secret-env", "NOT_SET_HERE", "--", "true")  # no terminal to ask: a clear error
        assert missing.returncode != 0 and b"NOT_SET_HERE is not set" in missing.stderr, missing
        by_value = remora.run("submit", "--secret-env", f"API_TOKEN={value}", "--", "true")  # a value on argv is refused
        assert by_value.returncode != 0 and b"give the NAME only" in by_value.stderr and value.encode() not in by_value.stderr, by_value
        jobfile = tmp_path / "job.yaml"
        jobfile.write_text(f"command: sh -c 'echo \"file $API_TOKEN\"'\nservers: [box]\nsecret_env:\n  API_TOKEN: {value}\n")
        dry = remora.run("run", "-f", str(jobfile), "--dry-run", "--json")
        assert dry.returncode == 0 and value.encode() not in dry.stdout and b'"API_TOKEN": "***"' in dry.stdout, dry
        res = remora.run("run", "-f", str(jobfile), "--json")
        assert res.returncode == 0, res.stderr.decode()
        ids.append(json.loads(res.stdout)["id"])
        for job_id in ids:
            wait_status(remora, job_id, "completed", timeout=30)
        shows = [json.loads(remora.run("jobs", "show", job_id, "--json").stdout) for job_id in ids]
        for show in shows[:2]:
            assert (show["stdout"], show["stderr"]) == ("got ***\n***\n", "e ***\n"), show  # the split value: one ***
        assert shows[2]["stdout"] == "file ***\n", shows[2]
        running = _files(remora.data_dir)
        assert any(p.name.startswith("remora.db") for p in running), running
        leaked = [str(p) for p in running if value.encode() in p.read_bytes()]
        assert not leaked, leaked
    finally:
        assert remora.stop() == 0, remora.logs()[-3000:]
    every = _files(remora.data_dir, tmp_path / "up")
    assert any("queue" in str(p) for p in every), every  # the queue's log is in there too
    leaked = [str(p) for p in every if value.encode() in p.read_bytes()]
    assert not leaked, leaked
