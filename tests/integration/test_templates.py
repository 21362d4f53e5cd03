"""Job templates over separate queue, API and worker processes: CRUD, checks at save, runs over real sshd and local.

The hostile parameter value is the proof that parameters never become shell syntax: it is echoed
literally, and the files its ``;``, ``$( )`` and backticks would create are looked for on disk.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from remora import models, services
from remora.client import Client
from remora.errors import RemoraError
from tests.support.cluster import Cluster
from tests.support.waits import wait_for


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, sshd) -> Iterator[Cluster]:
    if shutil.which("ssh") is None:
        pytest.skip("OpenSSH client missing")
    stack = Cluster(tmp_path_factory.mktemp("templates"))
    stack.start_queue()
    stack.start_api()
    stack.start_worker("w1", concurrency=4)
    stack.wait_workers(1)
    client = stack.client()
    client.create_server(
        {"name": "tpl-ssh", "hostname": sshd.host, "port": sshd.port, "user": sshd.user, "auth_type": "key",
         "private_key": sshd.private_key, "tags": ["tplfleet"]}
    )  # fmt: skip
    client.create_server({"name": "tpl-local", "hostname": "localhost", "user": "", "auth_type": "local", "tags": ["tplfleet"]})
    yield stack
    stack.stop()
    stack.close()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    where = Path(tempfile.mkdtemp(prefix="remora-tpl-"))
    os.chmod(where, 0o777)  # the sshd account and local jobs both may write here
    yield where
    shutil.rmtree(where)


def token_client(cluster: Cluster, role: str) -> Client:
    return Client(cluster.api_url, services.create_token(f"{role}-{uuid.uuid4().hex[:6]}", role)[1], timeout=30)


def error_of(call) -> RemoraError:
    with pytest.raises(RemoraError) as info:
        call()
    return info.value


def finished(client: Client, job_id: str) -> dict:
    wait_for(lambda: client.get(f"/api/v1/jobs/{job_id}", output="false")["status"] not in ("queued", "running"), 60, 0.1, "the job")
    return client.get(f"/api/v1/jobs/{job_id}")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


HOSTILE_PARAMS = [
    {"name": "value", "type": "string", "required": True, "description": "anything"},
    {"name": "count", "type": "int", "default": 2},
    {"name": "loud", "type": "bool", "default": False},
    {"name": "mode", "type": "choice", "choices": ["fast", "slow"], "default": "fast"},
]


def test_crud_and_a_duplicate_name_is_409(cluster):
    client = cluster.client()
    name = unique("crud")
    body = {"name": name, "description": "says hi", "command": "echo {{ who }}", "servers": ["tpl-ssh"],
            "parameters": [{"name": "who", "type": "string", "default": "world"}], "priority": 7, "env": {"A": "1"},
            "secret_env": {"API_PASSWORD": "hunter22"}, "rollout": {"concurrency": 1}}  # fmt: skip
    made = client.create_template(body)
    assert made["name"] == name and made["priority"] == 7 and made["parameters"][0]["default"] == "world"
    assert made["secret_env"] == {"API_PASSWORD": "***"} and "hunter22" not in str(made)
    assert made["rollout"] == {"concurrency": 1}
    assert name in [t["name"] for t in client.list_templates()]
    conflict = error_of(lambda: client.create_template(body))
    assert conflict.status == 409 and name in str(conflict)
    changed = client.update_template(name, {**body, "description": "says hello", "secret_env": {"API_PASSWORD": "hunter22"}})
    assert changed["description"] == "says hello" and client.get_template(name)["description"] == "says hello"
    client.delete_template(name)
    assert error_of(lambda: client.get_template(name)).status == 404
    services_audit_flush()
    actions = [(e.action, e.target_id) for e in models.AuditEvent.select().where(models.AuditEvent.target_id == name)]
    assert {("template_create", name), ("template_update", name), ("template_delete", name)} <= set(actions), actions


def services_audit_flush() -> None:
    """The API is another process: wait until its audit writer flushed (it writes every 0.2 s)."""
    wait_for(lambda: models.AuditEvent.select().where(models.AuditEvent.action == "template_delete").exists(), 10, 0.05, "audit rows")


@pytest.mark.parametrize(
    ("parameters", "command", "field", "words"),
    [
        ([{"name": "n", "type": "integer"}], "echo", "parameters", ["type", "string, int, bool, choice"]),
        ([{"name": "m", "type": "choice", "choices": ["a", "b"], "default": "c"}], "echo", "parameters", ["'m'", "default"]),
        ([{"name": "d"}, {"name": "d", "type": "int"}], "echo", "parameters", ["'d'", "twice"]),
        ([{"name": "x"}], "echo {{ y }}", "command", ["{{ y }}", "not a declared parameter"]),
        ([{"name": "pw", "secret": True}], "echo {{ pw }}", "command", ["secret", "$REMORA_PARAM_PW"]),
        ([{"name": "i", "type": "int", "default": True}], "echo", "parameters", ["'i'", "integer"]),
    ],
)
def test_bad_templates_are_refused_when_saved(cluster, parameters, command, field, words):
    client = cluster.client()
    name = unique("bad")
    err = error_of(lambda: client.create_template({"name": name, "command": command, "servers": ["tpl-ssh"], "parameters": parameters}))
    assert err.status == 400 and any(key.startswith(field) for key in err.details or {}), (err, err.details)
    for word in words:
        assert word in str(err), (word, str(err))
    assert error_of(lambda: client.get_template(name)).status == 404


@pytest.mark.parametrize("server", ["tpl-ssh", "tpl-local"])
def test_a_hostile_value_is_echoed_literally_and_creates_nothing(cluster, shared_dir, server):
    client = cluster.client()
    marker = shared_dir / "pwned"
    hostile = f"a; touch {marker} $(touch {marker}) `touch {marker}` \"'"
    name = unique("hostile")
    client.create_template(
        {"name": name, "servers": [server], "parameters": HOSTILE_PARAMS,
         "command": "echo {{ value }}; echo {{count}} {{ loud }} {{ mode }}; printf '%s|%s|%s|%s\\n' \"$REMORA_PARAM_VALUE\" "
                    "\"$REMORA_PARAM_COUNT\" \"$REMORA_PARAM_LOUD\" \"$REMORA_PARAM_MODE\""}
    )  # fmt: skip
    jobs = client.run_template(name, {"value": hostile, "count": 3, "loud": True})
    assert len(jobs) == 1 and jobs[0]["template"] == name
    assert jobs[0]["params"] == {"value": hostile, "count": "3", "loud": "true", "mode": "fast"}
    job = finished(client, jobs[0]["id"])
    assert job["status"] == "completed", job
    assert job["stdout"].splitlines() == [hostile, "3 true fast", f"{hostile}|3|true|fast"], job["stdout"]
    assert not marker.exists() and list(shared_dir.iterdir()) == []


def test_parameters_are_checked_on_every_run_and_a_400_names_them(cluster):
    client = cluster.client()
    name = unique("typed")
    client.create_template({"name": name, "command": "echo {{ value }}", "servers": ["tpl-ssh"], "parameters": HOSTILE_PARAMS})
    cases = [
        ({}, "value", "required"),
        ({"value": "x", "count": "three"}, "count", "integer"),
        ({"value": "x", "count": 1.5}, "count", "integer"),
        ({"value": "x", "count": True}, "count", "integer"),
        ({"value": "x", "loud": "yes"}, "loud", "true or false"),
        ({"value": "x", "mode": "medium"}, "mode", "one of fast, slow"),
        ({"value": "x", "colour": "red"}, "colour", "unknown"),
    ]
    for params, named, words in cases:
        err = error_of(lambda params=params: client.run_template(name, params))
        assert err.status == 400 and named in str(err) and words in str(err), (params, str(err))
    assert not models.Job.select().where(models.Job.template == name).exists()


def test_secret_parameters_are_secret_variables_and_masked_in_the_job(cluster):
    client = cluster.client()
    name = unique("secret")
    client.create_template(
        {"name": name, "servers": ["tpl-ssh"], "command": 'echo "got $REMORA_PARAM_TOKEN_VALUE" {{ note }}',
         "parameters": [{"name": "token_value", "secret": True, "required": True}, {"name": "note"}]}
    )  # fmt: skip
    job = client.run_template(name, {"token_value": "s3cr3t-value", "note": "n"})[0]
    assert job["params"] == {"token_value": "***", "note": "n"} and job["secret_env"] == {"REMORA_PARAM_TOKEN_VALUE": "***"}
    done = finished(client, job["id"])
    assert done["stdout"].strip() == "got *** n", done["stdout"]
    row = models.Job.get_by_id(job["id"])
    assert b"s3cr3t-value" not in bytes(row.secret_env) and "s3cr3t-value" not in (row.command + str(row.env) + str(row.params))


def test_a_run_on_several_servers_is_a_batch(cluster):
    client = cluster.client()
    name = unique("fleet")
    client.create_template({"name": name, "command": "echo {{ x }}", "servers": ["tag:tplfleet"], "parameters": [{"name": "x"}]})
    data = client.post(f"/api/v1/templates/{name}/run", {"params": {"x": "hi"}})
    assert data["batch_id"] and len(data["jobs"]) == 2
    assert all(finished(client, j["id"])["stdout"] == "hi\n" for j in data["jobs"])
    one = client.post(f"/api/v1/templates/{name}/run", {"params": {"x": "one"}, "servers": ["tpl-ssh"]})
    assert one["template"] == name and one["batch_id"] is None
    wait_for(lambda: models.AuditEvent.select().where(models.AuditEvent.action == "template_run", models.AuditEvent.target_id == one["id"]).exists(), 10, 0.05, "the run's audit row")  # fmt: skip
    event = models.AuditEvent.get(models.AuditEvent.action == "template_run", models.AuditEvent.target_id == one["id"])
    assert event.details["template"] == name and event.details["params"] == {"x": "one"}


def test_runner_may_read_and_run_templates_but_not_submit_or_edit(cluster):
    admin = cluster.client()
    runner = token_client(cluster, "runner")
    name = unique("runme")
    body = {"name": name, "command": "echo {{ x }}", "servers": ["tpl-ssh"], "parameters": [{"name": "x"}]}
    admin.create_template(body)
    assert name in [t["name"] for t in runner.list_templates()] and runner.get_template(name)["name"] == name
    job = runner.run_template(name, {"x": "by runner"})[0]
    assert finished(runner, job["id"])["stdout"] == "by runner\n"
    assert runner.get("/api/v1/jobs")["jobs"]
    forbidden = [
        lambda: runner.post("/api/v1/jobs", {"command": "true", "server_id": "tpl-ssh"}),
        lambda: runner.post("/api/v1/jobs/script", {"script": "true", "server_id": "tpl-ssh"}),
        lambda: runner.create_template({**body, "name": unique("nope")}),
        lambda: runner.update_template(name, body),
        lambda: runner.delete_template(name),
        lambda: runner.post(f"/api/v1/jobs/{job['id']}/rerun"),
    ]
    for call in forbidden:
        assert error_of(call).status == 403
    # A local target still needs security.local_server_role (admin by default), template or not.
    err = error_of(lambda: runner.run_template(name, {"x": "y"}, servers=["tpl-local"]))
    assert err.status == 403 and "security.local_server_role" in str(err)
    operator = token_client(cluster, "operator")
    assert operator.update_template(name, {**body, "description": "by operator"})["description"] == "by operator"
    operator.delete_template(name)


def cli(cluster: Cluster, *args: str, token: str | None = None, stdin: str | None = None, **extra: str) -> subprocess.CompletedProcess:
    env = {**cluster.env, "REMORA_API_URL": cluster.api_url, "REMORA_TOKEN": token or cluster.token, "NO_COLOR": "1", **extra}
    return subprocess.run(
        [sys.executable, "-m", "remora", *args], env=env, cwd=cluster.base, input=stdin, capture_output=True, text=True, timeout=120
    )


JOBS_YAML = """
jobs:
  - name: {name}
    description: greets someone
    servers: [tpl-ssh]
    command: echo hello {{{{ who }}}} $REMORA_PARAM_TIMES
    parameters:
      - name: who
        required: true
        description: whom to greet
      - name: times
        type: int
        default: 1
