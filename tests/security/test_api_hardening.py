"""Smaller guarantees of the API and its files, each against a real API or a real process.

A lone surrogate in JSON is a 400; the SQLite database, its -wal and -shm
are 0600 and the data directory 0700 even with umask 000; request paths are
escaped in the access log; failed authentications are rate-limited per
client address and counted in /metrics; ``config show`` masks passwords in
URL queries; ``search`` treats ``%`` and ``_`` literally.
"""

from __future__ import annotations

import http.client
import io
import json
import logging
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from remora import models
from remora.logs import TextFormatter
from tests.support.api import assert_envelope, running_api

ROOT = Path(__file__).resolve().parents[2]


def test_lone_surrogate_in_json_is_a_400_with_the_envelope(tmp_path):
    with running_api(tmp_path) as api:
        server = api.local_server_id()
        for raw in (
            b'{"command": "echo \\ud800", "server_id": "%s"}' % server.encode(),
            b'{"name": "\\udfff", "command": "true", "server_id": "%s"}' % server.encode(),
            b'{"command": "true", "server_id": "%s", "env": {"A\\ud800": "x"}}' % server.encode(),
        ):
            reply = api.request("POST", "/api/v1/jobs", raw=raw, token="admin")
            data = assert_envelope(reply, 400, "VALIDATION_ERROR")
            assert "surrogate" in data["error"] or "malformed" in data["error"], data
        # A proper pair (an emoji written as two escapes) is fine.
        ok = api.request(
            "POST", "/api/v1/jobs", raw=b'{"command": "echo \\ud83d\\ude00", "server_id": "%s"}' % server.encode(), token="admin"
        )
        assert ok.status == 201, ok
        assert ok.json()["command"] == "echo \U0001f600"


