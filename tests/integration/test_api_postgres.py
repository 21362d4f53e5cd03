"""The job, list and server paths again on a real PostgreSQL."""

from __future__ import annotations

import pytest

from remora import models
from remora.services.context import Context
from remora.upkeep.reconciler import Reconciler
from tests.support.api import assert_envelope, check_timeline, running_api

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def api(tmp_path_factory, postgres):
    url = postgres.new_database("remora_api_test")
    with running_api(tmp_path_factory.mktemp("pg"), url) as api:
        yield api


def test_submit_list_search_and_show_on_postgres(api):
    assert models.is_postgres()
    local = api.local_server_id()
    created = [api.post("/api/v1/jobs", {"command": "echo", "args": f"pg-{i}", "server_id": local, "name": f"Job{i}"}) for i in range(5)]
    assert all(r.status == 201 for r in created)
    page = api.get("/api/v1/jobs?limit=2&page=2&sort_by=created_at&sort_order=asc").json()
    assert page["pagination"]["total"] == 5 and page["pagination"]["total_pages"] == 3 and len(page["jobs"]) == 2
    assert api.get("/api/v1/jobs?search=JOB3").json()["jobs"][0]["name"] == "Job3"
    assert api.get("/api/v1/jobs?search=local").json()["pagination"]["total"] == 5
    job_id = created[0].json()["id"]
    assert api.get(f"/api/v1/jobs/{job_id}").json()["server"]["name"] == "local"
    assert api.queue.peek(job_id) is not None
    assert api.post(f"/api/v1/jobs/{job_id}/cancel").json()["job"]["status"] == "canceled"
    etag = api.get("/api/v1/jobs").headers["etag"]
    assert api.get("/api/v1/jobs", headers={"If-None-Match": etag}).status == 304
    assert "remora_job_duration_seconds_count" in api.get("/metrics").body.decode()


def test_servers_crud_on_postgres(api):
    body = {"name": "pg-box", "hostname": "10.0.0.1", "user": "ops", "auth_type": "password", "password": "pw", "tags": ["db"]}
    server = api.post("/api/v1/servers", body).json()
    assert server["has_password"] and "password" not in server
    assert_envelope(api.post("/api/v1/servers", body), 409)
    assert api.request("PUT", f"/api/v1/servers/{server['id']}", {"description": "primary"}).json()["description"] == "primary"
    assert [s["name"] for s in api.get("/api/v1/servers?tag=db").json()["servers"]] == ["pg-box"]
    assert api.request("DELETE", f"/api/v1/servers/{server['id']}").status == 200


def test_only_one_reconciler_holds_the_lease(api):
    first = Reconciler(Context(api.settings), holder="a")
    second = Reconciler(Context(api.settings), holder="b")
    api.server.reconciler.stop()  # the API's own reconciler would compete for the lease
    models.Lock.delete().execute()
    assert first.acquire() and not second.acquire() and first.acquire()
    first.release()
    assert second.acquire()
    second.release()


def test_timeline_on_postgres(api):
    check_timeline(api)


def test_templates_crud_and_run_on_postgres(api):
    body = {"name": "pg-tpl", "command": "echo {{ who }}", "servers": ["local"], "parameters": [{"name": "who", "required": True}]}
    assert api.post("/api/v1/templates", body).status == 201
    assert_envelope(api.post("/api/v1/templates", body), 409, "CONFLICT")
    job = api.post("/api/v1/templates/pg-tpl/run", {"params": {"who": "a b"}}).json()
    assert job["template"] == "pg-tpl" and job["params"] == {"who": "a b"} and job["command"] == "echo 'a b'"
    assert models.Job.get_by_id(job["id"]).params == {"who": "a b"}
    assert api.request("DELETE", "/api/v1/templates/pg-tpl").status == 200
