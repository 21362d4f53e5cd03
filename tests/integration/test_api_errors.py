"""Bad input never crashes the API: every error has a fitting status and the envelope. Also CORS, ids, metrics."""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from remora.models import AuditEvent
from remora.services import audit
from tests.support.api import assert_envelope, running_api


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    overrides = {"api.cors_allowed_origins": ["http://dash.example"], "api.max_body_size": 4096}
    with running_api(tmp_path_factory.mktemp("errors"), **overrides) as api:
        yield api


def job(api, **fields):
    return {"command": "echo", "server_id": api.local_server_id(), **fields}


def test_malformed_and_empty_bodies(api):
    assert_envelope(api.post("/api/v1/jobs", raw=b"{not json"), 400, "VALIDATION_ERROR")
    assert_envelope(api.post("/api/v1/jobs", raw=b""), 400)
    assert_envelope(api.post("/api/v1/jobs", raw=b"\xff\xfe"), 400)
    assert_envelope(api.post("/api/v1/jobs", raw=b"NaN"), 400)
    assert_envelope(api.post("/api/v1/jobs", raw=b"[1, 2]"), 400)
    assert_envelope(api.post("/api/v1/jobs", raw=b'"text"'), 400)
    assert_envelope(api.post("/api/v1/jobs", raw=b"[" * 4000), 400)
    assert_envelope(api.post("/api/v1/jobs", raw=b'{"command": 1e999}'), 400)
    assert_envelope(api.post("/api/v1/jobs", raw=b"command=ls", content_type="application/x-www-form-urlencoded"), 415)


def test_wrong_types_huge_numbers_and_unknown_fields_name_the_field(api):
    cases = {
        "priority": job(api, priority="high"),
        "timeout": job(api, timeout=10**30),
        "retries": job(api, retries=-1),
        "env": job(api, env={"A": 1}),
        "command": job(api, command=["ls"]),
        "bogus": job(api, bogus=True),
        "server_ids": job(api, server_ids="not-a-list"),
    }
    for field, body in cases.items():
        data = assert_envelope(api.post("/api/v1/jobs", body), 400, "VALIDATION_ERROR")
        assert any(k.startswith(field) for k in data["details"]), (field, data)
    assert assert_envelope(api.post("/api/v1/jobs", job(api, priority=11)), 400)["details"]["priority"] == "must be between 1 and 10"
    assert assert_envelope(api.post("/api/v1/jobs", job(api, priority=True)), 400)["details"]["priority"]
    assert_envelope(api.post("/api/v1/jobs", {"server_id": api.local_server_id()}), 400)
    assert_envelope(api.post("/api/v1/servers", {"name": "x", "port": 70000, "hostname": "h", "user": "u"}), 400)
    assert_envelope(api.post("/api/v1/servers", {}), 400)


def test_oversized_bodies_are_413(api):
    big = json.dumps(job(api, args="x" * 10000)).encode()
    assert_envelope(api.post("/api/v1/jobs", raw=big), 413, "PAYLOAD_TOO_LARGE")


def test_unknown_routes_methods_and_ids(api):
    assert_envelope(api.get("/api/v1/nope"), 404, "NOT_FOUND")
    assert_envelope(api.get("/api/v2/jobs"), 404)
    assert_envelope(api.request("PATCH", "/api/v1/jobs"), 405, "METHOD_NOT_ALLOWED")
    reply = api.request("DELETE", "/api/v1/jobs")
    assert "GET" in reply.headers["allow"] and "POST" in reply.headers["allow"]
    assert_envelope(api.get("/api/v1/servers/12345"), 404)
    assert_envelope(api.post("/api/v1/jobs/%00/cancel"), 400)
    assert_envelope(api.get("/api/v1/servers/" + "a" * 5000), 404)
    assert_envelope(api.request("DELETE", "/api/v1/files/pem/../../etc/passwd"), 400, "PATH_TRAVERSAL")
    assert_envelope(api.get("/static/../../etc/passwd", token=None), 400)
    assert_envelope(api.get("/static/.hidden", token=None), 404)


def test_cors_allows_configured_origins_only(api):
    ok = api.request(
        "OPTIONS", "/api/v1/jobs", token=None, headers={"Origin": "http://dash.example", "Access-Control-Request-Method": "POST"}
    )
    assert ok.status == 204 and ok.headers["access-control-allow-origin"] == "http://dash.example"
    assert "Authorization" in ok.headers["access-control-allow-headers"]
    bad = api.request(
        "OPTIONS", "/api/v1/jobs", token=None, headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert_envelope(bad, 403, "FORBIDDEN")
    assert "access-control-allow-origin" not in bad.headers
    simple = api.get("/api/v1/jobs", headers={"Origin": "http://evil.example"})
    assert simple.status == 200 and "access-control-allow-origin" not in simple.headers
    allowed = api.get("/api/v1/jobs", headers={"Origin": "http://dash.example"})
    assert allowed.headers["access-control-allow-origin"] == "http://dash.example"


def test_request_ids_are_echoed_and_recorded_in_the_audit_log(api):
    reply = api.post("/api/v1/jobs", job(api), headers={"X-Request-Id": "trace-abc-123"})
    assert reply.status == 201 and reply.headers["x-request-id"] == "trace-abc-123"
    audit.flush()
    event = AuditEvent.select().where(AuditEvent.request_id == "trace-abc-123").get()
    assert event.action == "submit_job" and event.target_id == reply.json()["id"] and event.actor.startswith("admin")
    assert len(api.get("/api/v1/jobs", headers={"X-Request-Id": "bad id with spaces"}).headers["x-request-id"]) == 16
    page = api.get("/api/v1/audit?limit=5").json()
    assert page["events"] and page["events"][0]["actor"].startswith("admin")


def test_metrics_in_prometheus_text(api):
    api.get("/api/v1/jobs")
    text = api.get("/metrics").body.decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("remora_http_requests_total", (("code", "200"), ("method", "GET"), ("route", "list_jobs")))] >= 1
    assert 'remora_jobs{status="queued"}' in text
    assert "remora_job_duration_seconds_bucket" in text and "remora_queue_depth" in text


def test_openapi_shows_both_answers_of_a_submission(api):
    """One server gets the job back, a fan-out gets its batch: the document says both."""
    doc = api.get("/api/v1/openapi.json").json()
    for path in ("/api/v1/jobs", "/api/v1/jobs/script"):
        answer = doc["paths"][path]["post"]["responses"]["201"]["content"]["application/json"]["schema"]
        shapes = [set(option.get("properties", {})) for option in answer["oneOf"]]
        assert {"batch_id", "jobs"} in shapes and any({"id", "status", "command"} <= shape for shape in shapes), answer


def test_openapi_document_covers_every_route(api):
    from openapi_spec_validator import validate

    doc = api.get("/api/v1/openapi.json").json()
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    for route in api.server.app.routes:
        assert route.method.lower() in doc["paths"][route.openapi_path], route.pattern
