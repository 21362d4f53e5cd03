"""Pure pieces of the client: error envelopes -> RemoraError, job outcomes -> exit codes, labels and rendering."""

from __future__ import annotations

import json

import pytest

from remora.cli.follow import combined_exit_code, exit_code_of, labels_for
from remora.cli.render import fmt_duration, job_command, server_name
from remora.client import Client, error_from_response, jobs_of
from remora.errors import Conflict, ExitCode, NotFound, QueueFull, RemoraError, Unauthorized, Unavailable, ValidationError


@pytest.mark.parametrize(
    ("status", "cls", "exit_code"),
    [
        (400, ValidationError, ExitCode.USAGE),
        (401, Unauthorized, ExitCode.AUTH),
        (403, RemoraError, ExitCode.AUTH),
        (404, NotFound, ExitCode.FAILURE),
        (409, Conflict, ExitCode.FAILURE),
        (503, Unavailable, ExitCode.API_UNAVAILABLE),
        (500, RemoraError, ExitCode.FAILURE),
    ],
)
def test_error_envelopes_map_to_remora_errors(status, cls, exit_code):
    body = json.dumps({"error": "it went wrong", "code": "SOME_CODE", "details": {"field": "bad"}}).encode()
    exc = error_from_response(status, body)
    assert isinstance(exc, cls)
    assert exc.exit_code == exit_code
    assert (exc.message, exc.code, exc.details, exc.status) == ("it went wrong", "SOME_CODE", {"field": "bad"}, status)


def test_queue_full_keeps_retry_after_and_non_json_bodies_still_give_a_message():
    exc = error_from_response(503, b'{"error": "full", "code": "QUEUE_FULL"}', {"retry-after": "7"})
    assert isinstance(exc, QueueFull)
    exc = error_from_response(503, b'{"error": "db down", "code": "SERVICE_UNAVAILABLE"}', {"retry-after": "7"})
    assert isinstance(exc, Unavailable) and exc.retry_after == 7
    assert error_from_response(502, b"<html>Bad Gateway</html>").message == "<html>Bad Gateway</html>"
    assert error_from_response(500, b"").message == "HTTP 500"


def test_client_rejects_urls_it_cannot_use():
    with pytest.raises(ValidationError):
        Client("ftp://example.org")
    assert Client("127.0.0.1:8080").port == 8080
    assert Client("https://remora.example.org/base/").prefix == "/base"


def test_jobs_of_accepts_every_answer_shape():
    job = {"id": "a"}
    assert jobs_of(job) == [job]
    assert jobs_of({"batch_id": "b", "jobs": [job, job]}) == [job, job]
    assert jobs_of({"new_job": job, "original_job": {"id": "o"}}) == [job]
    with pytest.raises(RemoraError):
        jobs_of({"unexpected": True})


@pytest.mark.parametrize(
    ("job", "code"),
    [
        ({"status": "completed", "exit_code": 0}, 0),
        ({"status": "failed", "exit_code": 3}, 3),
        ({"status": "failed", "exit_code": 255}, 255),
        ({"status": "failed", "exit_code": None, "error": "connection refused"}, ExitCode.FAILURE),
        ({"status": "failed", "exit_code": None, "error": "timed out after 1s"}, ExitCode.JOB_TIMEOUT),
        ({"status": "failed", "exit_code": 143, "error": "timeout after 1s"}, ExitCode.JOB_TIMEOUT),
        ({"status": "failed", "exit_code": None, "error": "SSH connection timed out"}, ExitCode.FAILURE),
        ({"status": "failed", "exit_code": 0, "error": "worker lost"}, ExitCode.FAILURE),
        ({"status": "canceled", "exit_code": None}, ExitCode.JOB_CANCELED),
    ],
)
def test_job_outcomes_become_exit_codes(job, code):
    assert exit_code_of(job) == code


def test_several_jobs_exit_with_the_first_failure():
    ok, bad4, bad7 = {"status": "completed"}, {"status": "failed", "exit_code": 4}, {"status": "failed", "exit_code": 7}
    assert combined_exit_code([ok, ok]) == 0
    assert combined_exit_code([ok, bad4, bad7]) == 4


def test_labels_are_server_names_unless_they_repeat():
    a = {"id": "aaaaaaaa-1", "server": {"name": "web-1"}}
    b = {"id": "bbbbbbbb-2", "server": {"name": "web-2"}}
    c = {"id": "cccccccc-3", "name": "deploy", "server": {"name": "web-1"}}
    assert labels_for([a, b]) == ["web-1", "web-2"]
    assert labels_for([a, c]) == ["aaaaaaaa@web-1", "deploy@web-1"]


def test_rendering_helpers():
    assert job_command({"command": "echo", "args": "hi there"}) == "echo hi there"
    assert job_command({"script": "#!/bin/sh\n\necho hi\n", "command": ""}) == "[script] echo hi"
    assert server_name({"server_id": "0123456789"}) == "01234567"
    assert [fmt_duration(v) for v in (None, 0.25, 12.34, 125, 7300)] == ["", "250ms", "12.3s", "2m05s", "2h01m"]


def test_messages_off_a_terminal_are_their_plain_text(capsys, monkeypatch):
    from remora.cli.render import err, out

    monkeypatch.delenv("FORCE_COLOR", raising=False)
    out("[green]completed[/] web-1\texit 0 \\[not markup] :warning:")
    err("[dim]submitted 1234abcd on web-1[/]")
    got = capsys.readouterr()
    assert got.out == "completed web-1\texit 0 [not markup] :warning:\n"  # no styles, tabs and text as they are
    assert got.err == "submitted 1234abcd on web-1\n"
    monkeypatch.setenv("FORCE_COLOR", "1")
    err("[red]failed[/] web-2")
    assert "\x1b[" in capsys.readouterr().err


@pytest.mark.parametrize(
    "markup",
    [
        "no tags at all",
        "[dim]submitted 1234abcd on web-1[/]",
        "[bold red]x[/bold red] \\[not a tag] [link=https://x/y]z[/link] [#ff0000]hex[/]",
        "two \\\\[b]backslashes then a tag[/b], three \\\\\\[b]",
        "[ not a tag ] [1] [Upper] a[b",
        "[@click=app.bell]meta[/] \\",
    ],
)
def test_plain_text_is_what_rich_renders(markup):
    from rich.markup import render

    from remora.cli.common import plain_text

    assert plain_text(markup) == render(markup, emoji=False).plain


def test_plain_messages_do_not_import_rich():
    import subprocess
    import sys
    from pathlib import Path

    code = "import sys\nfrom remora.cli.render import err, out\nout('[green]ok[/]')\nerr('[dim]x[/]')\nprint(sorted(m for m in sys.modules if m.startswith('rich')))\n"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "ok\n[]\n" and res.stderr == "x\n"
