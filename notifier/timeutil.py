"""The real clock: the one place Notifier reads the time of day.

Everything else takes `now` as an argument (the policy never reads a clock, so its rules
are tested at any instant); the web routes, the worker's actors and the clock loop call
`utcnow()` once per request, message or tick and pass it down.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """The current instant, timezone-aware, in UTC."""
    return datetime.now(UTC)
