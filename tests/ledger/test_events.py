"""Stored events once applied: what is kept of them, and for how long."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from notifier.intake.apply import apply_stored_event
from notifier.ledger.events import EVENT_RETENTION_S
from notifier.ledger.store import Store
from tests.kit import appointment, client_upserted, store_and_apply
from tests.ledger_keys import event_key, stored_event_key

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


def test_an_applied_event_keeps_a_small_compact_hash_and_no_body(redis_client, policy):
    store = Store(redis_client)
    evt = appointment("appointment.scheduled", "a1", "c1", NOW + timedelta(days=3),
                      NOW - timedelta(minutes=5), join_url="https://video.example.com/r/a1")
    store.store_event(evt["id"], json.dumps(evt).encode(), NOW, subject="appointment:a1",
                      occurred_at=NOW - timedelta(minutes=5))
    assert apply_stored_event(store, evt["id"], policy, NOW) is not None
    kept = store.event_status(evt["id"])
    assert kept == {"status": "applied", "reason": kept["reason"], "subject": "appointment:a1",
                    "applied_at": str(NOW.timestamp()), "received_at": str(NOW.timestamp()),
                    "occurred": str((NOW - timedelta(minutes=5)).timestamp())}
    key = event_key(evt["id"], "appointment:a1")
    assert redis_client.object("encoding", key) in {b"ziplist", b"listpack"}
    assert 0 < redis_client.ttl(key) <= EVENT_RETENTION_S
    # Its id is still known: the same event again is a duplicate, and changes nothing.
    assert not store.store_event(evt["id"], json.dumps(evt).encode(), NOW,
                                 subject="appointment:a1", occurred_at=NOW)
    assert apply_stored_event(store, evt["id"], policy, NOW) is None


def newer_then_older(store: Store, policy) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two updates of one client applied out of order: the older one is `stale`."""
    newer = client_upserted("c1", "America/New_York", NOW - timedelta(minutes=1))
    older = client_upserted("c1", "America/Chicago", NOW - timedelta(minutes=2))
    for evt in (newer, older):
        store_and_apply(store, policy, evt, NOW)
    return newer, older


def test_a_stale_event_is_kept_the_same_way(redis_client, policy):
    store = Store(redis_client)
    newer, older = newer_then_older(store, policy)
    kept = store.event_status(older["id"])
    assert kept["status"] == "stale" and "raw" not in kept


#: The README's duplicate window: "Event ids are remembered for 30 days after being applied".
THIRTY_DAYS_S = 30 * 24 * 3600


def test_an_event_id_is_remembered_thirty_days_whatever_became_of_it(redis_client, policy):
    """Applied, stale and rejected alike: the id (and so the duplicate refusal) lasts the
    whole 30 days, give or take the seconds this test takes, not merely some while."""
    store = Store(redis_client)
    newer, older = newer_then_older(store, policy)
    bad = client_upserted("c2", "America/New_York", NOW)
    store.store_event(bad["id"], json.dumps(bad).encode(), NOW)
    store.reject_event(bad["id"], "no longer validates", NOW)
    assert EVENT_RETENTION_S == THIRTY_DAYS_S
    # Each sent again as it was stored (about its subject; `bad` without one).
    for evt, status, subject in ((newer, "applied", "client:c1"),
                                 (older, "stale", "client:c1"), (bad, "rejected", None)):
        assert store.event_status(evt["id"])["status"] == status
        key = stored_event_key(redis_client, evt["id"])
        assert THIRTY_DAYS_S - 60 <= redis_client.ttl(key) <= THIRTY_DAYS_S
        assert not store.store_event(evt["id"], json.dumps(evt).encode(), NOW,
                                     subject=subject, occurred_at=NOW), status
