"""`remora submit --rollout/--max-failures` and `remora batches ...` end to end: `remora up` + three servers on the fixture sshd."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.support.cluster import Remora
from tests.support.waits import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.ssh]


def ok(res: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert res.returncode == 0, (res.returncode, res.stdout[-2000:], res.stderr[-2000:])
    return res


def summary_rows(stderr: bytes) -> list[list[str]]:
    lines = stderr.decode().splitlines()
    head = next(i for i, line in enumerate(lines) if re.match(r"^HOST\s+STATUS\s+EXIT", line))
    return sorted(re.split(r"\s+", line.strip()) for line in lines[head + 1 : head + 4])


def batch_status(remora: Remora, batch_id: str) -> dict:
    return json.loads(ok(remora.run("batches", "show", batch_id, "--json")).stdout)


def test_rolling_follow_prefixes_lines_stops_past_max_failures_and_exits_non_zero(remora: Remora):
    res = remora.run("submit", "--tag", "e2e", "--rollout", "1", "--max-failures", "0", "--follow", "--", "sh", "-c", "echo out; exit 4")
    assert res.returncode != 0
    lines = res.stdout.decode().splitlines()
    assert len(lines) == 1 and re.fullmatch(r"ssh-\d \| out", lines[0]), lines  # one host ran; the others never started
    rows = summary_rows(res.stderr)
    assert [row[1:] for row in rows if row[1] == "failed"] == [["failed", "4"]], rows
    assert sorted(row[1] for row in rows) == ["canceled", "canceled", "failed"], rows
    assert "not started: batch stopped after 1 failed hosts (max_failures 0)" in res.stderr.decode()


def test_batches_list_show_rerun_failed_and_all_with_json(remora: Remora):
    submitted = json.loads(
        ok(remora.run("submit", "--tag", "e2e", "--rollout", "34%", "--max-failures", "0", "--json", "--", "false")).stdout
    )
    batch_id = submitted["batch_id"]
    wait_for(lambda: batch_status(remora, batch_id)["status"] != "running", 30, 0.2, "the batch to end")
    batch = batch_status(remora, batch_id)
    assert batch["status"] == "aborted" and batch["concurrency"] == 2 and batch["counts"]["failed"] == 2, batch  # 34% of 3 -> 2
    listed = json.loads(ok(remora.run("batches", "list", "--status", "aborted", "--json")).stdout)
    assert batch_id in [b["id"] for b in listed["batches"]]
    rerun = json.loads(ok(remora.run("batches", "rerun", batch_id[:10], "--failed", "--json")).stdout)
    assert rerun["parent_id"] == batch_id and rerun["total"] == 3 and rerun["rollout"] == {"concurrency": "34%", "max_failures": 0}
    done = json.loads(ok(remora.run("submit", "--tag", "e2e", "--wait", "--json", "--", "true")).stdout)
    again = json.loads(ok(remora.run("batches", "rerun", done["batch_id"], "--all", "--json")).stdout)
    assert again["total"] == 3 and again["parent_id"] == done["batch_id"]
    shown = ok(remora.run("batches", "show", again["id"]))
    assert again["id"] in shown.stdout.decode()


def test_batches_cancel_stops_a_rollout(remora: Remora):
    submitted = json.loads(ok(remora.run("submit", "--tag", "e2e", "--rollout", "1", "--json", "--", "sleep", "30")).stdout)
    batch_id = submitted["batch_id"]
    wait_for(lambda: batch_status(remora, batch_id)["counts"]["running"] == 1, 30, 0.2, "one host running")
    ok(remora.run("batches", "cancel", batch_id, "--json"))
    wait_for(lambda: batch_status(remora, batch_id)["status"] == "canceled", 30, 0.2, "the batch canceled")
    assert batch_status(remora, batch_id)["counts"]["canceled"] == 3


def test_a_bad_rollout_is_a_usage_error(remora: Remora):
    res = remora.run("submit", "--tag", "e2e", "--rollout", "fast", "--", "true")
    assert res.returncode == 2 and b"--rollout" in res.stderr
    res = remora.run("submit", "--tag", "e2e", "--rollout", "0", "--", "true")
    assert res.returncode == 2 and b"concurrency" in res.stderr
