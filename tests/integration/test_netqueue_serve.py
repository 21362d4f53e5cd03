"""`remora queue serve` becomes the lean `python -m remora.netqueue` process: its flags travel as config keys
in argv, its settings come from the config file and environment read by that process, the token never
shows in argv, and nothing but what the user set travels in the environment.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from remora.netqueue.__main__ import parse_args
from tests.support.cluster import ROOT, Cluster, rss_kib


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def environ(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
    return dict(p.split("=", 1) for p in pairs if "=" in p)


def test_queue_serve_execs_the_lean_server_with_its_flags_as_settings(tmp_path):
    cluster = Cluster(tmp_path / "stack")
    try:
        queue = cluster.queue("--fsync", "interval", "--max-size", "7", "--busy-poll", "0", "--no-persistence")
        queue.start(20)
        argv = cmdline(queue.pid)
        assert argv[1:3] == ["-m", "remora.netqueue"], argv  # same PID, the lean entry point
        assert f"queue.addr=127.0.0.1:{cluster.queue_port}" in argv
        assert {"queue.fsync=interval", "queue.max_size=7", "queue.busy_poll=0", "queue.persistence=false"} <= set(argv)
        assert cluster.queue_token not in " ".join(argv)  # the token (from the config file) stays out of argv
        env = environ(queue.pid)
        assert not any(cluster.queue_token in v or v.lstrip().startswith("{") for v in env.values()), "settings leaked into the env"
        status, stats = cluster.queue_http("/stats")
        assert status == 200
        assert stats["server"]["fsync"] == "interval" and stats["server"]["persistence"] is False
        assert stats["max_size"] == 7
        with cluster.queue_client() as client:  # authenticated with the config file's token
            assert client.put("j1") is True
        resident = rss_kib(queue.pid) / 1024
        assert resident < 30, f"the lean queue server holds {resident:.1f} MiB (typer and rich should not be resident)"
        assert "typer" not in Path(f"/proc/{queue.pid}/maps").read_text()
    finally:
        cluster.close()


def run_lean(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(ROOT), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "remora.netqueue", *args], env=env, capture_output=True, text=True, timeout=30)


def test_the_lean_server_refuses_a_token_in_argv_and_unknown_arguments(tmp_path):
    run = run_lean("--set", "queue.token=s3cret", tmp_path=tmp_path)
    assert run.returncode != 0 and "token is not taken from the command line" in run.stderr, run.stderr
    run = run_lean("--port", "9000", tmp_path=tmp_path)
    assert run.returncode != 0 and "unknown argument '--port'" in run.stderr, run.stderr
    run = run_lean("--set", "queue.fsync=sometimes", tmp_path=tmp_path)
    assert run.returncode != 0 and "queue.fsync = 'sometimes' from flag: expected one of always, interval, never" in run.stderr


def test_queue_serve_checks_flags_before_the_exec(tmp_path):
    env = {"PYTHONPATH": str(ROOT), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    run = subprocess.run(
        [sys.executable, "-m", "remora", "queue", "serve", "--fsync", "sometimes"], env=env, capture_output=True, text=True, timeout=30
    )
    assert run.returncode != 0
    assert "remora: error: queue.fsync = 'sometimes' from flag: expected one of always, interval, never" in run.stderr


def test_parse_args_reads_config_and_settings():
    assert parse_args(["--config", "a.toml", "--set", "queue.fsync=never", "--set=queue.data_dir=/x=y"]) == (
        "a.toml",
        {"queue.fsync": "never", "queue.data_dir": "/x=y"},
    )
