"""The backoff of `delivery.retry`, as a table: attempts, retry-after, cap, expiry; and the
same backoff through the deliverer and Redis, as the README states it."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from notifier.config import MAX_ATTEMPTS, PROJECT_ROOT, RETRY_BASE_S, Settings
from notifier.delivery.channels.outbox import Outbox
from notifier.delivery.deliverer import Deliverer
from notifier.delivery.render import Renderer
from notifier.delivery.retry import RETRY_CAP_S, GiveUp, next_attempt
from notifier.errors import RetryableError
from notifier.ledger.store import Store
from tests.delivery.test_deliverer import CONFIRM_SMS, FailingChannel, book
from tests.ledger_keys import due_score

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
DAY = timedelta(days=1)


class Fixed(random.Random):
    """An rng whose every draw is `value`: 0 is the shortest jitter (half), 1 the longest."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize(
    ("attempts", "retry_after_s", "draw", "expires_in", "expected"),
    [
        # base 5 s, doubled per attempt, jittered between half and all of it
        (1, None, 1.0, DAY, 5.0),
        (1, None, 0.0, DAY, 2.5),
        (2, None, 1.0, DAY, 10.0),
        (4, None, 0.5, DAY, 30.0),
        (7, None, 1.0, DAY, 320.0),
        # the provider's Retry-After is a floor, not a ceiling
        (1, 30.0, 1.0, DAY, 30.0),
        (4, 30.0, 1.0, DAY, 40.0),
        # the backoff is capped at an hour (before the jitter): 5 s * 2^10 is past it
        (11, None, 1.0, DAY, RETRY_CAP_S),
        (11, None, 0.0, DAY, RETRY_CAP_S / 2),
        # nothing at or past the expiry
        (1, None, 1.0, timedelta(seconds=5), "x; no time left to retry"),
        (1, None, 1.0, timedelta(seconds=5.001), 5.0),
        (1, 3600.0, 0.0, timedelta(minutes=5), "x; no time left to retry"),
        # found by QA: a Retry-After past any date (1e12 s, inf) gives up, not overflows
        (1, 1e12, 0.5, DAY, "x; no time left to retry"),
        (1, float("inf"), 0.5, DAY, "x; no time left to retry"),
        # the count runs out first, whatever the time left
        (8, None, 1.0, DAY, "gave up after 8 attempts: x"),
        (9, 1.0, 1.0, DAY, "gave up after 9 attempts: x"),
    ],
)
def test_next_attempt(attempts, retry_after_s, draw, expires_in, expected):
    max_attempts = 8 if attempts <= 9 else 20
    got = next_attempt(attempts, "x", retry_after_s, NOW + expires_in, NOW, Fixed(draw),
                       max_attempts=max_attempts, base_s=5.0)
    if isinstance(expected, str):
        assert got == GiveUp(expected)
    else:
        assert got == NOW + timedelta(seconds=expected)


def test_the_cap_and_base_are_arguments():
    got = next_attempt(3, "x", None, NOW + DAY, NOW, Fixed(1.0), max_attempts=8, base_s=1.0,
                       cap_s=3.0)
    assert got == NOW + timedelta(seconds=3)


def test_giving_up_on_the_count_draws_nothing():
    rng = random.Random(7)
    state = rng.getstate()
    assert isinstance(next_attempt(8, "x", None, NOW + DAY, NOW, rng, max_attempts=8,
                                   base_s=5.0), GiveUp)
    assert rng.getstate() == state


def test_the_readme_figures_doubling_from_5_s_capped_at_an_hour():
    """The README: "backoff base 5 s (doubling, jittered, capped at an hour)"."""
    assert (RETRY_CAP_S, RETRY_BASE_S, MAX_ATTEMPTS) == (3600.0, 5.0, 8)


def test_a_failing_send_is_put_back_doubling_until_the_hour_cap(redis_client, policy, tmp_path):
    """Through the deliverer and Redis: the wait before attempt k+1 is between half and all
    of `5 s * 2^(k-1)`, capped at an hour, so the deliverer passes the attempts made (not
    one) and the cap holds (a cap of seconds, or no doubling, fails here)."""
    store = Store(redis_client)
    book(store, policy)
    failing = FailingChannel(RetryableError("busy", code="503"))
    settings = Settings.from_env({"NOTIFIER_MAX_ATTEMPTS": "14"}, dotenv=Path("/nonexistent"))
    d = Deliverer(store=store, channels={"sms": failing, "email": Outbox(tmp_path / "outbox")},
                  renderer=Renderer(PROJECT_ROOT / "templates"), settings=settings,
                  policy=policy, rng=random.Random(7))
    now, waits = NOW, []
    for _ in range(13):
        assert d.deliver(CONFIRM_SMS, now) == "retrying"
        due = datetime.fromtimestamp(due_score(store.redis, CONFIRM_SMS), UTC)
        waits.append((due - now).total_seconds())
        now = due
    for attempt, wait in enumerate(waits, start=1):
        backoff = min(3600.0, 5.0 * 2 ** (attempt - 1))
        assert backoff / 2 <= wait <= backoff, (attempt, wait)
    assert max(waits) > 1800.0  # the cap was reached and held, not merely never reached
    assert d.deliver(CONFIRM_SMS, now) == "failed"
    assert failing.calls == 14
