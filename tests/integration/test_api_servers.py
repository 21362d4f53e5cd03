"""Servers and keys over real HTTP: CRUD, secrets encrypted and never returned, SSH test, reachability, PEM files."""

from __future__ import annotations

import logging
import uuid

import pytest

from remora import models
from remora.crypto import SecretBox
from remora.models import Job, PemKey, Server
from tests.support.api import assert_envelope, running_api
from tests.support.waits import free_port

PASSWORD = "s3cret-Pa55word-never-shown"
REPLIES: list[bytes] = []


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def logs():
    handler = _Collect()
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old)


@pytest.fixture(scope="module")
def api(tmp_path_factory, logs):
    with running_api(tmp_path_factory.mktemp("servers"), **{"security.max_upload_size": 8192}) as api:
        original = api.request

        def recording(*args, **kwargs):
            reply = original(*args, **kwargs)
            REPLIES.append(reply.body)
            return reply

        api.request = recording
        yield api


def create(api, **fields):
    body = {"name": f"srv-{uuid.uuid4().hex[:8]}", "hostname": "127.0.0.1", "user": "nobody", "auth_type": "password", "password": PASSWORD}
    body.update(fields)
    reply = api.post("/api/v1/servers", body)
    assert reply.status == 201, reply
    return reply.json()


def test_create_read_update_list_with_secrets_encrypted(api):
    server = create(api, tags=["web", "eu"], max_concurrent_jobs=2)
    assert server["has_password"] is True and server["has_private_key"] is False and "password" not in server
    row = Server.get_by_id(server["id"])
    assert PASSWORD.encode() not in bytes(row.password)
    assert SecretBox.from_settings(api.settings).decrypt_str(row.password) == PASSWORD
    assert api.get(f"/api/v1/servers/{server['id']}").json()["tags"] == ["web", "eu"]
    updated = api.request("PUT", f"/api/v1/servers/{server['id']}", {"port": 2222, "is_active": False})
    assert updated.status == 200 and updated.json()["port"] == 2222 and updated.json()["has_password"] is True
    inactive = api.get("/api/v1/servers?active=false").json()["servers"]
    assert server["id"] in [s["id"] for s in inactive]
    assert [s["id"] for s in api.get("/api/v1/servers?tag=eu").json()["servers"]] == [server["id"]]
    assert_envelope(
        api.post("/api/v1/servers", {"name": server["name"], "hostname": "h", "user": "u", "auth_type": "password", "password": "x"}), 409
    )
    assert_envelope(api.post("/api/v1/servers", {"name": "nopw", "hostname": "h", "user": "u", "auth_type": "password"}), 400)
    assert_envelope(
        api.post("/api/v1/servers", {"name": "badkey", "hostname": "h", "user": "u", "auth_type": "key", "private_key": "junk"}), 400
    )
    assert_envelope(api.get("/api/v1/servers?active=maybe"), 400)
    assert_envelope(api.request("PUT", f"/api/v1/servers/{uuid.uuid4()}", {"port": 22}), 404)


def test_delete_refuses_active_jobs_and_history_unless_forced(api):
    server = create(api)
    job = api.post("/api/v1/jobs", {"command": "true", "server_id": server["id"]}).json()
    assert_envelope(api.request("DELETE", f"/api/v1/servers/{server['id']}"), 409)
    now = models.utcnow()
    Job.update(status="completed", finished_at=now).where(Job.id == job["id"]).execute()
    assert_envelope(api.request("DELETE", f"/api/v1/servers/{server['id']}"), 409)
    reply = api.request("DELETE", f"/api/v1/servers/{server['id']}?force=true")
    assert reply.status == 200 and reply.json()["deleted_jobs"] == 1
    assert_envelope(api.get(f"/api/v1/servers/{server['id']}"), 404)


