"""Jobs over real HTTP: submit -> DB + NetQueue, lists, logs, cancel, rerun, duplicate, priority, queue outages."""

from __future__ import annotations

import json
import threading
import uuid

import pytest

from remora import models
from remora.executor.base import Stream
from remora.models import Job
from remora.output import JobOutput
from tests.support.api import assert_envelope, check_timeline, running_api


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with running_api(tmp_path_factory.mktemp("api")) as api:
        yield api


def submit(api, **fields):
    body = {"command": "echo", "args": "hello", "server_id": api.local_server_id(), **fields}
    reply = api.post("/api/v1/jobs", body)
    assert reply.status == 201, reply
    return reply.json()


def finish(job_id, status="completed", exit_code=0):
    now = models.utcnow()
    Job.update(status=status, exit_code=exit_code, started_at=now, finished_at=now, updated_at=now).where(Job.id == job_id).execute()


def test_submit_records_job_then_puts_it_on_the_queue(api):
    job = submit(api, priority=2, retries=1, name="greet")
    assert job["status"] == "queued" and job["priority"] == 2 and job["name"] == "greet"
    assert job["server"]["name"] == "local" and job["created_at"].endswith("Z")
    assert Job.get_by_id(job["id"]).status == "queued"
    queued = api.queue.peek(job["id"])
    assert queued is not None and queued.priority == 2 and queued.state == "ready"
    assert json.loads(queued.body) == {"server_id": job["server_id"], "max_concurrent": 0}


def test_job_detail_and_unknown_ids(api):
    job = submit(api)
    reply = api.get(f"/api/v1/jobs/{job['id']}")
    assert reply.status == 200
    detail = reply.json()
    assert detail["id"] == job["id"] and detail["stdout"] == "" and detail["output"] == "" and detail["server"]["name"] == "local"
    assert_envelope(api.get(f"/api/v1/jobs/{uuid.uuid4()}"), 404, "NOT_FOUND")
    assert_envelope(api.get("/api/v1/jobs/not-a-uuid"), 404, "NOT_FOUND")
    assert_envelope(api.get("/api/v1/jobs/not-a-uuid/logs"), 404, "NOT_FOUND")


def test_list_pages_filters_search_and_sort(api):
    batch = api.post("/api/v1/jobs", {"command": "uptime", "servers": ["local"], "name": "findme-list"}).json()
    assert batch["batch_id"] and len(batch["jobs"]) == 1
    for i in range(3):
        submit(api, command="ls", args=f"-la /tmp/{i}", priority=9)
    reply = api.get("/api/v1/jobs?limit=2&page=1&sort_by=created_at&sort_order=desc")
    data = reply.json()
    assert reply.status == 200 and len(data["jobs"]) == 2
    assert data["pagination"]["has_next"] and not data["pagination"]["has_prev"]
    assert "stdout" not in data["jobs"][0] and "stdout_bytes" in data["jobs"][0]
    found = api.get("/api/v1/jobs?search=FINDME").json()
    assert [j["name"] for j in found["jobs"]] == ["findme-list"]
    assert api.get("/api/v1/jobs?search=%25").json()["pagination"]["total"] == 0  # wildcards are literal
    by_batch = api.get(f"/api/v1/jobs?batch_id={batch['batch_id']}").json()
    assert by_batch["pagination"]["total"] == 1
    asc = api.get("/api/v1/jobs?sort_by=priority&sort_order=asc&limit=100").json()["jobs"]
    assert [j["priority"] for j in asc] == sorted(j["priority"] for j in asc)
    assert api.get("/api/v1/jobs?status=completed,canceled").status == 200
    assert_envelope(api.get("/api/v1/jobs?limit=101"), 400, "VALIDATION_ERROR")
    assert_envelope(api.get("/api/v1/jobs?page=0"), 400)
    assert_envelope(api.get("/api/v1/jobs?status=bogus"), 400)
    assert_envelope(api.get("/api/v1/jobs?sort_by=password"), 400)
    empty = api.get(f"/api/v1/jobs?server_id={uuid.uuid4()}").json()
    assert empty["jobs"] == [] and empty["pagination"]["total"] == 0


