"""The words of a notification: JSON as recorded, a Slack-compatible ``{"text": ...}``, or a plain-text email.

Every renderer takes the delivery's payload (``{"event", "at", "job" | "batch" | ...}``,
recorded when the event happened) and the dashboard's base URL for links.
"""

from __future__ import annotations

import json
from typing import Any

SLACK_ICONS = {"completed": ":white_check_mark:", "failed": ":x:", "canceled": ":heavy_minus_sign:", "aborted": ":x:"}


def json_body(payload: dict[str, Any], delivery_id: str) -> bytes:
    return json.dumps({**payload, "delivery": delivery_id}, separators=(",", ":"), sort_keys=True).encode()


def link(payload: dict[str, Any], base: str) -> str:
    """The dashboard page of the event's job or batch ("" without a base URL or a subject)."""
    base = base.rstrip("/")
    if not base:
        return ""
    if "job" in payload:
        return f"{base}/#/jobs?job={payload['job']['id']}"
    if "batch" in payload:
        return f"{base}/#/batches?id={payload['batch']['id']}"
    return f"{base}/"


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def job_title(job: dict[str, Any]) -> str:
    return str(job.get("name") or job.get("template") or job.get("command") or job.get("id"))[:120]


def job_host(job: dict[str, Any]) -> str:
    server = job.get("server") or {}
    return str(server.get("name") or server.get("hostname") or "?")


def summary(payload: dict[str, Any]) -> tuple[str, list[str]]:
    """(a one-line headline, detail lines) of an event."""
    event = payload.get("event", "")
    if "job" in payload:
        job = payload["job"]
        head = f"job {job['status']}: {job_title(job)} on {job_host(job)}"
        details = [f"status: {job['status']}", f"host: {job_host(job)}"]
        server = job.get("server") or {}
        if server.get("hostname") and server.get("hostname") != server.get("name"):
            details.append(f"hostname: {server['hostname']}")
        if job.get("exit_code") is not None:
            details.append(f"exit code: {job['exit_code']}")
        if job.get("error"):
            details.append(f"error: {job['error']}")
        if job.get("duration") is not None:
            details.append(f"duration: {_duration(job['duration'])}")
        details += [f"command: {job.get('command')}", f"job: {job['id']}"]
        if job.get("batch_id"):
            details.append(f"batch: {job['batch_id']}")
        return head, details
    if "batch" in payload:
        batch = payload["batch"]
        counts = ", ".join(f"{n} {status}" for status, n in sorted((batch.get("counts") or {}).items()))
        head = f"batch {batch['status']}: {batch.get('name') or batch.get('command') or batch['id']}"
        details = [f"status: {batch['status']}", f"hosts: {batch.get('total')} ({counts})"]
        if batch.get("error"):
            details.append(f"error: {batch['error']}")
        for host in batch.get("unsuccessful_hosts") or []:
            code = f" (exit code {host['exit_code']})" if host.get("exit_code") is not None else ""
            details.append(f"  {host['server']}: {host['status']}{code}")
        details.append(f"batch: {batch['id']}")
        return head, details
    if event == "schedule.missed":
        schedule = payload.get("schedule") or {}
        head = f"schedule missed: {schedule.get('name', '?')}"
        return head, [f"{key}: {value}" for key, value in sorted(schedule.items())]
    if event == "ping":
        return f"test message from Remora for webhook {payload.get('webhook', '?')}", ["This is a test of the webhook."]
    return event, [json.dumps(payload, sort_keys=True)[:2000]]


def slack_body(payload: dict[str, Any], base: str) -> bytes:
    head, details = summary(payload)
    status = (payload.get("job") or payload.get("batch") or {}).get("status", "")
    icon = SLACK_ICONS.get(status, ":bell:")
    url = link(payload, base)
    lines = [f"{icon} *Remora* {head}", *details]
    if url:
        lines.append(f"<{url}|Open in Remora>")
    return json.dumps({"text": "\n".join(lines)}, separators=(",", ":")).encode()


def email(payload: dict[str, Any], base: str) -> tuple[str, str]:
    """(subject, plain-text body) of a notification email."""
    head, details = summary(payload)
    subject = "[Remora] " + " ".join(head.split())[:200]
    url = link(payload, base)
    body = "\n".join([head, "", *details, *(["", f"Open in Remora: {url}"] if url else []), ""])
    return subject, body
