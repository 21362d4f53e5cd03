"""Calendar maths for schedules: 5-field cron expressions in an IANA timezone -> slots in UTC.

The expressions are cron's: ``minute hour day-of-month month day-of-week``
(lists, ranges, steps, names; day-of-month and day-of-week OR-ed as in Debian
cron) plus the macros ``@hourly``, ``@daily``, ``@weekly``, ``@monthly`` and
``@yearly``.  The iteration is ``cronsim`` (the library of healthchecks.io),
the one place it is imported.

Daylight saving time, as cron users expect it:

- a local time that does not exist (spring forward: 02:30 in Europe/Berlin on
  the last Sunday of March) does not run that day -- cronsim moves such a
  slot to the first valid minute, this module drops it;
- a local time that happens twice (fall back) runs once, at its first
  occurrence, for an expression naming a fixed hour and minute; an expression
  with ``*`` in the hour or minute field runs by the clock in both repeated
  hours (every real hour is an hour).

Every slot is returned as naive UTC (what the database stores).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError

MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
MAX_SCAN = 100_000  # candidates looked at for one answer: an expression that (almost) never matches ends here


class CronError(ValueError):
    """A cron expression or timezone that cannot be used; the message says why."""


def expand(expr: str) -> str:
    """The 5-field form of ``expr`` (macros expanded); CronError when it is not a valid 5-field expression."""
    if not isinstance(expr, str) or not expr.strip():
        raise CronError("must be a cron expression such as '0 3 * * *' or @daily")
    text = " ".join(expr.split())
    if text.startswith("@"):
        if text.lower() not in MACROS:
            raise CronError(f"unknown macro {text!r} (known: {', '.join(sorted(MACROS))})")
        return MACROS[text.lower()]
    if len(text.split()) != 5:
        raise CronError(f"needs 5 fields (minute hour day-of-month month day-of-week), got {len(text.split())}: {text!r}")
    try:
        CronSim(text, dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    except CronSimError as exc:
        raise CronError(f"{text!r}: {exc}") from None
    return text


@functools.cache
def _known_zones() -> frozenset[str]:
    return (frozenset(available_timezones()) | {"UTC"}) - {"localtime", "posixrules"}  # files of the zone directory, not zones


def zone(name: str | None) -> ZoneInfo:
    """The IANA timezone ``name`` (default UTC); CronError when unknown (file names such as ``localtime`` are not zones)."""
    name = name or "UTC"
    if not isinstance(name, str) or name not in _known_zones():
        raise CronError(f"unknown timezone {name!r}: give an IANA name such as Europe/Berlin")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise CronError(f"unknown timezone {name!r}: give an IANA name such as Europe/Berlin") from None


def _naive_utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        return value
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def slots(expr: str, tz: str | None, after: dt.datetime) -> Iterator[dt.datetime]:
    """The slots of ``expr`` in ``tz`` strictly after ``after`` (naive UTC or aware), in order, as naive UTC."""
    text = expand(expr)
    where = zone(tz)
    start = after if after.tzinfo is not None else after.replace(tzinfo=dt.UTC)
    sim = CronSim(text, start.astimezone(where))
    last: dt.datetime | None = None
    for _ in range(MAX_SCAN):
        try:
            local = next(sim)
        except (StopIteration, CronSimError):
            return
        if local.minute not in sim.minutes or local.hour not in sim.hours:
            continue  # a nonexistent local time that cronsim moved forward: cron users expect no run
        slot = _naive_utc(local)
        if last is not None and slot <= last:
            continue
        last = slot
        yield slot


def next_slots(expr: str, tz: str | None, after: dt.datetime, count: int = 5) -> list[dt.datetime]:
    """The next ``count`` slots after ``after`` (naive UTC)."""
    out = []
    for slot in slots(expr, tz, after):
        out.append(slot)
        if len(out) >= count:
            break
    return out


def slots_between(expr: str, tz: str | None, start: dt.datetime, end: dt.datetime, limit: int = 10_000) -> list[dt.datetime]:
    """Slots ``s`` with ``start <= s <= end`` (naive UTC), at most the first ``limit``."""
    out: list[dt.datetime] = []
    for slot in slots(expr, tz, _naive_utc(start) - dt.timedelta(seconds=1)):
        if slot > _naive_utc(end) or len(out) >= limit:
            break
        if slot >= _naive_utc(start):
            out.append(slot)
    return out


__all__ = ["MACROS", "CronError", "expand", "next_slots", "slots", "slots_between", "zone"]
