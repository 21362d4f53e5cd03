"""`remora webhooks` (a subprocess) against an in-process API and a real receiver: add, list, test, deliveries, delete."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys

from tests.support.api import running_api
from tests.support.cluster import ROOT
from tests.support.receiver import Receiver


def cli(api, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMORA_")}
    env.update({"PYTHONPATH": str(ROOT), "NO_COLOR": "1", "COLUMNS": "200", "HOME": str(api.settings.data_dir)})
    argv = [sys.executable, "-m", "remora", *args, "--api-url", f"http://{api.host}:{api.port}", "--token", api.tokens["admin"]]
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env, timeout=60)


def test_add_test_deliveries_list_delete(tmp_path):
    with running_api(tmp_path, with_queue=False) as api, Receiver() as receiver:
        added = cli(api, "webhooks", "add", "--name", "ops", "--url", receiver.url, "--event", "job.failed", "-e", "batch.finished",
                    "--format", "slack", "--tag", "web", "--secret-stdin", stdin="from-stdin\n")  # fmt: skip
        assert added.returncode == 0, added.stderr
        assert "webhook ops added" in added.stdout
        listed = cli(api, "webhooks", "list", "--json")
        [row] = json.loads(listed.stdout)
        assert row["events"] == ["job.failed", "batch.finished"] and row["format"] == "slack"
        assert row["filter"] == {"tag": "web"} and row["has_secret"] is True and "from-stdin" not in listed.stdout
        table = cli(api, "webhooks", "list").stdout
        assert "ops" in table and "slack" in table and "tag=web" in table

        tested = cli(api, "webhooks", "test", "ops")
        assert tested.returncode == 0 and "ping delivered" in tested.stdout, tested
        [got] = receiver.requests
        assert got.headers["x-remora-signature"] == "sha256=" + hmac.new(b"from-stdin", got.body, hashlib.sha256).hexdigest()
        assert "text" in got.json()  # slack format

        log = cli(api, "webhooks", "deliveries", "ops", "--json")
        [delivery] = json.loads(log.stdout)
        assert (delivery["event"], delivery["status"], delivery["status_code"]) == ("ping", "delivered", 200)
        assert "ping" in cli(api, "webhooks", "deliveries", "ops").stdout

        secret_file = tmp_path / "secret"
        secret_file.write_text("from-file\n")
        dead = cli(api, "webhooks", "add", "--name", "dead", "--url", "http://127.0.0.1:9/x", "-e", "job.failed",
                   "--secret-file", str(secret_file))  # fmt: skip
        assert dead.returncode == 0, dead.stderr
        failed = cli(api, "webhooks", "test", "dead")
        assert failed.returncode == 1 and "not delivered" in failed.stderr, failed

        bad = cli(api, "webhooks", "add", "--name", "bad", "--url", "ftp://x", "-e", "job.failed")
        assert bad.returncode != 0 and "http" in bad.stderr, bad
        assert cli(api, "webhooks", "delete", "ops").returncode == 0
        assert cli(api, "webhooks", "delete", "ops").returncode != 0
        assert [w["name"] for w in json.loads(cli(api, "webhooks", "list", "--json").stdout)] == ["dead"]
