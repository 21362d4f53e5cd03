"""The container image and compose.yaml, built and run for real with podman.

The image (Containerfile) is built on a Debian base made with debootstrap (no
registry needed), PostgreSQL comes from a small image built the same way
(tests/container/postgres/), and compose.yaml runs PostgreSQL, one queue, the
API and two workers. Jobs are submitted through the published API port from
the host and run on the built-in ``local`` server inside a worker container.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.cluster import ROOT
from tests.support.containers import (
    ComposeProject,
    build_image,
    ensure_base_image,
    ensure_zipapp,
    inspect,
    podman_env,
    require_podman,
    run,
)
from tests.support.http import request
from tests.support.waits import free_port, wait_until

pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.timeout(900)]  # a first run builds the base image

REMORA_IMAGE = "localhost/remora:test"
POSTGRES_IMAGE = "localhost/remora-test-postgres:bookworm"
SERVICES = ("postgres", "queue", "api", "worker-1", "worker-2")
STOP_ORDER = ("worker-1", "worker-2", "api", "queue", "postgres")
BEFORE, AFTER = 20, 3  # jobs submitted before and after the queue restart


@dataclass
class Images:
    env: dict[str, str]
    remora: str
    postgres: str


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Images:
    """The remora image (from a fresh dist/remora.pyz) and the test PostgreSQL image, on the debootstrap base."""
    require_podman()
    env = podman_env(tmp_path_factory.mktemp("podman"))
    ensure_zipapp()
    ensure_base_image(env)
    build_image(env, REMORA_IMAGE, ROOT, ROOT / "Containerfile")
    build_image(env, POSTGRES_IMAGE, ROOT / "tests/container/postgres", ROOT / "tests/container/postgres/Containerfile")
    return Images(env, REMORA_IMAGE, POSTGRES_IMAGE)


def unique(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(4)}"


def wait_healthy(port: int, timeout: float) -> None:
    def healthy() -> bool:
        try:
            return request("127.0.0.1", port, "GET", "/health", timeout=5).status == 200
        except OSError:
            return False

    wait_until(healthy, timeout, f"the API on 127.0.0.1:{port} to be healthy", interval=0.3)


def finished_job(port: int, token: str, job_id: str, timeout: float = 60) -> dict:
    def done() -> dict | None:
        reply = request("127.0.0.1", port, "GET", f"/api/v1/jobs/{job_id}", token=token)
        assert reply.status == 200, reply
        job = reply.data
        return job if job["status"] in ("completed", "failed", "canceled") else None

    return wait_until(done, timeout, f"job {job_id} to finish")


def queue_stats(port: int, token: str) -> dict:
    reply = request("127.0.0.1", port, "GET", "/api/v1/queue/stats", token=token)
    assert reply.status == 200, reply
    return reply.data


def submit(port: int, token: str, server_id: str, command: str) -> str:
    reply = request("127.0.0.1", port, "POST", "/api/v1/jobs", {"command": command, "server_id": server_id}, token=token)
    assert reply.status == 201, reply
    return reply.data["id"]


def test_image_runs_remora_up_as_non_root(images: Images) -> None:
    """The image's default command is `remora up` on 0.0.0.0 as user remora, with its admin token in the data volume."""
    image = inspect(images.env, "image", images.remora)
    config = image["Config"]
    assert config["User"] == "remora"
    assert "/var/lib/remora" in config["Volumes"]
    assert config["Cmd"] == ["remora", "up", "--host", "0.0.0.0"]
    assert image["Healthcheck"]["Test"] == ["CMD", "remora-healthcheck"]

    env, name, port = images.env, unique("remora-up-"), free_port()
    try:
        run(["podman", "run", "-d", "--init", "--name", name, "-p", f"127.0.0.1:{port}:8080", images.remora], env)
        wait_healthy(port, 60)
        assert request("127.0.0.1", port, "GET", "/api/v1/jobs").status == 401, "off loopback the API requires a token"
        token = run(["podman", "exec", name, "cat", "/var/lib/remora/admin.token"], env).stdout.strip()
        servers = request("127.0.0.1", port, "GET", "/api/v1/servers", token=token).data["servers"]
        local = next(s for s in servers if s["name"] == "local")
        job = finished_job(port, token, submit(port, token, local["id"], "echo up-ok; id -un"))
        assert job["status"] == "completed", job
        assert job["stdout"].split() == ["up-ok", "remora"]
        assert run(["podman", "healthcheck", "run", name], env, check=False).returncode == 0
        start = time.monotonic()
        run(["podman", "stop", "-t", "20", name], env)
        assert time.monotonic() - start < 8, "SIGTERM stops `remora up` promptly (--init forwards it)"
        assert inspect(env, "container", name)["State"]["ExitCode"] == 0
    finally:
        run(["podman", "rm", "-f", "-v", name], env, check=False)


