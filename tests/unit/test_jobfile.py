"""YAML job files: the three shapes, every field, and errors that name file:line:column."""

from __future__ import annotations

from pathlib import Path

import pytest

from remora import jobfile
from remora.errors import ExitCode, JobFileError

ROOT = Path(__file__).resolve().parents[2]


def load(text: str, **kw):
    return jobfile.load_text(text, "job.yaml", **kw)


def error_of(text: str, **kw) -> str:
    with pytest.raises(JobFileError) as info:
        load(text, **kw)
    return info.value.message


def test_one_job_per_file_with_every_field(tmp_path):
    (spec,) = load(
        "name: build\ncommand: make\nargs: [-j, 4, 'two words']\nservers: [web-1, 'tag:db']\npriority: 2\n"
        "timeout: 10m\nretries: 1\nenv: {A: 010, B: yes}\npty: true\nqueue: builds\n"
    )
    assert spec.payload() == {
        "servers": ["web-1", "tag:db"],
        "command": "make",
        "args": "-j 4 'two words'",
        "name": "build",
        "priority": 2,
        "timeout": 600,
        "retries": 1,
        "pty": True,
        "queue": "builds",
        "env": {"A": "010", "B": "yes"},
    }
    assert spec.source == "job.yaml:1:1"


def test_defaults_to_the_local_server_and_keeps_commands_as_written():
    (spec,) = load("command: true\n")
    assert spec.command == "true" and spec.servers == ["local"]
    assert "priority" not in spec.payload()


def test_jobs_list_with_defaults_and_several_documents():
    specs = load("defaults:\n  priority: 3\njobs:\n  - command: a\n  - command: b\n    priority: 1\n---\ncommand: c\n")
    assert [(s.command, s.priority) for s in specs] == [("a", 3), ("b", 1), ("c", None)]


def test_script_file_is_read_relative_to_the_yaml_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "s.sh").write_text("echo hi\n")
    path = tmp_path / "sub" / "job.yaml"
    path.write_text("script_file: s.sh\nshell: /bin/bash\nargs: x\n")
    (spec,) = jobfile.load_file(path)
    assert spec.payload() == {"servers": ["local"], "script": "echo hi\n", "shell": "/bin/bash", "args": "x"}


@pytest.mark.parametrize(
    ("text", "where", "needle"),
    [
        ("command: x\nprioirty: 2\n", "job.yaml:2:1", "unknown key 'prioirty'"),
        ("command: x\npriority: high\n", "job.yaml:2:11", "priority: expected a whole number"),
        ("command: x\npriority: 0\n", "job.yaml:2:11", "1 (highest) to 10"),
        ("command: x\ntimeout: soon\n", "job.yaml:2:10", "timeout: expected seconds or a duration"),
        ("command: x\nenv: [A]\n", "job.yaml:2:6", "env: expected a mapping"),
        ("command: x\nenv: {'BAD NAME': v}\n", "job.yaml:2:6", "env: variable 'BAD NAME' is not a valid name"),
        ("command: x\nenv: {1X: v}\n", "job.yaml:2:6", "env: variable '1X' is not a valid name"),
        ("command: x\npty: maybe\n", "job.yaml:2:6", "pty: expected true or false"),
        ("command: x\nservers: {a: 1}\n", "job.yaml:2:10", "servers: expected a server name"),
        ("jobs:\n  - command: a\n  - comand: b\n", "job.yaml:3:5", "unknown key 'comand'"),
        ("jobs: {command: a}\n", "job.yaml:1:7", "expected a list of jobs"),
        ("command: [unclosed\n", "job.yaml:2:1", "invalid YAML"),
        ("name: nothing to run\n", "job.yaml:1:1", "exactly one of command, script or script_file"),
        ("command: a\nscript: b\n", "job.yaml:1:1", "command and script"),
        ("command: a\ncommand: b\n", "job.yaml:2:1", "duplicate key"),
        ("script_file: /no/such/file.sh\n", "job.yaml:1:14", "cannot read"),
        ("- command: a\n", "job.yaml:1:1", "expected a mapping"),
    ],
)
def test_errors_name_file_line_and_column(text, where, needle):
    message = error_of(text)
    assert message.startswith(where + ": "), message
    assert needle in message


def test_job_file_errors_are_usage_errors():
    assert JobFileError("x").exit_code == ExitCode.USAGE


def test_empty_file_is_an_error():
    assert "no jobs" in error_of("# nothing\n")


def test_set_overrides_every_job_with_typed_values():
    specs = load("jobs:\n  - command: a\n  - command: b\n    env: {X: '1'}\n", overrides=["priority=2", "env.Y=yes", "servers=web-1,web-2"])
    assert [s.priority for s in specs] == [2, 2]
    assert specs[1].env == {"X": "1", "Y": "yes"}
    assert specs[0].servers == ["web-1", "web-2"]


@pytest.mark.parametrize(
    ("pair", "needle"),
    [
        ("priority", "key=value"),
        ("colour=red", "unknown key"),
        ("priority=99", "1 (highest)"),
        ("env.1X=v", "variable '1X' is not a valid name"),
    ],
)
def test_bad_set_values_are_reported(pair, needle):
    assert needle in error_of("command: a\n", overrides=[pair])


def test_every_example_file_is_valid():
    files = sorted((ROOT / "examples").glob("*.yaml"))
    assert files
    for path in files:
        assert jobfile.load_file(path), path


def test_rollout_reaches_the_payload_and_bad_values_name_line_and_column():
    (spec,) = load("command: apt-get upgrade\nservers: ['tag:web']\nrollout: {concurrency: 25%, max_failures: 2}\n")
    assert spec.payload()["rollout"] == {"concurrency": "25%", "max_failures": 2}
    assert "job.yaml:3:" in error_of("command: x\nservers: [a, b]\nrollout: {concurrency: fast}\n")
    assert "concurrency" in error_of("command: x\nrollout: {concurrency: fast}\n")
    assert "expected a mapping" in error_of("command: x\nrollout: {speed: 2}\n")


def test_secret_env_reaches_the_payload_and_is_not_settable_on_the_command_line():
    specs = load("defaults:\n  secret_env: {API_TOKEN: t0ken-1}\njobs:\n  - command: a\n  - command: b\n    secret_env: {DB_PASS: 0123}\n")
    assert specs[0].payload()["secret_env"] == {"API_TOKEN": "t0ken-1"}
    assert specs[1].secret_env == {"DB_PASS": "0123"}  # like env: a job's own mapping replaces the default one; kept as written
    assert "job.yaml:1:" in error_of("secret_env: {1X: value}\ncommand: a\n")
    for pair in ("secret_env.API_TOKEN=value", "secret_env={A: value}"):
        assert "--secret-env NAME" in error_of("command: a\n", overrides=[pair])