"""


def test_cli_push_then_run_with_set_and_wait(cluster, shared_dir, tmp_path):
    name = unique("cli")
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(JOBS_YAML.format(name=name))
    pushed = cli(cluster, "templates", "push", "-f", str(jobs))
    assert pushed.returncode == 0 and "created" in pushed.stdout, pushed.stderr
    again = cli(cluster, "templates", "push", "-f", str(jobs))
    assert again.returncode == 0 and "updated" in again.stdout, again.stderr
    assert cluster.client().get_template(name)["parameters"][1] == {
        "name": "times", "type": "int", "default": 1, "required": False, "secret": False, "description": ""
    }  # fmt: skip
    assert cli(cluster, "templates", "create", "-f", str(jobs)).returncode != 0  # a duplicate name
    listed = cli(cluster, "templates", "list")
    assert listed.returncode == 0 and name in listed.stdout
    shown = cli(cluster, "templates", "show", name)
    assert shown.returncode == 0 and "whom to greet" in shown.stdout
    edited = cli(cluster, "templates", "edit", name, EDITOR="sed -i s/greets/welcomes/", VISUAL="")
    assert edited.returncode == 0, edited.stderr
    after = cluster.client().get_template(name)
    assert after["description"] == "welcomes someone" and after["parameters"][0]["required"] is True
    marker = shared_dir / "made"
    ran = cli(cluster, "templates", "run", name, "--set", f"who=$(touch {marker})", "--set", "times=3", "--wait")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == f"hello $(touch {marker}) 3\n" and not marker.exists()
    job_id = cluster.client().get("/api/v1/jobs", search=name)["jobs"][0]["id"]
    shown_job = cli(cluster, "jobs", "show", job_id)
    rows = {line.split()[0]: line.split(None, 1)[1].strip() for line in shown_job.stdout.splitlines() if len(line.split()) > 1}
    assert rows["template"] == name and rows["params"] == f"times=3 who=$(touch {marker})", shown_job.stdout
    bad = cli(cluster, "templates", "run", name, "--set", "who=x", "--set", "times=many")
    assert bad.returncode != 0 and "times" in bad.stderr and "integer" in bad.stderr
    runner = services.create_token(unique("runner"), "runner")[1]
    assert cli(cluster, "templates", "run", name, "--set", "who=r", "--wait", token=runner).stdout == "hello r 1\n"
    assert cli(cluster, "templates", "delete", name, token=runner).returncode != 0
    assert cli(cluster, "templates", "delete", name).returncode == 0


def test_run_dash_f_binds_declared_parameters_with_param(cluster, shared_dir, tmp_path):
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(JOBS_YAML.format(name=unique("direct")))
    marker = shared_dir / "made"
    ran = cli(cluster, "run", "-f", str(jobs), "--param", f"who=`touch {marker}`;", "--follow")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == f"hello `touch {marker}`; 1\n" and not marker.exists()
    missing = cli(cluster, "run", "-f", str(jobs))
    assert missing.returncode != 0 and "who" in missing.stderr and "required" in missing.stderr


def test_the_readme_example_template_is_accepted(cluster):
    from remora import jobfile

    body = jobfile.load_file(Path(__file__).resolve().parents[2] / "examples" / "restart.yaml")[0].template_body()
    made = cluster.client().create_template({**body, "name": unique("restart")})
    assert made["parameters"][0]["choices"] == ["nginx", "php-fpm"] and made["rollout"] == {"concurrency": 1, "max_failures": 0}


def test_cli_edit_in_the_editor_keeps_the_stored_secret_values(cluster):
    name = unique("keep")
    cluster.client().create_template(
        {"name": name, "description": "checks", "command": 'test "$API_PASSWORD" = hunter22 && echo same || echo changed',
         "servers": ["tpl-ssh"], "secret_env": {"API_PASSWORD": "hunter22"}}
    )  # fmt: skip
    edited = cli(cluster, "templates", "edit", name, EDITOR="sed -i s/checks/verifies/", VISUAL="")
    assert edited.returncode == 0, edited.stderr
    assert cluster.client().get_template(name)["description"] == "verifies"
    ran = cli(cluster, "templates", "run", name, "--wait")
    assert ran.returncode == 0 and ran.stdout == "same\n", (ran.stdout, ran.stderr)
