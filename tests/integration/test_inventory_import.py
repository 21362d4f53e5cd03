"""Inventory import over a real API (and the CLI against it): ssh_config, Ansible INI/YAML, CSV, one request for 200 hosts."""

from __future__ import annotations

import json
import re
import time
import uuid

import pytest
from typer.testing import CliRunner

from remora.cli import app
from remora.errors import RemoraError
from remora.models import Server
from tests.support.api import assert_envelope, running_api
from tests.support.http import request

IMPORT = "/api/v1/servers/import"
PASSWORD = "csv-Pa55word-never-shown"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with running_api(tmp_path_factory.mktemp("inventory")) as api:
        yield api


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def imported(api, body, status=200):
    reply = api.post(IMPORT, body)
    assert reply.status == status, reply
    return reply.json()


def server(api, name: str) -> dict:
    servers = [s for s in api.get("/api/v1/servers").json()["servers"] if s["name"] == name]
    assert len(servers) == 1, (name, servers)
    return servers[0]


def cli(api, *args: str, input: str | None = None):
    env = {"REMORA_API_URL": f"http://{api.host}:{api.port}", "REMORA_TOKEN": api.tokens["admin"], "NO_COLOR": "1", "COLUMNS": "300"}
    result = CliRunner().invoke(app, list(args), input=input, env=env)
    code = result.exit_code
    if isinstance(result.exception, RemoraError):
        code = int(result.exception.exit_code)
    elif result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return code, result


def test_ssh_config_creates_then_updates_without_duplicates_and_skips_wildcards(api, sshd):
    a, b = unique("sc"), unique("sc")
    content = f"""
Host {a} {b}
    HostName 192.0.2.10
    User deploy
    Port 2222
Host *.internal
    User nobody
Host *
    Port 22
"""
    keys = {a: sshd.private_key, b: sshd.private_key}  # what the CLI sends for --key-file
    first = imported(api, {"format": "ssh-config", "content": content, "tags": ["imported"], "dry_run": False, "keys": keys})
    assert first["created"] == [a, b] and first["updated"] == [] and first["dry_run"] is False
    assert {s["name"]: s["reason"] for s in first["skipped"]} == {
        "*.internal": "wildcard pattern: its options apply to matching hosts; it is not a server",
        "*": "wildcard pattern: its options apply to matching hosts; it is not a server",
    }
    got = server(api, a)
    assert (got["hostname"], got["user"], got["port"], got["tags"]) == ("192.0.2.10", "deploy", 2222, ["imported"])
    assert got["auth_type"] == "key" and got["has_private_key"]
    # a second import without keys keeps the stored key
    second = imported(api, {"format": "ssh_config", "content": content.replace("2222", "2022"), "tags": ["again"]})
    assert second["created"] == [] and second["updated"] == [a, b]
    got = server(api, a)
    assert got["port"] == 2022 and got["tags"] == ["imported", "again"] and got["has_private_key"]
    assert Server.select().where(Server.name == a).count() == 1


def test_dry_run_reports_and_changes_nothing(api):
    name, existing = unique("dry"), unique("dry")
    imported(api, {"format": "csv", "content": f"name,hostname,user,password\n{existing},192.0.2.1,u,{PASSWORD}\n"})
    before = [(s.name, s.hostname, s.port, tuple(s.tags)) for s in Server.select().order_by(Server.name)]
    content = f"name,hostname,port,user,password,tags\n{name},192.0.2.2,22,u,{PASSWORD},x\n{existing},192.0.2.3,2200,u,,y\n"
    result = imported(api, {"format": "csv", "content": content, "dry_run": True})
    assert (result["created"], result["updated"], result["dry_run"]) == ([name], [existing], True)
    assert [(s.name, s.hostname, s.port, tuple(s.tags)) for s in Server.select().order_by(Server.name)] == before


