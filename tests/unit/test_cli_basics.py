from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "remora.py"), *args], capture_output=True, text=True, env=env, timeout=60)


def test_version_and_help_from_the_dev_shim():
    from remora import __version__

    assert run("--version").stdout.strip() == f"remora {__version__}"
    res = run("--help")
    assert res.returncode == 0
    for group in ("queue", "worker", "api", "up", "submit", "run", "jobs", "servers", "keys", "token", "config", "db"):
        assert group in res.stdout, group


def test_usage_errors_exit_2_and_config_errors_exit_78(tmp_path):
    assert run("config", "no-such-command").returncode == 2
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "WORKER_CONCURRENCY": "lots"}
    res = run("config", "show", env=env)
    assert res.returncode == 78
    assert "worker.concurrency = 'lots' from env:WORKER_CONCURRENCY" in res.stderr
    assert "Traceback" not in res.stderr


def test_config_init_refuses_to_overwrite_and_show_reports_sources(tmp_path):
    target = tmp_path / "remora.toml"
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    assert run("config", "init", str(target), env=env).returncode == 0
    again = run("config", "init", str(target), env=env)
    assert again.returncode != 0 and "--force" in again.stderr
    assert run("config", "init", "--force", str(target), env=env).returncode == 0
    import json

    res = run("--config", str(target), "config", "show", "--sources", "--json", env={**env, "REMORA_SECRET_KEY": "xyzzy-secret"})
    data = json.loads(res.stdout)
    assert data["sources"]["security.secret_key"] == "env:REMORA_SECRET_KEY"
    assert data["sources"]["worker.concurrency"].startswith("file:")
    assert "xyzzy-secret" not in res.stdout
