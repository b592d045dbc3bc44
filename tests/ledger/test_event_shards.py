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

from notifier.errors import StoreError
from notifier.intake.apply import apply_in_turn
from notifier.intake.events import parse_event
from notifier.ledger.audit_write import AuditWrite
from notifier.ledger.records import RefillAskedRecord
from notifier.ledger.store import Store
from notifier.policy.figures import Policy
from notifier.policy.ordering import subject_ref
from notifier.policy.plan import Plan, PlannedNotification
from tests.kit import (
    appointment,
    client_upserted,
    event_dict,
    prescription_filled,
    provider_upserted,
    refill_requested,
)
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


def transactions(store: Store, redis_url: str, policy: Policy, event_id: str
                 ) -> list[set[str]]:
    """The ledger keys each MULTI ... EXEC of applying `event_id` in its turn wrote (its
    scripts' commands included), in the order Redis ran them."""
    with Monitor(redis_url) as seen:
        assert apply_in_turn(store, event_id, policy, lambda: NOW, 30) == 1
    blocks: list[set[str]] = []
    for source, args in seen.lines:
        name = args[0].upper()
        if name == "MULTI":
            blocks.append(set())
        elif blocks and name != "EXEC" and (source == "lua" or name not in KEYLESS):
            blocks[-1].update(keys_of(args))
    return [b for b in blocks if b]


def test_a_refill_request_cancels_its_prescriptions_reminders_in_their_shard_first(
        store: Store, redis_url: str, policy: Policy):
    """The request's reminders-cancel is a transaction of the prescription's shard,
    committed before the request's own, which writes only the request's shard."""
    k = store.keys
    request, rx = "refill_request:rr-1", "prescription:rx-1"
    assert k.of_ref(request) != k.of_ref(rx)
    for evt in (client_upserted("c1", "America/New_York", NOW - timedelta(hours=2)),
                provider_upserted("prov-1", NOW - timedelta(hours=2)),
                prescription_filled("rx-1", "c1", NOW.date() - timedelta(days=20),
                                    NOW - timedelta(hours=1))):
        assert apply_in_turn(store, post(store, evt), policy, lambda: NOW, 30) == 1
    asked = post(store, refill_requested("rr-1", "rx-1", "c1", NOW - timedelta(minutes=5)))
    first, second = transactions(store, redis_url, policy, asked)
    assert k.by_entity(rx) in first and all(
        key.startswith(k.tag(k.of_ref(rx))) for key in first), first
    assert k.event(k.of_ref(request), asked) in second and all(
        key.startswith(k.tag(k.of_ref(request))) for key in second), second
    about = store.about_entity(rx)
    assert about and {found[1] for found in about.values() if found} == {"cancelled"}


def test_a_request_applied_again_after_a_crash_between_its_two_writes_cancels_once(
        store: Store, policy: Policy):
    """A worker killed after the prescription's cancel committed and before the request's
    own transaction leaves the event accepted: applied again, it cancels nothing more
    (each reminder was cancelled once) and plans the request's alerts."""
    for evt in (client_upserted("c1", "America/New_York", NOW - timedelta(hours=2)),
                provider_upserted("prov-1", NOW - timedelta(hours=2)),
                prescription_filled("rx-1", "c1", NOW.date() - timedelta(days=20),
                                    NOW - timedelta(hours=1))):
        assert apply_in_turn(store, post(store, evt), policy, lambda: NOW, 30) == 1
    reminders = list(store.about_entity("prescription:rx-1"))
    assert reminders
    asked = post(store, refill_requested("rr-1", "rx-1", "c1", NOW - timedelta(minutes=5)))
    # What the first of the two writes commits, alone (the crash is just after it).
    store.plans.write_plan(Plan(outcome="applied", cancel=("prescription:rx-1",)), NOW)
    assert store.event_status(asked)["status"] == "accepted"
    cancelled = store.figures().outcomes
    assert sum(n for (state, _), n in cancelled.items() if state == "cancelled") == len(
        reminders)
    assert apply_in_turn(store, asked, policy, lambda: NOW, 30) == 1
    assert store.event_status(asked)["status"] == "applied"
    assert {store.notification(i)["state"] for i in reminders} == {"cancelled"}
    assert store.figures().outcomes == cancelled  # each reminder counted cancelled once
    assert store.notification("escalation_notice:rr-1:refill_request-window:sms")[
        "state"] == "scheduled"


