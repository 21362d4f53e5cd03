"""End-to-end harness: `remora up` as a subprocess (from the checkout or the built zipapp) and the CLI against it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fixtures.services import free_port, missing, wait_for

ROOT = Path(__file__).resolve().parents[2]


def system_python() -> str:
    """A python3 that is not the test venv's (the zipapp must run on a bare interpreter)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if Path(candidate).exists():
            return candidate
    return sys.executable


@pytest.fixture(scope="session")
def zipapp(tmp_path_factory) -> Path:
    """dist.pyz built like the Makefile's `zipapp` target, into a temp dir."""
    shiv = Path(sys.executable).with_name("shiv")
    if not shiv.exists():
        missing("shiv (pip install shiv)")
    target = tmp_path_factory.mktemp("zipapp") / "dist.pyz"
    build = tmp_path_factory.mktemp("shiv-build")
    subprocess.run(
        [str(shiv), "-q", "--compressed", "-c", "remora", "-o", str(target), "-p", "/usr/bin/env python3", str(ROOT)],
        check=True, cwd=build, timeout=600, capture_output=True,
    )  # fmt: skip
    return target


@dataclass
class Remora:
    """A running `remora up` plus a way to run client commands against it."""

    argv: list[str]  # how to start remora: [python, -m, remora] or [python3, dist.pyz]
    env: dict[str, str]
    cwd: Path
    data_dir: Path
    port: int
    queue_port: int
    proc: subprocess.Popen | None = None
    log: Path | None = None
    banner: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, workers: int = 4) -> None:
        self.log = self.data_dir.parent / "up.log"
        stdout = (self.data_dir.parent / "up.out").open("wb")
        self.proc = subprocess.Popen(
            [*self.argv, "up", "--data-dir", str(self.data_dir), "--port", str(self.port), "--queue-port", str(self.queue_port),
             "--workers", str(workers)],
            env=self.env, cwd=self.cwd, stdout=stdout, stderr=self.log.open("wb"),
        )  # fmt: skip
        wait_for(self._healthy, timeout=60, what="remora up to answer /health")
        self.banner = (self.data_dir.parent / "up.out").read_text().splitlines()

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"remora up exited {self.proc.returncode}: {self.log.read_text()[-3000:] if self.log else ''}")
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False

    def run(
        self, *args: str, input: bytes | str | None = None, timeout: float = 60, env: dict | None = None
    ) -> subprocess.CompletedProcess:
        """A client command; stdout/stderr as bytes."""
        data = input.encode() if isinstance(input, str) else input
        return subprocess.run(
            [*self.argv, *args], input=data, capture_output=True, cwd=self.cwd, env={**self.env, **(env or {})}, timeout=timeout
        )

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([*self.argv, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=self.cwd, env=self.env)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        code = self.proc.returncode
        self.proc = None
        return code

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""


def make_remora(kind: str, base: Path, zipapp_path: Path | None) -> Remora:
    cwd = base / "cwd"  # an empty directory outside the checkout
    cwd.mkdir(parents=True, exist_ok=True)
    data_dir = base / "data"
    port, qport = free_port(), free_port()
    env = {
        "HOME": str(base),
        "PATH": "/usr/local/bin:/usr/bin:/bin",  # no venv on PATH
        "LANG": "C.UTF-8",
        "REMORA_API_URL": f"http://127.0.0.1:{port}",
        "REMORA_DATA_DIR": str(data_dir),
        "SHIV_ROOT": str(base / "shiv"),
        "REMORA_WORKER_HEARTBEAT_INTERVAL": "0.2",
        "REMORA_OUTPUT_FLUSH_INTERVAL": "0.1",
    }
    if kind == "checkout":
        argv = [sys.executable, "-m", "remora"]
        env["PYTHONPATH"] = str(ROOT)
    else:
        assert zipapp_path is not None
        argv = [system_python(), str(zipapp_path)]
    return Remora(argv=argv, env=env, cwd=cwd, data_dir=data_dir, port=port, queue_port=qport)


def add_ssh_servers(remora: Remora, sshd, names: list[str], tag: str = "e2e") -> None:
    for name in names:
        res = remora.run(
            "servers", "add", name, "--host", sshd.host, "--port", str(sshd.port), "--user", sshd.user,
            "--key-file", str(sshd.key_path), "--tag", tag,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr.decode()


@pytest.fixture(scope="module", params=["checkout", pytest.param("zipapp", marks=pytest.mark.slow)])
def remora(request, tmp_path_factory, sshd) -> Iterator[Remora]:
    """`remora up` from the checkout and from the zipapp, with three servers on the fixture sshd."""
    zipapp_path = request.getfixturevalue("zipapp") if request.param == "zipapp" else None
    if shutil.which("ssh") is None:
        missing("OpenSSH client")
    base = tmp_path_factory.mktemp(f"up-{request.param}")
    instance = make_remora(request.param, base, zipapp_path)
    instance.start()
    add_ssh_servers(instance, sshd, ["ssh-1", "ssh-2", "ssh-3"])
    yield instance
    code = instance.stop()
    assert code == 0, f"remora up exited {code}\n{instance.logs()[-3000:]}"


def wait_status(remora: Remora, job_id: str, status: str, timeout: float = 20) -> None:
    import json

    def reached() -> bool:
        res = remora.run("jobs", "show", job_id, "--json")
        return res.returncode == 0 and json.loads(res.stdout)["status"] == status

    wait_for(reached, timeout=timeout, interval=0.1, what=f"job {job_id} to be {status}")


def elapsed(start: float) -> float:
    return time.monotonic() - start


__all__ = ["ROOT", "Remora", "add_ssh_servers", "elapsed", "make_remora", "os", "system_python", "wait_status"]
