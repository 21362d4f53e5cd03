"""Jump hosts (ProxyJump) with two real sshd: the target is reached over a direct-tcpip channel of the jump host.

The jump host's sshd logs at DEBUG1, so its log shows each forwarded connection
(``server_request_direct_tcpip ... target <host> port <port>``): that is how the
tests know a job went through it.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from remora import output
from remora.crypto import SecretBox
from remora.executor.base import BufferSink, ErrorKind, ExecRequest, Stream
from remora.executor.ssh import SSHExecutor
from remora.executor.sshpool import SSHPool
from remora.models import Job, Server
from remora.services.targets import target_for
from tests.support.api import running_api
from tests.support.sshd import SSHServer, wait_no_process
from tests.support.waits import wait_for
from tests.support.workerkit import add_server, init_db, kill_sessions, make_settings, ssh_target, submit, wait_status, worker_stack

pytestmark = pytest.mark.ssh

JUMP_CONFIG = ["LogLevel DEBUG1", "AllowTcpForwarding yes"]


def forwarded(jump: SSHServer, target: SSHServer) -> int:
    """How many direct-tcpip channels the jump host's sshd opened to ``target``."""
    text = jump.log_path.read_text(errors="replace") if jump.log_path.exists() else ""
    return len(re.findall(rf"direct.tcpip.*target {re.escape(target.host)} port {target.port}\b", text))


@pytest.fixture
def hosts(make_sshd):
    """(jump, target): the jump host on 127.0.0.1 (forwarding allowed, DEBUG1 log), the target on 127.0.0.2."""
    return make_sshd("127.0.0.1", JUMP_CONFIG), make_sshd("127.0.0.2")


@pytest.fixture
def settings(tmp_path):
    init_db(tmp_path)
    return make_settings(tmp_path)


def run(ex: SSHExecutor, command: str):
    sink = BufferSink()
    result = ex.run(ExecRequest(command=command), sink, threading.Event())
    return result, bytes(sink.stdout)


def test_a_job_runs_through_the_jump_host_and_both_host_keys_are_pinned(hosts, settings):
    jump, target = hosts
    pool = SSHPool()
    try:
        ex = SSHExecutor(ssh_target(target, jump=[ssh_target(jump)]), settings, pool=pool)
        result, out = run(ex, "echo through $((40 + 2))")
        assert result.exit_code == 0 and out == b"through 42\n", result
        assert forwarded(jump, target) == 1
        assert jump.accepted_connections() == 1 and target.accepted_connections() == 1
        pinned = settings.known_hosts_path.read_text()
        assert f"[{jump.host}]:{jump.port} " in pinned and f"[{target.host}]:{target.port} " in pinned
    finally:
        pool.close()


def test_jobs_reuse_the_pooled_jump_transport_and_targets_behind_it_share_it(hosts, make_sshd, settings):
    jump, target = hosts
    other = make_sshd("127.0.0.3")
    pool = SSHPool(max_sessions=3)
    try:
        hop = ssh_target(jump)
        ex = SSHExecutor(ssh_target(target, jump=[hop]), settings, pool=pool)
        ex_other = SSHExecutor(ssh_target(other, jump=[ssh_target(jump)]), settings, pool=pool)
        on_jump = SSHExecutor(hop, settings, pool=pool)  # jobs on the jump host itself
        for i in range(5):
            assert run(ex, f"echo {i}")[1] == f"{i}\n".encode()
        with ThreadPoolExecutor(6) as tp:  # more than max_sessions: a second target transport, still one jump transport
            results = list(tp.map(lambda i: ex.run(ExecRequest(command="sleep 0.3"), BufferSink(), threading.Event()), range(6)))
        assert all(r.exit_code == 0 for r in results)
        assert run(ex_other, "echo other")[1] == b"other\n"
        assert run(on_jump, "echo jump")[1] == b"jump\n"
        assert jump.accepted_connections() == 1  # one jump transport carried everything
        assert target.accepted_connections() == 2 and forwarded(jump, target) == 2
        assert other.accepted_connections() == 1 and forwarded(jump, other) == 1
        tunnels = {key[:2]: [t for _, t in conns] for key, conns in pool.stats().items()}
        assert tunnels[(jump.host, jump.port)] == [3]
    finally:
        pool.close()


def test_an_idle_target_closes_before_its_jump_host(hosts, settings):
    jump, target = hosts
    pool = SSHPool(idle_timeout=3600)
    try:
        ex = SSHExecutor(ssh_target(target, jump=[ssh_target(jump)]), settings, pool=pool)
        assert run(ex, "true")[0].exit_code == 0
        conns = {c.host: c for cs in pool._conns.values() for c in cs}
        assert conns[target.host].via is conns[jump.host] and conns[jump.host].tunnels == 1
        pool.idle_timeout = 0
        assert pool.sweep() == 1  # the target only: its jump host still carries its tunnel
        assert not conns[target.host].alive() and conns[jump.host].alive() and conns[jump.host].tunnels == 0
        assert pool.sweep() == 1 and not conns[jump.host].alive()
    finally:
        pool.close()


