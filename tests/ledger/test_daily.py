"""The console's counters of the day (`notifier.ledger.daily`), written by the real scripts:
sends per UTC hour and channel, failures per channel and provider code, each counted once,
each day's hash expiring."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import pytest

from notifier.ledger.daily import (
    FAILED_KEEP_S,
    SENT_KEEP_S,
    daily_replies,
    parse_daily,
    queue_daily,
)
from notifier.ledger.keyspace import family_of
from notifier.ledger.lua import lua_source
from notifier.ledger.store import Store
from notifier.policy.plan import Plan, PlannedNotification
from notifier.timeutil import utcnow
from tests.ledger_keys import KEYS

#: Recent, so that a day's hash (expiring days after its last count) is still there.
NOW = utcnow().replace(minute=30, second=0, microsecond=0) - timedelta(hours=2)


def planned(i: int, channel: str = "sms") -> PlannedNotification:
    return PlannedNotification(
        id=f"appointment_reminder:a1:{i}:{channel}", kind="appointment_reminder",
        channel=channel, recipient="client", recipient_id="c1", entity="appointment:a1",
        due_at=NOW, expires_at=NOW + timedelta(hours=1))


@pytest.fixture
def store(redis_client):
    return Store(redis_client)


def sent_key(day: date, shard: int | None = None) -> str:
    """A day's sends in `shard` (default: the shard of every notification here, a1's)."""
    return KEYS.sent_daily(KEYS.of_ref("appointment:a1") if shard is None else shard, day)


def failed_key(day: date, shard: int | None = None) -> str:
    """A day's failures in `shard` (default: a1's)."""
    return KEYS.failed_daily(KEYS.of_ref("appointment:a1") if shard is None else shard, day)


def begun(store: Store, i: int, channel: str = "sms") -> tuple[str, str]:
    store.write_plan(Plan(outcome="applied", add=(planned(i, channel),)), NOW)
    nid = f"appointment_reminder:a1:{i}:{channel}"
    begin = store.schedule.begin(nid, NOW, lease_s=60)
    assert begin.may_send
    return nid, begin.lease


def fields(store: Store, key: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in store.redis.hgetall(key).items()}


def daily(store: Store, now: datetime):
    with store.redis.pipeline(transaction=False) as pipe:
        queue_daily(pipe, now, store.keys)
        replies = pipe.execute()
    assert len(replies) == daily_replies(store.keys)
    return parse_daily(replies, now, store.keys)


def test_a_send_counts_in_its_hour_and_channel_once_and_the_day_expires(store):
    sms, lease = begun(store, 1)
    email, lease2 = begun(store, 2, "email")
    sent_at = NOW.timestamp() + 3
    assert store.schedule.finish(sms, "sent", lease=lease, sent_at=sent_at)
    # A finish retried after a lost reply records nothing again.
    assert store.schedule.finish(sms, "sent", lease=lease, sent_at=sent_at)
    assert store.schedule.finish(email, "sent", lease=lease2, sent_at=sent_at)
    key = sent_key(NOW.date())
    hour = f"{NOW.hour:02d}"
    assert fields(store, key) == {f"{hour}|sms": 1, f"{hour}|email": 1}
    assert store.redis.ttl(key) == pytest.approx(SENT_KEEP_S, abs=5)
    assert family_of(key).pattern == "n:{*}:stats:sent:*"  # type: ignore[union-attr]
    start = NOW.replace(minute=0)
    assert daily(store, NOW).sent == {(start, "sms"): 1, (start, "email"): 1}


def test_a_send_without_sent_at_or_a_second_send_is_not_counted_per_hour(store):
    sms, lease = begun(store, 1)
    assert store.schedule.finish(sms, "sent", lease=lease)  # found sent after a crash
    other, lease2 = begun(store, 2)
    assert store.schedule.finish(other, "sent", lease=lease2, sent_at=NOW.timestamp())
    # A message that left after the lease was lost: a second send, not counted.
    assert store.schedule.finish(other, "sent", lease="stale", sent_at=NOW.timestamp() + 9)
    assert sum(fields(store, sent_key(NOW.date())).values()) == 1


def test_a_failure_counts_by_channel_and_code_once(store):
    sms, lease = begun(store, 1)
    assert store.schedule.finish(sms, "failed", lease=lease, reason="invalid number",
                                 code="21211", sent_at=NOW.timestamp())
    # A failure report about it afterwards does not count it again.
    store.schedule.record_delivery(sms, "undelivered", "30003", NOW)
    key = failed_key(NOW.date())
    assert fields(store, key) == {"sms|21211": 1}
    assert store.redis.ttl(key) == pytest.approx(FAILED_KEEP_S, abs=5)
    assert family_of(key).pattern == "n:{*}:stats:failed:*"  # type: ignore[union-attr]


def test_a_failure_report_after_a_send_counts_once_in_the_reports_day(store):
    sms, lease = begun(store, 1)
    assert store.schedule.finish(sms, "sent", lease=lease, sent_at=NOW.timestamp())
    later = NOW + timedelta(days=1)
    store.schedule.record_delivery(sms, "undelivered", "30003", later)
    store.schedule.record_delivery(sms, "failed", "30005", later)  # a final one stands
    email, lease2 = begun(store, 2, "email")
    assert store.schedule.finish(email, "sent", lease=lease2, sent_at=NOW.timestamp())
    store.schedule.record_delivery(email, "bounce", "", later)
    store.schedule.record_delivery(email, "delivered", "", later)  # nothing replaces it
    assert fields(store, failed_key(later.date())) == {"sms|30003": 1, "email|": 1}
    assert not store.redis.exists(failed_key(NOW.date()))
    assert daily(store, later).failed == {("sms", "30003"): 1, ("email", ""): 1}


def test_a_failure_report_before_the_send_is_recorded_counts_once(store):
    sms, lease = begun(store, 1)
    store.schedule.record_delivery(sms, "undelivered", "30006", NOW)  # the callback raced
    assert store.schedule.finish(sms, "failed", lease=lease, reason="x", code="30006")
    assert fields(store, failed_key(NOW.date())) == {"sms|30006": 1}


def test_delivered_or_other_endings_count_no_failure(store):
    sms, lease = begun(store, 1)
    assert store.schedule.finish(sms, "sent", lease=lease, sent_at=NOW.timestamp())
    store.schedule.record_delivery(sms, "delivered", "", NOW)
    other, lease2 = begun(store, 2)
    assert store.schedule.finish(other, "expired", lease=lease2, reason="too late")
    assert not store.redis.keys("n:{*}:stats:failed:*")


def test_the_last_24_hours_and_7_days_are_read_from_the_day_hashes_of_every_shard(store):
    now = datetime(2026, 11, 30, 9, 20, tzinfo=UTC)
    last = KEYS.count - 1
    store.redis.hset(sent_key(now.date(), 0), mapping={"09|sms": 2, "10|sms": 5, "00|email": 1})
    store.redis.hset(sent_key(now.date(), last), mapping={"09|sms": 4})
    store.redis.hset(sent_key(now.date() - timedelta(days=1), 3),
                     mapping={"09|sms": 7, "10|sms": 3, "bad": 1})
    for back, shard in ((0, 0), (6, last), (7, 0), (6, 5)):
        store.redis.hset(failed_key(now.date() - timedelta(days=back), shard), "sms|21610", 1)
    counts = daily(store, now)
    day = datetime(2026, 11, 30, tzinfo=UTC)
    # 10:00 yesterday is the first of the 24 hours; 10:00 today is still to come.
    assert counts.sent == {(day + timedelta(hours=9), "sms"): 6, (day, "email"): 1,
                           (day - timedelta(hours=14), "sms"): 3}
    assert counts.failed == {("sms", "21610"): 3}


def test_the_scripts_expire_the_day_hashes_as_the_module_says():
    finish, delivery = lua_source("notif_finish"), lua_source("notif_delivery")
    assert re.findall(r"'EXPIRE', KEYS\[9\], (\d+)", finish) == [str(SENT_KEEP_S)]
    assert re.findall(r"'EXPIRE', KEYS\[10\], (\d+)", finish) == [str(FAILED_KEEP_S)]
    assert re.findall(r"'EXPIRE', KEYS\[5\], (\d+)", delivery) == [str(FAILED_KEEP_S)]
