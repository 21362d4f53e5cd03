"""Job list filters, output search and the shell validation message against a real API (SQLite)."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest

from remora.executor.base import Stream
from remora.models import Job
from remora.output import JobOutput
from remora.services import queries
from tests.support.api import assert_envelope, running_api


def test_shell_validation_lists_only_real_shells(tmp_path):
    with running_api(tmp_path, **{"security.allowed_shells": ["/bin/sh", "/bin/bash"]}) as api:
        reply = api.post("/api/v1/jobs/script", {"script": "echo hi", "shell": "/bin/zsh", "server_id": api.local_server_id()})
        data = assert_envelope(reply, 400, "VALIDATION_ERROR")
        message = data["details"]["shell"]
        assert message == "must be one of /bin/sh, /bin/bash", message
        assert "None" not in data["error"]


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with running_api(tmp_path_factory.mktemp("seed-gaps")) as api:
        yield api


def _job(api, command="echo", **fields):
    reply = api.post("/api/v1/jobs", {"command": command, "server_id": api.local_server_id(), **fields})
    assert reply.status == 201, reply
    return reply.json()


def _ids(reply):
    assert reply.status == 200, reply
    return {j["id"] for j in reply.json()["jobs"]}


def test_job_list_filters_by_creation_time_and_exit_code(api):
    tag = uuid.uuid4().hex[:8]
    old, new, failed = (_job(api, name=f"{tag}-{n}") for n in ("old", "new", "failed"))
    Job.update(created_at=dt.datetime(2020, 1, 1, 12, 0)).where(Job.id == old["id"]).execute()
    Job.update(status="failed", exit_code=3).where(Job.id == failed["id"]).execute()
    Job.update(status="completed", exit_code=0).where(Job.id.in_([old["id"], new["id"]])).execute()
    base = f"/api/v1/jobs?search={tag}&limit=100"
    assert _ids(api.get(f"{base}&created_before=2021-01-01T00:00:00Z")) == {old["id"]}
    assert _ids(api.get(f"{base}&created_after=2021-01-01T00:00:00%2B02:00")) == {new["id"], failed["id"]}
    assert _ids(api.get(f"{base}&created_after=2019-12-31T00:00:00Z&created_before=2020-01-02")) == {old["id"]}
    assert _ids(api.get(f"{base}&exit_code=3")) == {failed["id"]}
    assert _ids(api.get(f"{base}&exit_code=0&created_after=2021-01-01T00:00:00Z")) == {new["id"]}
    listed = api.get(f"{base}&exit_code=3").json()
    assert listed["pagination"]["total"] == 1 and listed["filters"]["exit_code"] == 3
    data = assert_envelope(api.get("/api/v1/jobs?created_after=yesterday"), 400, "VALIDATION_ERROR")
    assert "created_after" in data["details"]
    assert_envelope(api.get("/api/v1/jobs?created_after=2021-01-02T00:00:00Z&created_before=2021-01-01T00:00:00Z"), 400)
    assert_envelope(api.get("/api/v1/jobs?exit_code=abc"), 400, "VALIDATION_ERROR")
    assert_envelope(api.get("/api/v1/jobs?exit_code=999"), 400, "VALIDATION_ERROR")


def test_search_output_matches_text_in_output_within_its_bound(api):
    needle = f"needle-{uuid.uuid4().hex[:8]}"
    early, late, stderr_only, none = (_job(api) for _ in range(4))
    for job, stream, data in (
        (early, Stream.STDOUT, f"first line\nsome {needle.upper()} here\n".encode()),
        (late, Stream.STDOUT, b"x" * (queries.SEARCH_OUTPUT_BYTES + 10) + needle.encode()),  # beyond the searched prefix
        (stderr_only, Stream.STDERR, f"warn: {needle}\n".encode()),
        (none, Stream.STDOUT, b"nothing to see\n"),
    ):
        out = JobOutput(job["id"], flush_interval=60, flush_lines=1000)
        out.write(stream, data)
        out.close()
    assert _ids(api.get(f"/api/v1/jobs?search={needle}")) == set()  # output is not searched by default
    found = api.get(f"/api/v1/jobs?search={needle}&search_output=true&limit=100")
    assert _ids(found) == {early["id"], stderr_only["id"]}
    assert found.json()["pagination"]["total"] == 2 and found.json()["filters"]["search_output"] is True
    assert_envelope(api.get(f"/api/v1/jobs?search={needle}&search_output=maybe"), 400, "VALIDATION_ERROR")


def test_openapi_documents_the_new_list_filters(api):
    doc = api.get("/api/v1/openapi.json").json()
    names = {p["name"] for p in doc["paths"]["/api/v1/jobs"]["get"]["parameters"]}
    assert {"search_output", "created_after", "created_before", "exit_code"} <= names


def test_debug_report_is_admin_only_and_masks_secrets(api):
    for role in ("viewer", "operator"):
        assert_envelope(api.get("/api/v1/debug", token=role), 403)
    assert_envelope(api.get("/api/v1/debug", token=None), 401)
    missing = api.get(f"/api/v1/jobs/{uuid.uuid4()}", headers={"X-Request-Id": "req-debug-404"})
    assert missing.status == 404
    assert api.get("/api/v1/system/info", token="viewer").status == 200
    reply = api.get("/api/v1/debug")
    assert reply.status == 200, reply
    data = reply.json()
    assert data["build"]["version"] and data["build"]["python"]
    keys = data["config"]["keys"]
    assert keys["security.secret_key"] == {"value": "********", "source": "flag"}
    assert "test-secret-key" not in reply.body.decode()
    assert keys["queue.addr"]["value"] == api.settings.queue.addr
    db = data["database"]
    assert db["kind"] == "sqlite" and db["size_bytes"] > 0 and db["schema_version"] == db["schema_version_expected"]
    assert db["rows"]["job"] == Job.select().count() and db["rows"]["server"] >= 1
    queue = data["queue"]
    assert queue["available"] is True and queue["connections"] >= 1 and queue["fsync"] == "never"
    assert set(queue["depth_per_priority"]) == {str(p) for p in range(1, 11)}
    assert isinstance(data["workers"], list)
    requests = data["requests"]
    assert len(requests) <= 200
    info = next(r for r in requests if r["path"] == "/api/v1/system/info")
    assert info["status"] == 200 and info["ms"] >= 0 and info["request_id"]
    error = next(e for e in data["errors"] if e["request_id"] == "req-debug-404")
    assert error["status"] == 404 and error["code"] == "NOT_FOUND" and error["error"]
    assert all(not r["path"].count("?") for r in requests)  # query strings are not kept


def test_request_log_keeps_the_last_200(api):
    for _ in range(210):
        api.get("/health", token=None)
    requests = api.get("/api/v1/debug").json()["requests"]
    assert len(requests) == 200 and requests[0]["path"] == "/health"


def test_debug_dump_json_from_the_cli(api):
    from typer.testing import CliRunner

    from remora.cli import app

    env = {"REMORA_API_URL": f"http://{api.host}:{api.port}", "REMORA_TOKEN": api.tokens["admin"], "NO_COLOR": "1"}
    result = CliRunner().invoke(app, ["debug", "dump", "--json"], env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {"build", "config", "database", "queue", "workers", "requests", "errors"} <= set(data)
    summary = CliRunner().invoke(app, ["debug", "dump"], env=env)
    assert summary.exit_code == 0 and "database: sqlite" in summary.stdout
    denied = CliRunner().invoke(app, ["debug", "dump", "--json"], env={**env, "REMORA_TOKEN": api.tokens["viewer"]})
    assert denied.exit_code != 0


def test_jobs_list_cli_sends_the_new_filters(api):
    from typer.testing import CliRunner

    from remora.cli import app

    tag = uuid.uuid4().hex[:8]
    old, failed = _job(api, name=f"{tag}-old"), _job(api, name=f"{tag}-failed")
    Job.update(created_at=dt.datetime(2020, 6, 1)).where(Job.id == old["id"]).execute()
    Job.update(status="failed", exit_code=7).where(Job.id == failed["id"]).execute()
    env = {"REMORA_API_URL": f"http://{api.host}:{api.port}", "REMORA_TOKEN": api.tokens["viewer"], "NO_COLOR": "1"}

    def listed(*flags: str) -> set[str]:
        result = CliRunner().invoke(app, ["jobs", "list", "--search", tag, "--json", *flags], env=env)
        assert result.exit_code == 0, result.output
        return {j["id"] for j in json.loads(result.stdout)["jobs"]}

    assert listed("--exit-code", "7") == {failed["id"]}
    assert listed("--created-before", "2021-01-01T00:00:00Z") == {old["id"]}
    assert listed("--created-after", "2021-01-01T00:00:00Z") == {failed["id"]}
    assert listed("--search-output") == {old["id"], failed["id"]}