def test_a_dropped_jump_connection_is_replaced_for_the_next_job(hosts, settings):
    jump, target = hosts
    pool = SSHPool()
    try:
        ex = SSHExecutor(ssh_target(target, jump=[ssh_target(jump)]), settings, pool=pool)
        assert run(ex, "echo one")[1] == b"one\n"
        assert kill_sessions(jump) > 0  # the jump host's end of the pooled connection is gone
        wait_for(lambda: all(not c.alive() for cs in pool._conns.values() for c in cs), 5, what="both transports noticed")
        result, out = run(ex, "echo two")
        assert result.exit_code == 0 and out == b"two\n" and not result.attempt_errors, result
        assert jump.accepted_connections() == 2 and forwarded(jump, target) == 2
        assert pool.connection_count() == 2  # the dead pair was dropped, not kept beside the new one
    finally:
        pool.close()


def test_cancel_through_the_jump_kills_the_remote_process_group(hosts, settings):
    jump, target = hosts
    pool = SSHPool()
    try:
        ex = SSHExecutor(ssh_target(target, jump=[ssh_target(jump)]), settings, pool=pool)
        cancel = threading.Event()
        sink = BufferSink()
        box: dict = {}
        runner = threading.Thread(target=lambda: box.update(r=ex.run(ExecRequest(command="sleep 1042 & sleep 1042; wait"), sink, cancel)))
        runner.start()
        wait_for(lambda: target.run("pgrep -f '[s]leep 1042'").stdout.strip(), 5, what="remote sleep started")
        cancel.set()
        runner.join(10)
        assert box["r"].error_kind == ErrorKind.CANCELED.value
        assert wait_no_process(target, "sleep 1042", timeout=3)
        assert forwarded(jump, target) == 1
    finally:
        pool.close()


def test_the_target_host_key_is_checked_behind_the_jump(hosts, settings):
    jump, target = hosts
    pool = SSHPool()
    try:
        strict = SSHExecutor(ssh_target(target, jump=[ssh_target(jump)], host_key_policy="strict"), settings, pool=pool)
        result, _ = run(strict, "true")
        assert result.error_kind == ErrorKind.HOST_KEY.value and f"[{target.host}]:{target.port}" in result.error
        assert "unknown (policy strict)" in result.error
        ex = SSHExecutor(ssh_target(target, jump=[ssh_target(jump)]), settings, pool=pool)
        assert run(ex, "true")[0].exit_code == 0  # accept-new pins it
    finally:
        pool.close()
    target.regenerate_host_key()
    target.stop()
    target.start()
    pool = SSHPool()
    try:
        ex = SSHExecutor(ssh_target(target, jump=[ssh_target(jump)]), settings, pool=pool)
        result, _ = run(ex, "true")
        assert result.error_kind == ErrorKind.HOST_KEY.value and "CHANGED" in result.error
        assert target.host_key_fingerprint() in result.error
    finally:
        pool.close()


def test_the_jump_hosts_own_key_is_checked_and_its_errors_name_it(hosts, settings):
    jump, target = hosts
    pool = SSHPool()
    try:
        hop = ssh_target(jump, name="bastion", host_key_policy="strict")
        result, _ = run(SSHExecutor(ssh_target(target, jump=[hop]), settings, pool=pool), "true")
        assert result.error_kind == ErrorKind.HOST_KEY.value
        assert result.error.startswith("jump host bastion: host key for ") and f"[{jump.host}]:{jump.port}" in result.error
        assert target.accepted_connections() == 0 and forwarded(jump, target) == 0
        jump.stop()
        result, _ = run(SSHExecutor(ssh_target(target, jump=[ssh_target(jump, name="bastion")]), settings, pool=pool), "true")
        assert result.error_kind == ErrorKind.CONNECTION.value and "jump host bastion: cannot connect to" in result.error
    finally:
        pool.close()


def test_a_jump_host_that_refuses_forwarding_is_a_clear_connection_error(make_sshd, settings):
    jump, target = make_sshd("127.0.0.1", ["AllowTcpForwarding no"]), make_sshd("127.0.0.2")
    pool = SSHPool()
    try:
        ex = SSHExecutor(ssh_target(target, jump=[ssh_target(jump, name="bastion")]), settings, pool=pool)
        result, _ = run(ex, "true")
        assert result.error_kind == ErrorKind.CONNECTION.value
        assert f"jump host bastion: cannot forward to {target.host}:{target.port}" in result.error
        assert target.accepted_connections() == 0
    finally:
        pool.close()


