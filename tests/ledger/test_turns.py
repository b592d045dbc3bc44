"""Per-subject queues, turns and held closes, on a real Redis (notifier/ledger/turns.py, the
ordering parts of notifier/ledger/plans.py, notifier/ledger/events.py and
notifier/intake/apply.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from notifier.delivery.channels.outbox import Outbox
from notifier.errors import StoreContention, TurnLost
from notifier.intake.apply import apply_in_turn, apply_stored_event
from notifier.intake.events import parse_event
from notifier.ledger.batch import Reply
from notifier.ledger.record_store import MAX_WATCH_TRIES
from notifier.ledger.records import Record
from notifier.ledger.store import Store
from notifier.policy.figures import Policy
from notifier.policy.ordering import subject_ref
from tests.kit import (
    appointment,
    client_upserted,
    event_dict,
    message_received,
    prescription_filled,
    refill_requested,
)
from tests.ledger_keys import (
    KEYS,
    by_entity_key,
    held_events,
    held_key,
    pending_events,
    queue_key,
    record_key,
    stored_event_key,
    turn_key,
    turns_key,
)

NOW = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)


@pytest.fixture
def store(redis_client) -> Store:
    return Store(redis_client)


def post(store: Store, evt: dict[str, Any], at: datetime = NOW) -> None:
    """What the web does: store the event with its subject."""
    parsed = parse_event(json.dumps(evt).encode())
    assert store.store_event(evt["id"], json.dumps(evt).encode(), at,
                             subject=subject_ref(parsed), occurred_at=parsed.occurred_at)


def status(store: Store, event_id: str) -> str:
    return store.event_status(event_id)["status"]


def fixed(at: datetime):
    return lambda: at


# Turns ------------------------------------------------------------------------------------

def test_one_turn_per_subject_and_it_passes_on_only_with_the_queue_empty(store):
    turns = store.turns
    assert turns.take("appointment:a1", "tok-1", NOW, 30)
    assert not turns.take("appointment:a1", "tok-2", NOW, 30)
    assert turns.take("appointment:a2", "tok-2", NOW, 30), "other subjects are not held up"
    store.redis.zadd(queue_key("appointment:a1"), {"0000000000000001:e1": 1.0})
    assert turns.next("appointment:a1", "tok-1", NOW, 30) == "e1"
    assert turns.next("appointment:a1", "tok-2", NOW, 30) is None, "not tok-2's turn"
    assert store.redis.get(turn_key("appointment:a1")) == b"tok-1", "nor can it end it"
    store.redis.delete(queue_key("appointment:a1"))
    assert turns.next("appointment:a1", "tok-1", NOW, 30) is None
    assert not store.redis.exists(turn_key("appointment:a1"))
    assert store.redis.zscore(turns_key("appointment:a1"), "appointment:a1") is None
    assert turns.take("appointment:a1", "tok-3", NOW, 30)


def test_a_dead_holders_turn_runs_out_and_is_found_by_the_sweep(store):
    turns = store.turns
    assert turns.take("appointment:a1", "dead", NOW, 30)
    assert turns.expired(NOW) == []
    later = NOW + timedelta(seconds=31)
    # By `turns` the lease is over, but the key still holds: not yet, looked at again later.
    assert turns.expired(later) == []
    assert store.redis.zscore(turns_key("appointment:a1"), "appointment:a1") > later.timestamp()
    store.redis.delete(turn_key("appointment:a1"))  # the key's lease runs out in Redis
    assert turns.expired(later + timedelta(seconds=31)) == ["appointment:a1"]
    assert turns.expired(later + timedelta(seconds=31)) == [], "each death is reported once"
    assert turns.take("appointment:a1", "next", later, 30)


def test_release_gives_back_only_ones_own_turn(store):
    turns = store.turns
    assert turns.take("message:m1", "mine", NOW, 30)
    turns.release("message:m1", "someone else")
    assert store.redis.get(turn_key("message:m1")) == b"mine"
    turns.release("message:m1", "mine")
    assert not store.redis.exists(turn_key("message:m1"))
    assert store.redis.zscore(turns_key("message:m1"), "message:m1") is None


def test_heads_and_unapplied_about(store):
    post(store, appointment("appointment.scheduled", "a1", "c1", NOW + timedelta(days=5),
                            NOW - timedelta(hours=1), ), NOW)
    assert store.turns.unapplied_about(["appointment:a1", "client:c1"])
    assert not store.turns.unapplied_about(["appointment:a2", "client:c1"])
    assert not store.turns.unapplied_about([])
    [head] = store.turns.heads(["appointment:a1", "appointment:a2"])
    assert status(store, head) == "accepted"


# Order ------------------------------------------------------------------------------------

def test_a_subjects_events_are_applied_oldest_first_whatever_the_arrival(store, policy):
    start = NOW + timedelta(days=5)
    booked = appointment("appointment.scheduled", "a1", "c1", start, NOW - timedelta(hours=3))
    moved = appointment("appointment.rescheduled", "a1", "c1", start + timedelta(days=1),
                        NOW - timedelta(hours=2))
    cancelled = event_dict("appointment.cancelled", {"appointment_id": "a1",
                                                     "cancelled_by": "client"},
                           NOW - timedelta(hours=1))
    for evt in (cancelled, moved, booked):  # newest first
        post(store, evt)
    assert apply_in_turn(store, cancelled["id"], policy, fixed(NOW), 30) == 3
    assert [status(store, e["id"]) for e in (booked, moved, cancelled)] == ["applied"] * 3
    record = store.load_record("appointment:a1")
    assert (record.status, record.sequence) == ("cancelled", 2)
    assert not store.redis.exists(queue_key("appointment:a1"))
    assert not store.redis.exists(turn_key("appointment:a1"))
    assert len(pending_events(store.redis)) == 0


def test_events_with_one_occurred_at_are_applied_in_arrival_order(store, policy):
    at = NOW - timedelta(hours=1)
    booked = appointment("appointment.scheduled", "a1", "c1", NOW + timedelta(days=5), at)
    cancelled = event_dict("appointment.cancelled",
                           {"appointment_id": "a1", "cancelled_by": "client"},
                           at, event_id="aaa-first-by-name")
    post(store, booked, NOW)
    post(store, cancelled, NOW + timedelta(microseconds=5))
    apply_in_turn(store, booked["id"], policy, fixed(NOW), 30)
    assert store.load_record("appointment:a1").status == "cancelled"


def test_a_worker_finding_the_turn_taken_leaves_the_event_to_the_holder(store, policy):
    post(store, client_upserted("c1", "UTC", NOW - timedelta(hours=1)))
    assert store.turns.take("client:c1", "holder", NOW, 30)
    [event_id] = store.turns.heads(["client:c1"])
    assert apply_in_turn(store, event_id, policy, fixed(NOW), 30) == 0
    assert status(store, event_id) == "accepted"
    # The holder, going on with its turn, finds it next.
    assert store.turns.next("client:c1", "holder", NOW, 30) == event_id


def test_a_write_after_the_turn_passed_on_is_refused(store, policy):
    evt = client_upserted("c1", "UTC", NOW - timedelta(hours=1))
    post(store, evt)
    assert store.turns.take("client:c1", "old", NOW, 30)
    store.redis.set(turn_key("client:c1"), "new")  # its lease ran out; another took it
    with pytest.raises(TurnLost):
        apply_stored_event(store, evt["id"], policy, NOW, turn=("client:c1", "old"))
    assert status(store, evt["id"]) == "accepted"
    assert store.load_record("client:c1") is None


def test_a_failing_apply_gives_the_turn_back_for_the_retry(store, policy, monkeypatch):
    from notifier.intake import apply
    evt = client_upserted("c1", "UTC", NOW - timedelta(hours=1))
    post(store, evt)

    def broken(policy: Policy, now: datetime):
        def decide(raw, load, arrived_at):
            raise OverflowError("odd data")
        return decide

    monkeypatch.setattr(apply, "decide_for", broken)
    with pytest.raises(OverflowError):
        apply_in_turn(store, evt["id"], policy, fixed(NOW), 30)
    assert not store.redis.exists(turn_key("client:c1"))
    assert status(store, evt["id"]) == "accepted"


def test_apply_gives_up_when_a_concurrent_writer_keeps_changing_its_keys(store, policy,
                                                                        redis_url, monkeypatch):
    """A bounded WATCH loop: after MAX_WATCH_TRIES lost races the apply raises the project's
    own error, writes nothing, gives the turn back, and does not count against the event."""
    from notifier.intake import apply
    evt = client_upserted("c1", "UTC", NOW - timedelta(hours=1))
    post(store, evt)
    writer = redis.Redis.from_url(redis_url)  # another process's connection
    tries: list[int] = []
    real_decide_for = apply.decide_for

    def contended(policy: Policy, now: datetime):
        decide = real_decide_for(policy, now)

        def interfered(raw, load, arrived_at):
            tries.append(1)
            if len(tries) <= 4 * MAX_WATCH_TRIES:  # then let one through
                writer.hset(stored_event_key(writer, evt["id"]), "touched", len(tries))
            return decide(raw, load, arrived_at)
        return interfered

    monkeypatch.setattr(apply, "decide_for", contended)
    with pytest.raises(StoreContention):
        apply_in_turn(store, evt["id"], policy, fixed(NOW), 30)
    assert len(tries) == MAX_WATCH_TRIES
    assert status(store, evt["id"]) == "accepted"
    assert store.load_record("client:c1") is None
    assert not store.redis.exists(turn_key("client:c1")), "the turn is given back"
    assert "failures" not in store.event_status(evt["id"]), "not the event's fault"
    monkeypatch.undo()
    assert apply_in_turn(store, evt["id"], policy, fixed(NOW), 30) == 1
    writer.close()


def test_update_record_gives_up_when_a_concurrent_writer_keeps_changing_it(store, redis_url):
    from notifier.delivery.preview import SAMPLE_PROVIDER
    ref = f"provider:{SAMPLE_PROVIDER.provider.id}"
    writer = redis.Redis.from_url(redis_url)
    tries: list[int] = []

    def change(record: Record | None) -> Record | None:
        tries.append(1)
        if len(tries) <= 4 * MAX_WATCH_TRIES:
            writer.set(record_key(ref), SAMPLE_PROVIDER.model_dump_json())
        return SAMPLE_PROVIDER.model_copy(update={"updated_at": NOW})

    with pytest.raises(StoreContention):
        store.update_record(ref, change)
    assert len(tries) == MAX_WATCH_TRIES
    assert store.load_record(ref) == SAMPLE_PROVIDER, "only the other writer's value"
    writer.close()


def test_an_event_stored_without_a_subject_is_queued_when_first_applied(store, policy):
    """Events accepted by an older version carry no subject: the worker queues them."""
    evt = client_upserted("c1", "UTC", NOW - timedelta(hours=1))
    store.store_event(evt["id"], json.dumps(evt).encode(), NOW)
    assert apply_in_turn(store, evt["id"], policy, fixed(NOW), 30) == 1
    assert status(store, evt["id"]) == "applied"
    assert store.event_status(evt["id"])["subject"] == "client:c1"


def test_an_event_an_older_laxer_version_accepted_is_applied_not_rejected(store, policy):
    """Accepted means applied: an event queued across the upgrade that made the door strict
    (a numeric string, a repeated key, a control character in a name) is still applied."""
    fill = prescription_filled("rx-1", "c1", NOW.date(), NOW - timedelta(hours=1))
    fill["data"]["prescription"]["days_supply"] = "30"
    raw = json.dumps(fill).replace('"id": "rx-1"', '"id": "rx-0", "id": "rx-1"')
    named = client_upserted("c1", "UTC", NOW - timedelta(hours=1), first_name="Ana\u202e\r\n")
    for evt, body in ((named, json.dumps(named)), (fill, raw)):
        store.store_event(evt["id"], body.encode(), NOW)
        assert apply_in_turn(store, evt["id"], policy, fixed(NOW), 30) == 1
        assert status(store, evt["id"]) == "applied"
    assert store.load_record("prescription:rx-1").prescription.days_supply == 30
    assert store.load_record("client:c1").client.first_name == "Ana"


def test_an_unreadable_event_without_a_subject_is_rejected_not_retried(store, policy):
    store.store_event("evt-x", b'{"id": "evt-x"}', NOW)
    assert apply_in_turn(store, "evt-x", policy, fixed(NOW), 30) == 0
    assert status(store, "evt-x") == "rejected"
    assert len(pending_events(store.redis)) == 0


# Held closes ------------------------------------------------------------------------------

def test_a_close_before_its_open_is_held_then_applied_after_it(store, policy):
    post(store, client_upserted("c1", "UTC", NOW - timedelta(days=1)))
    apply_in_turn(store, store.turns.heads(["client:c1"])[0], policy, fixed(NOW), 30)
    opened = refill_requested("req-1", "rx-1", "c1", NOW - timedelta(minutes=10))
    sent = event_dict("refill.sent", {"request_id": "req-1"}, NOW - timedelta(minutes=5))
    post(store, sent)
    assert apply_in_turn(store, sent["id"], policy, fixed(NOW), 30) == 1
    held = store.event_status(sent["id"])
    assert (held["status"], held["reason"]) == (
        "held", "waiting for the opening event of refill_request:req-1")
    held_set = KEYS.events_held(KEYS.of_ref("refill_request:req-1"))
    assert store.redis.zscore(held_set, sent["id"]) == (NOW + policy.opening_wait).timestamp()
    assert len(pending_events(store.redis)) == 0, "held is not pending: nothing to sweep"
    assert not store.turns.unapplied_about(["refill_request:req-1"])

    post(store, opened, NOW + timedelta(minutes=1))
    later = NOW + timedelta(minutes=1)
    assert apply_in_turn(store, opened["id"], policy, fixed(later), 30) == 2
    assert status(store, opened["id"]) == "applied"
    assert status(store, sent["id"]) == "applied"
    assert store.load_record("refill_request:req-1").status == "closed"
    assert store.notification("refill_sent:req-1:sent:sms")["state"] == \
        "scheduled"
    assert not store.redis.exists(held_key("refill_request:req-1"))
    assert held_events(store.redis) == []


def test_a_held_close_older_than_its_open_is_stale_after_it(store, policy):
    answered = event_dict("message.answered", {"message_id": "m1"}, NOW - timedelta(hours=2))
    post(store, answered)
    apply_in_turn(store, answered["id"], policy, fixed(NOW), 30)
    opened = message_received("m1", "c1", NOW - timedelta(hours=1))
    post(store, opened)
    apply_in_turn(store, opened["id"], policy, fixed(NOW), 30)
    assert status(store, opened["id"]) == "applied"
    assert status(store, answered["id"]) == "stale"
    assert store.load_record("message:m1").status == "open"


def test_a_close_whose_opening_never_comes_is_applied_as_it_is_after_the_wait(store, policy):
    cancelled = event_dict("appointment.cancelled", {"appointment_id": "a1",
                                                     "cancelled_by": "support"},
                           NOW - timedelta(minutes=5))
    post(store, cancelled)
    apply_in_turn(store, cancelled["id"], policy, fixed(NOW), 30)
    assert status(store, cancelled["id"]) == "held"
    assert store.release_expired_holds(NOW + timedelta(hours=23)) == []
    after = NOW + policy.opening_wait
    assert store.release_expired_holds(after) == [cancelled["id"]]
    assert status(store, cancelled["id"]) == "accepted"
    assert apply_in_turn(store, cancelled["id"], policy, fixed(after), 30) == 1
    applied = store.event_status(cancelled["id"])
    assert (applied["status"], applied["reason"]) == (
        "ignored", "unknown appointment; recorded as cancelled")
    # As before the wait existed: the late booking is stale.
    booked = appointment("appointment.scheduled", "a1", "c1", NOW + timedelta(days=5),
                         NOW - timedelta(minutes=10))
    post(store, booked, after)
    apply_in_turn(store, booked["id"], policy, fixed(after), 30)
    assert status(store, booked["id"]) == "stale"


def test_a_discontinuation_whose_fill_never_came_makes_the_late_fill_stale(store, policy):
    stopped = event_dict("prescription.discontinued", {"prescription_id": "rx-1"},
                         NOW - timedelta(minutes=5))
    post(store, stopped)
    apply_in_turn(store, stopped["id"], policy, fixed(NOW), 30)
    assert status(store, stopped["id"]) == "held"
    after = NOW + policy.opening_wait
    assert store.release_expired_holds(after) == [stopped["id"]]
    apply_in_turn(store, stopped["id"], policy, fixed(after), 30)
    assert store.event_status(stopped["id"])["reason"] == (
        "unknown prescription; recorded as discontinued")
    fill = prescription_filled("rx-1", "c1", (NOW - timedelta(days=10)).date(),
                               NOW - timedelta(days=1))
    post(store, fill, after)
    apply_in_turn(store, fill["id"], policy, fixed(after), 30)
    assert status(store, fill["id"]) == "stale"
    assert store.redis.exists(by_entity_key("prescription:rx-1")) == 0, "nothing planned"


def test_a_second_close_for_a_tombstoned_appointment_is_not_held_again(store, policy):
    first = event_dict("appointment.cancelled", {"appointment_id": "a1", "cancelled_by": "client"},
                       NOW - timedelta(hours=30))
    post(store, first, NOW - timedelta(hours=25))
    apply_in_turn(store, first["id"], policy, fixed(NOW), 30)  # waited 25 h already
    assert status(store, first["id"]) == "ignored"
    again = event_dict("appointment.no_show", {"appointment_id": "a1", "party": "client"},
                       NOW - timedelta(hours=1))
    post(store, again)
    apply_in_turn(store, again["id"], policy, fixed(NOW), 30)
    assert status(store, again["id"]) != "held"


def test_an_opening_released_twice_is_applied_once(store, policy):
    """The clock's release and the opening's arrival race: the close is applied once."""
    sent = event_dict("refill.sent", {"request_id": "req-1"}, NOW - timedelta(minutes=5))
    post(store, sent, NOW - policy.opening_wait)
    apply_in_turn(store, sent["id"], policy, fixed(NOW - policy.opening_wait), 30)
    assert store.release_expired_holds(NOW) == [sent["id"]]
    assert store.release_expired_holds(NOW) == []
    opened = refill_requested("req-1", "rx-1", "c1", NOW - timedelta(minutes=10))
    post(store, opened)
    assert apply_in_turn(store, opened["id"], policy, fixed(NOW), 30) == 2
    assert {status(store, sent["id"]), status(store, opened["id"])} == {"applied"}


# Nothing goes out ahead of what is known ----------------------------------------------------

def test_a_notification_waits_while_an_event_about_its_subject_is_unapplied(store, policy,
                                                                            tmp_path):
    """The support alert of a message falls due between its answer's 202 and the answer's
    application: it waits (no attempt counted), then the answer cancels it."""
    from tests.delivery.test_deliverer import deliverer

    outbox = Outbox(tmp_path / "outbox")
    opened = NOW - timedelta(hours=48, seconds=1)
    for evt in (client_upserted("c1", "UTC", opened), message_received("m1", "c1", opened)):
        post(store, evt, opened)
        apply_stored_event(store, evt["id"], policy, opened)
    alert = "support_escalation:m1:message-window:email"
    assert store.notification(alert)["state"] == "scheduled"
    answered = event_dict("message.answered", {"message_id": "m1"}, NOW - timedelta(seconds=1))
    post(store, answered)  # accepted, not applied yet

    [claimed] = [i for i in store.schedule.claim(NOW, 100, 30) if i == alert]
    assert deliverer(store, policy, outbox=outbox).deliver(claimed, NOW) == "waiting"
    waiting = store.notification(alert)
    assert (waiting["state"], waiting["attempts"]) == ("scheduled", "0")
    assert float(waiting["due"]) == (NOW + timedelta(seconds=1)).timestamp()

    apply_in_turn(store, answered["id"], policy, fixed(NOW), 30)
    assert store.notification(alert)["state"] == "cancelled"
    assert outbox.messages() == []


def test_subjects_of_a_notification():
    from notifier.delivery.compose import Stored
    from notifier.delivery.decide import subjects_of

    n = Stored(id="x", kind="refill_due", channel="sms", recipient="client", recipient_id="c1",
               due_at=NOW, expires_at=NOW, params={"prescription_id": "rx-1",
                                                   "provider_id": "prov-1"},
               attempts=0, entity="prescription:rx-1")
    assert subjects_of(n) == ["prescription:rx-1", "client:c1"]
    reminder = Stored(id="y", kind="appointment_reminder", channel="sms", recipient="client",
                      recipient_id="c1", due_at=NOW, expires_at=NOW,
                      params={"appointment_id": "a1"}, attempts=0, entity="appointment:a1")
    assert subjects_of(reminder) == ["appointment:a1", "client:c1"]
    alert = Stored(id="z", kind="support_escalation", channel="email", recipient="support",
                   recipient_id="support", due_at=NOW, expires_at=NOW,
                   params={"item_id": "m1"}, attempts=0, entity="message:m1")
    assert subjects_of(alert) == ["message:m1"]


class Meanwhile:
    """A send-rate limiter (our own interface) that lets something happen while a message
    is being prepared, as another worker would, and never holds the send back."""

    enabled = True

    def __init__(self, happen) -> None:
        self.happen = happen

    def reserve(self, now: datetime) -> datetime:
        self.happen()
        return now

    def queue_reserve(self, batch, now: datetime) -> Reply[datetime]:
        # The deliverer reserves in the round trip of the last look: it happens before it.
        self.happen()
        return Reply(lambda: now)


@pytest.mark.parametrize("applied_meanwhile", [True, False], ids=["applied", "accepted"])
def test_the_last_look_before_a_send_sees_what_happened_while_it_was_prepared(
        store, policy, tmp_path, applied_meanwhile):
    """The answer arrives after the escalation notice passed its first check: just before
    the provider's call it is cancelled (answer applied) or made to wait (only accepted)."""
    from tests.delivery.test_deliverer import deliverer

    outbox = Outbox(tmp_path / "outbox")
    opened = NOW - timedelta(hours=48, seconds=1)
    for evt in (client_upserted("c1", "UTC", opened), message_received("m1", "c1", opened)):
        post(store, evt, opened)
        apply_stored_event(store, evt["id"], policy, opened)
    notice = "escalation_notice:m1:message-window:sms"
    answered = event_dict("message.answered", {"message_id": "m1"}, NOW - timedelta(seconds=1))

    def answer_arrives() -> None:
        post(store, answered)
        if applied_meanwhile:
            apply_in_turn(store, answered["id"], policy, fixed(NOW), 30)

    sender = deliverer(store, policy, outbox=outbox)
    sender.limiters = {"sms": Meanwhile(answer_arrives)}
    assert notice in store.schedule.claim(NOW, 100, 30)
    outcome = sender.deliver(notice, NOW)
    assert outbox.messages() == []
    if applied_meanwhile:
        assert outcome == "cancelled"
        assert store.notification(notice)["state"] == "cancelled"
    else:
        assert outcome == "waiting"
        assert store.notification(notice)["state"] == "scheduled"
