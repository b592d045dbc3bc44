"""A provider's `Retry-After` header, in seconds from `now`.

RFC 9110 (section 10.2.3) allows either a number of seconds or an HTTP-date; a 429 or 503
may carry either, and a date read as "no wait asked for" would retry too soon, against the
README's promise that a retry waits at least what the provider asked.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


def retry_after_s(value: str | None, now: datetime) -> float | None:
    """`value` (`"120"` or `"Wed, 25 Nov 2026 15:02:00 GMT"`) as seconds after `now` (an
    aware datetime), at least 0; None when absent or neither form. Never raises."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        # "1e12" and "inf" stand (the retry gives up: past any expiry); "nan" says nothing.
        return None if math.isnan(seconds) else max(0.0, seconds)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, says RFC 5322
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())