def test_list_supports_conditional_requests(api):
    first = api.get("/api/v1/jobs?limit=5")
    etag = first.headers["etag"]
    again = api.get("/api/v1/jobs?limit=5", headers={"If-None-Match": etag})
    assert again.status == 304 and again.body == b""
    submit(api)
    changed = api.get("/api/v1/jobs?limit=5", headers={"If-None-Match": etag})
    assert changed.status == 200 and changed.headers["etag"] != etag
    job_id = api.get("/api/v1/jobs?limit=1").json()["jobs"][0]["id"]
    Job.delete().where(Job.id == job_id).execute()  # a deletion (retention) changes the list too
    assert api.get("/api/v1/jobs?limit=5", headers={"If-None-Match": changed.headers["etag"]}).status == 200


def test_a_not_modified_list_costs_one_cheap_query(api):
    etag = api.get("/api/v1/jobs?limit=20").headers["etag"]  # the token is cached from here on
    database = models.get_database()
    statements: list[str] = []
    execute_sql = database.execute_sql

    def counting(sql, params=None, *args, **kwargs):
        if threading.current_thread().name.startswith("waitress"):  # the request's own, not background threads
            statements.append(sql)
        return execute_sql(sql, params, *args, **kwargs)

    database.execute_sql = counting
    try:
        assert api.get("/api/v1/jobs?limit=20", headers={"If-None-Match": etag}).status == 304
    finally:
        del database.execute_sql
    assert len(statements) == 1, statements
    plan = [row[3] for row in database.execute_sql("EXPLAIN QUERY PLAN " + statements[0]).fetchall()]
    on_jobs = [step for step in plan if step.startswith(("SEARCH", "SCAN")) and (" t1 " in f"{step} " or " job " in f"{step} ")]
    assert len(on_jobs) == 2 and all("COVERING INDEX" in step for step in on_jobs), plan  # never the job rows themselves


def test_fan_out_by_ids_names_and_tags(api):
    local = api.local_server_id()
    tagged = api.post(
        "/api/v1/servers",
        {"name": "tagged-box", "hostname": "127.0.0.1", "user": "u", "auth_type": "password", "password": "pw", "tags": ["fleet"]},
    ).json()
    reply = api.post("/api/v1/jobs", {"command": "hostname", "servers": ["local", "tag:fleet"], "server_ids": [local]})
    assert reply.status == 201, reply
    data = reply.json()
    assert len(data["jobs"]) == 2 and {j["server_id"] for j in data["jobs"]} == {local, tagged["id"]}
    assert all(j["batch_id"] == data["batch_id"] for j in data["jobs"])
    assert all(api.queue.peek(j["id"]) is not None for j in data["jobs"])
    assert_envelope(api.post("/api/v1/jobs", {"command": "x", "servers": ["tag:nothing"]}), 400)
    assert_envelope(api.post("/api/v1/jobs", {"command": "x", "server_id": "no-such-server"}), 400)


def test_script_jobs_accept_only_allowed_shells(api):
    local = api.local_server_id()
    ok = api.post("/api/v1/jobs/script", {"script": "echo hi\n", "shell": "/bin/bash", "server_id": local})
    assert ok.status == 201 and ok.json()["script"] == "echo hi\n" and ok.json()["shell"] == "/bin/bash"
    bad = assert_envelope(api.post("/api/v1/jobs/script", {"script": "id", "shell": "/usr/bin/python3", "server_id": local}), 400)
    assert "shell" in bad["details"]
    assert_envelope(api.post("/api/v1/jobs/script", {"script": "", "server_id": local}), 400)
    assert_envelope(api.get("/api/v1/jobs/script"), 405, "METHOD_NOT_ALLOWED")


