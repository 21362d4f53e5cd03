"""Client commands: parsing, usage errors and output shapes that need no API (typer's CliRunner)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from remora.cli import app
from remora.errors import ExitCode, RemoraError

ROOT = Path(__file__).resolve().parents[2]
CLOSED = "http://127.0.0.1:9"  # discard port: nothing listens on loopback


def cli(*args: str, input: str | None = None, env: dict | None = None):
    """Run a command; returns (exit code as `remora` would exit, result)."""
    result = CliRunner().invoke(app, list(args), input=input, env={"REMORA_API_URL": CLOSED, **(env or {})})
    code = result.exit_code
    if isinstance(result.exception, RemoraError):
        code = int(result.exception.exit_code)
    return code, result


def message(result) -> str:
    if isinstance(result.exception, RemoraError):
        return result.exception.message
    return result.output + (result.stderr if result.stderr_bytes else "")


def test_submit_without_a_command_is_a_usage_error():
    code, result = cli("submit")
    assert code == ExitCode.USAGE
    assert "nothing to run" in message(result)


def test_submit_shell_needs_script():
    code, result = cli("submit", "--shell", "/bin/bash", "--", "true")
    assert code == ExitCode.USAGE and "--shell goes with --script" in message(result)


@pytest.mark.parametrize("args", [["-p", "0"], ["-p", "11"], ["--retries", "-1"]])
def test_submit_rejects_out_of_range_numbers(args):
    code, _ = cli("submit", *args, "--", "true")
    assert code == ExitCode.USAGE


def test_submit_rejects_bad_timeout_and_env():
    code, result = cli("submit", "-t", "soon", "--", "true")
    assert code == ExitCode.USAGE and "--timeout 'soon'" in message(result)
    code, result = cli("submit", "-e", "NOEQUALS", "--", "true")
    assert code == ExitCode.USAGE and "KEY=VALUE" in message(result)


def test_api_unreachable_exits_69_naming_the_url():
    code, result = cli("submit", "--", "true")
    assert code == ExitCode.API_UNAVAILABLE
    assert CLOSED in message(result) and "connection refused" in message(result)
    code, result = cli("jobs", "list", "--api-url", "http://127.0.0.1:9/")
    assert code == ExitCode.API_UNAVAILABLE


def test_run_dry_run_prints_payloads_as_json(tmp_path):
    path = tmp_path / "jobs.yaml"
    path.write_text("jobs:\n  - command: echo\n    args: [a, b c]\n    servers: [x, y, z]\n  - script: 'echo hi'\n")
    code, result = cli("run", "-f", str(path), "--dry-run", "--json", "--set", "priority=2")
    assert code == 0, result.output
    data = json.loads(result.stdout)
    assert data == [
        {"servers": ["x", "y", "z"], "command": "echo", "args": "a 'b c'", "priority": 2},
        {"servers": ["local"], "script": "echo hi", "priority": 2},
    ]


def test_run_dry_run_table_for_people(tmp_path):
    path = tmp_path / "jobs.yaml"
    path.write_text("name: hello\ncommand: echo hi\n")
    code, result = cli("run", "-f", str(path), "--dry-run")
    assert code == 0
    assert "hello" in result.stdout and "echo hi" in result.stdout and "dry run" in result.stdout


def test_run_bad_file_reports_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("command: x\npriority: urgent\n")
    code, result = cli("run", "-f", str(path), "--dry-run")
    assert code == ExitCode.USAGE
    assert message(result).startswith(f"{path}:2:11: priority")


def test_servers_add_needs_exactly_one_credential(tmp_path):
    code, result = cli("servers", "add", "web-1", "--host", "h", "--user", "u")
    assert code == ExitCode.USAGE and "--password-stdin" in message(result)
    key = tmp_path / "k"
    key.write_text("x")
    code, result = cli("servers", "add", "web-1", "--host", "h", "--user", "u", "--pem", "a.pem", "--key-file", str(key))
    assert code == ExitCode.USAGE and "choose one" in message(result)
    code, result = cli("servers", "add", "web-1", "--host", "h", "--user", "u", "--pem", "a.pem", "--passphrase-stdin")
    assert code == ExitCode.USAGE and "--passphrase-stdin goes with --key-file" in message(result)


def test_passwords_are_never_flags():
    code, _ = cli("servers", "add", "web-1", "--host", "h", "--user", "u", "--password", "hunter2")
    assert code == ExitCode.USAGE


def test_servers_add_reads_the_password_from_stdin_then_needs_the_api():
    code, result = cli("servers", "add", "web-1", "--host", "h", "--user", "u", "--password-stdin", input="pw\n")
    assert code == ExitCode.API_UNAVAILABLE, message(result)
    code, result = cli("servers", "add", "web-1", "--host", "h", "--user", "u", "--password-stdin", input="")
    assert code == ExitCode.USAGE and "no password on stdin" in message(result)


def test_servers_update_needs_a_change_and_status_needs_names_or_all():
    code, result = cli("servers", "update", "web-1")
    assert code == ExitCode.USAGE and "nothing to change" in message(result)
    code, result = cli("servers", "status")
    assert code == ExitCode.USAGE and "--all" in message(result)


def test_every_client_command_takes_api_url_and_token():
    import typer

    root = typer.main.get_command(app)
    client_groups = {"jobs", "servers", "keys"}
    checked = 0
    for name, cmd in root.commands.items():
        leaves = cmd.commands.items() if name in client_groups else ([(name, cmd)] if name in ("submit", "run") else [])
        for leaf_name, leaf in leaves:
            opts = {o for p in leaf.params for o in getattr(p, "opts", [])}
            assert {"--api-url", "--token"} <= opts, f"{name} {leaf_name}"
            checked += 1
    assert checked >= 18


def after_main(argv: list[str], report: str, *, imports: str = "") -> Any:
    """``report`` (an expression, JSON) in a fresh process after ``main(argv)`` against a closed API (exit 69), ``imports`` first."""
    code = (
        "import gc, json, sys\n"
        f"{imports}\n"
        "from remora.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 69, exc.code\n"
        f"print(json.dumps({report}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def modules_after(argv: list[str], *, imports: str = "") -> set[str]:
    """The modules a fresh process has loaded after ``main(argv)``."""
    return set(after_main(argv, "sorted(sys.modules)", imports=imports))


def test_client_commands_do_not_import_heavy_libraries():
    imports = "import remora.cli, remora.cli.submit, remora.cli.jobs, remora.cli.servers, remora.cli.follow, remora.client"
    loaded = modules_after(["jobs", "list", "--api-url", CLOSED], imports=imports)
    assert not {"paramiko", "peewee", "waitress", "yaml", "cryptography"} & loaded


def test_the_command_table_names_what_each_module_registers():
    import importlib

    import typer

    from remora.cli import COMMAND_MODULES

    registered = {}
    for module in set(COMMAND_MODULES.values()):
        tree = typer.Typer()
        importlib.import_module(f"remora.cli.{module}").register(tree)
        names = [c.name or c.callback.__name__ for c in tree.registered_commands] + [g.name for g in tree.registered_groups]
        registered.update(dict.fromkeys(names, module))
    assert registered == COMMAND_MODULES
    assert {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups} == set(COMMAND_MODULES)


@pytest.mark.parametrize(
    "argv, word",
    [
        (["submit", "--", "uptime"], "submit"),
        (["-v", "-c", "jobs", "servers", "list"], "servers"),
        (["--config", "x.toml", "--log-format", "json", "jobs"], "jobs"),
        (["--config=x.toml", "-vv", "--debug", "token", "create"], "token"),
        (["-vc", "run", "keys"], "keys"),
        (["-cx.toml", "db"], "db"),
        (["--help"], None),
        (["--", "jobs"], None),
        ([], None),
    ],
)
def test_the_command_word_is_found_after_the_root_options(argv, word):
    from remora.cli import command_word

    assert command_word(argv) == word


def test_a_client_command_imports_only_its_own_module():
    loaded = modules_after(["-q", "submit", "--api-url", CLOSED, "--", "true"])
    assert not {m for m in loaded if m.split(".")[0] == "rich"}, loaded  # off a terminal, messages need no rich
    assert "remora.cli.submit" in loaded
    assert not loaded & {"remora.cli.jobs", "remora.cli.servers", "remora.cli.queue", "remora.cli.up", "remora.cli.api"}, loaded


def test_a_command_runs_with_the_modules_it_loaded_out_of_the_collectors_sight():
    """What was loaded before the command ran is frozen (the exit's last collection skips it); the collector stays on."""
    frozen, tracked, enabled = after_main(
        ["-q", "submit", "--api-url", CLOSED, "--", "true"], "[gc.get_freeze_count(), len(gc.get_objects()), gc.isenabled()]"
    )
    assert enabled and frozen > 2 * tracked, (frozen, tracked)  # most objects: the modules' functions, classes, dicts


def test_help_has_examples_for_client_commands():
    for args in (["submit"], ["run"], ["jobs", "list"], ["jobs", "wait"], ["servers", "add"], ["keys", "upload"], ["up"]):
        code, result = cli(*args, "--help")
        assert code == 0 and "Example:" in result.output, args
