"""The command line end to end: `remora up` (checkout and zipapp) + the fixture sshd + client commands."""

from __future__ import annotations

import json
import re
import signal
import stat
import subprocess
import time

import pytest

from tests.support.cluster import ROOT, Remora, connected_to, make_remora, system_python, wait_status
from tests.support.waits import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.ssh]

MIXED = r"printf 'line1\r\nline2\n\n\ttabbed \303\244\342\202\254\n'; printf 'to stderr\n' >&2; printf 'no newline at end'"


def ok(res: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert res.returncode == 0, (res.returncode, res.stdout[-2000:], res.stderr[-2000:])
    return res


def test_up_prints_dashboard_url_with_token_and_keeps_it_private(remora: Remora):
    dashboard = next(line for line in remora.banner if "Dashboard:" in line)
    token = re.search(r"#token=(\S+)", dashboard).group(1)
    assert f"http://127.0.0.1:{remora.port}/#token=" in dashboard
    token_file = remora.data_dir / "admin.token"
    assert token_file.read_text().strip() == token
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert any(remora.url in line for line in remora.banner if "API:" in line)
    assert any("Ctrl-C" in line for line in remora.banner)


def test_submit_wait_exits_with_the_remote_exit_code(remora: Remora):
    res = remora.run("submit", "-s", "ssh-1", "--wait", "--", "sh", "-c", "exit 3")
    assert res.returncode == 3, res.stderr
    assert ok(remora.run("submit", "-s", "ssh-1", "--wait", "--", "true")).returncode == 0


def test_follow_output_equals_the_remote_output_byte_for_byte(remora: Remora, sshd):
    direct = subprocess.run(
        ["ssh", "-p", str(sshd.port), "-i", str(sshd.key_path), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", f"{sshd.user}@{sshd.host}", MIXED],
        capture_output=True, timeout=30,
    )  # fmt: skip
    assert direct.returncode == 0 and b"\r\n" in direct.stdout
    res = ok(remora.run("submit", "-s", "ssh-1", "--follow", "--", "sh", "-c", MIXED))
    assert res.stdout == direct.stdout
    assert res.stderr == direct.stderr
    job_id = ok(remora.run("jobs", "list", "--server", "ssh-1", "--limit", "1", "--json")).stdout
    latest = json.loads(job_id)["jobs"][0]["id"]
    logs = ok(remora.run("jobs", "logs", latest[:10]))
    assert logs.stdout == direct.stdout and logs.stderr == direct.stderr


def test_yaml_file_with_three_servers_makes_a_batch(remora: Remora, tmp_path):
    path = tmp_path / "batch.yaml"
    path.write_text("name: fan-out\ncommand: echo\nargs: [hello, batch]\nservers: [ssh-1, ssh-2, ssh-3]\n")
    res = ok(remora.run("run", "-f", str(path), "--wait", "--json"))
    data = json.loads(res.stdout)
    assert data["batch_id"] and len(data["jobs"]) == 3
    assert {j["batch_id"] for j in data["jobs"]} == {data["batch_id"]}
    assert {j["server"]["name"] for j in data["jobs"]} == {"ssh-1", "ssh-2", "ssh-3"}
    assert all(j["status"] == "completed" and j["stdout"] == "hello batch\n" for j in data["jobs"])
    listed = json.loads(ok(remora.run("jobs", "list", "--batch", data["batch_id"], "--json")).stdout)
    assert listed["pagination"]["total"] == 3


def test_follow_on_several_servers_prefixes_lines_and_fails_when_any_failed(remora: Remora):
    res = remora.run("submit", "--tag", "e2e", "--follow", "--", "sh", "-c", "echo out; exit 4")
    assert res.returncode == 4
    assert sorted(res.stdout.decode().splitlines()) == ["ssh-1 | out", "ssh-2 | out", "ssh-3 | out"]


def test_json_output_parses_everywhere(remora: Remora):
    job = json.loads(ok(remora.run("submit", "--json", "--", "echo", "hi")).stdout)
    assert job["status"] in ("queued", "running", "completed") and job["server"]["name"] == "local"
    for args in (
        ["jobs", "list", "--json"],
        ["jobs", "show", job["id"], "--json"],
        ["servers", "list", "--json"],
        ["servers", "show", "ssh-1", "--json"],
    ):
        json.loads(ok(remora.run(*args)).stdout)
    waited = json.loads(ok(remora.run("jobs", "wait", job["id"], "--json")).stdout)
    assert waited["status"] == "completed" and waited["exit_code"] == 0


def test_plain_submit_prints_only_the_job_id(remora: Remora):
    res = ok(remora.run("submit", "--", "true"))
    assert re.fullmatch(rb"[0-9a-f-]{36}\n", res.stdout), res.stdout


def test_bad_yaml_file_reports_line_and_column(remora: Remora, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("command: echo\nservers: [ssh-1]\ntimeout: whenever\n")
    res = remora.run("run", "-f", str(path))
    assert res.returncode == 2
    assert f"{path}:3:10: timeout".encode() in res.stderr
    assert b"Traceback" not in res.stderr


def test_job_ids_can_be_abbreviated(remora: Remora):
    job_id = ok(remora.run("submit", "--", "echo", "abbrev")).stdout.decode().strip()
    shown = json.loads(ok(remora.run("jobs", "show", job_id[:7], "--json")).stdout)
    assert shown["id"] == job_id
    ids = [j["id"] for j in json.loads(ok(remora.run("jobs", "list", "--limit", "100", "--json")).stdout)["jobs"]]
    # Ids are random: submit until two share a first digit (17 ids always do).
    while len({i[0] for i in ids}) == len(ids):
        ids.append(ok(remora.run("submit", "--", "true")).stdout.decode().strip())
    firsts = [i[0] for i in ids]
    shared = next(c for c in firsts if firsts.count(c) > 1)
    res = remora.run("jobs", "show", shared)
    assert res.returncode == 2 and b"ambiguous" in res.stderr
    unused = next(p for p in (f"{a}{b}" for a in "0123456789abcdef" for b in "0123456789abcdef") if not any(i.startswith(p) for i in ids))
    res = remora.run("jobs", "show", unused + "00")
    assert res.returncode == 1 and b"no job" in res.stderr


def test_cancel_and_timeout_have_their_own_exit_codes(remora: Remora):
    job_id = ok(remora.run("submit", "-s", "ssh-2", "--", "sleep", "30")).stdout.decode().strip()
    wait_status(remora, job_id, "running")
    ok(remora.run("jobs", "cancel", job_id[:8]))
    assert remora.run("jobs", "wait", job_id).returncode == 125
    res = remora.run("submit", "-s", "ssh-2", "-t", "1", "--wait", "--", "sleep", "30")
    assert res.returncode == 124, res.stderr


def test_rerun_and_duplicate(remora: Remora):
    job_id = ok(remora.run("submit", "--", "sh", "-c", "exit 5")).stdout.decode().strip()
    assert remora.run("jobs", "wait", job_id).returncode == 5
    assert remora.run("jobs", "rerun", job_id[:8], "--wait").returncode == 5
    copy = json.loads(ok(remora.run("jobs", "duplicate", job_id, "--server", "ssh-3", "--priority", "1", "--json")).stdout)
    assert copy["server"]["name"] == "ssh-3" and copy["priority"] == 1


def test_api_unreachable_exits_69(remora: Remora):
    res = remora.run("jobs", "list", env={"REMORA_API_URL": "http://127.0.0.1:9"})
    assert res.returncode == 69 and b"http://127.0.0.1:9" in res.stderr


@pytest.mark.slow
def test_ctrl_c_of_up_drains_a_running_job(tmp_path):
    up = make_remora("checkout", tmp_path, None)
    up.start(workers=2)
    try:
        job_id = ok(up.run("submit", "--", "sh", "-c", "sleep 2; echo drained")).stdout.decode().strip()
        wait_status(up, job_id, "running")
        waiter = up.popen("jobs", "wait", job_id, "--json")
        # Ctrl-C only once the waiter is connected to the API and watching the job, so it waits across the drain.
        wait_for(lambda: waiter.poll() is None and connected_to(waiter.pid, up.port), 30, what="`jobs wait` connected to the API")
        start = time.monotonic()
        assert up.stop(signal.SIGINT) == 0, up.logs()[-3000:]
        assert time.monotonic() - start < 30
        out, err = waiter.communicate(timeout=30)
        assert waiter.returncode == 0, err
        assert json.loads(out)["stdout"] == "drained\n"
    finally:
        up.stop(signal.SIGKILL)
    # The job's result survived the shutdown: a new `remora up` on the same data shows it completed.
    up.start(workers=1)
    try:
        job = json.loads(ok(up.run("jobs", "show", job_id, "--json")).stdout)
        assert job["status"] == "completed" and job["stdout"] == "drained\n"
        token_banner = next(line for line in up.banner if "#token=" in line)
        assert token_banner.split("#token=")[1] == (up.data_dir / "admin.token").read_text().strip()
    finally:
        assert up.stop() == 0


@pytest.mark.slow
def test_zipapp_version_from_an_empty_directory(zipapp, tmp_path):
    from remora import __version__

    res = subprocess.run(
        [system_python(), str(zipapp), "--version"], capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={"HOME": str(tmp_path), "PATH": "/usr/local/bin:/usr/bin:/bin", "SHIV_ROOT": str(tmp_path / "shiv"), "PYTHONDONTWRITEBYTECODE": "1"},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"remora {__version__}"
    # the first run compiled the libraries it unpacked, imports or not (later runs need not write bytecode)
    for module in ("remora/cli/jobs", "remora/worker/core", "typer/main", "paramiko/transport"):
        package, name = module.rsplit("/", 1)
        assert list((tmp_path / "shiv").glob(f"*/site-packages/{package}/__pycache__/{name}.*.pyc")), module


def test_every_example_job_file_passes_a_dry_run(remora: Remora):
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        res = ok(remora.run("run", "-f", str(path), "--dry-run", "--json"))
        assert json.loads(res.stdout), path


def test_servers_test_status_and_pem_keys(remora: Remora, sshd):
    tested = json.loads(ok(remora.run("servers", "test", "ssh-1", "--json")).stdout)
    assert tested["status"] == "connection_successful" and tested["host_key_fingerprint"]
    status = json.loads(ok(remora.run("servers", "status", "--all", "--json")).stdout)
    assert {s["server_name"] for s in status["servers"]} >= {"ssh-1", "ssh-2", "ssh-3"}
    ok(remora.run("keys", "upload", str(sshd.key_path), "--name", "e2e.key"))
    assert "e2e.key" in ok(remora.run("keys", "list")).stdout.decode()
    ok(remora.run("servers", "add", "ssh-pem", "--host", sshd.host, "--port", str(sshd.port), "--user", sshd.user, "--pem", "e2e.key"))
    res = remora.run("submit", "-s", "ssh-pem", "--follow", "--", "echo", "via pem")
    assert res.returncode == 0 and res.stdout == b"via pem\n", res.stderr
    assert remora.run("keys", "rm", "e2e.key").returncode == 1  # in use by ssh-pem
    ok(remora.run("servers", "rm", "ssh-pem", "--force"))
    ok(remora.run("keys", "rm", "e2e.key"))


def test_jobs_logs_follow_streams_one_stream_and_exits_with_the_job_code(remora: Remora):
    job_id = ok(remora.run("submit", "-s", "ssh-3", "--", "sh", "-c", "echo o1; echo e1 >&2; sleep 1; echo o2; echo e2 >&2; exit 6")).stdout
    res = remora.run("jobs", "logs", job_id.decode().strip()[:8], "--follow", "--stderr")
    assert res.returncode == 6
    assert res.stdout == b"" and res.stderr == b"e1\ne2\n"


def test_submit_wait_prints_the_jobs_output_and_quiet_does_not(remora: Remora):
    res = ok(remora.run("submit", "-s", "ssh-1", "--wait", "--", "sh", "-c", "echo from-remote; echo to-err >&2"))
    assert res.stdout == b"from-remote\n", res.stdout
    assert b"to-err\n" in res.stderr
    quiet = ok(remora.run("submit", "-s", "ssh-1", "--wait", "--quiet", "--", "echo", "from-remote"))
    assert quiet.stdout == b"" and b"from-remote" not in quiet.stderr
    failed = remora.run("submit", "-s", "ssh-1", "--wait", "--", "sh", "-c", "echo before-fail; exit 3")
    assert failed.returncode == 3 and failed.stdout == b"before-fail\n"


def test_follow_on_several_servers_ends_with_a_per_host_summary(remora: Remora):
    res = remora.run("submit", "-s", "ssh-1", "-s", "ssh-2", "--follow", "--", "echo", "out")
    assert res.returncode == 0, res.stderr
    lines = res.stderr.decode().splitlines()
    head = next(i for i, line in enumerate(lines) if re.match(r"^HOST\s+STATUS\s+EXIT", line))
    rows = sorted(re.split(r"\s+", line.strip()) for line in lines[head + 1 : head + 3])
    assert rows == [["ssh-1", "completed", "0"], ["ssh-2", "completed", "0"]], lines
