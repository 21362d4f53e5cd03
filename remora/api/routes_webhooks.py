"""Webhook routes (admin): list, show, create, change, delete, delivery log, send a test; every change audited."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from remora.api.http import Request
from remora.api.router import Param, Route
from remora.api.schema import TIMESTAMP, UUID, array, obj
from remora.config import Settings
from remora.errors import ValidationError
from remora.models.outbox import EVENTS
from remora.services import webhooks

if TYPE_CHECKING:
    from remora.api.app import App

FILTER = obj(
    {
        "template": {"type": ["string", "null"], "maxLength": 255, "description": "Only events of jobs run from this template."},
        "tag": {"type": ["string", "null"], "maxLength": 255, "description": "Only events of jobs on servers with this tag."},
    }
)
BODY_PROPS: dict[str, Any] = {
    "name": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,128}$"},
    "url": {"type": "string", "minLength": 1, "maxLength": 2048, "description": "http(s):// URL, or mailto:a@x,b@y for email."},
    "events": {"type": "array", "items": {"type": "string", "enum": list(EVENTS)}, "minItems": 1, "maxItems": len(EVENTS)},
    "format": {"type": "string", "enum": list(webhooks.FORMATS), "description": "json (default), slack, email (mailto: URLs)."},
    "secret": {"type": ["string", "null"], "maxLength": 4096, "description": "HMAC key of X-Remora-Signature; write-only."},
    "filter": {"type": ["object", "null"], **{k: v for k, v in FILTER.items() if k != "type"}},
    "enabled": {"type": "boolean"},
}
CREATE_BODY = obj(BODY_PROPS, ["name", "url", "events"])
UPDATE_BODY = obj(BODY_PROPS)
WEBHOOK = obj(
    {
        "id": UUID,
        "name": {"type": "string"},
        "url": {"type": "string"},
        "events": array({"type": "string"}),
        "format": {"type": "string"},
        "has_secret": {"type": "boolean"},
        "filter": {"type": "object"},
        "enabled": {"type": "boolean"},
        "created_by": {"type": "string"},
        "created_at": TIMESTAMP,
        "updated_at": TIMESTAMP,
    },
    closed=False,
)
WEBHOOK_LIST = obj({"webhooks": array(WEBHOOK)}, ["webhooks"])
DELIVERY = obj(
    {
        "id": UUID,
        "event": {"type": "string"},
        "subject": {"type": "string"},
        "status": {"type": "string", "enum": ["pending", "delivered", "failed"]},
        "status_code": {"type": ["integer", "null"]},
        "attempts": {"type": "integer"},
        "error": {"type": "string"},
        "created_at": TIMESTAMP,
        "delivered_at": TIMESTAMP,
        "next_attempt_at": TIMESTAMP,
    },
    closed=False,
)
DELIVERY_LIST = obj({"deliveries": array(DELIVERY)}, ["deliveries"])
DELETED = obj({"message": {"type": "string"}, "name": {"type": "string"}})


def _actor(req: Request) -> str:
    return req.identity.name if req.identity else "anonymous"


def _base_url(req: Request) -> str:
    """The dashboard's address as this request reached the API (links in notifications when api.public_url is unset)."""
    host = req.header("Host") or ""
    if not host or any(ch in host for ch in "/\\@ \t\r\n"):
        return ""
    scheme = str(req.environ.get("wsgi.url_scheme") or "http")
    return f"{scheme}://{host}"


def list_webhooks(app: App, req: Request) -> dict[str, Any]:
    return {"webhooks": [webhooks.webhook_dict(row) for row in webhooks.list_webhooks()]}


def get_webhook(app: App, req: Request) -> dict[str, Any]:
    return webhooks.webhook_dict(webhooks.get_webhook(req.path_params["name"]))


def _audit(req: Request, row: Any) -> None:
    req.audit_target = ("webhook", row.name)
    req.audit_details = {"url": row.url, "events": list(row.events or []), "format": row.format, "enabled": bool(row.enabled)}


def create_webhook(app: App, req: Request, body: dict[str, Any]) -> dict[str, Any]:
    row = webhooks.create_webhook(app.ctx, body, _actor(req), _base_url(req))
    _audit(req, row)
    return webhooks.webhook_dict(row)


def update_webhook(app: App, req: Request, body: dict[str, Any]) -> dict[str, Any]:
    row = webhooks.update_webhook(app.ctx, req.path_params["name"], body)
    _audit(req, row)
    if "secret" in body:
        req.audit_details["secret"] = "changed" if body["secret"] else "removed"
    return webhooks.webhook_dict(row)


def delete_webhook(app: App, req: Request) -> dict[str, Any]:
    row = webhooks.delete_webhook(req.path_params["name"])
    req.audit_target = ("webhook", row.name)
    return {"message": "webhook deleted", "name": row.name}


def list_deliveries(app: App, req: Request) -> dict[str, Any]:
    raw = req.arg("limit", "50") or "50"
    if not raw.isdigit():
        raise ValidationError("limit must be a whole number", details={"limit": "a whole number"})
    rows = webhooks.deliveries(req.path_params["name"], int(raw), req.arg("status"))
    return {"deliveries": [webhooks.delivery_dict(row) for row in rows]}


def test_webhook(app: App, req: Request) -> dict[str, Any]:
    delivery = webhooks.test_webhook(app.ctx, req.path_params["name"], _actor(req))
    req.audit_target = ("webhook", req.path_params["name"])
    req.audit_details = {"delivery": delivery.uid, "status": delivery.status, "status_code": delivery.status_code}
    return webhooks.delivery_dict(delivery)


def routes(settings: Settings) -> list[Route]:
    base = "/api/v1/webhooks"
    one = base + "/{name:str}"
    common = {"tag": "webhooks", "resource": "webhook"}
    return [
        Route("GET", base, list_webhooks, "admin", "Webhooks (secrets never shown)", response=WEBHOOK_LIST, **common),
        Route(
            "POST",
            base,
            create_webhook,
            "admin",
            "Add a webhook: job/batch/schedule events POSTed as JSON or Slack text, or emailed (mailto:)",
            body=CREATE_BODY,
            response=WEBHOOK,
            status=201,
            errors=(400, 409, 413, 415),
            name="webhook_create",
            **common,
        ),
        Route("GET", one, get_webhook, "admin", "A webhook", response=WEBHOOK, errors=(404,), **common),
        Route(
            "PUT",
            one,
            update_webhook,
            "admin",
            "Change a webhook (fields not given are kept; secret null removes it)",
            body=UPDATE_BODY,
            response=WEBHOOK,
            errors=(400, 404, 409, 413, 415),
            name="webhook_update",
            **common,
        ),
        Route("DELETE", one, delete_webhook, "admin", "Delete a webhook and its delivery log", response=DELETED, errors=(404,), **common),
        Route(
            "GET",
            one + "/deliveries",
            list_deliveries,
            "admin",
            "A webhook's latest deliveries, newest first",
            response=DELIVERY_LIST,
            errors=(400, 404),
            query=[
                Param("limit", {"type": "integer", "minimum": 1, "maximum": webhooks.DELIVERY_LIMIT}, "How many (default 50)."),
                Param("status", {"type": "string", "enum": ["pending", "delivered", "failed"]}, "Only deliveries in this state."),
            ],
            name="webhook_deliveries",
            **common,
        ),
        Route(
            "POST",
            one + "/test",
            test_webhook,
            "admin",
            "Send a ping event now; the delivery after its first attempt",
            response=DELIVERY,
            errors=(404,),
            name="webhook_test",
            **common,
        ),
    ]
