"""The schedules API over HTTP (an in-process API with its scheduler running): CRUD, 400s naming fields, roles, run now, runs, audit."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from remora import models
from tests.support.api import Api, assert_envelope, running_api
from tests.support.waits import wait_for

TEMPLATE = {
    "name": "backup",
    "command": "echo",
    "args": "{{ target }}",
    "servers": ["local"],
    "parameters": [
        {"name": "target", "required": True},
        {"name": "level", "type": "int", "default": 1},
        {"name": "mode", "type": "choice", "choices": ["full", "diff"], "default": "full"},
        {"name": "key", "secret": True, "required": False},
    ],
}
NIGHTLY = {"name": "nightly", "template": "backup", "params": {"target": "db"}, "cron": "30 2 * * *", "timezone": "Europe/Berlin"}


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[Api]:
    overrides = {"security.local_server_role": "operator", "api.schedule_grace": "90s"}  # a slot up to 90 s old still fires
    with running_api(tmp_path_factory.mktemp("schedules-api"), **overrides) as api:
        api.local_server_id()
        assert api.post("/api/v1/templates", TEMPLATE).status == 201
        yield api


def parse(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_create_show_list_and_delete(api):
    created = api.post("/api/v1/schedules", {**NIGHTLY, "name": "crud"}, token="operator")
    assert created.status == 201, created
    data = created.json()
    assert (data["cron"], data["timezone"], data["enabled"], data["overlap"], data["catch_up"]) == (
        "30 2 * * *",
        "Europe/Berlin",
        True,
        "skip",
        "none",
    )
    assert data["last_run"] is None and len(data["next_runs"]) == 5
    from zoneinfo import ZoneInfo

    firsts = [parse(t).astimezone(ZoneInfo("Europe/Berlin")) for t in data["next_runs"]]
    assert all(t.strftime("%H:%M") == "02:30" for t in firsts) and firsts == sorted(firsts)
    assert all(t.endswith("Z") for t in data["next_runs"])
    assert api.get("/api/v1/schedules/crud", token="viewer").json()["name"] == "crud"
    assert "crud" in [s["name"] for s in api.get("/api/v1/schedules", token="runner").json()["schedules"]]
    assert_envelope(api.post("/api/v1/schedules", {**NIGHTLY, "name": "crud"}), 409, "CONFLICT")
    assert api.request("DELETE", "/api/v1/schedules/crud", token="operator").status == 200
    assert_envelope(api.get("/api/v1/schedules/crud"), 404, "NOT_FOUND")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * * *"}, "cron"),
        ({"cron": "@reboot"}, "cron"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"template": "no-such-template"}, "template"),
        ({"params": {}}, "params"),  # target is required
        ({"params": {"target": "x", "level": "high"}}, "params"),
        ({"params": {"target": "x", "mode": "partial"}}, "params"),
        ({"params": {"target": "x", "unknown": "1"}}, "params"),
        ({"overlap": "sometimes"}, "overlap"),
        ({"catch_up": "all"}, "catch_up"),
        ({"name": "bad name!"}, "name"),
    ],
)
def test_bad_definitions_are_400s_naming_the_field(api, change, field):
    reply = api.post("/api/v1/schedules", {**NIGHTLY, "name": "bad", **change})
    data = assert_envelope(reply, 400)
    assert field in data["error"] or field in data.get("details", {}), data


def test_roles_viewers_and_runners_read_operators_manage(api):
    for role in ("viewer", "runner"):
        assert_envelope(api.post("/api/v1/schedules", {**NIGHTLY, "name": f"by-{role}"}, token=role), 403)
    assert api.post("/api/v1/schedules", {**NIGHTLY, "name": "roles"}, token="admin").status == 201
    for role in ("viewer", "runner"):
        assert api.get("/api/v1/schedules/roles/runs", token=role).status == 200
        assert_envelope(api.request("PUT", "/api/v1/schedules/roles", {"enabled": False}, token=role), 403)
        assert_envelope(api.post("/api/v1/schedules/roles/run", token=role), 403)
        assert_envelope(api.request("DELETE", "/api/v1/schedules/roles", token=role), 403)


def test_pause_resume_and_edit(api):
    assert api.post("/api/v1/schedules", {**NIGHTLY, "name": "pausable", "params": {"target": "db", "key": "s3cr3t-value"}}).status == 201
    paused = api.request("PUT", "/api/v1/schedules/pausable", {"enabled": False}, token="operator").json()
    assert paused["enabled"] is False and paused["next_runs"] == [] and paused["params"]["key"] == "***"
    resumed = api.request("PUT", "/api/v1/schedules/pausable", {"enabled": True, "cron": "@hourly", "timezone": "Asia/Kolkata"}).json()
    assert resumed["enabled"] is True and resumed["cron"] == "@hourly" and len(resumed["next_runs"]) == 5
    assert all(parse(t).minute == 30 for t in resumed["next_runs"])  # Kolkata is UTC+05:30: its full hours are UTC half hours
    row = models.Schedule.get(models.Schedule.name == "pausable")
    assert b"s3cr3t" not in bytes(row.secret_params) and b"s3cr3t" not in api.get("/api/v1/schedules/pausable").body


def test_run_now_creates_a_job_and_shows_in_runs_and_last_run(api):
    assert api.post("/api/v1/schedules", {**NIGHTLY, "name": "manual"}).status == 201
    reply = api.post("/api/v1/schedules/manual/run", token="operator")
    assert reply.status == 201, reply
    job = reply.json()
    assert job["template"] == "backup" and job["status"] == "queued" and job["server"]["name"] == "local"
    runs = api.get("/api/v1/schedules/manual/runs", token="viewer").json()["runs"]
    assert [(r["status"], r["job_id"], r["manual"]) for r in runs] == [("fired", job["id"], True)]
    assert runs[0]["job_status"] in ("queued", "running", "completed", "failed")
    last = api.get("/api/v1/schedules/manual").json()["last_run"]
    assert last["job_id"] == job["id"] and last["status"] and last["at"]
    wait_for(
        lambda: (
            models.AuditEvent.select().where(models.AuditEvent.action == "schedule_run").exists()
            and models.AuditEvent.select().where(models.AuditEvent.action == "schedule_create").exists()
        ),
        10,
        0.05,
        "audit rows",
    )


def test_the_api_process_fires_a_due_slot(api):
    """The scheduler runs inside the API: a schedule whose next slot has come fires within a few seconds."""
    assert api.post("/api/v1/schedules", {**NIGHTLY, "name": "due", "cron": "* * * * *"}).status == 201
    row = models.Schedule.get(models.Schedule.name == "due")
    slot = models.utcnow().replace(second=0, microsecond=0)
    models.Schedule.update(next_slot=slot).where(models.Schedule.id == row.id).execute()
    at = models.to_rfc3339(slot)
    # the slot's row is ``claimed`` (committed on its own) until its job is recorded: wait past that step
    runs = wait_for(
        lambda: [r for r in api.get("/api/v1/schedules/due/runs").json()["runs"] if r["slot"] == at and r["status"] != "claimed"],
        10,
        0.1,
        "the slot to fire",
    )
    assert [(r["status"], r["manual"]) for r in runs] == [("fired", False)], runs
    assert models.Job.get_by_id(runs[0]["job_id"]).created_by == "schedule:due"
