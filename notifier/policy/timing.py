"""Pure time arithmetic: wall-clock times in a zone, quiet hours, expiry.

Wall-clock rules: a local time that does not exist (spring forward) moves to the first
valid minute after it; one that occurs twice (fall back) takes the first occurrence.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from notifier.policy.figures import QuietHours


def exists_locally(naive: datetime, zone: ZoneInfo) -> bool:
    """Whether `naive` is a wall-clock time that occurs in `zone` (not inside a DST gap)."""
    aware = naive.replace(tzinfo=zone, fold=0)
    return aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == naive


def local_time(day: date, at: time, zone: ZoneInfo) -> datetime:
    """`at` o'clock on `day` in `zone`, as an aware UTC datetime."""
    naive = datetime.combine(day, at)
    # Gaps are at most a day long (Samoa, 2011), so this walk is bounded.
    for _ in range(24 * 60 + 1):
        if exists_locally(naive, zone):
            return naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
        naive = (naive + timedelta(minutes=1)).replace(second=0, microsecond=0)
    raise ValueError(f"no valid wall-clock time after {day} {at} in {zone.key}")


def hold_for_quiet_hours(due: datetime, zone: ZoneInfo, quiet: QuietHours) -> datetime:
    """`due` if it falls outside quiet hours client-local, else the end of those quiet hours."""
    local = due.astimezone(zone)
    if not quiet.contains(local.time().replace(tzinfo=None)):
        return due
    day = local.date()
    if quiet.start > quiet.end and local.time() >= quiet.start:
        day += timedelta(days=1)
    return max(due, local_time(day, quiet.end, zone))