def test_logs_full_incremental_and_raw_are_byte_exact(api):
    job = submit(api)
    out = JobOutput(job["id"], flush_interval=60, flush_lines=1000)
    out.write(Stream.STDOUT, b"line one\r\n\nh\xc3\xa9llo ")
    out.write(Stream.STDERR, b"warn\n")
    out.flush()
    logs = api.get(f"/api/v1/jobs/{job['id']}/logs").json()
    assert logs["stdout"] == "line one\r\n\nhéllo " and logs["stderr"] == "warn\n" and logs["complete"] is False
    assert logs["metadata"] == {"stdout_length": 18, "stderr_length": 5, "has_output": True, "has_errors": True}
    # a multi-byte character split by the writer is not split in the answer
    out.write(Stream.STDOUT, b"\xe2\x82")
    out.flush()
    part = api.get(f"/api/v1/jobs/{job['id']}/logs?stdout_offset=18&stderr_offset=5").json()
    assert part["stdout"] == "" and part["next_stdout_offset"] == 18 and part["next_stderr_offset"] == 5
    out.write(Stream.STDOUT, b"\xac end\xff\n")
    out.close()
    finish(job["id"])
    rest = api.get(f"/api/v1/jobs/{job['id']}/logs?stdout_offset=18&stderr_offset=5").json()
    assert rest["stdout"] == "€ end\ufffd\n" and rest["complete"] is True and rest["next_stdout_offset"] == 27
    raw = api.get(f"/api/v1/jobs/{job['id']}/stdout")
    assert raw.status == 200 and raw.headers["content-type"].startswith("text/plain")
    assert raw.body == b"line one\r\n\nh\xc3\xa9llo \xe2\x82\xac end\xff\n"
    assert api.get(f"/api/v1/jobs/{job['id']}/stderr").body == b"warn\n"
    assert_envelope(api.get(f"/api/v1/jobs/{job['id']}/logs?stdout_offset=-1"), 400)
    assert_envelope(api.get(f"/api/v1/jobs/{job['id']}/logs?stdout_offset=abc"), 400)


def test_large_output_is_streamed(api):
    job = submit(api)
    out = JobOutput(job["id"], flush_interval=60, flush_lines=10**9)
    block = (b"0123456789abcdef" * 4096 + b"\n")[:65536]
    for _ in range(64):  # 4 MiB
        out.write(Stream.STDOUT, block)
    out.close()
    raw = api.get(f"/api/v1/jobs/{job['id']}/stdout")
    assert len(raw.body) == 64 * 65536 and raw.body[:65536] == block
    logs = api.get(f"/api/v1/jobs/{job['id']}/logs?max_bytes=1000").json()
    assert len(logs["stdout"]) == 1000 and logs["next_stdout_offset"] == 1000


def test_cancel_queued_job_removes_it_from_the_queue(api):
    job = submit(api)
    reply = api.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert reply.status == 200, reply
    assert reply.json()["job"]["status"] == "canceled"
    assert api.queue.peek(job["id"]) is None
    assert_envelope(api.post(f"/api/v1/jobs/{job['id']}/cancel"), 409, "CONFLICT")


def test_cancel_running_job_flags_the_lease(api):
    job = submit(api, queue="cancel-q")
    [lease] = api.queue.reserve(["cancel-q"], timeout=2, worker_id="w1")
    assert lease.id == job["id"]
    Job.update(status="running", started_at=models.utcnow()).where(Job.id == job["id"]).execute()
    reply = api.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert reply.status == 200 and Job.get_by_id(job["id"]).cancel_requested
    assert api.queue.touch([job["id"]], worker_id="w1") == {job["id"]: "canceled"}


def test_rerun_duplicate_and_priority(api):
    job = submit(api, priority=7)
    assert_envelope(api.post(f"/api/v1/jobs/{job['id']}/rerun"), 409)
    moved = api.post(f"/api/v1/jobs/{job['id']}/priority", {"priority": 1})
    assert moved.status == 200 and moved.json()["priority"] == 1 and api.queue.peek(job["id"]).priority == 1
    assert_envelope(api.post(f"/api/v1/jobs/{job['id']}/priority", {"priority": 0}), 400)
    finish(job["id"], "failed", 3)
    assert_envelope(api.post(f"/api/v1/jobs/{job['id']}/priority", {"priority": 2}), 409)
    rerun = api.post(f"/api/v1/jobs/{job['id']}/rerun")
    assert rerun.status == 201, rerun
    new = rerun.json()["new_job"]
    assert new["parent_id"] == job["id"] and new["command"] == "echo" and new["status"] == "queued"
    dup = api.post(f"/api/v1/jobs/{job['id']}/duplicate", {"timeout": 42})
    assert dup.status == 201 and dup.json()["new_job"]["timeout"] == 42 and dup.json()["original_job"]["id"] == job["id"]
    assert api.post(f"/api/v1/jobs/{job['id']}/duplicate").status == 201  # body optional


