from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from remora import config, units
from remora.errors import ConfigError


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_defaults_come_from_the_dataclasses_and_are_labelled_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = config.load(env={"HOME": str(tmp_path)})
    assert settings.queue.addr == "127.0.0.1:9000"
    assert settings.worker.concurrency == 256
    assert settings.sources["worker.concurrency"] == "default"
    assert settings.config_file is None


def test_precedence_file_then_env_then_flag(tmp_path):
    cfg = write(tmp_path / "c.toml", '[worker]\nconcurrency = 7\nheartbeat_interval = "2s"\n[queue]\nname = "fromfile"\n')
    env = {"HOME": str(tmp_path), "REMORA_WORKER_CONCURRENCY": "9"}
    settings = config.load(cfg, env, {"queue.name": "fromflag"})
    assert settings.worker.concurrency == 9
    assert settings.sources["worker.concurrency"] == "env:REMORA_WORKER_CONCURRENCY"
    assert settings.worker.heartbeat_interval == 2.0
    assert settings.sources["worker.heartbeat_interval"] == f"file:{cfg}"
    assert settings.queue.name == "fromflag"
    assert settings.sources["queue.name"] == "flag"


def test_seed_alias_names_are_accepted_and_remora_names_win(tmp_path):
    env = {
        "HOME": str(tmp_path),
        "WORKER_CONCURRENCY": "3",
        "SSH_CONNECTION_TIMEOUT": "2m",
        "MAX_UPLOAD_SIZE": "10MB",
        "ALLOWED_SHELLS": "/bin/bash,/bin/sh",
        "SERVER_ADDR": ":8081",
        "QUEUE_PERSISTENCE": "false",
    }
    settings = config.load(None, env)
    assert settings.worker.concurrency == 3
    assert settings.ssh.connection_timeout == 120.0
    assert settings.security.max_upload_size == 10 * 1024 * 1024
    assert settings.security.allowed_shells == ["/bin/bash", "/bin/sh"]
    assert settings.api.addr == "0.0.0.0:8081"
    assert settings.queue.persistence is False
    both = config.load(None, {"HOME": str(tmp_path), "WORKER_CONCURRENCY": "3", "REMORA_WORKER_CONCURRENCY": "4"})
    assert both.worker.concurrency == 4


def test_config_file_search_order_uses_remora_config_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "remora.toml", "[worker]\nconcurrency = 2\n")
    other = write(tmp_path / "other.toml", "[worker]\nconcurrency = 6\n")
    assert config.load(None, {"HOME": str(tmp_path)}).worker.concurrency == 2
    assert config.load(None, {"HOME": str(tmp_path), "REMORA_CONFIG": other}).worker.concurrency == 6
    xdg = tmp_path / "xdg" / "remora"
    xdg.mkdir(parents=True)
    (tmp_path / "remora.toml").unlink()
    write(xdg / "config.toml", "[worker]\nconcurrency = 11\n")
    assert config.load(None, {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}).worker.concurrency == 11


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"WORKER_CONCURRENCY": "many"}, "worker.concurrency = 'many' from env:WORKER_CONCURRENCY: expected a whole number"),
        ({"REMORA_SSH_CONNECTION_TIMEOUT": "soon"}, "from env:REMORA_SSH_CONNECTION_TIMEOUT: expected a duration such as 30s"),
        ({"MAX_UPLOAD_SIZE": "big"}, "security.max_upload_size = 'big' from env:MAX_UPLOAD_SIZE: expected a size"),
        ({"QUEUE_PERSISTENCE": "maybe"}, "expected true or false"),
        ({"REMORA_QUEUE_FSYNC": "sometimes"}, "expected one of always, interval, never"),
    ],
)
def test_bad_values_name_key_source_and_expectation(tmp_path, env, fragment):
    with pytest.raises(ConfigError) as info:
        config.load(None, {"HOME": str(tmp_path), **env})
    assert fragment in str(info.value)


def test_bad_file_values_and_unknown_keys_name_the_file(tmp_path):
    cfg = write(tmp_path / "c.toml", '[ssh]\nmax_retries = "x"\n')
    with pytest.raises(ConfigError, match=r"ssh.max_retries = 'x' from file:.*c.toml"):
        config.load(cfg, {"HOME": str(tmp_path)})
    cfg = write(tmp_path / "d.toml", "[ssh]\nmax_retrys = 3\n")
    with pytest.raises(ConfigError, match="unknown key ssh.max_retrys"):
        config.load(cfg, {"HOME": str(tmp_path)})
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(str(tmp_path / "missing.toml"), {"HOME": str(tmp_path)})


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("2m", 120), ("1h", 3600), ("250ms", 0.25), ("100us", 0.0001), ("15", 15), (1.5, 1.5)]
)
def test_durations(text, seconds):
    assert units.parse_duration(text) == seconds
    assert units.parse_duration(units.format_duration(seconds)) == seconds  # what config init writes reads back


@pytest.mark.parametrize(
    ("text", "size"), [("8192", 8192), ("10MB", 10 * 1024**2), ("64MiB", 64 * 1024**2), ("512k", 512 * 1024), (42, 42)]
)
def test_sizes(text, size):
    assert units.parse_size(text) == size


def test_masked_hides_secrets_and_database_passwords(tmp_path):
    env = {"HOME": str(tmp_path), "DATABASE_URL": "postgres://bob:hunter2@db/remora", "REMORA_SECRET_KEY": "topsecret"}
    masked = config.load(None, env).masked()
    assert masked["database"]["url"] == "postgres://bob:********@db/remora"
    assert masked["security"]["secret_key"] == "********"
    assert "hunter2" not in repr(masked) and "topsecret" not in repr(masked)


def test_example_config_documents_every_key_with_its_default():
    example = Path(__file__).resolve().parents[2] / "config.example.toml"
    assert example.read_text() == config.render_toml(), (
        "config.example.toml is stale: regenerate it with `remora config init --force config.example.toml`"
    )
    data = tomllib.loads(example.read_text())
    for dotted, meta in config.key_meta().items():
        section, key = dotted.split(".", 1)
        if dotted in config.UNSET_BY_DEFAULT:  # documented but commented out: set, it would mean something else
            assert key not in data[section] and f"\n# {key} = " in example.read_text(), dotted
            continue
        assert key in data[section], f"{dotted} missing from config.example.toml"
        assert config.coerce(dotted, data[section][key], "example") == meta["default"]


def test_split_addr():
    assert config.split_addr("127.0.0.1:9000", 1) == ("127.0.0.1", 9000)
    assert config.split_addr(":8080", 1) == ("0.0.0.0", 8080)
    assert config.split_addr("[::1]:9", 1) == ("::1", 9)
    assert config.split_addr("host", 22) == ("host", 22)
