"""How the CLI shows jobs to people: short ids, server names, commands, coloured statuses, durations, times; stdout/stderr helpers."""

from __future__ import annotations

import sys
from typing import Any

FINISHED = ("completed", "failed", "canceled")
STATUS_STYLE = {"queued": "yellow", "running": "cyan", "completed": "green", "failed": "red", "canceled": "magenta"}


def short(job_id: str | None) -> str:
    return (job_id or "")[:8]


def server_name(job: dict[str, Any]) -> str:
    server = job.get("server")
    if isinstance(server, dict) and server.get("name"):
        return str(server["name"])
    return short(job.get("server_id")) or "?"


def job_command(job: dict[str, Any]) -> str:
    if job.get("script") is not None:
        first = next((line for line in str(job["script"]).splitlines() if line.strip() and not line.startswith("#!")), "")
        return f"[script] {first}".strip()
    args = job.get("args") or ""
    if isinstance(args, list):
        import shlex

        args = shlex.join(args)
    return f"{job.get('command') or ''} {args}".strip()


def styled_status(status: str) -> str:
    style = STATUS_STYLE.get(status, "")
    return f"[{style}]{status}[/]" if style else status


def fmt_duration(value: Any) -> str:
    if value is None or value == "":
        return ""
    seconds = float(value)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def fmt_time(value: Any) -> str:
    """RFC 3339 -> 'YYYY-MM-DD HH:MM:SS' (UTC), shorter for tables."""
    if not value:
        return ""
    text = str(value).replace("T", " ")
    return text[:19]


def stdout_tty() -> bool:
    return sys.stdout.isatty()


def stderr_tty() -> bool:
    return sys.stderr.isatty()


def out(message: str) -> None:
    """Rich markup on stdout (for people; callers print data otherwise)."""
    from remora.cli.common import say

    say(message)


def err(message: str) -> None:
    from remora.cli.common import say

    say(message, stderr=True)
