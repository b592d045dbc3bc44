"""When to try a failed send again: exponential backoff with jitter, a cap, and the limits.

Pure: the attempts so far, what the provider asked for, the expiry and `now` in; the time
of the next attempt, or why there is none, out. The deliverer puts the notification back
on our own schedule at that time (never into dramatiq's delay queue).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

#: The longest wait between two attempts, whatever the backoff has grown to.
RETRY_CAP_S = 3600.0


@dataclass(frozen=True)
class GiveUp:
    """No further attempt: why (a reason for the ledger)."""

    reason: str


def next_attempt(attempts: int, reason: str, retry_after_s: float | None,
                 expires_at: datetime, now: datetime, rng: random.Random, *,
                 max_attempts: int, base_s: float, cap_s: float = RETRY_CAP_S,
                 ) -> datetime | GiveUp:
    """When to try again after `attempts` tries (this one included) failed with `reason`.

    The wait is `base_s * 2^(attempts-1)`, capped at `cap_s`, jittered to between half and
    all of it, and never shorter than the provider's `retry_after_s`. Gives up once
    `max_attempts` have been made, or when the next attempt would fall at or after the
    expiry. Draws one number from `rng` unless it gives up on the count.
    """
    if attempts >= max_attempts:
        return GiveUp(f"gave up after {attempts} attempts: {reason}")
    backoff = min(cap_s, base_s * 2 ** (attempts - 1))
    delay = max(retry_after_s or 0.0, backoff * (0.5 + rng.random() / 2))
    # Compared in seconds first: a provider's Retry-After of 1e12 (or inf) is past any
    # expiry, and as a datetime it would overflow.
    if not delay < (expires_at - now).total_seconds():
        return GiveUp(f"{reason}; no time left to retry")
    return now + timedelta(seconds=delay)
