"""Webhooks (admin): where notifications of job, batch and schedule events go, and their delivery log.

A webhook has a ``name``, a ``url`` (``http://`` / ``https://``, or
``mailto:a@x,b@y`` for email), the ``events`` it wants, a ``format``
(``json``, ``slack``; ``email`` for a ``mailto:`` URL, implied), an optional
``secret`` (the HMAC key of ``X-Remora-Signature``: encrypted at rest, never
returned -- responses say ``has_secret``), an optional ``filter``
(``{"template": name, "tag": server tag}``) and ``enabled``.

Events reach the outbox in the transaction that made them happen
(``remora.models.outbox``); the API's delivery loop sends them
(``remora.upkeep.deliveries``).  ``test_webhook`` records a ``ping`` and sends
it at once; when that attempt fails it is retried like any other delivery.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any
from urllib.parse import urlsplit

from remora import models, notify
from remora.errors import Conflict, NotFound, ValidationError
from remora.models import Delivery, Webhook
from remora.models.outbox import EVENTS, PING
from remora.services.context import Context

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
FORMATS = ("json", "slack", "email")
EMAIL_RE = re.compile(r"^[^@\s,<>]+@[^@\s,<>]+$")
MAX_URL = 2048
DELIVERY_LIMIT = 100


def _fail(field: str, message: str) -> ValidationError:
    return ValidationError(f"invalid webhook: {field} {message}", details={field: message})


def check_url(url: Any) -> str:
    """An http(s) URL with a host, or ``mailto:`` with valid addresses; 400 otherwise."""
    if not isinstance(url, str) or not url.strip() or len(url) > MAX_URL:
        raise _fail("url", f"must be an http:// or https:// URL (or mailto:) of at most {MAX_URL} characters")
    url = url.strip()
    if url.lower().startswith("mailto:"):
        addresses = notify.transport.mail_recipients(url)
        bad = [a for a in addresses if not EMAIL_RE.match(a)]
        if not addresses or bad:
            raise _fail("url", f"mailto: needs addresses like a@example.com (bad: {', '.join(bad) or 'none given'})")
        return "mailto:" + ",".join(addresses)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _fail("url", "is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise _fail("url", f"must use http or https, not {parts.scheme or 'no scheme'!r}")
    if not parts.hostname:
        raise _fail("url", "has no host")
    if parts.username or parts.password:
        raise _fail("url", "must not carry credentials (use a secret: the body is signed)")
    if port == 0:
        raise _fail("url", "has port 0")
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise _fail("url", "must not contain spaces or control characters")
    return url


def normalise(data: dict[str, Any], *, current: Webhook | None = None) -> dict[str, Any]:
    """The stored fields (but ``secret``) of a webhook from an API body; a PUT keeps what it does not name."""
    merged: dict[str, Any] = {}
    if current is not None:
        merged = {
            "name": current.name,
            "url": current.url,
            "events": current.events,
            "format": current.format,
            "filter": current.filter,
            "enabled": current.enabled,
        }
    merged.update({k: v for k, v in data.items() if k != "secret"})
    name = merged.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise _fail("name", "must be 1..128 letters, digits, '_', '.' or '-'")
    url = check_url(merged.get("url"))
    events = merged.get("events")
    if not isinstance(events, list) or not events:
        raise _fail("events", f"must be a non-empty list of: {', '.join(EVENTS)}")
    unknown = [e for e in events if e not in EVENTS]
    if unknown:
        raise _fail("events", f"unknown event {unknown[0]!r} (known: {', '.join(EVENTS)})")
    fmt = merged.get("format") or ("email" if url.startswith("mailto:") else "json")
    if current is not None and "format" not in data and "url" in data:
        fmt = "email" if url.startswith("mailto:") else ("json" if current.format == "email" else current.format)
    if fmt not in FORMATS:
        raise _fail("format", f"must be one of {', '.join(FORMATS)}")
    if (fmt == "email") != url.startswith("mailto:"):
        raise _fail("format", "email goes with a mailto: URL, and a mailto: URL with format email")
    filter_ = merged.get("filter") or {}
    if not isinstance(filter_, dict) or set(filter_) - {"template", "tag"}:
        raise _fail("filter", "must be an object with template and/or tag")
    for key, value in filter_.items():
        if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 255):
            raise _fail(f"filter.{key}", "must be a name of 1..255 characters")
    enabled = merged.get("enabled", True)
    if not isinstance(enabled, bool):
        raise _fail("enabled", "must be true or false")
    return {
        "name": name,
        "url": url,
        "events": sorted(set(events), key=EVENTS.index),
        "format": fmt,
        "filter": {k: v for k, v in filter_.items() if v},
        "enabled": enabled,
    }


def _secret(ctx: Context, data: dict[str, Any]) -> tuple[bool, bytes | None]:
    """(whether the body sets the secret, its ciphertext: None clears it)."""
    if "secret" not in data:
        return False, None
    secret = data["secret"]
    if secret is None or secret == "":
        return True, None
    if not isinstance(secret, str) or len(secret) > 4096:
        raise _fail("secret", "must be a string of at most 4096 characters")
    return True, ctx.secrets.encrypt(secret)


def webhook_dict(row: Webhook) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "url": row.url,
        "events": list(row.events or []),
        "format": row.format,
        "has_secret": row.secret is not None,
        "filter": dict(row.filter or {}),
        "enabled": bool(row.enabled),
        "created_by": row.created_by or "",
        "created_at": models.to_rfc3339(row.created_at),
        "updated_at": models.to_rfc3339(row.updated_at),
    }


def delivery_dict(row: Delivery) -> dict[str, Any]:
    return {
        "id": row.uid,
        "event": row.event,
        "subject": row.subject,
        "status": row.status,
        "status_code": row.status_code,
        "attempts": row.attempts,
        "error": row.error or "",
        "created_at": models.to_rfc3339(row.created_at),
        "delivered_at": models.to_rfc3339(row.delivered_at),
        "next_attempt_at": models.to_rfc3339(row.next_attempt_at) if row.status == "pending" else None,
    }


def list_webhooks() -> list[Webhook]:
    return list(Webhook.select().order_by(Webhook.name))


def get_webhook(name: str) -> Webhook:
    row = Webhook.get_or_none(Webhook.name == name)
    if row is None:
        raise NotFound(f"webhook not found: {name}", details={"name": name})
    return row


def create_webhook(ctx: Context, data: dict[str, Any], actor: str, base_url: str = "") -> Webhook:
    fields = normalise(data)
    _, secret = _secret(ctx, data)
    now = models.utcnow()
    try:
        with models.write_transaction():
            if Webhook.get_or_none(Webhook.name == fields["name"]) is not None:
                raise Conflict(f"a webhook named {fields['name']!r} exists", details={"name": fields["name"]})
            return Webhook.create(**fields, secret=secret, base_url=base_url, created_by=actor, created_at=now, updated_at=now)
    except models.IntegrityError:
        raise Conflict(f"a webhook named {fields['name']!r} exists", details={"name": fields["name"]}) from None


def update_webhook(ctx: Context, name: str, data: dict[str, Any]) -> Webhook:
    """Change the fields the body names (``secret``: a new one; ``null`` or "" removes it)."""
    row = get_webhook(name)
    fields = normalise(data, current=row)
    sets_secret, secret = _secret(ctx, data)
    values: dict[Any, Any] = {getattr(Webhook, k): v for k, v in fields.items()}
    values[Webhook.updated_at] = models.utcnow()
    if sets_secret:
        values[Webhook.secret] = secret
    try:
        with models.write_transaction():
            if fields["name"] != name and Webhook.get_or_none(Webhook.name == fields["name"]) is not None:
                raise Conflict(f"a webhook named {fields['name']!r} exists", details={"name": fields["name"]})
            Webhook.update(values).where(Webhook.id == row.id).execute()
    except models.IntegrityError:
        raise Conflict(f"a webhook named {fields['name']!r} exists", details={"name": fields["name"]}) from None
    return Webhook.get_by_id(row.id)


def delete_webhook(name: str) -> Webhook:
    """Delete a webhook and its delivery log (pending deliveries are dropped)."""
    row = get_webhook(name)
    with models.write_transaction():
        Delivery.delete().where(Delivery.webhook == row.id).execute()
        Webhook.delete().where(Webhook.id == row.id).execute()
    return row


def deliveries(name: str, limit: int = 50, status: str | None = None) -> list[Delivery]:
    """The webhook's latest deliveries, newest first."""
    row = get_webhook(name)
    if not 1 <= limit <= DELIVERY_LIMIT:
        raise ValidationError(f"limit must be 1..{DELIVERY_LIMIT}", details={"limit": f"1..{DELIVERY_LIMIT}"})
    query = Delivery.select().where(Delivery.webhook == row.id)
    if status is not None:
        if status not in ("pending", "delivered", "failed"):
            raise ValidationError("status must be pending, delivered or failed", details={"status": "pending, delivered or failed"})
        query = query.where(Delivery.status == status)
    return list(query.order_by(Delivery.seq.desc()).limit(limit))