def test_csv_create_update_and_password_never_returned(api):
    name = unique("csv")
    content = f'name,hostname,port,user,tags,auth_type,password\n{name},192.0.2.4,2201,ops,"web;eu",password,{PASSWORD}\n'
    reply = api.post(IMPORT, {"format": "csv", "content": content})
    assert reply.status == 200 and PASSWORD not in reply.body.decode()
    assert reply.json()["created"] == [name]
    got = server(api, name)
    assert (got["port"], got["user"], got["tags"], got["auth_type"], got["has_password"]) == (2201, "ops", ["web", "eu"], "password", True)
    assert PASSWORD.encode() not in bytes(Server.get(Server.name == name).password)
    again = imported(api, {"format": "csv", "content": f"name,hostname\n{name},192.0.2.44\n"})
    assert again["updated"] == [name] and server(api, name)["hostname"] == "192.0.2.44" and server(api, name)["has_password"]


def test_ansible_ini_and_yaml_groups_become_tags(api):
    w1, w2, d1 = unique("web"), unique("web"), unique("db")
    ini = f"""
[web]
{w1} ansible_host=192.0.2.21 ansible_port=2221
{w2} ansible_host=192.0.2.22
[db]
{d1} ansible_host=192.0.2.23 ansible_user=postgres
[prod:children]
web
db
[all:vars]
ansible_user=deploy
ansible_password={PASSWORD}
"""
    result = imported(api, {"format": "ansible", "content": ini})
    assert sorted(result["created"]) == sorted([w1, w2, d1]) and result["skipped"] == []
    assert (server(api, w1)["tags"], server(api, w1)["port"], server(api, w1)["user"]) == (["prod", "web"], 2221, "deploy")
    assert (server(api, d1)["tags"], server(api, d1)["user"]) == (["prod", "db"], "postgres")
    y1 = unique("yml")
    yaml_text = f"""
all:
  vars:
    ansible_user: deploy
    ansible_password: {PASSWORD}
  children:
    web:
      hosts:
        {w1}:
          ansible_host: 192.0.2.31
        {y1}:
          ansible_host: 192.0.2.32
          ansible_port: 2232
      children:
        canary:
          hosts:
            {y1}:
"""
    result = imported(api, {"format": "ansible", "content": yaml_text})
    assert result["created"] == [y1] and result["updated"] == [w1]
    assert (server(api, y1)["tags"], server(api, y1)["port"]) == (["web", "canary"], 2232)
    assert server(api, w1)["hostname"] == "192.0.2.31" and Server.select().where(Server.name == w1).count() == 1


@pytest.mark.parametrize(
    ("fmt", "content", "line"),
    [
        ("ssh_config", "Host good\n  HostName 192.0.2.1\n<<garbage>>\n", "line 3"),
        ("ansible", "[web]\nweb1 ansible_host=192.0.2.1\n[unclosed\n", "line 3"),
        ("ansible", "all:\n  children:\n    web: {hosts: [\n", "line 4"),
        ("csv", "name,hostname\nweb1,192.0.2.1\nweb2,192.0.2.2,surplus\n", "line 3"),
    ],
)
def test_garbage_is_a_400_naming_the_line_and_writes_nothing(api, fmt, content, line):
    count = Server.select().count()
    body = assert_envelope(api.post(IMPORT, {"format": fmt, "content": content}), 400, "INVENTORY_ERROR")
    assert body["error"].startswith(f"{line}:"), body
    assert Server.select().count() == count


def test_bad_hosts_are_skipped_with_the_reason_others_are_imported(api):
    good, bad_port, bad_name, jumped = unique("ok"), unique("bad"), "has space", unique("jmp")
    content = (
        f"name,hostname,user,password,auth_type\n{good},192.0.2.5,u,{PASSWORD},\n{bad_port},192.0.2.6,,{PASSWORD},\n"
        f'"{bad_name}",192.0.2.7,u,{PASSWORD},\nlocal,localhost,u,{PASSWORD},\n'
    )
    result = imported(api, {"format": "csv", "content": content})
    reasons = {s["name"]: s["reason"] for s in result["skipped"]}
    assert result["created"] == [good]
    assert "user is required" in reasons[bad_port] and "name" in reasons[bad_name] and "local" in reasons["local"]
    result = imported(api, {"format": "ssh_config", "content": f"Host {jumped}\n  User u\n  ProxyJump nowhere-{jumped}\n"})
    reason = f"ProxyJump nowhere-{jumped}: no host nowhere-{jumped} in this inventory and no server named nowhere-{jumped}"
    assert result["skipped"] == [{"name": jumped, "reason": reason}]
    assert not Server.select().where(Server.name == jumped).exists()


