"""End-to-end fixtures: `remora up` as a subprocess (from the checkout or the built zipapp) and the CLI against it.

The harness itself is tests/support/cluster.py (``Remora``, ``make_remora``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import ROOT, Remora, add_ssh_servers, make_remora
from tests.support.services import missing


@pytest.fixture(scope="session")
def zipapp(tmp_path_factory) -> Path:
    """dist.pyz built like the Makefile's `zipapp` target, into a temp dir."""
    shiv = Path(sys.executable).with_name("shiv")
    if not shiv.exists():
        missing("shiv (pip install shiv)")
    target = tmp_path_factory.mktemp("zipapp") / "dist.pyz"
    build = tmp_path_factory.mktemp("shiv-build")
    subprocess.run(
        [str(shiv), "-q", "--compressed", "--compile-pyc", "-c", "remora", "-o", str(target), "-p", "/usr/bin/env python3", str(ROOT)],
        check=True, cwd=build, timeout=600, capture_output=True,
    )  # fmt: skip
    return target


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
