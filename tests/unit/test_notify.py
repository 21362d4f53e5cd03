"""Notification pieces without sockets: filters, backoff bounds, the rendered texts, signatures, mailto: parsing."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json

from remora.config import Settings, with_overrides
from remora.models.outbox import matches
from remora.notify import render, transport
from remora.services.webhooks import check_url

JOB = {
    "event": "job.failed",
    "at": "2026-01-01T00:00:00Z",
    "job": {
        "id": "0b4c1c2e-0000-4000-8000-000000000001",
        "name": "backup",
        "command": "/usr/local/bin/backup",
        "status": "failed",
        "exit_code": 2,
        "error": "exit code 2",
        "server": {"id": "s", "name": "db-1", "hostname": "10.0.0.7"},
        "duration": 75.5,
        "batch_id": None,
        "template": None,
    },
}


def test_a_filter_matches_on_template_and_tag_and_an_empty_one_on_everything():
    assert matches({}, None, [])
    assert matches({"tag": "db"}, None, ["web", "db"])
    assert not matches({"tag": "db"}, None, ["web"])
    assert matches({"template": "deploy"}, "deploy", [])
    assert not matches({"template": "deploy"}, None, ["deploy"])
    assert not matches({"template": "deploy", "tag": "db"}, "deploy", ["web"])


def test_backoff_doubles_with_jitter_is_capped_and_gives_up_after_retry_for():
    settings = with_overrides(Settings(), {"webhooks.backoff": "10s", "webhooks.max_backoff": "60s", "webhooks.retry_for": "1h"})
    created = dt.datetime(2026, 1, 1)
    for attempts, low in ((1, 10), (2, 20), (3, 40), (9, 60)):
        delay = (transport.retry_at(attempts, created, settings, now=created) - created).total_seconds()
        assert low <= delay <= low * 1.25, (attempts, delay)
    near_end = created + dt.timedelta(minutes=59, seconds=50)
    assert transport.retry_at(9, created, settings, now=near_end) == created + dt.timedelta(hours=1)  # one last try at the deadline
    assert transport.retry_at(9, created, settings, now=created + dt.timedelta(hours=1)) is None


def test_slack_text_has_status_host_exit_code_duration_and_link():
    text = json.loads(render.slack_body(JOB, "https://remora.example.com/"))["text"]
    for part in ("failed", "backup", "db-1", "exit code: 2", "duration: 1m15s", "https://remora.example.com/#/jobs?job=0b4c1c2e"):
        assert part in text, (part, text)


def test_the_email_subject_names_status_job_and_host():
    subject, body = render.email(JOB, "")
    assert subject == "[Remora] job failed: backup on db-1"
    assert "status: failed" in body and "host: db-1" in body and "hostname: 10.0.0.7" in body and "Open in Remora" not in body


def test_the_signature_is_the_hex_hmac_sha256_of_the_body():
    body = render.json_body(JOB, "d-1")
    assert json.loads(body)["delivery"] == "d-1"
    assert transport.signature(b"k", body) == "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()


def test_mailto_urls_are_split_into_addresses_and_checked():
    assert transport.mail_recipients("mailto:a@x.org,%20b@y.org?subject=x") == ["a@x.org", "b@y.org"]
    assert check_url("mailto:a@x.org, b@y.org") == "mailto:a@x.org,b@y.org"
    assert check_url("https://example.com:8443/h?x=1") == "https://example.com:8443/h?x=1"


def test_smtp_settings_spell_from_as_in_toml_and_mask_the_password(tmp_path):
    from remora import config

    path = tmp_path / "remora.toml"
    path.write_text('[smtp]\nhost = "mail.example.com"\nfrom = "remora@example.com"\npassword = "hunter2"\n')
    settings = config.load(str(path), {"REMORA_SMTP_PORT": "587"})
    assert (settings.smtp.host, settings.smtp.from_, settings.smtp.port) == ("mail.example.com", "remora@example.com", 587)
    assert settings.get("smtp.from") == "remora@example.com" and settings.sources["smtp.from"].startswith("file:")
    assert settings.masked()["smtp"]["password"] == "********" and settings.masked()["smtp"]["from"] == "remora@example.com"
    assert config.load(None, {"REMORA_SMTP_PASSWORD": "x"}).smtp.password == "x"
    assert "REMORA_SMTP_PASSWORD" in config.secret_env_names()  # never inherited by local jobs
