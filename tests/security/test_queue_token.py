"""The queue has a token by default, also on loopback; `--no-auth` off loopback is refused.

Real processes: `remora queue serve` and `remora up` as subprocesses on
loopback, and `remora up --no-auth --host 0.0.0.0` inside a network namespace
created for the test (so that a bind, if the check failed, reaches no real
network).
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from remora.client import Client
from remora.errors import ConfigError, QueueError
from remora.netqueue import protocol as p
from remora.netqueue.client import QueueClient
from remora.netqueue.server import QueueServer
from tests.support.cluster import ROOT
from tests.support.waits import free_port, wait_for

REMORA = str(Path(sys.executable).with_name("remora"))


def base_env(home: Path, **extra: str) -> dict[str, str]:
    env = {"PYTHONPATH": str(ROOT), "HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    env.update(extra)
    return env


def http_health(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
        return resp.status == 200


@contextmanager
def queue_serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen, int]]:
    port = free_port()
    argv = [REMORA, "queue", "serve", "--port", str(port), "--data-dir", str(tmp_path / "q"), *args]
    log = (tmp_path / f"queue-{port}.log").open("wb")
    proc = subprocess.Popen(argv, env=env or base_env(tmp_path), stdout=log, stderr=log)
    try:
        wait_for(lambda: proc.poll() is None and http_health(port), 20, what="the queue's /health")
        yield proc, port
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def raw_request(port: int, opcode: int, body: bytes, *, hello: str | None = None) -> tuple[bool, bytes]:
    """Send one frame (after an optional HELLO with ``hello`` as token) on a fresh socket: (is_error, reply body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        frames = b""
        if hello is not None:
            frames += p.frame(p.OP_HELLO, 1, p.encode_hello("raw", hello))
        frames += p.frame(opcode, 2, body)
        sock.sendall(frames)
        buf = b""
        replies: dict[int, tuple[bool, bytes]] = {}
        while 2 not in replies:
            chunk = sock.recv(65536)
            assert chunk, "the server closed the connection without answering"
            buf += chunk
            while len(buf) >= 4 and len(buf) >= 4 + p.LENGTH.unpack_from(buf, 0)[0]:
                length = p.LENGTH.unpack_from(buf, 0)[0]
                _, _, _, flags, rid = p.HEADER.unpack_from(buf, 0)
                replies[rid] = (bool(flags & p.FLAG_ERROR), buf[p.HEADER_SIZE : 4 + length])
                buf = buf[4 + length :]
        return replies[2]


UNAUTHENTICATED_OPS = [
    ("RESERVE", p.OP_RESERVE, p.encode_reserve(["job_queue"], 0, 1, "intruder")),
    ("CANCEL", p.OP_CANCEL, p.encode_id("some-job")),
    ("DLQ_PURGE", p.OP_DLQ_PURGE, p.encode_ids(None)),
    ("REGISTER", p.OP_REGISTER, p.encode_register("fake-worker", "nowhere", 8)),
]


def assert_refuses_unauthenticated(port: int) -> None:
    for name, opcode, body in UNAUTHENTICATED_OPS:
        for hello in (None, ""):
            is_error, reply = raw_request(port, opcode, body, hello=hello)
            assert is_error, f"{name} without a token was served"
            assert p.decode_error(reply)[0] == "UNAUTHORIZED", (name, reply)
    with pytest.raises(QueueError) as err:
        QueueClient(f"127.0.0.1:{port}", connect_timeout=3).reserve(["job_queue"], timeout=0)
    assert err.value.code == "UNAUTHORIZED"


# -- the loopback decision -----------------------------------------------------


def test_localhost_is_loopback_and_127_example_com_is_not():
    from remora.netaddr import is_loopback

    assert is_loopback("localhost") and is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("[::1]")
    for host in ("127.example.com", "", "0.0.0.0", "::", "192.0.2.1", "no-such-host.invalid"):
        assert not is_loopback(host), host


def test_the_queue_refuses_127_example_com_without_a_token():
    with pytest.raises(ConfigError, match="token"):
        QueueServer(host="127.example.com", port=0, persistence=False)


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0 or (not Path("/usr/sbin/ip").exists() and not Path("/sbin/ip").exists()):
        pytest.skip("needs root and iproute2 to create a network namespace")
    name = f"remora-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True, capture_output=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def listening(ns: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "ss", "-Hltn"], capture_output=True, text=True, check=True).stdout.strip()


def test_up_no_auth_off_loopback_is_refused(netns, tmp_path):
    argv = ["ip", "netns", "exec", netns, REMORA, "up", "--no-auth", "--host", "0.0.0.0", "--port", "18080", "--queue-port", "19000"]
    proc = subprocess.Popen(
        [*argv, "--data-dir", str(tmp_path / "d")], env=base_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        seen = listening(netns)
        proc.kill()
        proc.wait(10)
        pytest.fail(f"`remora up --no-auth --host 0.0.0.0` kept running; listening: {seen!r}")
    assert proc.returncode != 0
    assert b"--no-auth" in err and b"loopback" in err and b"0.0.0.0" in err, err
    assert listening(netns) == ""


# -- a default `remora queue serve` --------------------------------------------


def test_default_queue_serve_has_a_token_and_remoras_clients_use_it(tmp_path):
    with queue_serve(tmp_path) as (proc, port):
        token_file = tmp_path / ".local" / "share" / "remora" / "queue.token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert len(token) >= 40
        assert_refuses_unauthenticated(port)
        with QueueClient(f"127.0.0.1:{port}", token=token) as client:
            assert client.put("j1") is True
        # the CLI finds the token the same way the server wrote it
        stats = subprocess.run(
            [REMORA, "queue", "stats", "--json", "--addr", f"127.0.0.1:{port}"], env=base_env(tmp_path), capture_output=True, timeout=30
        )
        assert stats.returncode == 0, stats.stderr
        assert json.loads(stats.stdout)["jobs"] == 1
        assert token.encode() not in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        # a restart keeps the same token
    with queue_serve(tmp_path) as (_, port):
        assert token_file.read_text().strip() == token
        assert QueueClient(f"127.0.0.1:{port}", token=token).ping() >= 0


def test_a_client_without_the_token_gets_a_clear_error(tmp_path):
    with queue_serve(tmp_path) as (_, port):
        other_home = tmp_path / "elsewhere"
        other_home.mkdir()
        run = subprocess.run(
            [REMORA, "queue", "stats", "--addr", f"127.0.0.1:{port}"], env=base_env(other_home), capture_output=True, text=True, timeout=30
        )
        assert run.returncode != 0
        assert "needs a token" in run.stderr and "REMORA_QUEUE_TOKEN" in run.stderr, run.stderr


def test_the_token_never_shows_in_argv(tmp_path):
    secret = "file-secret-" + uuid.uuid4().hex
    token_file = tmp_path / "qtoken"
    token_file.write_text(secret + "\n")
    token_file.chmod(0o600)
    with queue_serve(tmp_path, "--token-file", str(token_file)) as (proc, port):
        assert secret.encode() not in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        ps = subprocess.run(["ps", "-ww", "-o", "args=", "-p", str(proc.pid)], capture_output=True, text=True).stdout
        assert secret not in ps
        assert QueueClient(f"127.0.0.1:{port}", token=secret).put("x") is True
        assert_refuses_unauthenticated(port)
    env_secret = "env-secret-" + uuid.uuid4().hex
    with queue_serve(tmp_path, env=base_env(tmp_path, REMORA_QUEUE_TOKEN=env_secret)) as (proc, port):
        assert env_secret.encode() not in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert QueueClient(f"127.0.0.1:{port}", token=env_secret).put("y") is True
    help_text = subprocess.run([REMORA, "queue", "serve", "--help"], env=base_env(tmp_path), capture_output=True, text=True).stdout
    assert "--token-file" in help_text and "--token " not in help_text


def test_an_explicitly_empty_token_serves_without_one_on_loopback_only(tmp_path):
    config = tmp_path / "remora.toml"
    config.write_text('[queue]\ntoken = ""\n')
    env = base_env(tmp_path, REMORA_CONFIG=str(config))
    with queue_serve(tmp_path, env=env) as (_, port):
        with QueueClient(f"127.0.0.1:{port}") as client:
            assert client.put("open") is True and client.reserve(["job_queue"], timeout=0)
        assert not (tmp_path / ".local" / "share" / "remora" / "queue.token").exists()
    refused = subprocess.run(
        [REMORA, "queue", "serve", "--host", "0.0.0.0", "--port", str(free_port()), "--data-dir", str(tmp_path / "q2")],
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert refused.returncode == 78 and b"token" in refused.stderr, refused.stderr


# -- `remora up`'s queue ---------------------------------------------------------


def test_up_queue_needs_the_token_and_its_own_parts_use_it(tmp_path):
    data_dir = tmp_path / "data"
    port, queue_port = free_port(), free_port()
    argv = [REMORA, "up", "--data-dir", str(data_dir), "--port", str(port), "--queue-port", str(queue_port), "--workers", "2"]
    log = (tmp_path / "up.log").open("wb")
    proc = subprocess.Popen(argv, env=base_env(tmp_path), stdout=log, stderr=log)
    try:
        wait_for(lambda: proc.poll() is None and http_health(port), 60, what="remora up's API /health (it pings the queue)")
        token_file = data_dir / "queue.token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert_refuses_unauthenticated(queue_port)
        env = base_env(tmp_path, REMORA_DATA_DIR=str(data_dir))
        workers = subprocess.run(
            [REMORA, "queue", "workers", "--json", "--addr", f"127.0.0.1:{queue_port}"], env=env, capture_output=True, timeout=30
        )
        assert workers.returncode == 0, workers.stderr
        assert len(json.loads(workers.stdout)) == 1  # up's worker registered through the token
        admin = (data_dir / "admin.token").read_text().strip()
        with Client(f"http://127.0.0.1:{port}", admin) as api:
            (job,) = api.submit({"command": "true", "servers": ["local"]})
            final = wait_for(lambda: (j := api.job(job["id"]))["status"] not in ("queued", "running") and j, 60, what="the job to finish")
            assert final["status"] in ("completed", "failed"), final  # the worker reserved it from the queue
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def test_a_long_lived_client_picks_up_a_token_file_made_after_it_started(tmp_path):
    from remora.config import load

    settings = load(env={"HOME": str(tmp_path), "REMORA_DATA_DIR": str(tmp_path / "data")})
    server = QueueServer(port=0, persistence=False, token="made-later")
    server.start()
    try:
        host, port = server.address
        client = QueueClient(f"{host}:{port}", token=settings.queue_token)  # as the worker and the API hold it
        with pytest.raises(QueueError) as err:
            client.ping()
        assert err.value.code == "UNAUTHORIZED" and "needs a token" in str(err.value)
        settings.queue_token_path.parent.mkdir(parents=True)
        settings.queue_token_path.write_text("made-later\n")
        assert client.put("now") is True
        client.close()
    finally:
        server.stop()
