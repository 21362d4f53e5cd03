"""No secret appears in any API response, log line (debug level), audit entry, error message or
`config show` output -- checked by grepping everything a full run produced for the test's secrets.

A full run: `remora up` at debug level with a queue token and a secret key set
by environment; servers with a password, a private key protected by a
passphrase, and an uploaded PEM file, on a real sshd; jobs on each (and one
that fails to log in); every GET route of the OpenAPI document called with
real ids; invalid submissions that carry secrets; CLI listings; `config
show`; then the audit table.  By design the plaintext admin token appears
once: in the dashboard URL `remora up` prints on stdout (like a notebook
server); that banner is the one thing not grepped for it.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from remora import models
from remora.client import Client
from remora.errors import RemoraError
from tests.support.cluster import make_remora
from tests.support.waits import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.ssh]

QUEUE_TOKEN = "qtok-7f3a9c1e5b2d4f60"
SECRET_KEY = "sk-0d9e8f7a6b5c4d3e2f1a"
PASSPHRASE = "pass-phrase-4e1b9d77"


def key_lines(pem: str) -> list[str]:
    """Lines of a private key's body long enough that finding one means the key leaked."""
    return [line for line in pem.strip().splitlines()[1:-1] if len(line) >= 40]


def test_no_secret_in_responses_logs_audit_errors_or_config_show(tmp_path, sshd):
    protected = tmp_path / "protected_key"
    shutil.copy(sshd.key_path, protected)
    protected.chmod(0o600)
    subprocess.run(["ssh-keygen", "-q", "-p", "-N", PASSPHRASE, "-P", "", "-f", str(protected)], check=True)
    key_text, protected_text = sshd.private_key, protected.read_text()

    remora = make_remora("checkout", tmp_path, None)
    remora.env.update({"REMORA_LOGGING_LEVEL": "debug", "REMORA_QUEUE_TOKEN": QUEUE_TOKEN, "REMORA_SECURITY_SECRET_KEY": SECRET_KEY})
    remora.start(workers=4)
    replies: list[bytes] = []
    try:
        token = (remora.data_dir / "admin.token").read_text().strip()
        client = Client(remora.url, token)
        original_raw = client.raw

        def recording_raw(*args, **kwargs):
            try:
                resp = original_raw(*args, **kwargs)
            except RemoraError as exc:
                replies.append(str(exc).encode() + json.dumps(getattr(exc, "details", {}) or {}).encode())
                raise
            replies.append(resp.body)
            return resp

        client.raw = recording_raw  # type: ignore[method-assign]
        common = {"hostname": sshd.host, "port": sshd.port}
        servers = [
            client.create_server({**common, "name": "pw", "user": sshd.password_user, "auth_type": "password", "password": sshd.password}),
            client.create_server(
                {**common, "name": "key", "user": sshd.user, "auth_type": "key", "private_key": protected_text, "passphrase": PASSPHRASE}
            ),
        ]
        client.upload_pem("deploy.pem", key_text.encode())
        servers.append(client.create_server({**common, "name": "pem", "user": sshd.user, "auth_type": "key", "pem_file": "deploy.pem"}))
        wrong = client.create_server(
            {**common, "name": "wrong", "user": sshd.password_user, "auth_type": "password", "password": "nope-" + sshd.password}
        )
        for bad in (
            {"name": "bad-key", **common, "user": "u", "auth_type": "key", "private_key": "garbage " + key_lines(key_text)[0]},
            {"name": "pw", **common, "user": "u", "auth_type": "password", "password": sshd.password},  # duplicate name
        ):
            with pytest.raises(RemoraError):
                client.create_server(bad)
        jobs = [client.submit({"command": "echo hello; env | grep -c REMORA_", "server_id": s["id"]})[0]["id"] for s in [*servers, wrong]]
        wait_for(lambda: all(client.job(j)["status"] in ("completed", "failed") for j in jobs), 60, what="jobs on every server")
        assert [client.job(j)["status"] for j in jobs] == ["completed", "completed", "completed", "failed"]
        for server in [*servers, wrong]:
            try:
                client.test_server(server["id"])
            except RemoraError:
                pass
        walk_get_routes(client, servers[0]["id"], jobs[0])
        cli = [
            remora.run("servers", "list", "--json"),
            remora.run("servers", "show", "key", "--json"),
            remora.run("jobs", "list", "--json"),
            remora.run("config", "show"),
            remora.run("config", "show", "--json"),
            remora.run("config", "show", "--sources"),
        ]
        assert all(r.returncode == 0 for r in cli), [r.stderr for r in cli]
    finally:
        assert remora.stop() == 0
    models.init_db(f"sqlite:///{remora.data_dir / 'remora.db'}")
    try:
        audit = "\n".join(json.dumps(row, default=str) for row in models.AuditEvent.select().dicts())
        assert audit.count("\n") >= 5
    finally:
        models.close_db()

    logs = remora.logs()
    assert "DEBUG" in logs and len(logs.splitlines()) > 50
    stdout_banner = (remora.data_dir.parent / "up.out").read_text()
    haystacks = {
        "API responses": b"\n".join(replies).decode(errors="replace"),
        "logs (debug)": logs,
        "audit entries": audit,
        "CLI output": "\n".join(r.stdout.decode() + r.stderr.decode() for r in cli),
        "up stdout without the dashboard URL": stdout_banner.replace(f"#token={token}", "#token=<shown once by design>"),
    }
    secrets = {
        "server password": sshd.password,
        "key passphrase": PASSPHRASE,
        "queue token": QUEUE_TOKEN,
        "secret key": SECRET_KEY,
        "admin API token": token,
        **{f"private key line {i}": line for i, line in enumerate(key_lines(key_text)[:3])},
        **{f"protected key line {i}": line for i, line in enumerate(key_lines(protected_text)[:3])},
    }
    leaks = [f"{name} in {where}" for where, text in haystacks.items() for name, value in secrets.items() if value in text]
    assert not leaks, leaks
    assert len(haystacks["API responses"]) > 10000  # the walk really read a lot


def walk_get_routes(client: Client, server_id: str, job_id: str) -> None:
    """Every GET of the OpenAPI document, with real ids; the client records the answers."""
    spec = client.get("/api/v1/openapi.json")
    for path, ops in spec["paths"].items():
        if "get" not in ops or path == "/":
            continue
        concrete = path.replace("{filename}", "deploy.pem")
        concrete = concrete.replace("{id}", server_id if "/servers/" in path else job_id)
        concrete = concrete.replace("{job_id}", job_id).replace("{server_id}", server_id)
        try:
            client.raw("GET", concrete)
        except RemoraError:
            pass