def test_ssh_test_endpoint_logs_in_for_real(api, sshd):
    good = create(api, hostname=sshd.host, port=sshd.port, user=sshd.user, auth_type="key", password=None, private_key=sshd.private_key)
    assert good["has_private_key"] is True
    reply = api.post(f"/api/v1/servers/{good['id']}/test", token="operator")
    assert reply.status == 200, reply
    data = reply.json()
    assert data["status"] == "connection_successful" and data["latency_ms"] > 0 and data["host_key_fingerprint"].startswith("SHA256:")
    bad = create(api, hostname=sshd.host, port=sshd.port, user=sshd.password_user or sshd.user, password="wrong-password")
    failed = api.post(f"/api/v1/servers/{bad['id']}/test")
    body = assert_envelope(failed, 503)
    assert body["status"] == "connection_failed" and "wrong-password" not in failed.body.decode()


def test_reachability_single_and_bulk(api, sshd):
    up = create(api, hostname=sshd.host, port=sshd.port)
    down = create(api, port=free_port())
    assert api.get(f"/api/v1/servers/{up['id']}/status").json()["status"] == "connected"
    reply = api.post(f"/api/v1/servers/{down['id']}/status", token="viewer").json()
    assert reply["status"] == "disconnected" and reply["server_name"] == down["name"] and reply["checked_at"].endswith("Z")
    bulk = api.post("/api/v1/servers/bulk/status").json()
    assert bulk["total_servers"] == bulk["connected"] + bulk["disconnected"] and bulk["disconnected"] >= 1
    assert api.get("/api/v1/servers/status/all").json()["total_servers"] == bulk["total_servers"]


def multipart(filename: str, data: bytes, field: str = "pem_file") -> tuple[bytes, str]:
    boundary = "remora" + uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def upload(api, filename, data, **kw):
    body, ctype = multipart(filename, data, **kw)
    return api.post("/api/v1/upload/pem", raw=body, content_type=ctype)


def test_pem_upload_list_delete(api, sshd):
    key = sshd.private_key.encode()
    reply = upload(api, "deploy.pem", key)
    assert reply.status == 201, reply
    assert reply.json()["filename"] == "deploy.pem"
    stored = PemKey.get(PemKey.filename == "deploy.pem")
    assert key not in bytes(stored.content) and SecretBox.from_settings(api.settings).decrypt(stored.content) == key
    listing = api.get("/api/v1/files/pem").json()["files"]
    assert [f["filename"] for f in listing] == ["deploy.pem"] and listing[0]["fingerprint"].startswith("SHA256:")
    assert_envelope(upload(api, "deploy.pem", key), 409)
    assert_envelope(upload(api, "../../etc/evil.pem", key), 400, "PATH_TRAVERSAL")
    assert_envelope(upload(api, "notes.txt", key), 400)
    assert_envelope(upload(api, "junk.pem", b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n"), 400)
    assert_envelope(upload(api, "huge.pem", b"A" * 20000), 413)
    assert_envelope(upload(api, "x.pem", key, field="other"), 400)
    assert_envelope(api.post("/api/v1/upload/pem", raw=b"garbage", content_type="multipart/form-data; boundary=zz"), 400)
    body, ctype = multipart("second.key", key)
    assert api.post("/api/v1/pem-files/upload", raw=body, content_type=ctype).status == 201
    user = create(api, hostname=sshd.host, port=sshd.port, user=sshd.user, auth_type="key", password=None, pem_file="deploy.pem")
    assert user["pem_file"] == "deploy.pem"
    assert api.post(f"/api/v1/servers/{user['id']}/test").status == 200
    assert_envelope(api.request("DELETE", "/api/v1/files/pem/deploy.pem"), 409)
    assert_envelope(api.request("DELETE", "/api/v1/files/pem/missing.pem"), 404)
    api.request("DELETE", f"/api/v1/servers/{user['id']}")
    assert api.request("DELETE", "/api/v1/files/pem/deploy.pem").status == 200


def test_secrets_never_appear_in_responses_or_logs(api, sshd, logs):
    create(api, auth_type="password", password=PASSWORD, passphrase="my-passphrase")
    api.get("/api/v1/servers")
    api.get("/api/v1/openapi.json")
    key_body = sshd.private_key.strip().splitlines()[1]
    for body in REPLIES:
        assert PASSWORD.encode() not in body and b"my-passphrase" not in body and key_body.encode() not in body
    text = "\n".join(logs.lines)
    assert PASSWORD not in text and "my-passphrase" not in text and key_body not in text
    assert len(logs.lines) > 10
