"""`Retry-After` in both of its forms (RFC 9110: seconds, or an HTTP-date), as a table."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from notifier.delivery.channels.retry_after import retry_after_s

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


@pytest.mark.parametrize(("value", "expected"), [
    ("120", 120.0),
    (" 7 ", 7.0),
    ("0", 0.0),
    ("-5", 0.0),
    ("1.5", 1.5),
    # an HTTP-date (IMF-fixdate), 90 s after NOW
    ("Wed, 25 Nov 2026 15:01:30 GMT", 90.0),
    # the obsolete forms RFC 9110 says a recipient must accept
    ("Wednesday, 25-Nov-26 15:01:30 GMT", 90.0),
    ("Wed Nov 25 15:01:30 2026", 90.0),
    # a date already past: no wait, not a negative one
    ("Wed, 25 Nov 2026 14:00:00 GMT", 0.0),
    (None, None),
    ("", None),
    ("soon", None),
    ("Wed, 31 Nov 2026 15:00:00 GMT", None),
    # found by QA: huge or infinite waits stand (the retry gives up), NaN says nothing
    ("1e12", 1e12),
    ("inf", float("inf")),
    ("nan", None),
])
def test_retry_after(value, expected):
    assert retry_after_s(value, NOW) == expected
