"""Podman for the container tests: settings, a registry-free Debian base image, image builds, compose projects.

No registry is needed: the base image is made with ``debootstrap --variant=minbase``
from the mirror apt already uses, and builds get the host's apt sources mounted
read-only. Podman reads its settings from a temporary file named by
``CONTAINERS_CONF`` (runc, ulimits a container may set without CAP_SYS_RESOURCE);
/etc/containers is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from tests.support.cluster import ROOT
from tests.support.services import missing

BASE_IMAGE = "localhost/debian-base:bookworm"
SUITE = "bookworm"
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
"""
# What the tests need besides podman itself: --init needs catatonit, compose's
# service names need the CNI dnsname plugin.
INIT_BINARY = "/usr/libexec/podman/catatonit"
DNSNAME_PLUGIN = "/usr/lib/cni/dnsname"
SOURCES_DIR = "/etc/apt/sources.list.d"


def require_podman() -> None:
    """Skip (or fail under REMORA_REQUIRE_SERVICES=1) when podman and its helpers are missing."""
    for tool in ("podman", "podman-compose", "debootstrap"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            missing(f"{tool} (apt-get install podman buildah debootstrap runc podman-compose catatonit)")
    if not Path(INIT_BINARY).exists():
        missing(f"{INIT_BINARY} (apt-get install catatonit)")
    if not Path(DNSNAME_PLUGIN).exists():
        missing(f"{DNSNAME_PLUGIN} (apt-get install golang-github-containernetworking-plugin-dnsname)")
    if os.geteuid() != 0:
        missing("root (debootstrap and podman's CNI networks)")


def podman_env(directory: Path) -> dict[str, str]:
    """The process environment with ``CONTAINERS_CONF`` naming a settings file written in ``directory``."""
    conf = directory / "containers.conf"
    conf.write_text(CONTAINERS_CONF, encoding="utf-8")
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def run(
    args: list[str], env: dict[str, str], *, timeout: float = 300, check: bool = True, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {result.returncode}\nstdout: {result.stdout[-3000:]}\nstderr: {result.stderr[-3000:]}"
        )
    return result


def image_exists(env: dict[str, str], image: str) -> bool:
    return run(["podman", "image", "exists", image], env, check=False).returncode == 0


def apt_mirror() -> str:
    """The first Debian mirror in the host's deb822 or one-line apt sources."""
    for path in sorted(Path(SOURCES_DIR).glob("*.sources")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    for path in [Path("/etc/apt/sources.list"), *sorted(Path(SOURCES_DIR).glob("*.list"))]:
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                parts = line.split()
                if parts[:1] == ["deb"]:
                    return next(p for p in parts[1:] if not p.startswith("["))
    raise AssertionError("no apt mirror found in /etc/apt")


def ensure_base_image(env: dict[str, str]) -> None:
    """``localhost/debian-base:bookworm`` from debootstrap (once per machine, ~50 s), without apt sources of its own."""
    if image_exists(env, BASE_IMAGE):
        return
    root = Path(tempfile.mkdtemp(prefix="remora-debootstrap-"))
    try:
        run(["debootstrap", "--variant=minbase", SUITE, str(root), apt_mirror()], env, timeout=900)
        (root / "etc/apt/sources.list").unlink(missing_ok=True)
        for leftover in [*(root / "var/lib/apt/lists").glob("*"), *(root / "var/cache/apt/archives").glob("*.deb")]:
            if leftover.is_file():
                leftover.unlink()
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        try:
            imported = subprocess.run(
                ["podman", "import", "--change", 'CMD ["/bin/bash"]', "-", BASE_IMAGE],
                stdin=tar.stdout, env=env, capture_output=True, text=True, timeout=600, check=False,
            )  # fmt: skip
        finally:
            assert tar.stdout is not None
            tar.stdout.close()
            tar.wait(timeout=60)
        assert imported.returncode == 0, f"podman import failed: {imported.stderr[-2000:]}"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def build_image(env: dict[str, str], tag: str, context: Path, containerfile: Path, base: str = BASE_IMAGE) -> None:
    """``podman build`` in docker format (keeps HEALTHCHECK) on ``base``, the host's apt sources mounted read-only."""
    run(
        ["podman", "build", "-q", "--format", "docker", "--build-arg", f"BASE={base}",
         "-v", f"{SOURCES_DIR}:{SOURCES_DIR}:ro", "-t", tag, "-f", str(containerfile), str(context)],
        env, timeout=900,
    )  # fmt: skip


def zipapp_sources() -> Iterable[Path]:
    yield ROOT / "pyproject.toml"
    yield from (p for p in (ROOT / "remora").rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def ensure_zipapp() -> Path:
    """dist/remora.pyz, rebuilt with ``make zipapp`` when missing or older than the sources."""
    target = ROOT / "dist" / "remora.pyz"
    if not target.exists() or target.stat().st_mtime < max(p.stat().st_mtime for p in zipapp_sources()):
        subprocess.run(["make", "-s", "zipapp"], cwd=ROOT, check=True, capture_output=True, timeout=600)
    return target


def inspect(env: dict[str, str], kind: str, name: str) -> dict:
    return json.loads(run(["podman", kind, "inspect", name], env).stdout)[0]


class ComposeProject:
    """One ``podman-compose -p NAME`` project from a copy of a compose file; ``remove`` deletes all it made."""

    def __init__(self, env: dict[str, str], name: str, compose_file: Path, directory: Path) -> None:
        self.env = env
        self.name = name
        self.directory = directory
        self.file = directory / "compose.yaml"
        shutil.copyfile(compose_file, self.file)  # its own directory: no stray .env is read

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run(["podman-compose", "-p", self.name, "-f", str(self.file), *args], self.env, timeout=timeout, cwd=self.directory)

    def container(self, service: str) -> str:
        """The name of ``service``'s container."""
        out = run(
            ["podman", "ps", "-a", "--format", "{{.Names}}",
             "--filter", f"label=io.podman.compose.project={self.name}", "--filter", f"label=com.docker.compose.service={service}"],
            self.env,
        ).stdout.split()  # fmt: skip
        assert len(out) == 1, f"expected one container of {service}, got {out}"
        return out[0]

    def containers(self) -> list[str]:
        out = run(["podman", "ps", "-a", "-q", "--filter", f"label=io.podman.compose.project={self.name}"], self.env, check=False)
        return out.stdout.split()

    def logs(self, services: Iterable[str]) -> str:
        parts = []
        for service in services:
            try:
                name = self.container(service)
            except AssertionError as exc:
                parts.append(f"== {service}: {exc}")
                continue
            out = run(["podman", "logs", "--tail", "40", name], self.env, check=False)
            parts.append(f"== {service}\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
        return "\n".join(parts)

    def remove(self, stop_order: Iterable[str]) -> None:
        """Stop the services in ``stop_order`` (dependents first), then remove containers, volumes and network."""
        start = time.monotonic()
        for service in stop_order:
            try:
                run(["podman", "stop", "-t", "15", self.container(service)], self.env, check=False, timeout=60)
            except AssertionError:
                pass
        for container in self.containers():
            run(["podman", "rm", "-f", "-v", container], self.env, check=False, timeout=60)  # -v: the images' anonymous volumes too
        volumes = run(["podman", "volume", "ls", "--format", "{{.Name}}"], self.env, check=False).stdout.split()
        for volume in [v for v in volumes if v.startswith(f"{self.name}_")]:
            run(["podman", "volume", "rm", "-f", volume], self.env, check=False, timeout=60)
        run(["podman", "network", "rm", "-f", f"{self.name}_default"], self.env, check=False, timeout=60)
        assert time.monotonic() - start < 120, "cleanup took too long"