@pytest.fixture
def stack(images: Images, tmp_path: Path) -> Iterator[tuple[ComposeProject, int]]:
    """compose.yaml up under a unique project name, API on a free loopback port; everything removed afterwards."""
    api_port, queue_port = free_port(), free_port()
    env = {
        **images.env,
        "REMORA_IMAGE": images.remora,
        "POSTGRES_IMAGE": images.postgres,
        "POSTGRES_PASSWORD": secrets.token_hex(12),
        "REMORA_QUEUE_TOKEN": secrets.token_hex(32),
        "REMORA_SECRET_KEY": secrets.token_hex(32),
        "REMORA_API_PORT": str(api_port),
        "REMORA_QUEUE_PORT": str(queue_port),
        "REMORA_WORKER_CONCURRENCY": "5",  # ten slots in all: some jobs wait in the queue while it restarts
    }
    project = ComposeProject(env, unique("remoratest"), ROOT / "compose.yaml", tmp_path)
    try:
        project.compose("up", "-d")
        try:
            wait_healthy(api_port, 120)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{project.logs(SERVICES)}") from None
        yield project, api_port
    finally:
        project.remove(STOP_ORDER)


def test_compose_runs_jobs_and_loses_none_across_a_queue_restart(stack: tuple[ComposeProject, int]) -> None:
    """A job submitted from the host runs on a worker container; after `podman restart` of the queue every job completes once."""
    project, port = stack
    env = project.env
    created = run(["podman", "exec", project.container("api"), "remora", "token", "create", "test", "--role", "admin", "--json"], env)
    token = json.loads(created.stdout)["token"]
    assert request("127.0.0.1", port, "GET", "/api/v1/jobs").status == 401
    for service in ("api", "queue"):
        bindings = inspect(env, "container", project.container(service))["HostConfig"]["PortBindings"]
        assert {b["HostIp"] for bs in bindings.values() for b in bs or []} == {"127.0.0.1"}, (service, bindings)

    reply = request(
        "127.0.0.1",
        port,
        "POST",
        "/api/v1/servers",
        {"name": "local", "hostname": "localhost", "user": "remora", "auth_type": "local"},
        token=token,
    )
    assert reply.status == 201, reply
    local = reply.data["id"]

    first = finished_job(port, token, submit(port, token, local, "echo hello-from-container; id -un"))
    assert first["status"] == "completed", first
    assert first["stdout"].split() == ["hello-from-container", "remora"]
    assert first["worker"] in ("worker-1", "worker-2")

    # More jobs than the two workers' ten slots: while the queue restarts some are running, the rest wait in it.
    before = [submit(port, token, local, f"sleep 2; echo before-{i}") for i in range(BEFORE)]
    held = queue_stats(port, token)
    assert held["ready"] > 0 and held["reserved"] > 0, held
    restarted = time.monotonic()
    run(["podman", "restart", "-t", "20", project.container("queue")], env, timeout=60)
    wait_healthy(port, 60)
    assert queue_stats(port, token)["uptime"] < time.monotonic() - restarted + 1, "the queue process is a new one"
    after = [submit(port, token, local, f"echo after-{i}") for i in range(AFTER)]

    for label, ids in (("before", before), ("after", after)):
        for i, job_id in enumerate(ids):
            job = finished_job(port, token, job_id, timeout=90)
            assert job["status"] == "completed", (job, project.logs(SERVICES))
            assert job["stdout"] == f"{label}-{i}\n"
            assert job["attempts"] == 1, job

    def drained() -> dict | None:
        stats = queue_stats(port, token)
        return stats if stats["ready"] == 0 and stats["reserved"] == 0 and stats["dead"] == 0 else None

    stats = wait_until(drained, 30, "the queue to hold no job")
    assert stats["workers"] == 2, stats
    jobs = request("127.0.0.1", port, "GET", "/api/v1/jobs?limit=100", token=token).data["jobs"]
    assert sorted(j["status"] for j in jobs) == ["completed"] * (1 + BEFORE + AFTER)
