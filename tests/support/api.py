"""An in-process Remora API for tests: NetQueue (port 0, memory only) + APIServer (port 0) + tokens per role."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remora import config, models, services
from remora.api.server import APIServer
from remora.netqueue.client import QueueClient
from remora.netqueue.server import QueueServer
from tests.support.http import Reply, request
from tests.support.waits import free_port

ROLES = ("admin", "operator", "runner", "viewer")


@dataclass
class Api:
    host: str
    port: int
    settings: config.Settings
    server: APIServer
    queue_server: QueueServer | None
    queue: QueueClient
    tokens: dict[str, str] = field(default_factory=dict)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = "admin",
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Reply:
        """One HTTP request; ``token`` is a role name, a literal token, or None."""
        return request(
            self.host, self.port, method, path, body,
            token=None if token is None else self.tokens.get(token, token), raw=raw, headers=headers, content_type=content_type,
        )  # fmt: skip

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.request("POST", path, body, **kw)

    def local_server_id(self) -> str:
        return services.ensure_local_server().id


def make_settings(tmp: Path, db_url: str | None = None, **overrides: Any) -> config.Settings:
    values = {
        "database.data_dir": str(tmp),
        "security.secret_key": "test-secret-key",
        "logging.level": "warning",
        "queue.persistence": False,
    }
    if db_url:
        values["database.url"] = db_url
    values.update(overrides)
    return config.load(None, {}, values)


@contextmanager
def running_api(tmp: Path, db_url: str | None = None, *, with_queue: bool = True, auth: bool = True, **overrides: Any) -> Iterator[Api]:
    """Start a queue (unless ``with_queue`` is False: the address then refuses) and the API; yield an Api."""
    queue_server = None
    if with_queue:
        queue_server = QueueServer(host="127.0.0.1", port=0, persistence=False, fsync="never")
        queue_server.start()
        qhost, qport = queue_server.address
        overrides.setdefault("queue.addr", f"{qhost}:{qport}")
    else:
        overrides.setdefault("queue.addr", f"127.0.0.1:{free_port()}")
    settings = make_settings(tmp, db_url, **overrides)
    models.init_db(settings.database_url)
    tokens = {role: services.create_token(f"{role}-{uuid.uuid4().hex[:6]}", role)[1] for role in ROLES}
    queue = QueueClient(settings.queue.addr, name="test")
    server = APIServer(settings, host="127.0.0.1", port=0, auth=auth, reconcile_interval=0.2, reconcile_settle=0.0)
    server.start()
    host, port = server.address
    try:
        yield Api(host, port, settings, server, queue_server, queue, tokens)
    finally:
        server.stop()
        queue.close()
        if queue_server is not None:
            queue_server.stop()
        models.close_db()


def assert_envelope(reply: Reply, status: int, code: str | None = None) -> dict[str, Any]:
    """The reply has ``status`` and the error envelope (and ``code`` when given)."""
    assert reply.status == status, reply
    data = reply.json()
    assert isinstance(data.get("error"), str) and data["error"], reply
    assert isinstance(data.get("code"), str) and data["code"].isupper(), reply
    assert isinstance(data.get("details", {}), dict), reply
    if code is not None:
        assert data["code"] == code, reply
    return data


def check_timeline(api: Api) -> None:
    """GET /system/timeline counts finished jobs per minute by finished_at (whatever database is bound)."""
    import datetime as dt

    def by_minute() -> dict[str, dict[str, int]]:
        reply = api.get("/api/v1/system/timeline?minutes=60", token="viewer")
        assert reply.status == 200, reply
        minutes = reply.json()["minutes"]
        assert len(minutes) == 60 and [m["t"] for m in minutes] == sorted(m["t"] for m in minutes)
        return {m["t"]: m for m in minutes}

    before = by_minute()
    local = api.local_server_id()
    now = models.utcnow()
    at = now.replace(second=30, microsecond=0) - dt.timedelta(minutes=10)
    old = now - dt.timedelta(minutes=90)
    rows = [("completed", at)] * 3 + [("failed", at)] * 2 + [("canceled", at)] + [("completed", old)] * 4 + [("queued", None)]
    models.Job.insert_many(
        [
            {
                "id": models.new_id(),
                "command": "timeline",
                "server": local,
                "status": status,
                "created_at": when or now,
                "updated_at": when or now,
                "finished_at": when,
            }
            for status, when in rows
        ]
    ).execute()
    after = by_minute()
    key = at.strftime("%Y-%m-%dT%H:%M:00Z")
    assert key in after, sorted(after)[:3]
    grew = {
        s: after[key][s] - before.get(key, dict.fromkeys(("completed", "failed", "canceled"), 0))[s]
        for s in ("completed", "failed", "canceled")
    }
    assert grew == {"completed": 3, "failed": 2, "canceled": 1}, grew
    assert_envelope(api.get("/api/v1/system/timeline?minutes=0"), 400, "VALIDATION_ERROR")
    assert_envelope(api.get("/api/v1/system/timeline?minutes=abc"), 400, "VALIDATION_ERROR")
    assert len(api.get("/api/v1/system/timeline?minutes=5").json()["minutes"]) == 5
