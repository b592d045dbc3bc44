"""Events, turns, held closes and records on the real 3-master cluster (issue 17, step 7):
storing and applying an event is one shard's transaction, through `Store(cluster_client)`
(a `LedgerCluster`, which raises `CrossSlot` before sending anything that mixes slots).

With the notification scripts' keys on shards too (step 6), a booking, its reschedule and
its cancel apply whole on the cluster. Not yet: a plan that writes about another entity
than its event's subject, such as a refill request cancelling its prescription's
reminders in the prescription's shard, which the cluster refuses with a `CrossSlot`
naming that one key (nothing is written); `test_a_refill_request_...` checks exactly that.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from notifier.errors import CrossSlot
from notifier.intake.apply import apply_in_turn, apply_stored_event
from notifier.intake.events import parse_event
from notifier.ledger.cluster.server import LocalCluster
from notifier.ledger.records import (
    AppointmentRecord,
    ClientRecord,
    PrescriptionRecord,
    ProviderRecord,
)
from notifier.ledger.store import Store
from notifier.policy.figures import Policy
from notifier.policy.ordering import subject_ref
from tests.kit import (
    appointment,
    client_upserted,
    event_dict,
    prescription_filled,
    provider_upserted,
    refill_requested,
)

NOW = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
LISTED = re.compile(r"'([^']+)' in slot (\d+)")
#: A plan that writes another entity's keys (not a key family): a refill request cancels
#: its prescription's refill reminders, in the prescription's shard. Left for a later
#: step (a second transaction, or the check at send time); the test names it so that it
#: cannot hide another key.
REFILL_CANCELS_ITS_PRESCRIPTION = ("n:{*}:by-entity:prescription:rx-1",)


@pytest.fixture
def store(cluster: LocalCluster, cluster_client: RedisCluster) -> Iterator[Store]:
    for index in range(len(cluster.nodes)):
        client = redis.Redis.from_url(cluster.nodes[index].url)
        client.flushall()
        client.close()
    yield Store(cluster_client)


def post(store: Store, evt: dict[str, Any], now: datetime = NOW) -> str:
    """Store an event as the web does (with its subject), in one script on one node."""
    raw = json.dumps(evt).encode()
    event = parse_event(raw)
    assert store.store_event(event.id, raw, now, subject=subject_ref(event),
                             occurred_at=event.occurred_at)
    return event.id


def shards_apart(store: Store, *refs: str) -> bool:
    """Whether `refs` are in as many shards as there are refs."""
    return len({store.keys.of_ref(r) for r in refs}) == len(refs)


def test_events_about_clients_and_providers_are_stored_and_applied_on_the_cluster(
        store, policy: Policy):
    """Stored with its subject, then applied in its subject's turn: event, queue, turn,
    record and its indexes are all in the subject's shard; found again by id alone."""
    ids = [post(store, client_upserted("c1", "America/New_York", NOW - timedelta(hours=2))),
           post(store, provider_upserted("prov-1", NOW - timedelta(hours=2)))]
    for event_id in ids:
        assert apply_in_turn(store, event_id, policy, lambda: NOW, 30) == 1
        assert store.event_status(event_id)["status"] == "applied"
    client = store.load_record("client:c1")
    assert isinstance(client, ClientRecord) and client.client.phone == "+14155550123"
    assert isinstance(store.load_record("provider:prov-1"), ProviderRecord)
    assert [r.client.id for r in store.clients_for_phone("+14155550123")] == ["c1"]
    assert [r.client.id for r in store.clients_for_email("C1@example.com")] == ["c1"]
    assert store.provider_ids() == ["prov-1"]
    figures = store.figures()
    assert (figures.events_pending, figures.events_held) == (0, 0)
    # A client's change of number moves it between the per-number sets of its shard.
    post(store, client_upserted("c1", "America/New_York", NOW - timedelta(hours=1),
                                phone="+14155550199"))
    assert apply_in_turn(store, store.turns.heads(["client:c1"])[0], policy,
                         lambda: NOW, 30) == 1
    assert store.clients_for_phone("+14155550123") == []
    assert [r.client.id for r in store.clients_for_phone("+14155550199")] == ["c1"]


def test_an_event_stored_without_a_subject_moves_to_its_subjects_shard(store, policy):
    """Stored by an older version (no subject): in its id's shard, queued by the worker,
    which moves it to its subject's shard; then applied there."""
    evt = client_upserted("c2", "America/Chicago", NOW - timedelta(hours=1))
    assert store.store_event(evt["id"], json.dumps(evt).encode(), NOW)
    assert store.event_subject(evt["id"]) == ("accepted", None)
    assert apply_stored_event(store, evt["id"], policy, NOW) is not None
    assert store.event_status(evt["id"])["subject"] == "client:c2"
    assert store.load_record("client:c2") is not None
    assert store.figures().events_pending == 0


