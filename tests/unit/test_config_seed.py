"""The seed's settings: POSTGRES_* make the database URL, QUEUE_HEALTH_CHECK_INTERVAL, and a .env file."""

from __future__ import annotations

import pytest

from remora import config
from remora.errors import ConfigError


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_postgres_settings_compose_the_database_url():
    env = {
        "POSTGRES_HOST": "db.internal",
        "POSTGRES_PORT": "6543",
        "POSTGRES_DB": "jobexecutor",
        "POSTGRES_USER": "job user",
        "POSTGRES_PASSWORD": "p@ss:w/rd",
        "POSTGRES_SSLMODE": "require",
    }
    settings = config.load(None, env=env)
    assert settings.database.url == "postgres://job%20user:p%40ss%3Aw%2Frd@db.internal:6543/jobexecutor?sslmode=require"
    assert settings.sources["database.url"] == "env:POSTGRES_*"
    from urllib.parse import unquote, urlparse

    parsed = urlparse(settings.database.url)
    assert (unquote(parsed.username), unquote(parsed.password), parsed.hostname, parsed.port) == (
        "job user",
        "p@ss:w/rd",
        "db.internal",
        6543,
    )
    assert "p%40ss" not in str(config.mask("database.url", settings.database.url))


def test_database_url_wins_over_postgres_settings():
    env = {"DATABASE_URL": "sqlite:///x.db", "POSTGRES_HOST": "db.internal"}
    assert config.load(None, env=env).database.url == "sqlite:///x.db"
    assert config.load(None, env={"REMORA_DATABASE_URL": "sqlite:///y.db", "POSTGRES_HOST": "h"}).database.url == "sqlite:///y.db"


def test_queue_health_check_interval_sets_the_worker_health_window():
    settings = config.load(None, env={"QUEUE_HEALTH_CHECK_INTERVAL": "45s"})
    assert settings.queue.health_check_interval == 45.0
    assert settings.sources["queue.health_check_interval"] == "env:QUEUE_HEALTH_CHECK_INTERVAL"
    from remora.netqueue.server import QueueServer

    server = QueueServer.from_settings(settings, host="127.0.0.1", port=0, persistence=False, token="")
    assert server.engine.workers.active_window == 45.0


def test_worker_counts_inactive_after_the_health_check_interval():
    from remora.netqueue.engine import Engine

    now = [1000.0]
    engine = Engine(clock=lambda: now[0])
    engine.workers.active_window = 5.0
    engine.register_worker("w1", "host-1", 2)
    now[0] += 4.0
    assert [w["active"] for w in engine.worker_list()] == [True] and engine.stats()["active_workers"] == 1
    now[0] += 2.0
    assert [w["active"] for w in engine.worker_list()] == [False] and engine.stats()["active_workers"] == 0


def test_dotenv_is_read_above_defaults_below_file_and_environment(in_tmp):
    (in_tmp / ".env").write_text(
        "# seed settings\n"
        "export LOG_LEVEL=debug\n"
        "WORKER_CONCURRENCY = 7  # inline comment\n"
        "REMORA_API_ADDR='127.0.0.1:9999'\n"
        'QUEUE_NAME="jobs \\"main\\""\n'
        "\n"
        "SSH_MAX_RETRIES=4\n"
    )
    (in_tmp / "remora.toml").write_text("[ssh]\nmax_retries = 2\n")
    settings = config.load(None, env={"LOG_LEVEL": "error"})
    dotenv = str((in_tmp / ".env").resolve())
    assert settings.dotenv_file == dotenv
    assert settings.worker.concurrency == 7
    assert settings.sources["worker.concurrency"] == f"dotenv:{dotenv}:WORKER_CONCURRENCY"
    assert settings.api.addr == "127.0.0.1:9999"
    assert settings.queue.name == 'jobs "main"'
    assert settings.ssh.max_retries == 2 and settings.sources["ssh.max_retries"].startswith("file:")  # the file wins
    assert settings.logging.level == "error" and settings.sources["logging.level"] == "env:LOG_LEVEL"  # the environment wins


def test_bad_dotenv_line_names_file_and_line(in_tmp):
    (in_tmp / ".env").write_text("GOOD=1\nthis is not an assignment\n")
    with pytest.raises(ConfigError, match=r"\.env:2: expected KEY=VALUE"):
        config.load(None, env={})
    (in_tmp / ".env").write_text("A='unterminated\n")
    with pytest.raises(ConfigError, match=r"\.env:1: unterminated"):
        config.load(None, env={})


def test_config_show_sources_names_the_dotenv_file(in_tmp):
    from typer.testing import CliRunner

    from remora.cli import app

    (in_tmp / ".env").write_text("WORKER_CONCURRENCY=9\nREMORA_DATA_DIR=" + str(in_tmp / "data") + "\n")
    result = CliRunner().invoke(app, ["config", "show", "--sources", "--json"], env={"HOME": str(in_tmp)})
    assert result.exit_code == 0, result.output
    import json

    data = json.loads(result.output)
    assert data["settings"]["worker"]["concurrency"] == 9
    assert data["sources"]["worker.concurrency"] == f"dotenv:{(in_tmp / '.env').resolve()}:WORKER_CONCURRENCY"