def test_a_chain_of_two_jump_hosts(make_sshd, settings):
    first, second = make_sshd("127.0.0.1", JUMP_CONFIG), make_sshd("127.0.0.2", JUMP_CONFIG)
    target = make_sshd("127.0.0.3")
    pool = SSHPool()
    try:
        ex = SSHExecutor(ssh_target(target, jump=[ssh_target(first), ssh_target(second)]), settings, pool=pool)
        result, out = run(ex, "echo deep")
        assert result.exit_code == 0 and out == b"deep\n", result
        assert forwarded(first, second) == 1 and forwarded(second, target) == 1 and forwarded(first, target) == 0
    finally:
        pool.close()


# -- the worker, with servers stored in the database ----------------------------------


@pytest.fixture
def worker_env(tmp_path):
    with worker_stack(tmp_path, concurrency=4) as (settings, client, _, box):
        yield settings, client, box


def test_worker_job_and_cancel_through_a_jump_server(worker_env, hosts):
    settings, q, box = worker_env
    jump, target = hosts
    bastion = add_server(box, jump, name="bastion")
    inner = add_server(box, target, name="inner", jump_server=bastion)
    job = submit(q, inner, settings, command="echo inner-ok")
    row = wait_status(job.id)
    assert row.status == "completed", row.error
    assert output.read_stream(job.id, Stream.STDOUT) == b"inner-ok\n"
    assert forwarded(jump, target) == 1
    long = submit(q, inner, settings, script="sleep 1043 &\nbash -c 'sleep 1043'\n", shell="/bin/bash")
    wait_for(lambda: Job.get_by_id(long.id).remote_pid, 5, what="remote pid recorded")
    Job.update(cancel_requested=True).where(Job.id == long.id).execute()
    q.cancel(long.id)
    row = wait_status(long.id, "canceled", timeout=5)
    assert row.error == "canceled"
    assert wait_no_process(target, "sleep 1043", timeout=3)
    assert jump.accepted_connections() == 1 and forwarded(jump, target) == 1  # pooled: both jobs over one tunnel


def test_target_for_builds_the_chain_and_refuses_a_loop_stored_behind_the_api(tmp_path, make_sshd):
    init_db(tmp_path)
    settings = make_settings(tmp_path)
    box = SecretBox.from_settings(settings)
    a = Server.create(name="a", hostname="10.0.0.1", user="u", auth_type="password", password=box.encrypt("p"))
    b = Server.create(name="b", hostname="10.0.0.2", user="u", auth_type="password", password=box.encrypt("p"), jump_server=a)
    c = Server.create(name="c", hostname="10.0.0.3", user="u", auth_type="password", password=box.encrypt("p"), jump_server=b)
    target = target_for(c, settings, box)
    assert [hop.name for hop in target.jump] == ["a", "b"] and [h.name for h in target.hop_route[1].jump] == ["a"]
    Server.update(jump_server=c.id).where(Server.id == a.id).execute()  # a loop written around the API
    from remora.errors import SSHError

    with pytest.raises(SSHError, match="loop c -> b -> a -> c"):
        target_for(Server.get_by_id(c.id), settings, box)


# -- the API ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with running_api(tmp_path_factory.mktemp("jump")) as api:
        yield api


def make(api, name=None, **fields):
    body = {"name": name or f"j-{uuid.uuid4().hex[:8]}", "hostname": "127.0.0.1", "user": "u", "auth_type": "password", "password": "pw"}
    body.update(fields)
    return api.post("/api/v1/servers", body)


def test_api_stores_the_jump_server_by_name_or_id_and_shows_its_name(api):
    bastion = make(api).json()
    inner = make(api, jump_server=bastion["name"])
    assert inner.status == 201, inner
    assert inner.json()["jump_server"] == bastion["name"] and inner.json()["jump_server_id"] == bastion["id"]
    other = make(api, jump_server=bastion["id"]).json()
    assert other["jump_server"] == bastion["name"]
    cleared = api.request("PUT", f"/api/v1/servers/{other['id']}", {"jump_server": None}).json()
    assert cleared["jump_server"] is None and cleared["jump_server_id"] is None