def test_a_booking_applies_whole_on_the_cluster(store, policy):
    """A booking (its appointment in another shard than its client and provider, whose
    records are read without WATCH) is applied in its shard's transaction: its record,
    its notifications and their webhook announcements written, nothing refused."""
    assert shards_apart(store, "appointment:a1", "client:c1", "provider:prov-1")
    for evt in (client_upserted("c1", "America/New_York", NOW - timedelta(hours=2)),
                provider_upserted("prov-1", NOW - timedelta(hours=2))):
        assert apply_in_turn(store, post(store, evt), policy, lambda: NOW, 30) == 1
    booking = post(store, appointment("appointment.scheduled", "a1", "c1",
                                      NOW + timedelta(days=5), NOW - timedelta(hours=1)))
    assert apply_in_turn(store, booking, policy, lambda: NOW, 30) == 1
    assert store.event_status(booking)["status"] == "applied"
    assert isinstance(store.load_record("appointment:a1"), AppointmentRecord)
    planned = [n.id for n in store.notifications_for("client", "c1")]
    assert planned and all(store.keys.of_notification(i) == store.keys.of_ref(
        "appointment:a1") for i in planned)
    assert store.turns.heads(["appointment:a1"]) == []


def seed(store: Store, *events: dict[str, Any]) -> None:
    """Write the records of a booking and a fill as their events would have, one
    record's transaction each (`update_record`), in its own shard: the state a later
    event meets, without the notifications those events plan."""
    for evt in events:
        event = parse_event(json.dumps(evt).encode())
        data: Any = event.data
        if event.type == "appointment.scheduled":
            record: Any = AppointmentRecord(updated_at=event.occurred_at,
                                            appointment=data.appointment)
        else:
            record = PrescriptionRecord(updated_at=event.occurred_at,
                                        prescription=data.prescription)
        assert store.update_record(subject_ref(event), lambda _, r=record: r)


BOOKED = appointment("appointment.scheduled", "a1", "c1", NOW + timedelta(days=5),
                     NOW - timedelta(hours=1))
FILLED = prescription_filled("rx-1", "c1", NOW.date() - timedelta(days=20),
                             NOW - timedelta(hours=1))


@pytest.mark.parametrize("evt", [
    appointment("appointment.rescheduled", "a1", "c1", NOW + timedelta(days=6),
                NOW - timedelta(minutes=30)),
    event_dict("appointment.cancelled", {"appointment_id": "a1", "cancelled_by": "client"},
               NOW - timedelta(minutes=20)),
], ids=["rescheduled", "cancelled"])
def test_a_reschedule_and_a_cancel_apply_whole_on_the_cluster(store, policy, evt):
    """Its client, provider and visits read across shards without WATCH, the earlier
    reminders cancelled and the new ones planned in the appointment's shard."""
    for setup in (client_upserted("c1", "America/New_York", NOW - timedelta(hours=2)),
                  provider_upserted("prov-1", NOW - timedelta(hours=2))):
        assert apply_in_turn(store, post(store, setup), policy, lambda: NOW, 30) == 1
    seed(store, BOOKED)
    event_id = post(store, evt)
    assert apply_in_turn(store, event_id, policy, lambda: NOW, 30) == 1
    assert store.event_status(event_id)["status"] == "applied"


def test_a_refill_request_crosses_slots_only_on_its_prescriptions_reminders(store, policy):
    """Not yet one shard (issue 17 goes on): a refill request cancels its prescription's
    refill reminders, in the prescription's shard. The cluster refuses it with a
    `CrossSlot` naming, besides its own shard's keys, only that entity index; nothing is
    written and the event stays accepted in its subject's queue."""
    for setup in (client_upserted("c1", "America/New_York", NOW - timedelta(hours=2)),
                  provider_upserted("prov-1", NOW - timedelta(hours=2))):
        assert apply_in_turn(store, post(store, setup), policy, lambda: NOW, 30) == 1
    seed(store, BOOKED, FILLED)
    evt = refill_requested("rr-1", "rx-1", "c1", NOW - timedelta(minutes=10))
    event_id = post(store, evt)
    subject = subject_ref(parse_event(json.dumps(evt).encode()))
    assert store.keys.of_ref(subject) != store.keys.of_ref("prescription:rx-1")
    tag = store.keys.tag(store.keys.of_ref(subject))
    with pytest.raises(CrossSlot) as crossed:
        apply_in_turn(store, event_id, policy, lambda: NOW, 30)
    listed = LISTED.findall(str(crossed.value))
    outside = [key for key, _ in listed if not key.startswith(tag)]
    assert outside and all(any(fnmatchcase(k, f) for f in REFILL_CANCELS_ITS_PRESCRIPTION)
                           for k in outside), str(crossed.value)
    assert store.event_status(event_id)["status"] == "accepted"
    assert store.turns.heads([subject]) == [event_id]
