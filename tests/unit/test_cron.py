"""Calendar maths of schedules (remora.cron): DST as cron users expect it, offsets, macros, bad input."""

from __future__ import annotations

import datetime as dt

import pytest

from remora import cron


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args)  # naive UTC, as the database stores it


def local(slots: list[dt.datetime], tz: str) -> list[str]:
    from zoneinfo import ZoneInfo

    return [s.replace(tzinfo=dt.UTC).astimezone(ZoneInfo(tz)).strftime("%m-%d %H:%M%z") for s in slots]


def test_spring_forward_in_berlin_skips_the_nonexistent_0230():
    """2026-03-29 02:00 -> 03:00 in Europe/Berlin: ``30 2 * * *`` has no run that day (not even at 03:00)."""
    runs = cron.next_slots("30 2 * * *", "Europe/Berlin", utc(2026, 3, 27, 12, 0), 3)
    assert local(runs, "Europe/Berlin") == ["03-28 02:30+0100", "03-30 02:30+0200", "03-31 02:30+0200"]
    assert runs[0] == utc(2026, 3, 28, 1, 30) and runs[1] == utc(2026, 3, 30, 0, 30)


def test_spring_forward_keeps_hourly_runs_of_the_hours_that_exist():
    runs = cron.next_slots("0 * * * *", "Europe/Berlin", utc(2026, 3, 28, 23, 30), 3)
    assert local(runs, "Europe/Berlin") == ["03-29 01:00+0100", "03-29 03:00+0200", "03-29 04:00+0200"]


def test_fall_back_in_berlin_runs_the_repeated_0230_once():
    """2026-10-25 03:00 -> 02:00 in Europe/Berlin: 02:30 happens twice, ``30 2 * * *`` runs once (the first)."""
    runs = cron.next_slots("30 2 * * *", "Europe/Berlin", utc(2026, 10, 23, 12, 0), 4)
    assert local(runs, "Europe/Berlin") == ["10-24 02:30+0200", "10-25 02:30+0200", "10-26 02:30+0100", "10-27 02:30+0100"]
    assert runs[1] == utc(2026, 10, 25, 0, 30)
    between = cron.slots_between("30 2 * * *", "Europe/Berlin", utc(2026, 10, 24, 22, 0), utc(2026, 10, 25, 3, 0))
    assert between == [utc(2026, 10, 25, 0, 30)]


def test_fall_back_runs_a_wildcard_hour_expression_in_both_repeated_hours():
    runs = cron.next_slots("30 * * * *", "Europe/Berlin", utc(2026, 10, 24, 23, 0), 3)
    assert runs == [utc(2026, 10, 24, 23, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30)]


def test_kolkata_is_utc_plus_0530():
    runs = cron.next_slots("0 9 * * *", "Asia/Kolkata", utc(2026, 6, 1, 0, 0), 2)
    assert runs == [utc(2026, 6, 1, 3, 30), utc(2026, 6, 2, 3, 30)]
    assert cron.next_slots("30 * * * *", "Asia/Kolkata", utc(2026, 6, 1, 0, 5), 1) == [utc(2026, 6, 1, 1, 0)]


def test_utc_is_the_default_and_slots_are_strictly_after():
    assert cron.next_slots("0 3 * * *", None, utc(2026, 1, 1, 3, 0), 1) == [utc(2026, 1, 2, 3, 0)]
    assert cron.slots_between("*/15 * * * *", "UTC", utc(2026, 1, 1, 3, 0), utc(2026, 1, 1, 3, 30)) == [
        utc(2026, 1, 1, 3, 0),
        utc(2026, 1, 1, 3, 15),
        utc(2026, 1, 1, 3, 30),
    ]


@pytest.mark.parametrize(
    ("macro", "first"),
    [
        ("@hourly", utc(2026, 5, 5, 11, 0)),
        ("@daily", utc(2026, 5, 6, 0, 0)),
        ("@weekly", utc(2026, 5, 10, 0, 0)),  # Sunday
        ("@monthly", utc(2026, 6, 1, 0, 0)),
        ("@yearly", utc(2027, 1, 1, 0, 0)),
    ],
)
def test_macros(macro, first):
    assert cron.next_slots(macro, "UTC", utc(2026, 5, 5, 10, 17), 1) == [first]


@pytest.mark.parametrize("expr", ["", "* * * *", "0 0 * * * *", "61 * * * *", "* 24 * * *", "@reboot", "0 0 30 2 *", "a b c d e", 5])
def test_bad_expressions_are_refused(expr):
    with pytest.raises(cron.CronError):
        cron.expand(expr)


@pytest.mark.parametrize("name", ["Mars/Base", "../../etc/passwd", "/etc/localtime", "Europe/", "localtime", "Europe/Berlin ", "\x00"])
def test_unknown_timezones_are_refused(name):
    with pytest.raises(cron.CronError):
        cron.zone(name)