def test_proxyjump_to_a_host_of_the_same_import_or_an_existing_server_sets_jump_server(api, sshd):
    bastion, inner, later = unique("bastion"), unique("inner"), unique("later")
    # the host behind comes first in the file: jump hosts are written first anyway
    content = f"Host {inner}\n  User u\n  ProxyJump {bastion}\nHost {bastion}\n  User u\n  HostName 192.0.2.40\n"
    keys = {inner: sshd.private_key, bastion: sshd.private_key}
    preview = imported(api, {"format": "ssh_config", "content": content, "keys": keys, "dry_run": True})
    assert preview["created"] == [bastion, inner] and preview["skipped"] == []
    assert not Server.select().where(Server.name == bastion).exists()
    result = imported(api, {"format": "ssh_config", "content": content, "keys": keys})
    assert result["created"] == [bastion, inner]
    assert server(api, inner)["jump_server"] == bastion and server(api, bastion)["jump_server"] is None
    # a jump server that exists already
    result = imported(
        api, {"format": "ssh_config", "content": f"Host {later}\n  User u\n  ProxyJump {inner}\n", "keys": {later: sshd.private_key}}
    )
    assert result["created"] == [later] and server(api, later)["jump_server"] == inner


def test_jump_loops_and_skipped_jump_hosts_skip_the_hosts_behind(api):
    a, b, c = unique("a"), unique("b"), unique("c")
    header = "name,hostname,user,password,jump_server\n"
    loop = f"{header}{a},192.0.2.44,u,{PASSWORD},{b}\n{b},192.0.2.45,u,{PASSWORD},{a}\n"
    result = imported(api, {"format": "csv", "content": loop})
    assert result["created"] == []
    assert {s["name"]: s["reason"] for s in result["skipped"]} == {
        a: f"jump server loop: {a} -> {b} -> {a}",
        b: f"jump server loop: {a} -> {b} -> {a}",
    }
    behind_bad = f"{header}{c},192.0.2.46,u,{PASSWORD},{a}\n{a},192.0.2.47,,{PASSWORD},\n"  # a: no user
    result = imported(api, {"format": "csv", "content": behind_bad})
    reasons = {s["name"]: s["reason"] for s in result["skipped"]}
    assert result["created"] == [] and "user is required" in reasons[a] and reasons[c] == f"jump server {a} was skipped"


def test_the_api_never_reads_a_key_path_from_the_request(api, sshd):
    name = unique("path")
    # a readable, valid key on the API's own machine: had the API opened it, the server would exist
    content = f"Host {name}\n  HostName {sshd.host}\n  Port {sshd.port}\n  User {sshd.user}\n  IdentityFile {sshd.key_path}\n"
    result = imported(api, {"format": "ssh_config", "content": content})
    assert result["created"] == [] and [s["name"] for s in result["skipped"]] == [name]
    assert result["skipped"][0]["reason"].startswith("needs a key") and "never reads paths" in result["skipped"][0]["reason"]
    csv_text = f"name,hostname,user,key_file\n{name},{sshd.host},{sshd.user},{sshd.key_path}\n"
    assert imported(api, {"format": "csv", "content": csv_text})["skipped"][0]["reason"].startswith("needs a key")
    assert not Server.select().where(Server.name == name).exists()


def test_viewer_and_operator_may_not_import(api):
    content = f"name,hostname,user,password\n{unique('role')},192.0.2.8,u,{PASSWORD}\n"
    for role in ("viewer", "operator"):
        assert_envelope(api.post(IMPORT, {"format": "csv", "content": content}, token=role), 403)
    assert_envelope(api.post(IMPORT, {"format": "csv", "content": content}, token=None), 401)
    assert_envelope(api.post(IMPORT, {"format": "yaml", "content": content}), 400)