def test_webhook(ctx: Context, name: str, actor: str) -> Delivery:
    """Record a ``ping`` delivery and send it now (claimed by this request, so no sender takes it meanwhile).

    Returns the delivery after the attempt: ``delivered``, or ``pending`` with its error and next attempt.
    """
    row = get_webhook(name)
    now = models.utcnow()
    holder = f"test-{models.new_id()}"
    lease = 2 * ctx.settings.webhooks.timeout + 30
    uid = models.new_id()
    with models.write_transaction():
        Delivery.insert(
            uid=uid,
            webhook=row.id,
            event=PING,
            subject=f"ping:{uid}",
            payload={"event": PING, "at": models.to_rfc3339(now), "webhook": row.name, "requested_by": actor},
            status="pending",
            created_at=now,
            next_attempt_at=now,
            locked_until=now + dt.timedelta(seconds=lease),
            locked_by=holder,
        ).execute()
    delivery = Delivery.get(Delivery.uid == uid)
    result = notify.send_delivery(delivery, row, ctx.settings, ctx.secrets)
    retry = None if result.ok else notify.retry_at(1, now, ctx.settings)
    models.outbox.record_attempt(delivery.seq, holder, ok=result.ok, status_code=result.status_code, error=result.error, retry_at=retry)
    return Delivery.get(Delivery.uid == uid)
