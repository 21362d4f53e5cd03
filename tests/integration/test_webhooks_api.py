"""The webhooks API over HTTP (an in-process API, tests/support/api.py): validation, roles, write-only secret, audit, test pings."""

from __future__ import annotations

import hashlib
import hmac
import json

from remora import models
from remora.models import AuditEvent, Webhook
from remora.services import audit
from tests.support.api import assert_envelope, running_api
from tests.support.receiver import Receiver

SECRET = "s3cr3t-hmac-key-value"


def test_bad_url_event_or_format_is_a_400_naming_the_field(tmp_path):
    with running_api(tmp_path, with_queue=False) as api:
        good = {"name": "ok", "url": "https://example.com/hook", "events": ["job.failed"]}
        cases = [
            ({"url": "ftp://example.com/x"}, "url"),
            ({"url": "file:///etc/passwd"}, "url"),
            ({"url": "javascript:alert(1)"}, "url"),
            ({"url": "not a url"}, "url"),
            ({"url": "http://"}, "url"),
            ({"url": "http://user:pw@example.com/"}, "url"),
            ({"url": "mailto:"}, "url"),
            ({"url": "mailto:not-an-address"}, "url"),
            ({"events": ["job.exploded"]}, "events"),
            ({"events": []}, "events"),
            ({"events": "job.failed"}, "events"),
            ({"format": "xml"}, "format"),
            ({"format": "email"}, "format"),  # email needs a mailto: URL
            ({"url": "mailto:ops@example.com", "format": "slack"}, "format"),
            ({"filter": {"host": "x"}}, "filter"),
            ({"name": "bad name!"}, "name"),
            ({"enabled": "yes"}, "enabled"),
        ]
        for change, field in cases:
            reply = assert_envelope(api.post("/api/v1/webhooks", {**good, **change}), 400, "VALIDATION_ERROR")
            assert any(key.startswith(field) for key in reply.get("details", {})) or field in reply["error"], (change, reply)
        assert api.get("/api/v1/webhooks").json() == {"webhooks": []}  # nothing half-created
        reply = api.post("/api/v1/webhooks", {**good, "url": "mailto:a@example.com,b@example.org"})
        assert reply.status == 201, reply
        assert reply.json()["format"] == "email"  # implied by mailto:
        assert_envelope(api.request("PUT", "/api/v1/webhooks/ok", {"url": "gopher://x"}), 400, "VALIDATION_ERROR")
        assert_envelope(api.request("PUT", "/api/v1/webhooks/ok", {"events": ["nope"]}), 400, "VALIDATION_ERROR")
        assert_envelope(api.post("/api/v1/webhooks", {**good, "url": "http://example.com/other"}), 409, "CONFLICT")


def test_only_admins_manage_webhooks(tmp_path):
    with running_api(tmp_path, with_queue=False) as api:
        body = {"name": "ops", "url": "http://127.0.0.1:9/hook", "events": ["job.failed"]}
        assert api.post("/api/v1/webhooks", body).status == 201
        for role in ("operator", "runner", "viewer"):
            assert_envelope(api.get("/api/v1/webhooks", token=role), 403, "FORBIDDEN")
            assert_envelope(api.get("/api/v1/webhooks/ops", token=role), 403, "FORBIDDEN")
            assert_envelope(api.post("/api/v1/webhooks", {**body, "name": f"by-{role}"}, token=role), 403, "FORBIDDEN")
            assert_envelope(api.request("PUT", "/api/v1/webhooks/ops", {"enabled": False}, token=role), 403, "FORBIDDEN")
            assert_envelope(api.request("DELETE", "/api/v1/webhooks/ops", token=role), 403, "FORBIDDEN")
            assert_envelope(api.get("/api/v1/webhooks/ops/deliveries", token=role), 403, "FORBIDDEN")
            assert_envelope(api.post("/api/v1/webhooks/ops/test", token=role), 403, "FORBIDDEN")
        assert_envelope(api.get("/api/v1/webhooks", token=None), 401, "UNAUTHORIZED")
        assert [w["name"] for w in api.get("/api/v1/webhooks").json()["webhooks"]] == ["ops"]
        assert Webhook.get(Webhook.name == "ops").enabled  # the refused PUTs changed nothing


