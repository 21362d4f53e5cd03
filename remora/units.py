"""Durations and sizes as people write them in settings and flags: parse and format.

``30s``, ``250ms``, ``100us``, ``2m``, ``1h``, ``7d`` are seconds; ``8192``,
``512KB``, ``64MiB`` are bytes (binary multiples).  Imports nothing of ours.
"""

from __future__ import annotations

import re
from typing import Any

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|m|h|d)?\s*$")
_DURATION_DIVISORS = {"us": 1e6, "ms": 1e3}  # divided, so 100us is exactly 0.0001
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.I)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_duration(value: Any) -> float:
    """``30``, ``30s``, ``250ms``, ``100us``, ``2m``, ``1h``, ``7d`` -> seconds (float)."""
    if isinstance(value, bool):
        raise ValueError("a duration such as 30s, 2m or 1h")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration that is not negative")
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError("a duration such as 30s, 2m or 1h")
    unit = m.group(2)
    if unit in _DURATION_DIVISORS:
        return float(m.group(1)) / _DURATION_DIVISORS[unit]
    return float(m.group(1)) * _DURATION_UNITS[unit]


def parse_job_timeout(value: Any) -> int:
    """A job's timeout: seconds (``90``) or a duration (``90s``, ``10m``) -> whole seconds, rounded up, at least 1."""
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise ValueError("expected seconds or a duration such as 90s, 10m or 1h") from None
    if seconds < 1:
        raise ValueError("must be at least 1s")
    return int(-(-seconds // 1))


def parse_size(value: Any) -> int:
    """``8192``, ``10MB``, ``64MiB``, ``512k`` -> bytes (binary multiples)."""
    if isinstance(value, bool):
        raise ValueError("a size such as 8192, 512KB or 10MB")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size that is not negative")
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ValueError("a size such as 8192, 512KB or 10MB")
    unit = (m.group(2) or "").lower()[:1]
    return int(float(m.group(1)) * _SIZE_UNITS[unit])


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("true or false")


def parse_list(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        if not all(isinstance(v, str) for v in value):
            raise ValueError("a list of strings")
        return list(value)
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    raise ValueError("a list of strings or a comma-separated string")


def format_duration(seconds: float) -> str:
    if seconds and seconds < 1:
        ms = seconds * 1000
        return f"{round(ms)}ms" if ms >= 1 and abs(ms - round(ms)) < 1e-9 else f"{round(seconds * 1e6)}us"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def format_size(size: int) -> str:
    for unit, mult in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size >= mult and size % mult == 0:
            return f"{size // mult}{unit}"
    return str(size)
