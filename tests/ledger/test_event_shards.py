"""Applying an event is one shard's transaction (issue 17, step 7), checked on one Redis
by every key Redis sees: the keys an event's apply WATCHes and writes are its subject's
shard's, but for the notification families another step moves (`NOT_YET_SHARDED`); the
records of other shards (the client's, the provider's) are read, never WATCHed. The same
flows on the 3-master cluster: tests/cluster/test_cluster_events.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

import pytest
import redis

from notifier.intake.apply import apply_in_turn
from notifier.intake.events import parse_event
from notifier.ledger.store import Store
from notifier.policy.figures import Policy
from notifier.policy.ordering import subject_ref
from tests.kit import appointment, client_upserted, event_dict, provider_upserted
from tests.ledger.test_lua_scripts import Monitor

NOW = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
#: Keys of families another step of issue 17 puts on shards.
NOT_YET_SHARDED = ("n:stats:*", "n:wh:outbox", "n:wh:seq", "n:by-recipient:*")
#: Commands that take no key first (or none at all), as the apply sends them.
KEYLESS = {"MULTI", "EXEC", "DISCARD", "UNWATCH", "PING", "ECHO"}


@pytest.fixture
def store(redis_client: redis.Redis) -> Store:
    return Store(redis_client)


def post(store: Store, evt: dict[str, Any]) -> str:
    raw = json.dumps(evt).encode()
    event = parse_event(raw)
    assert store.store_event(event.id, raw, NOW, subject=subject_ref(event),
                             occurred_at=event.occurred_at)
    return event.id


def keys_of(args: list[str]) -> list[str]:
    """The ledger's keys among a command's arguments (the ledger's keys start `n:`; the
    members and values an apply writes do not)."""
    return [a for a in args[1:] if a.startswith("n:")]


def applied_commands(store: Store, redis_url: str, policy: Policy, event_id: str
                     ) -> tuple[list[list[str]], list[list[str]], list[list[str]]]:
    """(WATCHes, the transactions' commands and their scripts' commands, plain reads) of
    applying `event_id` in its turn, as Redis ran them."""
    with Monitor(redis_url) as seen:
        assert apply_in_turn(store, event_id, policy, lambda: NOW, 30) == 1
    watches, written, read = [], [], []
    in_multi = False
    for source, args in seen.lines:
        name = args[0].upper()
        if name == "WATCH":
            watches.append(args)
        elif name == "MULTI":
            in_multi = True
        elif name == "EXEC":
            in_multi = False
        elif in_multi or source == "lua":
            written.append(args)
        elif name not in KEYLESS:
            read.append(args)
    return watches, written, read


def test_a_booking_watches_and_writes_only_its_shard_and_reads_the_others(
        store: Store, redis_url: str, policy: Policy):
    k = store.keys
    assert len({k.of_ref("appointment:a1"), k.of_ref("client:c1"),
                k.of_ref("provider:prov-1")}) == 3
    for evt in (client_upserted("c1", "America/New_York", NOW - timedelta(hours=2)),
                provider_upserted("prov-1", NOW - timedelta(hours=2))):
        assert apply_in_turn(store, post(store, evt), policy, lambda: NOW, 30) == 1
    booking = post(store, appointment("appointment.scheduled", "a1", "c1",
                                      NOW + timedelta(days=5), NOW - timedelta(hours=1)))
    watches, written, read = applied_commands(store, redis_url, policy, booking)
    tag = k.tag(k.of_ref("appointment:a1"))
    watched = [key for args in watches for key in keys_of(args)]
    assert watched and all(key.startswith(tag) for key in watched), watched
    assert k.record("appointment:a1") in watched
    assert k.record_part("visits:c1", k.of_ref("appointment:a1")) in watched
    writes = [key for args in written for key in keys_of(args)]
    assert k.record("appointment:a1") in writes
    assert k.client_entities(k.of_ref("appointment:a1"), "c1") in writes
    outside = sorted({key for key in writes if not key.startswith(tag)})
    assert all(any(fnmatchcase(key, f) for f in NOT_YET_SHARDED) for key in outside), outside
    # The client's record, in its own shard, is read, not watched.
    assert any(k.record("client:c1") in keys_of(args) for args in read)
    assert k.record("client:c1") not in watched


def test_a_cancel_of_a_booked_appointment_stays_in_its_shard(store: Store, redis_url: str,
                                                             policy: Policy):
    k = store.keys
    for evt in (client_upserted("c1", "America/New_York", NOW - timedelta(hours=2)),
                provider_upserted("prov-1", NOW - timedelta(hours=2)),
                appointment("appointment.scheduled", "a1", "c1", NOW + timedelta(days=5),
                            NOW - timedelta(hours=1))):
        assert apply_in_turn(store, post(store, evt), policy, lambda: NOW, 30) == 1
    cancel = post(store, event_dict("appointment.cancelled", {
        "appointment_id": "a1", "cancelled_by": "client"}, NOW - timedelta(minutes=5)))
    watches, written, _ = applied_commands(store, redis_url, policy, cancel)
    tag = k.tag(k.of_ref("appointment:a1"))
    watched = [key for args in watches for key in keys_of(args)]
    assert k.by_entity("appointment:a1") in watched
    assert all(key.startswith(tag) for key in watched), watched
    writes = {key for args in written for key in keys_of(args)}
    assert k.event(k.of_ref("appointment:a1"), cancel) in writes
    outside = sorted(key for key in writes if not key.startswith(tag))
    assert all(any(fnmatchcase(key, f) for f in NOT_YET_SHARDED) for key in outside), outside
    assert store.load_record("appointment:a1").status == "cancelled"  # type: ignore[union-attr]
    visits = store.load_record("visits:c1")
    assert visits is not None and visits.upcoming == {}  # type: ignore[attr-defined]
