"""The provider response window: when an open request or message escalates to support.

`elapsed` counts hours from arrival. `business_days` counts business days in the provider's
zone (weekends and the configured country's public holidays skipped, via `holidays`) and
escalates at the same wall-clock time on the last of them.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays

from notifier.policy.figures import ResponseWindow
from notifier.policy.timing import local_time


@lru_cache(maxsize=8)
def _holidays(country: str) -> holidays.HolidayBase:
    return holidays.country_holidays(country)


def is_business_day(day: date, country: str) -> bool:
    return day.weekday() < 5 and day not in _holidays(country)


def escalates_at(opened_at: datetime, zone: ZoneInfo, window: ResponseWindow) -> datetime:
    """When an item opened at `opened_at` is overdue and support must step in."""
    if window.mode == "elapsed":
        return opened_at + window.window
    local = opened_at.astimezone(zone)
    day, counted = local.date(), 0
    while counted < window.business_days:
        day += timedelta(days=1)
        if is_business_day(day, window.holiday_country):
            counted += 1
    return local_time(day, local.time().replace(tzinfo=None), zone)