def test_cli_imports_ssh_config_reading_the_key_file_then_servers_test_logs_in(api, sshd, tmp_path):
    name, missing = unique("real"), unique("nokey")
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host {name}\n  HostName {sshd.host}\n  Port {sshd.port}\n  User {sshd.user}\n  IdentityFile {sshd.key_path}\n"
        f"Host {missing}\n  HostName {sshd.host}\n  User {sshd.user}\n  IdentityFile keys/absent_key\n"
    )
    code, result = cli(api, "servers", "import", str(config), "--format", "ssh-config", "--tag", "lab", "--json")
    assert code == 0, result.output
    data = json.loads(result.stdout)
    assert data["created"] == [name]
    assert data["skipped"] == [
        {"name": missing, "reason": f"cannot read key file {tmp_path / 'keys/absent_key'}: No such file or directory"}
    ]
    stored = Server.get(Server.name == name)
    assert stored.private_key is not None and sshd.private_key.encode() not in bytes(stored.private_key)
    assert server(api, name)["tags"] == ["lab"] and server(api, name)["auth_type"] == "key"
    code, result = cli(api, "servers", "test", name, "--json")
    assert code == 0, result.output
    assert json.loads(result.stdout)["status"] == "connection_successful"


def test_cli_human_output_dry_run_default_key_and_relative_key_files(api, sshd, tmp_path):
    name, keyed = unique("human"), unique("keyed")
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(f"[app]\n{name} ansible_host=192.0.2.9 ansible_user=u\n")
    code, result = cli(api, "servers", "import", str(inventory), "-f", "ansible", "--dry-run", "--key-file", str(sshd.key_path))
    assert code == 0, result.output
    assert f"+ {name}" in result.stdout and "1 would be created, 0 updated, 0 skipped (dry run: nothing changed)" in result.output
    assert not Server.select().where(Server.name == name).exists()
    code, result = cli(api, "servers", "import", "-", "-f", "ansible", "--key-file", str(sshd.key_path), input=inventory.read_text())
    assert code == 0 and "1 were created" in result.output and server(api, name)["tags"] == ["app"]
    assert server(api, name)["has_private_key"]
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "deploy").write_text(sshd.private_key)
    table = tmp_path / "fleet.csv"
    table.write_text(f"name,hostname,port,user,key_file\n{keyed},{sshd.host},{sshd.port},{sshd.user},keys/deploy\n")
    code, result = cli(api, "servers", "import", str(table), "-f", "csv")
    assert code == 0 and f"+ {keyed}" in result.stdout, result.output
    code, result = cli(api, "servers", "test", keyed)
    assert code == 0, result.output


def http_requests(api) -> int:
    reply = request(api.host, api.port, "GET", "/metrics", token=api.tokens["viewer"])
    assert reply.status == 200, reply
    counts = re.findall(r'^remora_http_requests_total\{.*route="([^"]+)".*\} ([0-9.e+]+)$', reply.body.decode(), re.M)
    return int(sum(float(value) for route, value in counts if route != "metrics"))


def test_200_hosts_take_one_request(api, sshd, tmp_path, capsys):
    names = [f"bulk-{uuid.uuid4().hex[:4]}-{i:03d}" for i in range(200)]
    config = tmp_path / "fleet"
    config.write_text(
        "".join(f"Host {n}\n  HostName 127.0.0.{1 + i % 200}\n  Port {sshd.port}\n  User {sshd.user}\n" for i, n in enumerate(names))
        + f"Host bulk-*\n  IdentityFile {sshd.key_path}\n"
    )
    before = http_requests(api)
    start = time.perf_counter()
    code, result = cli(api, "servers", "import", str(config), "--format", "ssh-config", "--json")
    elapsed = time.perf_counter() - start
    assert code == 0, result.output
    assert http_requests(api) - before == 1
    data = json.loads(result.stdout)
    assert sorted(data["created"]) == sorted(names) and [s["name"] for s in data["skipped"]] == ["bulk-*"]
    assert Server.select().where(Server.name.in_(names)).count() == 200
    with capsys.disabled():
        print(f"\n[inventory] 200 hosts imported in one request: {elapsed:.2f} s")
    start = time.perf_counter()
    code, result = cli(api, "servers", "import", str(config), "--format", "ssh-config", "--json")
    assert code == 0 and len(json.loads(result.stdout)["updated"]) == 200
    with capsys.disabled():
        print(f"[inventory] 200 hosts re-imported (updates) in one request: {time.perf_counter() - start:.2f} s")