def test_api_refuses_unknown_self_loop_and_local_jumps(api):
    unknown = make(api, jump_server="no-such-server")
    assert unknown.status == 400 and "no server 'no-such-server'" in unknown.json()["error"]
    a = make(api).json()
    b = make(api, jump_server=a["name"]).json()
    itself = api.request("PUT", f"/api/v1/servers/{a['id']}", {"jump_server": a["name"]})
    assert itself.status == 400 and "cannot jump through itself" in itself.json()["error"]
    loop = api.request("PUT", f"/api/v1/servers/{a['id']}", {"jump_server": b["name"]})
    assert loop.status == 400 and f"loop {a['name']} -> {b['name']} -> {a['name']}" in loop.json()["error"]
    assert Server.get_by_id(a["id"]).jump_server_id is None  # nothing was stored
    local = api.local_server_id()
    as_jump = make(api, jump_server="local")
    assert as_jump.status == 400 and "local server and cannot be a jump host" in as_jump.json()["error"]
    behind = api.request("PUT", f"/api/v1/servers/{local}", {"jump_server": a["name"]})
    assert behind.status == 400 and "local and cannot have a jump_server" in behind.json()["error"]
    to_local = api.request("PUT", f"/api/v1/servers/{a['id']}", {"auth_type": "local"})
    assert to_local.status == 400 and "is a jump host and cannot be local" in to_local.json()["error"]


def test_deleting_a_jump_server_in_use_is_refused_naming_its_users(api):
    bastion = make(api).json()
    inner = make(api, jump_server=bastion["name"]).json()
    reply = api.request("DELETE", f"/api/v1/servers/{bastion['id']}")
    assert reply.status == 409 and inner["name"] in reply.json()["error"]
    assert reply.json()["details"]["jump_server_of"] == [inner["name"]]
    assert api.request("DELETE", f"/api/v1/servers/{inner['id']}").status == 200
    assert api.request("DELETE", f"/api/v1/servers/{bastion['id']}").status == 200


def test_servers_test_reports_each_hops_latency(api, hosts):
    jump, target = hosts
    bastion = make(api, hostname=jump.host, port=jump.port, user=jump.user, auth_type="key", password=None, private_key=jump.private_key)
    inner = make(
        api, hostname=target.host, port=target.port, user=target.user, auth_type="key", password=None,
        private_key=target.private_key, jump_server=bastion.json()["name"],
    )  # fmt: skip
    assert inner.status == 201, inner
    started = time.monotonic()
    reply = api.post(f"/api/v1/servers/{inner.json()['id']}/test")
    assert reply.status == 200, reply
    body = reply.json()
    hops = body["hops"]
    assert [(h["name"], h["host"], h["port"]) for h in hops] == [
        (bastion.json()["name"], jump.host, jump.port),
        (inner.json()["name"], target.host, target.port),
    ]
    assert all(0 < h["ms"] <= (time.monotonic() - started) * 1000 for h in hops)
    assert body["host_key_fingerprint"] == target.host_key_fingerprint()
    assert forwarded(jump, target) == 1
    jump.stop()
    failed = api.post(f"/api/v1/servers/{inner.json()['id']}/test")
    assert failed.status == 503 and f"jump host {bastion.json()['name']}: cannot connect to" in failed.json()["error"]


def cli(api, *args: str, input: str | None = None):
    from typer.testing import CliRunner

    from remora.cli import app

    env = {"REMORA_API_URL": f"http://{api.host}:{api.port}", "REMORA_TOKEN": api.tokens["admin"], "NO_COLOR": "1", "COLUMNS": "300"}
    return CliRunner().invoke(app, list(args), input=input, env=env)


def test_cli_add_with_jump_test_shows_each_hop_and_no_jump_clears_it(api, hosts):
    jump, target = hosts
    bastion, inner = f"bastion-{uuid.uuid4().hex[:6]}", f"inner-{uuid.uuid4().hex[:6]}"
    for name, srv, extra in ((bastion, jump, []), (inner, target, ["--jump", bastion])):
        result = cli(api, "servers", "add", name, "--host", srv.host, "--port", str(srv.port), "--user", srv.user,
                     "--key-file", str(srv.key_path), *extra)  # fmt: skip
        assert result.exit_code == 0, result.output
    listed = cli(api, "servers", "list")
    assert f"{target.user}@{target.host}:{target.port} via {bastion}" in listed.output
    tested = cli(api, "servers", "test", inner)
    assert tested.exit_code == 0, tested.output
    assert re.search(rf"^\s+{bastion} \({jump.host}:{jump.port}\): \d+ ms$", tested.output, re.M), tested.output
    assert re.search(rf"^\s+{inner} \({target.host}:{target.port}\): \d+ ms$", tested.output, re.M), tested.output
    refused = cli(api, "servers", "update", bastion, "--jump", inner)
    assert refused.exit_code != 0 and f"loop {bastion} -> {inner} -> {bastion}" in str(refused.exception or refused.output)
    assert cli(api, "servers", "update", inner, "--no-jump").exit_code == 0
    assert Server.get(Server.name == inner).jump_server_id is None
