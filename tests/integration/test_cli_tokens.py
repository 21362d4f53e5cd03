"""`remora token` against a real `remora up`: through the API when one is configured, else the local database.

The CLI runs as a subprocess with HOME and XDG_DATA_HOME in an empty
directory, so a database it made under its default data directory would show
up there.  A command that opens the local database never creates one: with
none there it fails naming the path and how to make it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from remora import models
from remora.errors import ExitCode
from tests.support.cluster import Remora, make_remora
from tests.support.http import request


@pytest.fixture(scope="module")
def up(tmp_path_factory) -> Iterator[Remora]:
    remora = make_remora("checkout", tmp_path_factory.mktemp("tokens-up"), None)
    remora.start(workers=1)
    yield remora
    assert remora.stop() == 0, remora.logs()[-3000:]


def admin_token(remora: Remora) -> str:
    return (remora.data_dir / "admin.token").read_text().strip()


def cli(remora: Remora, home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``remora <args>`` with an empty HOME / XDG_DATA_HOME and only the given REMORA_* variables."""
    home.mkdir(parents=True, exist_ok=True)
    base = {k: v for k, v in remora.env.items() if not k.startswith("REMORA_")}
    base.update({"HOME": str(home), "XDG_DATA_HOME": str(home / "data"), "XDG_CONFIG_HOME": str(home / "config"), "NO_COLOR": "1"})
    return subprocess.run([*remora.argv, *args], capture_output=True, text=True, cwd=remora.cwd, env={**base, **env}, timeout=60)


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def whoami(remora: Remora, token: str) -> tuple[int, object]:
    reply = request("127.0.0.1", remora.port, "GET", "/api/v1/auth/whoami", token=token, timeout=5)
    return reply.status, reply.data


def test_token_create_list_revoke_go_through_the_configured_api(up, tmp_path):
    home = tmp_path / "home"
    api = {"REMORA_API_URL": up.url, "REMORA_TOKEN": admin_token(up)}
    created = cli(up, home, "token", "create", "ci-through-api", "--role", "operator", "--expires", "1d", "--json", **api)
    assert created.returncode == 0, created.stderr
    data = json.loads(created.stdout)
    assert whoami(up, data["token"]) == (200, {"name": "ci-through-api", "role": "operator"})
    assert data["expires_at"] is not None
    runner = cli(up, home, "token", "create", "ci-runner", "--role", "runner", "--json", **api)
    assert runner.returncode == 0, runner.stderr
    assert whoami(up, json.loads(runner.stdout)["token"]) == (200, {"name": "ci-runner", "role": "runner"})

    listed = cli(up, home, "token", "list", "--json", **api)
    assert listed.returncode == 0, listed.stderr
    names = {t["name"]: t for t in json.loads(listed.stdout)["tokens"]}
    assert "ci-through-api" in names and "remora-up-admin" in names  # the API's database, not a new one
    assert data["token"] not in listed.stdout

    revoked = cli(up, home, "token", "revoke", "ci-through-api", **api)
    assert revoked.returncode == 0, revoked.stderr
    assert whoami(up, data["token"])[0] == 401
    assert files_under(home) == [], "the CLI made files under its default data directory"


def test_api_url_alone_uses_the_api_and_a_missing_token_says_how_to_go_local(up, tmp_path):
    home = tmp_path / "home"
    refused = cli(up, home, "token", "list", REMORA_API_URL=up.url)
    assert refused.returncode == ExitCode.AUTH, refused.stderr
    assert up.url in refused.stderr and "--local" in refused.stderr and "REMORA_TOKEN" in refused.stderr
    assert files_under(home) == []


def test_an_api_in_the_config_file_is_used_too(up, tmp_path):
    home = tmp_path / "home"
    config = tmp_path / "client.toml"
    config.write_text(f'[api]\nurl = "{up.url}"\ntoken = "{admin_token(up)}"\n')
    listed = cli(up, home, "token", "list", "--json", REMORA_CONFIG=str(config))
    assert listed.returncode == 0, listed.stderr
    assert "remora-up-admin" in {t["name"] for t in json.loads(listed.stdout)["tokens"]}
    assert files_under(home) == []


def test_local_mode_writes_the_existing_database_and_the_api_accepts_the_token(up, tmp_path):
    """Bootstrapping on the API's machine: --local (even with an API configured) opens the database directly."""
    home = tmp_path / "home"
    env = {"REMORA_DATA_DIR": str(up.data_dir), "REMORA_API_URL": up.url}
    created = cli(up, home, "token", "create", "bootstrap", "--role", "admin", "--local", "--json", **env)
    assert created.returncode == 0, created.stderr
    assert whoami(up, json.loads(created.stdout)["token"]) == (200, {"name": "bootstrap", "role": "admin"})
    # No API configured at all: local is the default.
    listed = cli(up, home, "token", "list", "--json", REMORA_DATA_DIR=str(up.data_dir))
    assert listed.returncode == 0, listed.stderr
    assert "bootstrap" in {t["name"] for t in json.loads(listed.stdout)["tokens"]}
    both = cli(up, home, "token", "list", "--local", "--api", **env)
    assert both.returncode == ExitCode.USAGE and "--local" in both.stderr and "--api" in both.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("token", "create", "first", "--role", "admin"),
        ("token", "list"),
        ("token", "revoke", "first"),
        ("token", "list", "--local"),
        ("worker", "--id", "nowhere"),
        ("queue", "dlq", "kick", "0123456789abcdef"),
    ],
    ids=["create", "list", "revoke", "list-local", "worker", "dlq"],
)
def test_a_local_command_with_no_database_fails_clearly_and_creates_nothing(up, tmp_path, args):
    home = tmp_path / "home"
    done = cli(up, home, *args)
    assert done.returncode == ExitCode.CONFIG, (done.returncode, done.stdout, done.stderr)
    expected = home / "data" / "remora" / "remora.db"
    message = " ".join(done.stderr.split())
    assert str(expected) in message and "remora db upgrade" in message, done.stderr
    assert "Traceback" not in done.stderr
    assert files_under(home) == [], "a database (or its directory) was created"


def test_a_missing_postgres_schema_is_a_missing_database(up, tmp_path, postgres):
    url = postgres.new_database("tokens_no_schema")
    home = tmp_path / "home"
    done = cli(up, home, "token", "list", "--local", REMORA_DATABASE_URL=url)
    assert done.returncode == ExitCode.CONFIG, (done.stdout, done.stderr)
    assert "remora db upgrade" in " ".join(done.stderr.split())
    database = models.make_database(url)
    try:
        assert database.get_tables() == [], "tables were created"
    finally:
        database.close()
    upgraded = cli(up, home, "db", "upgrade", REMORA_DATABASE_URL=url)
    assert upgraded.returncode == 0, upgraded.stderr
    created = cli(up, home, "token", "create", "pg-admin", "--role", "admin", REMORA_DATABASE_URL=url)
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip().startswith("rmr_")
    assert os.path.exists(home) and files_under(home) == []
