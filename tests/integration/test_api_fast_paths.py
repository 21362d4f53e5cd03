"""The submission fast paths: cached INSERT statements and cached target servers behave like the plain ones."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from remora import models, services
from remora.models import AuditEvent, Job
from tests.support.api import assert_envelope, running_api


def _columns(job_id: str) -> dict:
    row = Job.select().where(Job.id == job_id).dicts().get()
    row.pop("id")
    return row


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_insert_rows_stores_what_peewee_stores(backend, tmp_path, request):
    url = f"sqlite:///{tmp_path / 'r.db'}" if backend == "sqlite" else request.getfixturevalue("postgres").new_database("fast_insert")
    models.init_db(url)
    try:
        local = services.ensure_local_server()
        at = models.utcnow() - dt.timedelta(minutes=3)
        values = {
            "command": "echo",
            "args": "a 'b' \"c\" é",
            "env": {"K": "v", "Z": "1"},
            "pty": True,
            "server": local.id,
            "priority": 2,
            "timeout": 7,
            "created_at": at,
            "updated_at": at,
        }
        plain, fast = models.new_id(), models.new_id()
        Job.insert(id=plain, **values).execute()
        models.insert_rows(Job, [{"id": fast, **values}])
        assert _columns(fast) == _columns(plain)
        many = [{"id": models.new_id(), **values, "priority": 1 + i % 10} for i in range(models.INSERT_CHUNK + 7)]
        models.insert_rows(Job, many)
        assert Job.select().where(Job.id.in_([r["id"] for r in many])).count() == len(many)
        models.insert_rows(AuditEvent, [{"action": "x", "details": {"n": 1}}, {"action": "y"}])  # auto-increment key
        assert [e.action for e in AuditEvent.select().order_by(AuditEvent.id)] == ["x", "y"]
        with pytest.raises(models.IntegrityError):
            models.insert_rows(Job, [{"id": fast, **values}])
    finally:
        models.close_db()


def test_cached_targets_follow_server_changes(tmp_path):
    with running_api(tmp_path) as api:
        body = {"name": "cached-box", "hostname": "127.0.0.1", "user": "u", "auth_type": "password", "password": "pw"}
        server = api.post("/api/v1/servers", body).json()
        assert api.post("/api/v1/jobs", {"command": "true", "server_id": "cached-box"}).status == 201
        api.request("PUT", f"/api/v1/servers/{server['id']}", {"is_active": False})
        assert "inactive" in assert_envelope(api.post("/api/v1/jobs", {"command": "true", "server_id": "cached-box"}), 400)["error"]
        api.request("PUT", f"/api/v1/servers/{server['id']}", {"is_active": True, "name": "renamed-box"})
        assert api.post("/api/v1/jobs", {"command": "true", "server_id": "renamed-box"}).json()["server"]["name"] == "renamed-box"
        # deleted behind this process's back (another API instance): a clear 400, never a 503 or 500
        Job.delete().where(Job.server == server["id"]).execute()
        models.Server.delete().where(models.Server.id == server["id"]).execute()
        reply = api.post("/api/v1/jobs", {"command": "true", "server_id": server["id"]})
        assert "server_id" in assert_envelope(reply, 400, "VALIDATION_ERROR")["details"]
        assert_envelope(api.post("/api/v1/jobs", {"command": "true", "server_id": server["id"]}), 400)


def test_concurrent_submissions_are_all_recorded_and_queued(tmp_path):
    with running_api(tmp_path) as api:
        local = api.local_server_id()
        group = api.server.app.ctx.group
        replies: list = []
        lock = threading.Lock()

        def client(n: int) -> None:
            for i in range(25):
                reply = api.post("/api/v1/jobs", {"command": "echo", "args": f"{n}-{i}", "server_id": local}, token="admin")
                with lock:
                    replies.append(reply)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(replies) == 200 and all(r.status == 201 for r in replies), [r for r in replies if r.status != 201][:3]
        ids = [r.json()["id"] for r in replies]
        assert Job.select().where(Job.id.in_(ids)).count() == 200
        assert all(api.queue.peek(job_id) is not None for job_id in ids)
        assert group.entries >= 200  # every submission went through the group commit