def test_a_plan_that_adds_outside_its_events_shard_is_refused_and_writes_nothing(
        store: Store, policy: Policy):
    """A planner that names an add after another entity than its event's subject would
    need two shards in one transaction: refused before anything is written."""
    evt = client_upserted("c1", "America/New_York", NOW - timedelta(hours=2))
    event_id = post(store, evt)
    elsewhere = next(f"x{i}" for i in range(100)
                     if store.keys.of_ref(f"followup:x{i}") != store.keys.of_ref("client:c1"))
    stray = PlannedNotification(
        id=f"follow_up:{elsewhere}:completed:sms", kind="follow_up", channel="sms",
        recipient="client", recipient_id="c1", entity=f"followup:{elsewhere}",
        due_at=NOW + timedelta(days=1), expires_at=NOW + timedelta(days=2))
    with pytest.raises(StoreError, match=f"follow_up:{elsewhere}:completed:sms outside"):
        store.apply_event(event_id, lambda raw, load, at: Plan(outcome="applied",
                                                                 add=(stray,)), NOW)
    assert store.event_status(event_id)["status"] == "accepted"
    assert store.notification(stray.id) == {}


def test_a_plan_not_tied_to_an_event_with_records_across_shards_is_refused(store: Store):
    """Only a plan that just adds is split per shard (a digest of many providers); one
    with records, cancels or announcements across shards could be no one transaction on
    a cluster, so it is refused on one Redis as well, before anything is written."""
    a, b = next((f"a{i}", f"a{i + 1}") for i in range(100)
                if store.keys.of_ref(f"appointment:a{i}") !=
                store.keys.of_ref(f"appointment:a{i + 1}"))
    add = PlannedNotification(
        id=f"appointment_reminder:{a}:24h:sms", kind="appointment_reminder", channel="sms",
        recipient="client", recipient_id="c1", entity=f"appointment:{a}",
        due_at=NOW + timedelta(days=1), expires_at=NOW + timedelta(days=2))
    with pytest.raises(StoreError, match="must be one shard's"):
        store.write_plan(Plan(outcome="applied", add=(add,), cancel=(f"appointment:{b}",)),
                         NOW)
    # A record of another shard than the adds', too.
    asked = RefillAskedRecord(updated_at=NOW)
    with pytest.raises(StoreError, match="must be one shard's"):
        store.write_plan(Plan(outcome="applied", add=(add,),
                              records={f"refill_asked:{b}": asked}), NOW)
    assert store.notification(add.id) == {}
    assert store.load_record(f"refill_asked:{b}") is None


def test_an_audited_plan_across_shards_is_refused(store: Store):
    """An operator's entry is appended by the script of the plan's first add: a plan
    written in several transactions could audit a change that another part never made."""
    a, b = next((f"a{i}", f"a{i + 1}") for i in range(100)
                if store.keys.of_ref(f"appointment:a{i}") !=
                store.keys.of_ref(f"appointment:a{i + 1}"))
    adds = tuple(PlannedNotification(
        id=f"appointment_reminder:{x}:24h:sms", kind="appointment_reminder", channel="sms",
        recipient="client", recipient_id="c1", entity=f"appointment:{x}",
        due_at=NOW + timedelta(days=1), expires_at=NOW + timedelta(days=2)) for x in (a, b))
    audit = AuditWrite("n:audit", 0, "ana", "copy", "x", NOW.isoformat())
    with pytest.raises(StoreError, match="an audited plan must be one shard's"):
        store.write_plan(Plan(outcome="applied", add=adds), NOW, audit)
    assert [store.notification(n.id) for n in adds] == [{}, {}]
