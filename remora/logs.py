"""Logging setup: text or JSON lines on stderr, one format for every service."""

from __future__ import annotations

import json
import logging
import sys
import threading
from typing import Any

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "warn": logging.WARNING, "error": logging.ERROR}
_context = threading.local()


def set_request_id(request_id: str | None) -> None:
    """Attach a request id to every record logged by this thread (API requests)."""
    _context.request_id = request_id


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = getattr(_context, "request_id", None)
        return True


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if getattr(record, "request_id", None):
            entry["request_id"] = getattr(record, "request_id", None)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        rid = getattr(record, "request_id", None)
        return f"{text} [req {rid}]" if rid else text


def setup_logging(level: str = "info", fmt: str = "text", stream: Any = None) -> None:
    """Configure the root logger once per process (idempotent)."""
    import logging as _logging
    import time

    root = _logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_remora", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._remora = True  # type: ignore[attr-defined]
    formatter: logging.Formatter = JSONFormatter() if fmt == "json" else TextFormatter()
    formatter.converter = time.gmtime  # type: ignore[assignment]
    handler.setFormatter(formatter)
    handler.addFilter(_ContextFilter())
    root.addHandler(handler)
    root.setLevel(_LEVELS.get(level.lower(), logging.INFO))
    # paramiko logs every channel at INFO; keep it to warnings unless debugging.
    logging.getLogger("paramiko").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
    logging.getLogger("waitress").setLevel(logging.WARNING if level != "debug" else logging.DEBUG)
    logging.getLogger("peewee").setLevel(logging.INFO)
