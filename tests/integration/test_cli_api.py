"""Client commands (CliRunner, in process) against a real API over HTTP: NetQueue + APIServer on port 0, SQLite.

No worker runs here, so jobs stay queued: these tests pin what the commands
send and print.  Running jobs end to end is tests/e2e.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from typer.testing import CliRunner

from remora import config, models, services
from remora.api.server import APIServer
from remora.cli import app
from remora.client import Client
from remora.errors import Conflict, ExitCode, NotFound, RemoraError, Unauthorized, ValidationError
from remora.netqueue.server import QueueServer


@dataclass
class Stack:
    url: str
    token: str
    viewer: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("cli-api")
    queue = QueueServer(host="127.0.0.1", port=0, persistence=False)
    queue.start()
    qhost, qport = queue.address
    settings = config.load(None, {}, {"database.data_dir": str(base), "queue.addr": f"{qhost}:{qport}"})
    models.init_db(settings.database_url)
    services.ensure_local_server()
    _, admin = services.create_token("cli-admin", "admin")
    _, viewer = services.create_token("cli-viewer", "viewer")
    api = APIServer(settings, host="127.0.0.1", port=0)
    api.start()
    host, port = api.address
    yield Stack(url=f"http://{host}:{port}", token=admin, viewer=viewer)
    api.stop()
    queue.stop()


def cli(stack: Stack, *args: str, input: str | None = None, token: str | None = None):
    env = {"REMORA_API_URL": stack.url, "REMORA_TOKEN": token or stack.token, "NO_COLOR": "1"}
    result = CliRunner().invoke(app, list(args), input=input, env=env)
    code = result.exit_code
    if isinstance(result.exception, RemoraError):
        code = int(result.exception.exit_code)
    elif result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return code, result


def ok(stack: Stack, *args: str, **kw):
    code, result = cli(stack, *args, **kw)
    assert code == 0, (code, result.output, result.exception)
    return result


def test_submit_prints_the_job_id_and_json_shapes(stack):
    result = ok(stack, "submit", "--", "sh", "-c", "exit 3")
    job_id = result.stdout.strip()
    assert len(job_id) == 36
    job = json.loads(ok(stack, "jobs", "show", job_id, "--json").stdout)
    assert job["command"] == "sh" and job["args"] == "-c 'exit 3'" and job["server"]["name"] == "local"
    job = json.loads(ok(stack, "submit", "--json", "-p", "2", "-t", "2m", "-e", "A=1", "--name", "n1", "--", "echo", "x y").stdout)
    assert (job["priority"], job["timeout"], job["name"], job["args"]) == (2, 120, "n1", "'x y'")


def test_script_from_stdin(stack):
    job_id = ok(stack, "submit", "--script", "-", "--shell", "/bin/sh", "--", "a1", input="echo $1\n").stdout.strip()
    job = json.loads(ok(stack, "jobs", "show", job_id, "--json").stdout)
    assert job["script"] == "echo $1\n" and job["shell"] == "/bin/sh" and job["args"] == "a1"


def test_servers_add_list_show_update_rm(stack, tmp_path):
    key = tmp_path / "id"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot really\n-----END OPENSSH PRIVATE KEY-----\n")
    ok(stack, "servers", "add", "pw-1", "--host", "10.9.9.9", "--user", "u", "--password-stdin", "--tag", "t1", input="secret\n")
    data = json.loads(ok(stack, "servers", "show", "pw-1", "--json").stdout)
    assert data["has_password"] is True and "secret" not in json.dumps(data) and data["tags"] == ["t1"]
    ok(stack, "servers", "update", "pw-1", "--port", "2222", "--tag", "t2")
    data = json.loads(ok(stack, "servers", "show", "pw-1", "--json").stdout)
    assert data["port"] == 2222 and data["tags"] == ["t2"]
    listed = json.loads(ok(stack, "servers", "list", "--json").stdout)["servers"]
    assert {"local", "pw-1"} <= {s["name"] for s in listed}
    assert "pw-1" in ok(stack, "servers", "list").stdout
    code, result = cli(stack, "servers", "add", "pw-1", "--host", "h", "--user", "u", "--password-stdin", input="x\n")
    assert code == 1 and isinstance(result.exception, Conflict)
    ok(stack, "servers", "rm", "pw-1")
    code, result = cli(stack, "servers", "show", "pw-1")
    assert code == 1 and isinstance(result.exception, NotFound)


def test_tags_fan_out_into_a_batch(stack):
    for name in ("t-a", "t-b"):
        ok(stack, "servers", "add", name, "--host", "127.0.0.1", "--user", "u", "--password-stdin", "--tag", "fan", input="pw\n")
    data = json.loads(ok(stack, "submit", "--tag", "fan", "--json", "--", "hostname").stdout)
    assert len(data["jobs"]) == 2 and data["batch_id"]
    listed = json.loads(ok(stack, "jobs", "list", "--batch", data["batch_id"], "--json").stdout)
    assert listed["pagination"]["total"] == 2
    table = ok(stack, "jobs", "list", "--server", "t-a").stdout
    assert "hostname" in table and "t-a" in table


def test_jobfile_submission_with_three_servers(stack, tmp_path):
    for name in ("y-1", "y-2", "y-3"):
        ok(stack, "servers", "add", name, "--host", "127.0.0.1", "--user", "u", "--password-stdin", input="pw\n")
    path = tmp_path / "j.yaml"
    path.write_text("name: yaml-batch\ncommand: uptime\nservers: [y-1, y-2, y-3]\npriority: 3\n")
    data = json.loads(ok(stack, "run", "-f", str(path), "--json").stdout)
    assert len(data["jobs"]) == 3 and {j["batch_id"] for j in data["jobs"]} == {data["batch_id"]}
    assert {j["priority"] for j in data["jobs"]} == {3}


def test_abbreviated_ids_resolve_or_are_reported(stack):
    job_id = ok(stack, "submit", "--", "echo", "abbrev").stdout.strip()
    shown = json.loads(ok(stack, "jobs", "show", job_id[:6], "--json").stdout)
    assert shown["id"] == job_id
    client = Client(stack.url, stack.token)
    ids = [j["id"] for j in client.iter_jobs()]
    while len({i[0] for i in ids}) == len(ids):  # ids are random: until two share a first digit (17 always do)
        ids.append(ok(stack, "submit", "--", "true").stdout.strip())
    firsts = [i[0] for i in ids]
    shared = next(c for c in firsts if firsts.count(c) > 1)
    code, result = cli(stack, "jobs", "show", shared)
    assert code == ExitCode.USAGE and "ambiguous" in result.exception.message
    code, result = cli(stack, "jobs", "show", "nothex")
    assert code == 1 and isinstance(result.exception, NotFound)


def test_cancel_a_queued_job_then_cancel_again_fails(stack):
    job_id = ok(stack, "submit", "--", "sleep", "100").stdout.strip()
    ok(stack, "jobs", "cancel", job_id[:8])
    job = json.loads(ok(stack, "jobs", "show", job_id, "--json").stdout)
    assert job["status"] == "canceled"
    code, result = cli(stack, "jobs", "cancel", job_id, "--json")
    assert code == 1 and json.loads(result.stdout)[0]["canceled"] is False
    code, _ = cli(stack, "jobs", "wait", job_id)
    assert code == ExitCode.JOB_CANCELED


def test_priority_moves_a_queued_job_and_refuses_a_finished_one(stack):
    job_id = ok(stack, "submit", "--priority", "7", "--", "sleep", "100").stdout.strip()
    moved = json.loads(ok(stack, "jobs", "priority", job_id[:8], "2", "--json").stdout)
    assert moved["priority"] == 2 and moved["id"] == job_id
    assert json.loads(ok(stack, "jobs", "show", job_id, "--json").stdout)["priority"] == 2
    ok(stack, "jobs", "cancel", job_id)
    code, _ = cli(stack, "jobs", "priority", job_id, "1")
    assert code == 1  # only queued jobs change priority


def test_wait_gives_up_with_75(stack):
    job_id = ok(stack, "submit", "--", "sleep", "100").stdout.strip()
    asked = time.monotonic()
    code, result = cli(stack, "jobs", "wait", job_id, "--timeout", "1")
    assert code == ExitCode.WAIT_TIMEOUT and "gave up waiting" in result.exception.message
    assert time.monotonic() - asked < 5  # soon after its --timeout, not at the client's socket timeout
    ok(stack, "jobs", "cancel", job_id)


def test_duplicate_changes_server_and_priority(stack):
    job_id = ok(stack, "submit", "--", "echo", "dup").stdout.strip()
    copy = json.loads(ok(stack, "jobs", "duplicate", job_id[:8], "--server", "local", "--priority", "1", "--json").stdout)
    assert copy["priority"] == 1 and copy["command"] == "echo" and copy["id"] != job_id


def test_tokens_wrong_or_too_weak_exit_77(stack):
    code, result = cli(stack, "jobs", "list", token="rmr_wrong")
    assert code == ExitCode.AUTH and isinstance(result.exception, Unauthorized)
    code, result = cli(stack, "submit", "--", "true", token=stack.viewer)
    assert code == ExitCode.AUTH
    assert ok(stack, "jobs", "list", token=stack.viewer).stdout


def test_api_validation_errors_are_usage_errors(stack):
    code, result = cli(stack, "submit", "-s", "no-such-server", "--", "true")
    assert code in (ExitCode.USAGE, 1) and isinstance(result.exception, (ValidationError, NotFound))
    assert "no-such-server" in result.exception.message


def test_keys_upload_list_rm(stack, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    path = tmp_path / "deploy.pem"
    path.write_bytes(pem)
    ok(stack, "keys", "upload", str(path), "--name", "cli-test.pem")
    files = json.loads(ok(stack, "keys", "list", "--json").stdout)["files"]
    assert "cli-test.pem" in {f["filename"] for f in files}
    assert pem.decode() not in ok(stack, "keys", "list", "--json").stdout
    ok(stack, "keys", "rm", "cli-test.pem")
    code, _ = cli(stack, "keys", "rm", "cli-test.pem")
    assert code == 1


def test_client_keeps_its_connection_alive(stack):
    client = Client(stack.url, stack.token)
    client.health()
    first = client._conn
    client.servers()
    client.list_jobs(limit=1)
    assert client._conn is first and first is not None