def test_id_prefix_finds_jobs_by_the_start_of_their_id(api):
    job = submit(api, command="echo", args="prefix-lookup")
    for prefix in (job["id"][:8], job["id"][:8].upper(), job["id"]):
        reply = api.get(f"/api/v1/jobs?id_prefix={prefix}")
        assert reply.status == 200
        data = reply.json()
        assert [j["id"] for j in data["jobs"]] == [job["id"]]
        assert data["filters"]["id_prefix"] == prefix.lower()
    assert api.get("/api/v1/jobs?id_prefix=zzzz-not-hex").status == 400
    assert api.get("/api/v1/jobs?id_prefix=00000000-0000-0000-0000-0000000000").json()["jobs"] == []


def test_system_info_tells_clients_the_allowed_shells_and_timeouts(api):
    info = api.get("/api/v1/system/info", token="viewer").json()
    settings = api.settings
    assert info["allowed_shells"] == list(settings.security.allowed_shells)
    assert info["max_timeout"] == settings.api.max_timeout
    assert 1 <= info["default_timeout"] <= info["max_timeout"]
    assert api.get("/api/v1/system/enhanced").json()["allowed_shells"] == info["allowed_shells"]
    local = api.local_server_id()
    too_long = {"command": "true", "server_id": local, "timeout": info["max_timeout"] + 1}
    assert "timeout" in assert_envelope(api.post("/api/v1/jobs", too_long), 400)["details"]
    job = api.post("/api/v1/jobs", {"command": "true", "server_id": local}).json()
    assert job["timeout"] == info["default_timeout"]


def test_timeline_counts_finished_jobs_per_minute(api):
    check_timeline(api)


def test_job_without_output_bodies_for_polling(api):
    job = submit(api)
    out = JobOutput(job["id"], flush_interval=60, flush_lines=1000)
    out.write(Stream.STDOUT, b"hello body\n")
    out.write(Stream.STDERR, b"oops\n")
    out.flush()
    full = api.get(f"/api/v1/jobs/{job['id']}")
    assert full.json()["stdout"] == "hello body\n" and full.json()["stderr"] == "oops\n"
    meta = api.get(f"/api/v1/jobs/{job['id']}?output=false", token="viewer")
    data = meta.json()
    assert meta.status == 200 and not {"stdout", "stderr", "output"} & set(data), data
    assert data["stdout_bytes"] == 11 and data["stderr_bytes"] == 5 and data["server"]["name"] == "local"
    assert {k: v for k, v in full.json().items() if k not in ("stdout", "stderr", "output", "bodies_truncated")} == data
    assert meta.headers["etag"] != full.headers["etag"]
    assert api.get(f"/api/v1/jobs/{job['id']}?output=false", headers={"If-None-Match": meta.headers["etag"]}).status == 304
    assert api.get(f"/api/v1/jobs/{job['id']}?output=true").json()["stdout"] == "hello body\n"
    out.write(Stream.STDOUT, b"more\n")
    out.flush()
    again = api.get(f"/api/v1/jobs/{job['id']}?output=0", headers={"If-None-Match": meta.headers["etag"]})
    assert again.status == 200 and again.json()["stdout_bytes"] == 16
    out.close()
    assert "output" in assert_envelope(api.get(f"/api/v1/jobs/{job['id']}?output=maybe"), 400, "VALIDATION_ERROR")["details"]
    spec = api.get("/api/v1/openapi.json").json()["paths"]["/api/v1/jobs/{id}"]["get"]
    assert [p["name"] for p in spec["parameters"] if p["in"] == "query"] == ["output"]