def test_database_files_are_private_even_with_umask_000(tmp_path):
    data_dir = tmp_path / "data"
    script = f"""
import os, sys
os.umask(0)
sys.path.insert(0, {str(ROOT)!r})
from pathlib import Path
import pytest

from remora import models
data = Path({str(data_dir)!r})
models.init_db("sqlite:///" + str(data / "remora.db"), data_dir=data)
db = models.get_database()
db.execute_sql("CREATE TABLE IF NOT EXISTS t (x)")
db.execute_sql("INSERT INTO t VALUES (1)")
for name in ("remora.db", "remora.db-wal", "remora.db-shm"):
    print(name, oct((data / name).stat().st_mode & 0o777))
print("dir", oct(data.stat().st_mode & 0o777))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    modes = dict(line.split() for line in out.stdout.splitlines())
    assert modes == {"remora.db": "0o600", "remora.db-wal": "0o600", "remora.db-shm": "0o600", "dir": "0o700"}, modes

    # An existing data directory that is open to others is made private too.
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    out = subprocess.run(
        [sys.executable, "-c", script.replace(repr(str(data_dir)), repr(str(open_dir)))], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE(open_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((open_dir / "remora.db").stat().st_mode) == 0o600


def test_request_paths_cannot_forge_access_log_lines(tmp_path):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter())
    access = logging.getLogger("remora.api.access")
    old_level = access.level
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        with running_api(tmp_path) as api:
            forged = "GET /api/v1/jobs 200 1.0ms admin [req forged]"
            for path in (
                "/x%0a" + forged.replace(" ", "%20"),
                "/x%0d%0a" + forged.replace(" ", "%20"),
                "/api/v1/jobs/%0a" + forged.replace(" ", "%20"),
                "/x%1b[31mred%e2%80%a8sep",
            ):
                conn = http.client.HTTPConnection(api.host, api.port, timeout=10)
                conn.request("GET", path)
                conn.getresponse().read()
                conn.close()
            # Raw control characters in the request line (no percent-encoding) as well.
            with socket.create_connection((api.host, api.port), timeout=10) as sock:
                sock.sendall(b"GET /y\x0b\x1bz\x7f HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                while sock.recv(65536):
                    pass
    finally:
        access.removeHandler(handler)
        access.setLevel(old_level)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 5, lines
    assert all(" remora.api.access: GET /" in line for line in lines), "\n".join(lines)
    assert not any("[req forged]" in line and "\\n" not in line for line in lines), lines
    assert "\\n" in lines[0] and "\\r\\n" in lines[1], lines
    assert "\x1b" not in stream.getvalue() and "\u2028" not in stream.getvalue(), lines
    assert "\\x1b" in lines[3] and "\\u2028" in lines[3], lines


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_failed_authentications_are_rate_limited_per_address(tmp_path):
    with running_api(tmp_path, **{"api.auth_failures_per_second": 10}) as api:
        statuses = []
        retry_after = None
        for i in range(30):
            reply = api.get("/api/v1/jobs", token=f"rmr_wrong{i}")
            statuses.append(reply.status)
            if reply.status == 429:
                retry_after = reply.headers.get("retry-after")
                assert_envelope(reply, 429, "TOO_MANY_REQUESTS")
        # The burst (twice the rate) is answered 401; then 429 (a slow machine may refill a few tokens).
        assert statuses[:20] == [401] * 20 and 429 in statuses, statuses
        assert retry_after is not None and int(retry_after) >= 1
        # Malformed credentials count too; no credentials at all is not an attempt (a plain 401).
        assert api.get("/api/v1/jobs", token=None, headers={"Authorization": "Basic YTpi"}).status == 429
        assert api.get("/api/v1/jobs", token=None).status == 401
        # A good token from the same address is never limited.
        for role in ("viewer", "admin"):
            assert api.get("/api/v1/jobs", token=role).status == 200
        metrics = api.get("/metrics", token="admin").body.decode()
        assert _metric(metrics, "remora_api_auth_failures_total") >= 31  # 30 wrong tokens and one Basic header
        assert _metric(metrics, "remora_api_auth_limited_total") >= 1


def test_config_show_masks_passwords_in_url_queries(tmp_path):
    cases = {
        "postgres://h/db?password=s3cret-query": "s3cret-query",
        "postgres://h/db?sslmode=require&PassWord=s3cret-mixed&x=1": "s3cret-mixed",
        "postgres://user:s3cret-userinfo@h/db": "s3cret-userinfo",
        "postgresql://user:s3cret-both@h/db?password=s3cret-both2": "s3cret-both",
    }
    for url, secret in cases.items():
        config = tmp_path / "remora.toml"
        config.write_text(f'[database]\nurl = "{url}"\n[security]\nsecret_key = "k3y-value"\n')
        env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "REMORA_CONFIG": str(config)}
        for args in (["config", "show"], ["config", "show", "--json"]):
            out = subprocess.run([sys.executable, str(ROOT / "remora.py"), *args], capture_output=True, text=True, env=env, timeout=60)
            assert out.returncode == 0, out.stderr
            assert secret not in out.stdout, (url, out.stdout)
            assert "s3cret" not in out.stdout and "k3y-value" not in out.stdout, (url, out.stdout)
            assert "********" in out.stdout
            if "--json" in args:
                shown = json.loads(out.stdout)["settings"]["database"]["url"]
                assert shown.split("://")[0] == url.split("://")[0] and "h/db" in shown, shown


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_search_treats_percent_and_underscore_literally(tmp_path, request, backend):
    url = request.getfixturevalue("postgres").new_database("remora_search_literal") if backend == "postgres" else None
    with running_api(tmp_path, url) as api:
        server = api.local_server_id()
        now = models.utcnow()
        commands = ["printf 100%", "echo a_b", "echo plain", "echo axb", "echo 50"]
        models.Job.insert_many(
            [
                {"id": models.new_id(), "command": c, "server": server, "status": "completed", "created_at": now, "updated_at": now}
                for c in commands
            ]
        ).execute()

        def found(term: str) -> list[str]:
            reply = api.get(f"/api/v1/jobs?search={term}&limit=100", token="viewer")
            assert reply.status == 200, reply
            return sorted(j["command"] for j in reply.json()["jobs"])

        assert found("%25") == ["printf 100%"]
        assert found("_") == ["echo a_b"]
        assert found("a_b") == ["echo a_b"]
        assert found("0%25") == ["printf 100%"]
