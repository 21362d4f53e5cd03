"""``remora schedules`` and ``remora submit --at/--in`` (CliRunner, in process) against a real API over HTTP; no worker, jobs stay queued."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from remora import models
from remora.cli import app
from remora.errors import RemoraError
from tests.support.api import Api, running_api


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[Api]:
    with running_api(tmp_path_factory.mktemp("schedules-cli")) as api:
        api.local_server_id()
        body = {
            "name": "backup",
            "command": "echo",
            "args": "{{ target }}",
            "servers": ["local"],
            "parameters": [{"name": "target", "required": True}],
        }
        assert api.post("/api/v1/templates", body).status == 201
        yield api


def cli(api: Api, *args: str) -> tuple[int, str]:
    env = {"REMORA_API_URL": f"http://{api.host}:{api.port}", "REMORA_TOKEN": api.tokens["admin"], "NO_COLOR": "1", "COLUMNS": "200"}
    result = CliRunner().invoke(app, list(args), env=env)
    code = result.exit_code
    if isinstance(result.exception, RemoraError):
        return int(result.exception.exit_code), result.output + str(result.exception)
    elif result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return code, result.output


def ok(api: Api, *args: str) -> str:
    code, output = cli(api, *args)
    assert code == 0, (code, output)
    return output


def test_add_list_show_pause_resume_edit_run_delete(api):
    added = ok(
        api,
        "schedules",
        "add",
        "--name",
        "nightly",
        "--template",
        "backup",
        "--cron",
        "30 2 * * *",
        "--tz",
        "Europe/Berlin",
        "--set",
        "target=db",
    )
    assert "nightly" in added and "created" in added
    listed = ok(api, "schedules", "list")
    assert "nightly" in listed and "30 2 * * *" in listed and "Europe/Berlin" in listed
    assert "paused" in ok(api, "schedules", "pause", "nightly")
    assert json.loads(ok(api, "schedules", "list", "--json"))[0]["enabled"] is False
    assert "resumed" in ok(api, "schedules", "resume", "nightly")
    ok(api, "schedules", "edit", "nightly", "--cron", "@daily", "--overlap", "allow", "--catch-up", "last")
    shown = json.loads(ok(api, "schedules", "show", "nightly", "--json"))
    assert (shown["cron"], shown["overlap"], shown["catch_up"], shown["enabled"]) == ("@daily", "allow", "last", True)
    job_id = ok(api, "schedules", "run", "nightly").strip()
    assert models.Job.get_by_id(job_id).template == "backup"
    text = ok(api, "schedules", "show", "nightly")
    assert "fired (manual)" in text and job_id[:8] in text
    assert "deleted" in ok(api, "schedules", "delete", "nightly")
    code, output = cli(api, "schedules", "show", "nightly")
    assert code != 0 and "not found" in output


def test_add_with_a_bad_cron_fails_naming_it(api):
    code, output = cli(api, "schedules", "add", "--name", "x", "--template", "backup", "--cron", "99 * * * *", "--set", "target=db")
    assert code != 0 and "cron" in output


def test_submit_in_and_at_set_run_at(api):
    job_id = ok(api, "submit", "--in", "10m", "--", "true").strip()
    run_at = models.Job.get_by_id(job_id).run_at
    assert dt.timedelta(minutes=9) < run_at - models.utcnow() <= dt.timedelta(minutes=10)
    when = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).replace(second=0, microsecond=0)
    job_id = ok(api, "submit", "--at", when.strftime("%Y-%m-%dT%H:%MZ"), "--", "true").strip()
    assert models.Job.get_by_id(job_id).run_at == when.replace(tzinfo=None)
    code, output = cli(api, "submit", "--at", "2001-01-01T00:00Z", "--", "true")
    assert code != 0 and "run_at" in output
    code, output = cli(api, "submit", "--in", "soon", "--", "true")
    assert code != 0 and "--in" in output
