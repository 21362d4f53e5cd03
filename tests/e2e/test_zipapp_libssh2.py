"""The zipapp carries libssh2 (ssh2-python's wheel with its own libssh2 and OpenSSL): jobs there run over it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_the_zipapp_runs_ssh_jobs_over_libssh2(zipapp, tmp_path):
    """Were the bundled library missing or unreadable, ``ssh.transport = auto`` would quietly mean paramiko."""
    probe = "import remora.executor.libssh2 as l; print(l.AVAILABLE, l.C is not None and l.C.status_offset is not None)"
    env = {**os.environ, "SHIV_INTERPRETER": "1", "SHIV_ROOT": str(tmp_path / "shiv")}
    out = subprocess.run([sys.executable, str(zipapp), "-c", probe], env=env, capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["True", "True"], out.stderr
