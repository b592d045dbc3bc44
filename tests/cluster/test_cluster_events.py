"""Events, turns, held closes and records on the real 3-master cluster (issue 17, step 7):
storing and applying an event is one shard's transaction, through `Store(cluster_client)`
(a `LedgerCluster`, which raises `CrossSlot` before sending anything that mixes slots).

With the notification scripts' keys on shards too (step 6), a booking, its reschedule and
its cancel apply whole on the cluster; so do the plans that write about another entity
than their subject: a refill request cancels its prescription's reminders in a
transaction of the prescription's shard first (`PlanWriter._cancel_elsewhere`), and a
completed visit's follow-up and a denied refill's visit-required notice are named after
their event's subject.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

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
from notifier.policy.digest import digest_id
from notifier.policy.figures import Policy
from notifier.policy.ordering import subject_ref
from notifier.worker.digests import run_provider_digest
from tests.kit import (
    appointment,
    client_upserted,
    event_dict,
    prescription_filled,
    provider_upserted,
    refill_requested,
)

NOW = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)


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


def test_refills_a_denial_and_a_completed_visit_apply_whole_on_the_cluster(store, policy):
    """A refill request (in another shard than its prescription) cancels the
    prescription's scheduled reminders and plans its own window's alerts; a denial asking
    for a visit plans the visit-required notice in the request's shard; a completed visit
    plans its follow-up in the appointment's shard. Nothing is refused."""
    assert shards_apart(store, "refill_request:rr-1", "prescription:rx-1")
    for setup in (client_upserted("c1", "America/New_York", NOW - timedelta(hours=2)),
                  provider_upserted("prov-1", NOW - timedelta(hours=2)),
                  prescription_filled("rx-1", "c1", NOW.date() - timedelta(days=20),
                                      NOW - timedelta(hours=1)),
                  appointment("appointment.scheduled", "a1", "c1", NOW - timedelta(hours=3),
                              NOW - timedelta(days=3)),
                  refill_requested("rr-1", "rx-1", "c1", NOW - timedelta(minutes=10)),
                  event_dict("refill.denied", {"request_id": "rr-1",
                                               "reason": "visit_required"},
                             NOW - timedelta(minutes=5)),
                  event_dict("appointment.completed", {"appointment_id": "a1"},
                             NOW - timedelta(minutes=1))):
        event_id = post(store, setup)
        assert apply_in_turn(store, event_id, policy, lambda: NOW, 30) == 1, setup["type"]
        assert store.event_status(event_id)["status"] == "applied", setup["type"]
    states = {n.id: n.state for n in store.notifications_for("client", "c1")}
    reminders = {i: s for i, s in states.items() if i.startswith("refill_due:rx-1:")}
    assert reminders and set(reminders.values()) == {"cancelled"}, states
    # The request's window notice, planned by the request, cancelled by the denial.
    assert states["escalation_notice:rr-1:refill_request-window:sms"] == "cancelled"
    for planned in ("visit_required:rr-1:denied:sms", "follow_up:a1:completed:sms"):
        assert states.get(planned) == "scheduled", (planned, states)


def test_a_digest_for_providers_on_every_master_is_planned_on_the_cluster(store, policy):
    """A provider digest's plan names every provider with open items, each in its own
    shard: written one shard's transaction at a time, each digest once, however often
    the fire runs."""
    providers = [f"prov-{i}" for i in range(1, 7)]
    shards = {store.keys.of_ref(f"provider:{p}") for p in providers}
    assert len(shards) > 1
    for i, provider in enumerate(providers):
        request = {**refill_requested(f"rr-{i}", f"rx-{i}", "c1", NOW - timedelta(hours=1))}
        request["data"]["request"]["provider_id"] = provider
        request["id"] = f"evt-open-{i}"
        for evt in (provider_upserted(provider, NOW - timedelta(hours=2)), request):
            assert apply_in_turn(store, post(store, evt), policy, lambda: NOW, 30) == 1
    assert run_provider_digest(store, NOW, None, NOW).planned == len(providers)
    assert run_provider_digest(store, NOW, None, NOW).planned == 0
    for provider in providers:
        assert store.notification(digest_id(provider, NOW))["state"] == "scheduled"
