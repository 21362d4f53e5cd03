"""Sending one delivery attempt: an HTTP POST (standard library only) or an email over SMTP.

``send_delivery`` never raises for a receiver's fault: every outcome is a
``Result`` (2xx: ok; any other status, a refused connection, a timeout or an
SMTP error: not ok, with the reason).  Each attempt is bounded by
``webhooks.timeout`` (HTTP) or ``smtp.timeout``.  It runs outside any database
transaction.

An HTTP delivery is a POST of the rendered body with ``Content-Type:
application/json``, ``User-Agent: Remora/<version>``, ``X-Remora-Event``,
``X-Remora-Delivery`` (the delivery's id, the same on every retry) and, when
the webhook has a secret, ``X-Remora-Signature: sha256=<hex HMAC-SHA256 of the
body keyed with the secret>``.  Redirects are not followed (a 3xx is a failed
attempt).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import http.client
import logging
import os
import random
import smtplib
import socket
import ssl
import stat
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from remora import __version__
from remora.config import Settings
from remora.crypto import SecretBox
from remora.errors import ConfigError, RemoraError
from remora.notify import render

log = logging.getLogger(__name__)

USER_AGENT = f"Remora/{__version__}"
MAX_ANSWER = 64 * 1024  # bytes of a receiver's answer read (and dropped)


@dataclass
class Result:
    ok: bool
    status_code: int | None = None
    error: str = ""


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def mail_recipients(url: str) -> list[str]:
    """The addresses of a ``mailto:a@x,b@y`` URL."""
    return [unquote(part).strip() for part in url[len("mailto:") :].split("?", 1)[0].split(",") if part.strip()]


def retry_at(attempts: int, created_at: dt.datetime, settings: Settings, now: dt.datetime | None = None) -> dt.datetime | None:
    """When to try again after ``attempts`` failed attempts (exponential backoff plus up to 25% jitter); None: give up."""
    hooks = settings.webhooks
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    delay = min(hooks.max_backoff, hooks.backoff * 2 ** max(0, attempts - 1))
    delay *= 1 + random.random() * 0.25
    deadline = created_at + dt.timedelta(seconds=hooks.retry_for)
    if now >= deadline:
        return None
    return min(now + dt.timedelta(seconds=delay), deadline)  # the last attempt at the deadline itself


def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> Result:
    """POST ``body`` to an http(s) URL; the outcome (never raises for network or receiver errors)."""
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn_class: Any = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    kwargs: dict[str, Any] = {"timeout": timeout}
    if parts.scheme == "https":
        kwargs["context"] = ssl.create_default_context()
    started = time.monotonic()
    conn = conn_class(parts.hostname or "", parts.port, **kwargs)
    # The socket timeout bounds each read; the watchdog bounds the whole attempt (a receiver trickling bytes).
    watchdog = threading.Timer(timeout, _abort, args=(conn,))
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.request("POST", path, body=body, headers={**headers, "Content-Length": str(len(body))})
        answer = conn.getresponse()
        answer.read(MAX_ANSWER)
        code = answer.status
    except (OSError, http.client.HTTPException, ValueError) as exc:
        elapsed = time.monotonic() - started
        if isinstance(exc, TimeoutError) or elapsed >= timeout:
            return Result(False, None, f"timed out after {elapsed:.1f}s (webhooks.timeout {timeout:g}s)")
        return Result(False, None, f"{type(exc).__name__}: {exc}"[:500])
    finally:
        watchdog.cancel()
        conn.close()
    if 200 <= code < 300:
        return Result(True, code)
    return Result(False, code, f"HTTP {code}")


def _abort(conn: http.client.HTTPConnection) -> None:
    """End an attempt that outlived its timeout: shutting the socket down wakes the blocked read."""
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def smtp_password(settings: Settings) -> str:
    """``smtp.password``, else the content of ``smtp.password_file`` (refused when group or others may read it)."""
    smtp = settings.smtp
    if smtp.password or not smtp.password_file:
        return smtp.password
    path = Path(smtp.password_file).expanduser()
    try:
        mode = os.stat(path).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"smtp.password_file {path} is readable by others (mode {stat.S_IMODE(mode):04o}): chmod 600 it")
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read smtp.password_file {path}: {exc.strerror or exc}") from None


def send_mail(settings: Settings, recipients: list[str], subject: str, text: str) -> Result:
    """Send a plain-text email through ``[smtp]``; the outcome (never raises for SMTP or network errors)."""
    smtp = settings.smtp
    if not smtp.host:
        return Result(False, None, "smtp.host is not set: email notifications cannot be sent")
    if not recipients:
        return Result(False, None, "mailto: URL without recipients")
    message = EmailMessage()
    message["From"] = smtp.from_
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=smtp.from_.rpartition("@")[2] or None)
    message["User-Agent"] = USER_AGENT
    message.set_content(text)
    try:
        password = smtp_password(settings)
        client_class: Any = smtplib.SMTP_SSL if smtp.ssl else smtplib.SMTP
        kwargs: dict[str, Any] = {"timeout": smtp.timeout}
        if smtp.ssl:
            kwargs["context"] = ssl.create_default_context()
        with client_class(smtp.host, smtp.port, **kwargs) as client:
            if smtp.starttls and not smtp.ssl:
                client.starttls(context=ssl.create_default_context())
            if smtp.user:
                client.login(smtp.user, password)
            refused = client.send_message(message, to_addrs=recipients)
    except ConfigError as exc:
        return Result(False, None, exc.message)
    except (OSError, smtplib.SMTPException) as exc:
        return Result(False, None, f"SMTP: {type(exc).__name__}: {exc}"[:500])
    if refused:
        return Result(False, 250, f"SMTP refused {', '.join(sorted(refused))}")
    return Result(True, 250)


def send_delivery(delivery: Any, webhook: Any, settings: Settings, secrets: SecretBox) -> Result:
    """One attempt of ``delivery`` (an outbox row) to ``webhook`` (its row) in the webhook's format."""
    base = settings.api.public_url or webhook.base_url or ""
    payload = delivery.payload or {}
    if webhook.format == "email" or str(webhook.url).startswith("mailto:"):
        subject, text = render.email(payload, base)
        return send_mail(settings, mail_recipients(webhook.url), subject, text)
    body = render.slack_body(payload, base) if webhook.format == "slack" else render.json_body(payload, delivery.uid)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Remora-Event": delivery.event,
        "X-Remora-Delivery": delivery.uid,
    }
    if webhook.secret:
        try:
            headers["X-Remora-Signature"] = signature(secrets.decrypt(webhook.secret), body)
        except RemoraError as exc:
            return Result(False, None, exc.message)
    return post(webhook.url, body, headers, settings.webhooks.timeout)
