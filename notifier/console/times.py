"""How the console writes instants and spans: in the operator's zone
(NOTIFIER_CONSOLE_TIMEZONE) or a client's, with the zone's abbreviation, so a time is never
read in the wrong zone. Pure."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from notifier.config import Settings


def operator_zone(settings: Settings) -> ZoneInfo:
    """The zone the console shows times in: NOTIFIER_CONSOLE_TIMEZONE (checked at
    start-up)."""
    return ZoneInfo(settings.console_timezone)


def short_time(instant: datetime, zone: ZoneInfo) -> str:
    """`Tue 3 Nov 14:00 EST`: `instant` in `zone`, with the zone's abbreviation."""
    local = instant.astimezone(zone)
    return f"{local:%a} {local.day} {local:%b %H:%M %Z}"


def local_text(instant: datetime | None, zone: ZoneInfo) -> str:
    """`Tue 3 Nov 2026 14:00 EST`: `instant` in `zone`; `—` for None."""
    if instant is None:
        return "—"
    local = instant.astimezone(zone)
    return f"{local:%a} {local.day} {local:%b %Y %H:%M %Z}"


def span_text(start: datetime, end: datetime, zone: ZoneInfo) -> str:
    """`Mon 2 Nov 2026 10:00 to 10:30 EST`: a visit in `zone`, its end's date (and zone
    abbreviation) left out when they are the start's."""
    first, last = start.astimezone(zone), end.astimezone(zone)
    if (first.date(), first.tzname()) == (last.date(), last.tzname()):
        return f"{first:%a} {first.day} {first:%b %Y %H:%M} to {last:%H:%M %Z}"
    return f"{local_text(start, zone)} to {local_text(end, zone)}"


def time_left(until: datetime | None, now: datetime) -> str:
    """How long from `now` to `until`, in days and hours or hours and minutes (`1 d 3 h`,
    `2 h 5 min`), or `overdue by ...` once it has passed; `—` for None."""
    if until is None:
        return "—"
    left = until - now
    text = _span(abs(left))
    return text if left >= timedelta(0) else f"overdue by {text}"


def _span(span: timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    days, hours, mins = minutes // 1440, minutes // 60 % 24, minutes % 60
    return f"{days} d {hours} h" if days else f"{hours} h {mins} min"
