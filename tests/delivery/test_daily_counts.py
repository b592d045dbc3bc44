"""The console's counters of the day (`notifier.ledger.daily`) as the deliverer writes
them: a real send and a real permanent failure through the real scripts, counted once."""

from __future__ import annotations

from pathlib import Path

from notifier.delivery.channels.outbox import Outbox
from notifier.errors import PermanentError
from notifier.ledger.daily import FAILED_KEEP_S, SENT_KEEP_S
from notifier.ledger.store import Store
from notifier.timeutil import utcnow
from tests.delivery.test_deliverer import (
    CONFIRM_EMAIL,
    CONFIRM_SMS,
    NOW,
    FailingChannel,
    book,
    deliverer,
)


def counts(store: Store, key: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in store.redis.hgetall(key).items()}


def test_a_delivered_send_and_a_permanent_failure_are_each_counted_once(
        redis_client, policy, tmp_path: Path):
    store, outbox = Store(redis_client), Outbox(tmp_path / "outbox")
    book(store, policy)
    failing = FailingChannel(PermanentError("invalid number", code="21211"))
    d = deliverer(store, policy, sms=failing, outbox=outbox)
    assert d.deliver(CONFIRM_EMAIL, NOW) == "sent"
    assert d.deliver(CONFIRM_SMS, NOW) == "failed"
    d.deliver(CONFIRM_EMAIL, NOW)  # a second deliver sends nothing, counts nothing
    assert len(outbox.messages()) == 1
    sent = store.keys.sent_daily(store.keys.of_notification(CONFIRM_EMAIL), NOW.date())
    assert counts(store, sent) == {f"{NOW.hour:02d}|email": 1}
    assert 0 < redis_client.ttl(sent) <= SENT_KEEP_S
    # `finish` takes no clock: a failure without `sent_at` counts in the day it is recorded.
    failed = store.keys.failed_daily(store.keys.of_notification(CONFIRM_SMS),
                                     utcnow().date())
    assert counts(store, failed) == {"sms|21211": 1}
    assert 0 < redis_client.ttl(failed) <= FAILED_KEEP_S
