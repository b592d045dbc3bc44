"""Wall-clock arithmetic and quiet hours (notifier/policy/timing.py), DST dates included."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.policy.figures import QuietHours
from notifier.policy.timing import exists_locally, hold_for_quiet_hours, local_time

NEW_YORK = ZoneInfo("America/New_York")
KOLKATA = ZoneInfo("Asia/Kolkata")
ADELAIDE = ZoneInfo("Australia/Adelaide")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
QUIET = QuietHours(start=time(21, 0), end=time(8, 0))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(("day", "at", "zone", "expected"), [
    # Plain days, both sides of the Atlantic offsets.
    (date(2026, 1, 15), time(10, 0), NEW_YORK, utc(2026, 1, 15, 15, 0)),
    (date(2026, 7, 15), time(10, 0), NEW_YORK, utc(2026, 7, 15, 14, 0)),
    (date(2026, 7, 15), time(0, 0), NEW_YORK, utc(2026, 7, 15, 4, 0)),
    (date(2026, 7, 15), time(23, 59), NEW_YORK, utc(2026, 7, 16, 3, 59)),
    # Spring forward 2026-03-08: 02:00 EST jumps to 03:00 EDT.
    (date(2026, 3, 8), time(1, 59), NEW_YORK, utc(2026, 3, 8, 6, 59)),
    (date(2026, 3, 8), time(2, 0), NEW_YORK, utc(2026, 3, 8, 7, 0)),
    (date(2026, 3, 8), time(2, 30), NEW_YORK, utc(2026, 3, 8, 7, 0)),
    (date(2026, 3, 8), time(2, 59, 30), NEW_YORK, utc(2026, 3, 8, 7, 0)),
    (date(2026, 3, 8), time(3, 0), NEW_YORK, utc(2026, 3, 8, 7, 0)),
    (date(2026, 3, 8), time(3, 1), NEW_YORK, utc(2026, 3, 8, 7, 1)),
    (date(2026, 3, 8), time(10, 0), NEW_YORK, utc(2026, 3, 8, 14, 0)),
    # Fall back 2026-11-01: 02:00 EDT falls back to 01:00 EST; 01:xx occurs twice.
    (date(2026, 11, 1), time(0, 59), NEW_YORK, utc(2026, 11, 1, 4, 59)),
    (date(2026, 11, 1), time(1, 0), NEW_YORK, utc(2026, 11, 1, 5, 0)),
    (date(2026, 11, 1), time(1, 30), NEW_YORK, utc(2026, 11, 1, 5, 30)),
    (date(2026, 11, 1), time(1, 59), NEW_YORK, utc(2026, 11, 1, 5, 59)),
    (date(2026, 11, 1), time(2, 0), NEW_YORK, utc(2026, 11, 1, 7, 0)),
    (date(2026, 11, 1), time(10, 0), NEW_YORK, utc(2026, 11, 1, 15, 0)),
    # Half-hour offset, no DST: IST is UTC+05:30 all year.
    (date(2026, 1, 15), time(10, 0), KOLKATA, utc(2026, 1, 15, 4, 30)),
    (date(2026, 7, 15), time(10, 0), KOLKATA, utc(2026, 7, 15, 4, 30)),
    (date(2026, 7, 15), time(3, 0), KOLKATA, utc(2026, 7, 14, 21, 30)),
    # Half-hour offset with DST: ACST +09:30, ACDT +10:30.
    (date(2026, 4, 4), time(10, 0), ADELAIDE, utc(2026, 4, 3, 23, 30)),
    # 2026-04-05 03:00 ACDT falls back to 02:00 ACST: 02:30 occurs twice, the first is ACDT.
    (date(2026, 4, 5), time(2, 30), ADELAIDE, utc(2026, 4, 4, 16, 0)),
    (date(2026, 4, 5), time(10, 0), ADELAIDE, utc(2026, 4, 5, 0, 30)),
    # 2026-10-04 02:00 ACST springs forward to 03:00 ACDT: 02:30 does not exist.
    (date(2026, 10, 4), time(2, 30), ADELAIDE, utc(2026, 10, 3, 16, 30)),
    (date(2026, 10, 4), time(10, 0), ADELAIDE, utc(2026, 10, 3, 23, 30)),
    # A half-hour DST shift: Lord Howe goes 02:00 +10:30 -> 02:30 +11:00.
    (date(2026, 10, 4), time(2, 15), LORD_HOWE, utc(2026, 10, 3, 15, 30)),
    (date(2026, 10, 4), time(2, 30), LORD_HOWE, utc(2026, 10, 3, 15, 30)),
])
def test_local_time(day: date, at: time, zone: ZoneInfo, expected: datetime) -> None:
    result = local_time(day, at, zone)
    assert result == expected
    assert result.tzinfo is UTC


def test_local_time_in_a_gap_lands_on_the_first_valid_minute_of_the_same_day() -> None:
    result = local_time(date(2026, 3, 8), time(2, 30), NEW_YORK).astimezone(NEW_YORK)
    assert (result.date(), result.time(), result.utcoffset()) == (
        date(2026, 3, 8), time(3, 0), timedelta(hours=-4))


def test_local_time_at_a_repeated_time_takes_the_first_occurrence() -> None:
    result = local_time(date(2026, 11, 1), time(1, 30), NEW_YORK).astimezone(NEW_YORK)
    assert (result.time(), result.utcoffset(), result.fold) == (
        time(1, 30), timedelta(hours=-4), 0)


@pytest.mark.parametrize(("naive", "zone", "expected"), [
    (datetime(2026, 3, 8, 1, 59), NEW_YORK, True),
    (datetime(2026, 3, 8, 2, 0), NEW_YORK, False),
    (datetime(2026, 3, 8, 2, 59), NEW_YORK, False),
    (datetime(2026, 3, 8, 3, 0), NEW_YORK, True),
    (datetime(2026, 11, 1, 1, 30), NEW_YORK, True),
    (datetime(2026, 10, 4, 2, 30), ADELAIDE, False),
    (datetime(2026, 4, 5, 2, 30), ADELAIDE, True),
    (datetime(2026, 3, 8, 2, 30), KOLKATA, True),
])
def test_exists_locally(naive: datetime, zone: ZoneInfo, expected: bool) -> None:
    assert exists_locally(naive, zone) is expected


@pytest.mark.parametrize(("due", "zone", "expected"), [
    # 2026-06-15 is an ordinary EDT (UTC-4) day: quiet from 01:00Z to 12:00Z.
    (utc(2026, 6, 15, 18, 0), NEW_YORK, utc(2026, 6, 15, 18, 0)),
    (utc(2026, 6, 16, 0, 59), NEW_YORK, utc(2026, 6, 16, 0, 59)),           # 20:59 stays
    (datetime(2026, 6, 15, 20, 59, 59, 999999, tzinfo=NEW_YORK),
     NEW_YORK, datetime(2026, 6, 15, 20, 59, 59, 999999, tzinfo=NEW_YORK)),
    (utc(2026, 6, 16, 1, 0), NEW_YORK, utc(2026, 6, 16, 12, 0)),            # 21:00 -> next 08:00
    (utc(2026, 6, 16, 3, 59), NEW_YORK, utc(2026, 6, 16, 12, 0)),           # 23:59 -> next 08:00
    (utc(2026, 6, 16, 4, 0), NEW_YORK, utc(2026, 6, 16, 12, 0)),            # 00:00 -> same 08:00
    (utc(2026, 6, 16, 11, 59), NEW_YORK, utc(2026, 6, 16, 12, 0)),          # 07:59 -> same 08:00
    (datetime(2026, 6, 16, 7, 59, 59, 999999, tzinfo=NEW_YORK),
     NEW_YORK, utc(2026, 6, 16, 12, 0)),
    (utc(2026, 6, 16, 12, 0), NEW_YORK, utc(2026, 6, 16, 12, 0)),           # 08:00 stays
    # The input's own zone does not matter, only the client's.
    (datetime(2026, 6, 16, 3, 0, tzinfo=KOLKATA), NEW_YORK,
     datetime(2026, 6, 16, 3, 0, tzinfo=KOLKATA)),                          # 17:30 EDT
    (datetime(2026, 6, 16, 10, 0, tzinfo=KOLKATA), NEW_YORK, utc(2026, 6, 16, 12, 0)),
    # Half-hour zone: IST 21:00 is 15:30Z, 08:00 is 02:30Z.
    (utc(2026, 6, 15, 15, 29), KOLKATA, utc(2026, 6, 15, 15, 29)),
    (utc(2026, 6, 15, 15, 30), KOLKATA, utc(2026, 6, 16, 2, 30)),
    (utc(2026, 6, 16, 2, 29), KOLKATA, utc(2026, 6, 16, 2, 30)),
    (utc(2026, 6, 16, 2, 30), KOLKATA, utc(2026, 6, 16, 2, 30)),
    # Quiet hours ending on a spring-forward morning: 08:00 EDT is 12:00Z, 8 h after 23:00 EST.
    (utc(2026, 3, 8, 4, 0), NEW_YORK, utc(2026, 3, 8, 12, 0)),              # 23:00 EST Mar 7
    (utc(2026, 3, 8, 6, 30), NEW_YORK, utc(2026, 3, 8, 12, 0)),             # 01:30 EST
    (utc(2026, 3, 8, 7, 30), NEW_YORK, utc(2026, 3, 8, 12, 0)),             # 03:30 EDT
    (utc(2026, 3, 8, 12, 0), NEW_YORK, utc(2026, 3, 8, 12, 0)),             # 08:00 EDT stays
    # Quiet hours ending on a fall-back morning: 08:00 EST is 13:00Z, 12 h after 21:00 EDT.
    (utc(2026, 11, 1, 1, 0), NEW_YORK, utc(2026, 11, 1, 13, 0)),            # 21:00 EDT Oct 31
    (utc(2026, 11, 1, 5, 30), NEW_YORK, utc(2026, 11, 1, 13, 0)),           # 01:30 EDT
    (utc(2026, 11, 1, 6, 30), NEW_YORK, utc(2026, 11, 1, 13, 0)),           # 01:30 EST
    (utc(2026, 11, 1, 12, 59), NEW_YORK, utc(2026, 11, 1, 13, 0)),          # 07:59 EST
    # Adelaide, across both of its changes (ACDT 08:00 is 21:30Z, ACST 08:00 is 22:30Z).
    (utc(2026, 10, 3, 16, 15), ADELAIDE, utc(2026, 10, 3, 21, 30)),         # 01:45 ACST
    (utc(2026, 4, 4, 12, 0), ADELAIDE, utc(2026, 4, 4, 22, 30)),            # 22:30 ACDT Apr 4
])
def test_hold_for_quiet_hours(due: datetime, zone: ZoneInfo, expected: datetime) -> None:
    assert hold_for_quiet_hours(due, zone, QUIET) == expected


def test_hold_when_the_quiet_end_falls_in_a_dst_gap() -> None:
    """A quiet end of 02:30 on the spring-forward day moves to 03:00 EDT (07:00Z)."""
    quiet = QuietHours(start=time(21, 0), end=time(2, 30))
    due = datetime(2026, 3, 7, 23, 0, tzinfo=NEW_YORK)
    assert hold_for_quiet_hours(due, NEW_YORK, quiet) == utc(2026, 3, 8, 7, 0)


@pytest.mark.parametrize(("local", "held_local"), [
    (time(11, 59), time(11, 59)),
    (time(12, 0), time(13, 0)),
    (time(12, 45), time(13, 0)),
    (time(13, 0), time(13, 0)),
])
def test_hold_with_quiet_hours_inside_one_day(local: time, held_local: time) -> None:
    quiet = QuietHours(start=time(12, 0), end=time(13, 0))
    due = datetime.combine(date(2026, 6, 15), local, tzinfo=NEW_YORK)
    expected = datetime.combine(date(2026, 6, 15), held_local, tzinfo=NEW_YORK)
    assert hold_for_quiet_hours(due, NEW_YORK, quiet) == expected


@pytest.mark.parametrize(("local", "inside"), [
    (time(20, 59, 59), False), (time(21, 0), True), (time(23, 59), True), (time(0, 0), True),
    (time(7, 59, 59), True), (time(8, 0), False), (time(12, 0), False),
])
def test_quiet_hours_contains_across_midnight(local: time, inside: bool) -> None:
    assert QUIET.contains(local) is inside


ZONES = [
    "UTC", "America/New_York", "America/Los_Angeles", "America/St_Johns", "Europe/London",
    "Asia/Kolkata", "Asia/Kathmandu", "Australia/Adelaide", "Australia/Lord_Howe",
    "Pacific/Chatham", "Pacific/Kiritimati", "Pacific/Pago_Pago",
]

aware_instants = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2060, 12, 31),
    timezones=st.sampled_from([UTC, *(ZoneInfo(z) for z in ZONES)]),
)


@settings(max_examples=200, deadline=None)
@given(due=aware_instants, zone_name=st.sampled_from(ZONES))
def test_held_time_is_never_quiet_never_earlier_and_at_most_one_night_later(
    due: datetime, zone_name: str,
) -> None:
    zone = ZoneInfo(zone_name)
    held = hold_for_quiet_hours(due, zone, QUIET)
    local = held.astimezone(zone)
    assert not QUIET.contains(local.time())
    assert held >= due
    # A night is 11 h (21:00 -> 08:00); a DST change can stretch it by up to an hour.
    assert held - due <= timedelta(hours=12)
    if QUIET.contains(due.astimezone(zone).time()):
        assert local.time() == QUIET.end
    else:
        assert held == due
