"""When a delivery-webhook message is tried again, and when an endpoint is disabled (pure).

The schedule is Svix's (https://docs.svix.com/retries): after the first attempt, again
after 5 seconds, 5 minutes, 30 minutes, 2 hours, 5 hours, 10 hours and 10 hours, each
delay counted from the attempt before; 8 attempts over about 27.6 hours, then the message
is `failed` (an operator can replay it). Only an answer that says "later" is retried: no
answer (timeout, connection refused or dropped), 429 and 5xx. A 2xx delivers; any other
answer (a 4xx such as 400, 401 or 410, a 3xx: redirects are not followed, as with
Standard Webhooks' senders) ends the message `failed` at once: sending it again would get
the same answer. A `Retry-After` on a retried answer is honoured: the next attempt waits
for it, though never less than the schedule's delay, and never more than `RETRY_AFTER_MAX_S`
(read as the providers' is: `notifier.delivery.channels.retry_after`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from notifier.delivery.channels.retry_after import retry_after_s

#: The delays before the 2nd, 3rd, ... 8th attempt, seconds (Svix's schedule).
RETRY_SCHEDULE_S = (5, 300, 1800, 7200, 18000, 36000, 36000)
#: An endpoint failing for this long (no answer, 429 or 5xx from the first such failure
#: on, and no success in between) is disabled and alerted on, seconds: 5 days, as Svix
#: does. A 4xx neither starts nor ends that time (`endpoints_fault`).
DISABLE_AFTER_S = 5 * 24 * 3600
#: The longest `Retry-After` honoured, seconds: the schedule's longest step.
RETRY_AFTER_MAX_S = max(RETRY_SCHEDULE_S)

Outcome = Literal["delivered", "retry", "failed"]


@dataclass(frozen=True)
class Verdict:
    """What an attempt's answer means: the outcome, when to try again (a retry), and why
    (for the message's `last_error` and the log)."""

    outcome: Outcome
    next_at: datetime | None = None
    why: str = ""


def judge(status: int | None, attempts_before: int, now: datetime,
          retry_after: str | None = None, error: str = "") -> Verdict:
    """The verdict on an attempt made at `now`, after `attempts_before` earlier ones, that
    got HTTP `status` (None: no answer, `error` says what happened) with the answer's
    `Retry-After` header, if any."""
    if status is not None and 200 <= status < 300:
        return Verdict("delivered")
    why = error or f"HTTP {status}"
    if not endpoints_fault(status):
        return Verdict("failed", why=why)
    if attempts_before >= len(RETRY_SCHEDULE_S):
        return Verdict("failed", why=f"{why}; no retries left")
    delay_s = float(RETRY_SCHEDULE_S[attempts_before])
    asked_s = retry_after_s(retry_after, now)
    if asked_s is not None:
        delay_s = max(delay_s, min(asked_s, RETRY_AFTER_MAX_S))
    return Verdict("retry", now + timedelta(seconds=delay_s), why)


def endpoints_fault(status: int | None) -> bool:
    """Whether an attempt's answer (None: none) is a failure of the endpoint itself, which
    counts towards disabling it: no answer, 429, 5xx. A 4xx is the endpoint up and
    refusing one message; a 2xx, success."""
    return status is None or status == 429 or status >= 500