def test_the_secret_is_write_only_and_encrypted_at_rest(tmp_path):
    with running_api(tmp_path, with_queue=False) as api:
        body = {"name": "signed", "url": "https://example.com/h", "events": ["job.failed", "job.completed"], "secret": SECRET}
        replies = [api.post("/api/v1/webhooks", body)]
        replies.append(api.get("/api/v1/webhooks"))
        replies.append(api.get("/api/v1/webhooks/signed"))
        replies.append(api.request("PUT", "/api/v1/webhooks/signed", {"format": "slack", "filter": {"tag": "web"}}))
        for reply in replies:
            assert reply.status in (200, 201), reply
            assert SECRET.encode() not in reply.body, reply
        shown = replies[-1].json()
        assert shown["has_secret"] is True and "secret" not in shown
        assert shown["format"] == "slack" and shown["filter"] == {"tag": "web"} and shown["events"] == ["job.completed", "job.failed"]
        stored = bytes(Webhook.get(Webhook.name == "signed").secret)
        assert SECRET.encode() not in stored and api.server.app.ctx.secrets.decrypt(stored) == SECRET.encode()
        assert api.request("PUT", "/api/v1/webhooks/signed", {"secret": None}).json()["has_secret"] is False
        audit.flush()
        actions = [e.action for e in AuditEvent.select().where(AuditEvent.target_type == "webhook").order_by(AuditEvent.id)]
        assert actions == ["webhook_create", "webhook_update", "webhook_update"]
        details = json.dumps([e.details for e in AuditEvent.select()])
        assert SECRET not in details
        assert api.request("DELETE", "/api/v1/webhooks/signed").status == 200
        assert_envelope(api.get("/api/v1/webhooks/signed"), 404, "NOT_FOUND")
        assert_envelope(api.post("/api/v1/webhooks/signed/test"), 404, "NOT_FOUND")


def test_a_test_ping_is_sent_at_once_signed_and_logged(tmp_path):
    with running_api(tmp_path, with_queue=False) as api, Receiver() as receiver:
        body = {"name": "pinged", "url": receiver.url, "events": ["job.failed"], "secret": SECRET}
        assert api.post("/api/v1/webhooks", body).status == 201
        reply = api.post("/api/v1/webhooks/pinged/test")
        assert reply.status == 200, reply
        delivery = reply.json()
        assert delivery["status"] == "delivered" and delivery["status_code"] == 200 and delivery["attempts"] == 1
        [got] = receiver.requests  # sent before the answer, exactly once
        assert got.headers["x-remora-event"] == "ping"
        assert got.headers["x-remora-delivery"] == delivery["id"]
        assert got.headers["user-agent"].startswith("Remora/")
        expected = "sha256=" + hmac.new(SECRET.encode(), got.body, hashlib.sha256).hexdigest()
        assert got.headers["x-remora-signature"] == expected
        assert got.json()["event"] == "ping" and got.json()["webhook"] == "pinged"
        log = api.get("/api/v1/webhooks/pinged/deliveries").json()["deliveries"]
        assert [(d["id"], d["status"], d["status_code"]) for d in log] == [(delivery["id"], "delivered", 200)]
        assert log[0]["delivered_at"] and log[0]["next_attempt_at"] is None
        assert_envelope(api.get("/api/v1/webhooks/pinged/deliveries?limit=0"), 400, "VALIDATION_ERROR")
        assert_envelope(api.get("/api/v1/webhooks/pinged/deliveries?status=lost"), 400, "VALIDATION_ERROR")


def test_a_ping_to_a_dead_receiver_stays_pending_with_its_error(tmp_path):
    receiver = Receiver()  # never started: the port refuses
    with running_api(tmp_path, with_queue=False, **{"webhooks.backoff": "1h"}) as api:
        assert api.post("/api/v1/webhooks", {"name": "dead", "url": receiver.url, "events": ["job.failed"]}).status == 201
        delivery = api.post("/api/v1/webhooks/dead/test").json()
        assert delivery["status"] == "pending" and delivery["attempts"] == 1 and delivery["status_code"] is None
        assert "refused" in delivery["error"].lower(), delivery
        assert delivery["next_attempt_at"] > models.to_rfc3339(models.utcnow())
