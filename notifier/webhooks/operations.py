"""What operators do to delivery webhooks by hand (`notifier webhooks test|replay`): pick an
endpoint by name, read `--since`, send one `webhook.test` message at once.

Errors: `UsageError`, one line saying what was expected, for an unknown endpoint or a
`--since` that is neither form; sending never raises for what the receiver does.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx

from notifier.errors import UsageError
from notifier.webhooks.catalogue import webhook_test_payload
from notifier.webhooks.dispatcher import attempt
from notifier.webhooks.endpoints import RFC3339, Endpoint
from notifier.webhooks.retries import Outcome

#: A relative `--since`: a whole number of seconds, minutes, hours or days before now.
RELATIVE = re.compile(r"(\d{1,6})([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
SINCE_FORMS = "an RFC 3339 instant with its offset (2026-11-30T15:00:00Z) or a duration " \
              "before now (90s, 45m, 2h, 3d)"


def named(endpoints: tuple[Endpoint, ...], name: str, command: str) -> Endpoint:
    """The endpoint called `name`. Raises UsageError naming the known ones otherwise."""
    for endpoint in endpoints:
        if endpoint.name == name:
            return endpoint
    known = ", ".join(e.name for e in endpoints) or "none configured"
    raise UsageError(f"webhooks {command}: no endpoint named {name!r} (known: {known}; "
                     "`notifier webhooks list` shows them)")


def parse_since(value: str, now: datetime) -> datetime:
    """`--since` as an instant (aware, UTC): an RFC 3339 date-time, or `now` less a duration
    such as `2h` or `3d` (the two forms that cannot be misread: no naive local times, no
    month arithmetic). Raises UsageError naming both forms, or for an instant after `now`.
    """
    text = value.strip()
    relative = RELATIVE.fullmatch(text)
    since: datetime | None = None
    try:
        if relative:
            since = now - timedelta(seconds=int(relative[1]) * _UNIT_S[relative[2]])
        elif RFC3339.fullmatch(text):
            since = datetime.fromisoformat(text.upper()).astimezone(UTC)
    except (ValueError, OverflowError):
        pass  # the shape of one, not a real instant (2026-02-30, 999999d before now)
    if since is None:
        raise UsageError(f"webhooks replay: --since {value!r}: expected {SINCE_FORMS}")
    if since > now:
        raise UsageError(f"webhooks replay: --since {value!r} is in the future: nothing "
                         "was made since then")
    return since


@dataclass(frozen=True)
class TestResult:
    """What one `webhook.test` message got: its id, the status answered (None: no answer,
    `why` says what happened), how the dispatcher would count the answer, how long it took
    (milliseconds, for the operator to read; never asserted on)."""

    __test__ = False  # not a pytest test class, whatever its name

    message_id: str
    status: int | None
    outcome: Outcome
    why: str
    elapsed_ms: float

    @property
    def delivered(self) -> bool:
        return self.outcome == "delivered"

    def line(self, endpoint: str) -> str:
        """One line: `ehr: HTTP 500 in 12 ms: would count as retry (msg_test_...)`; the
        outcome is the dispatcher's on a first attempt (`retries.judge`)."""
        answer = f"HTTP {self.status}" if self.status is not None else self.why
        counts = "counts as delivered" if self.delivered else f"would count as {self.outcome}"
        return (f"{endpoint}: {answer} in {self.elapsed_ms:.0f} ms: {counts} "
                f"({self.message_id})")


def send_test(client: httpx.Client, endpoint: Endpoint, now: datetime) -> TestResult:
    """Send one signed `webhook.test` message to `endpoint` at once, outside the outbox (no
    retry, nothing recorded in Redis), with a fresh id, `msg_test_<random>`."""
    message_id = f"msg_test_{secrets.token_hex(8)}"
    body = json.dumps(webhook_test_payload(endpoint.name, now), separators=(",", ":"))
    started = time.monotonic()
    verdict, status = attempt(client, endpoint, message_id, body, 0, now)
    elapsed_ms = (time.monotonic() - started) * 1000
    return TestResult(message_id, status, verdict.outcome, verdict.why, elapsed_ms)
