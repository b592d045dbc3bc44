"""Delivering a batch (one `deliver` message): each notification keeps its own outcome and
guarantees, and the batch costs a few round trips, not a few per notification.

Real Redis, real templates, the real outbox; the channels that fail or look around are
small classes of our own `Channel` interface.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis

from notifier.delivery.channels import Message, Receipt
from notifier.delivery.channels.outbox import Outbox
from notifier.errors import RetryableError
from notifier.intake.events import parse_event
from notifier.ledger.ratelimit import RateLimiter
from notifier.ledger.store import Store
from notifier.policy.ordering import subject_ref
from tests.delivery.test_deliverer import (
    BOOKED,
    NOW,
    START,
    RedisFillsUpChannel,
    deliverer,
    outbox,
    store,
)
from tests.kit import CountingConnection, appointment, client_upserted, event_dict, store_and_apply
from tests.ledger_keys import due_score, record_key

__all__ = ["outbox", "store"]  # the fixtures, shared with test_deliverer

#: Round trips of a batch besides one per send: begin, two rounds of reads (the unapplied
#: checks with the records, then the opt-outs), and the last writes.
FIXED_ROUND_TRIPS = 4


def sms(appt: str) -> str:
    return f"appointment_confirmation:{appt}:booked:sms"


def email(appt: str) -> str:
    return f"appointment_confirmation:{appt}:booked:email"


def phone(i: int) -> str:
    return f"+1415555{i:04d}"


def book(store: Store, policy, appt: str, client: str, i: int, zone: str = "America/New_York",
         **client_kw: Any) -> None:
    """A client (phone `phone(i)`) and one appointment of theirs, confirmed at once."""
    store_and_apply(store, policy, client_upserted(client, zone, BOOKED, phone=phone(i),
                                                   **client_kw), BOOKED)
    store_and_apply(store, policy, appointment("appointment.scheduled", appt, client, START,
                                               BOOKED), BOOKED)


class Picky:
    """The outbox, except for the numbers given, where it raises what it is given."""

    def __init__(self, outbox: Outbox, errors: dict[str, Exception]) -> None:
        self.outbox, self.errors = outbox, errors

    def send(self, message: Message, now: datetime) -> Receipt:
        if message.to in self.errors:
            raise self.errors[message.to]
        return self.outbox.send(message, now)

    def already_sent(self, message: Message) -> bool | None:
        return self.outbox.already_sent(message)


class Watching:
    """The outbox, running `before(message)` ahead of each send."""

    def __init__(self, outbox: Outbox, before: Callable[[Message], None]) -> None:
        self.outbox, self.before = outbox, before

    def send(self, message: Message, now: datetime) -> Receipt:
        self.before(message)
        return self.outbox.send(message, now)

    def already_sent(self, message: Message) -> bool | None:
        return self.outbox.already_sent(message)


def test_a_batch_with_mixed_outcomes_keeps_each_its_own(store, policy, outbox):
    book(store, policy, "a1", "c1", 1)
    book(store, policy, "a2", "c2", 2, sms=False)  # SMS closed: by email instead
    book(store, policy, "a3", "c3", 3)  # moves to Tokyo: midnight there, quiet hours
    store.redis.set(record_key("client:c3"), client_json(store, "c3", timezone="Asia/Tokyo"))
    book(store, policy, "a4", "c4", 4)  # the carrier is busy
    book(store, policy, "a5", "c5", 5)  # the channel has a bug
    book(store, policy, "a6", "c6", 6)  # a record that no longer parses (a bug upstream)
    store.redis.set(record_key("client:c6"), b'{"not": "a client"}')
    sms_channel = Picky(outbox, {phone(4): RetryableError("busy", code="503"),
                                 phone(5): KeyError("a bug in the channel")})
    d = deliverer(store, policy, sms=sms_channel, outbox=outbox)
    ids = [email("a1"), sms("a1"), sms("a2"), sms("a3"), sms("a4"), sms("a5"), sms("a6"),
           "appointment_confirmation:nope:booked:sms"]
    assert d.deliver_batch(ids, NOW) == ["sent", "sent", "suppressed", "held", "retrying",
                                         "retrying", "retrying", "missing"]
    states = {i: (f["state"], f.get("reason", "")) for i in ids
              if (f := store.notification(i))}
    assert states[sms("a2")][0] == "suppressed"
    assert states[sms("a3")] == ("scheduled", "quiet hours")
    assert states[sms("a4")] == ("scheduled", "retrying: 503: busy")
    assert states[sms("a5")] == ("scheduled", "retrying: internal error")
    assert states[sms("a6")] == ("scheduled", "retrying: internal error")
    assert sorted((m["to"], m["kind"]) for m in outbox.messages()) == [
        ("+14155550001", "appointment_confirmation"),
        ("c1@example.com", "appointment_confirmation")]
    assert store.schedule.pending_count()[1] == 0  # nothing left in flight


@pytest.fixture
def counted(redis_url: str, redis_client) -> Iterator[Store]:
    """A store whose client counts its round trips (`CountingConnection.sent`)."""
    client = redis.Redis(connection_pool=redis.ConnectionPool.from_url(
        redis_url, connection_class=CountingConnection))
    yield Store(client)
    client.close()


def command_calls(client: Any, *names: str) -> dict[str, int]:
    stats = client.info("commandstats")
    return {n: stats.get(f"cmdstat_{n}", {}).get("calls", 0) for n in names}


def test_a_batch_takes_a_few_round_trips_not_a_few_per_notification(counted, policy, outbox):
    store = counted
    for i in range(25):
        book(store, policy, f"a{i:02d}", f"c{i:02d}", i)
    d = deliverer(store, policy, outbox=outbox)
    d.deliver_batch([sms(f"a{i:02d}") for i in range(2)], NOW)  # scripts loaded, pool warm
    ids = [sms(f"a{i:02d}") for i in range(2, 25)]
    before, sent = command_calls(store.redis, "mget", "smismember"), CountingConnection.sent
    assert d.deliver_batch(ids, NOW) == ["sent"] * len(ids)
    assert CountingConnection.sent - sent == len(ids) + FIXED_ROUND_TRIPS
    after = command_calls(store.redis, "mget", "smismember")
    # One MGET and one SMISMEMBER decide the batch; each send's last look checks again
    # whether its records or its number's opt-out changed since (in the same round trip).
    assert {n: after[n] - before[n] for n in after} == {"mget": 1 + len(ids),
                                                        "smismember": 1 + len(ids)}
    # Without a send, the whole batch is its fixed round trips, the writes included.
    ids = [email(f"a{i:02d}") for i in range(25)]
    for i in range(25):
        closed = {"channels": {"sms": False, "email": False}}
        store.redis.set(record_key(f"client:c{i:02d}"), client_json(store, f"c{i:02d}",
                                                                     **closed))
    sent = CountingConnection.sent
    assert d.deliver_batch(ids, NOW) == ["suppressed"] * len(ids)
    assert CountingConnection.sent - sent <= FIXED_ROUND_TRIPS


def client_json(store: Store, client_id: str, **changes: Any) -> bytes:
    """The stored record of a client, with `changes` to its details (`timezone=...`)."""
    raw = json.loads(store.redis.get(record_key(f"client:{client_id}")))
    raw["client"] |= changes
    return json.dumps(raw).encode()


def accept(store: Store, evt: dict[str, Any]) -> None:
    """What the web does: store the event with its subject (accepted, not yet applied)."""
    parsed = parse_event(json.dumps(evt).encode())
    store.store_event(evt["id"], json.dumps(evt).encode(), NOW, subject=subject_ref(parsed),
                      occurred_at=parsed.occurred_at)


@pytest.mark.parametrize("applied", [True, False], ids=["applied", "accepted"])
def test_the_last_look_blocks_a_send_when_an_event_arrives_mid_batch(store, policy, outbox,
                                                                      applied):
    """The cancellation of a2 arrives while a1's message is at the provider: a2's message,
    decided before, is not sent (cancelled when applied, waiting when only accepted)."""
    book(store, policy, "a1", "c1", 1)
    book(store, policy, "a2", "c2", 2)
    cancelled = event_dict("appointment.cancelled", {"appointment_id": "a2",
                                                      "cancelled_by": "client"}, NOW)

    def cancel_a2(message: Message) -> None:
        if message.to == phone(1):
            if applied:
                store_and_apply(store, policy, cancelled, NOW)
            else:
                accept(store, cancelled)

    d = deliverer(store, policy, sms=Watching(outbox, cancel_a2), outbox=outbox)
    outcomes = d.deliver_batch([sms("a1"), sms("a2")], NOW)
    assert outcomes == ["sent", "cancelled" if applied else "waiting"]
    assert [m["to"] for m in outbox.messages()] == [phone(1)]
    assert store.notification(sms("a2"))["state"] == ("cancelled" if applied else "scheduled")


def test_each_send_is_recorded_before_the_next_goes_out(store, policy, outbox):
    for i in range(3):
        book(store, policy, f"a{i}", f"c{i}", i)
    ids = [sms(f"a{i}") for i in range(3)]
    seen: list[list[str]] = []

    def look_at_the_ledger(message: Message) -> None:
        seen.append([store.notification(i)["state"] for i in ids])

    d = deliverer(store, policy, sms=Watching(outbox, look_at_the_ledger), outbox=outbox)
    assert d.deliver_batch(ids, NOW) == ["sent"] * 3
    assert seen == [["sending", "sending", "sending"], ["sent", "sending", "sending"],
                    ["sent", "sent", "sending"]]


def test_redis_failing_mid_batch_leaves_every_one_finished_or_to_its_lease(store, policy,
                                                                         outbox):
    """The first send goes out and Redis stops taking writes: nothing more is sent, and
    each is either finished or `sending` under a lease, so the next attempt sends each
    exactly once."""
    for i in range(3):
        book(store, policy, f"a{i}", f"c{i}", i)
    ids = [sms(f"a{i}") for i in range(3)]
    d = deliverer(store, policy, sms=RedisFillsUpChannel(outbox, store.redis), outbox=outbox)
    try:
        assert d.deliver_batch(ids, NOW) == ["unrecorded", "leased", "leased"]
    finally:
        store.redis.config_set("maxmemory", "0")
    assert [store.notification(i)["state"] for i in ids] == ["sending"] * 3
    assert len(outbox.messages()) == 1
    later = NOW + timedelta(seconds=61)  # the leases have run out
    assert deliverer(store, policy, outbox=outbox).deliver_batch(ids, later) == ["sent"] * 3
    assert store.notification(ids[0])["reason"] == "sent before a crash"
    assert sorted(m["to"] for m in outbox.messages()) == [phone(0), phone(1), phone(2)]


@pytest.mark.parametrize(("lease_s", "at_provider_s"), [(60, 3.0), (4, 1.5)])
def test_a_batch_that_runs_long_puts_the_rest_back_to_be_decided_afresh(
        store, policy, outbox, lease_s, at_provider_s):
    """A slow provider: after BATCH_SEND_S (or half the lease, if shorter) the rest of the
    batch is not sent on decisions and leases that are getting old, but put back, due at
    once."""
    for i in range(3):
        book(store, policy, f"a{i}", f"c{i}", i)
    ids = [sms(f"a{i}") for i in range(3)]
    clock = [0.0]

    def slow(message: Message) -> None:
        clock[0] += at_provider_s

    d = deliverer(store, policy, sms=Watching(outbox, slow), outbox=outbox)
    d.settings = dataclasses.replace(d.settings, lease_s=lease_s)
    d.monotonic = lambda: clock[0]
    assert d.deliver_batch(ids, NOW) == ["sent", "sent", "waiting"]
    n = store.notification(ids[2])
    assert (n["state"], n["reason"]) == ("scheduled", "its batch ran long: to be decided "
                                                      "afresh")
    assert due_score(store.redis, ids[2]) == NOW.timestamp()
    # Each send's time is its own: the batch's `now` plus the time the batch has taken.
    sent_at = [float(store.notification(i)["sent_at"]) for i in ids[:2]]
    assert sent_at == [NOW.timestamp(), NOW.timestamp() + at_provider_s]


def test_a_batch_is_paced_by_the_send_rate_with_a_slot_reserved_once_each(store, policy,
                                                                          outbox):
    """The slot is reserved in the round trip of the last look: at one SMS a second, a
    batch of three sends one and puts two back at their slots, where they go out without
    reserving again."""
    for i in range(3):
        book(store, policy, f"a{i}", f"c{i}", i)
    ids = [sms(f"a{i}") for i in range(3)]
    d = deliverer(store, policy, outbox=outbox)
    d.limiters = {"sms": RateLimiter(store.redis, "sms:test", per_s=1.0)}
    assert d.deliver_batch(ids, NOW) == ["sent", "paced", "paced"]
    slots = [due_score(store.redis, i) for i in ids[1:]]
    assert slots == [NOW.timestamp() + 1, NOW.timestamp() + 2]
    later = NOW + timedelta(seconds=2)
    store.schedule.claim(later, 10, 60)
    assert d.deliver_batch(ids[1:], later) == ["sent", "sent"]
    assert len(outbox.messages()) == 3


@pytest.mark.parametrize(("update", "expected"), [
    ({"sms": False}, ("suppressed", None)),
    ({"phone": "+14155550133"}, ("sent", "+14155550133")),
])
def test_a_client_updated_while_its_batch_is_sending_is_decided_afresh(store, policy, outbox,
                                                                      update, expected):
    """Found by QA: a batch decides at its start and sends for up to BATCH_SEND_S; a
    `client.upserted` applied meanwhile (SMS turned off, a new number) must not be sent
    past. The last look sees the record changed and puts the notification back, due at
    once; decided afresh, it goes by what the client said."""
    book(store, policy, "a1", "c1", 1)
    book(store, policy, "a2", "c2", 2)

    def update_c2(message: Message) -> None:
        if message.to == phone(1):  # while the first is being sent
            store_and_apply(store, policy, client_upserted(
                "c2", "America/New_York", BOOKED + timedelta(minutes=1),
                **{"phone": phone(2), **update}), BOOKED + timedelta(minutes=1))

    d = deliverer(store, policy, sms=Watching(outbox, update_c2), outbox=outbox)
    assert d.deliver_batch([sms("a1"), sms("a2")], NOW) == ["sent", "waiting"]
    assert [m["to"] for m in outbox.messages()] == [phone(1)]
    assert store.notification(sms("a2"))["reason"] == (
        "its records changed while its batch was sending: to be decided afresh")
    store.schedule.claim(NOW, 10, 60)
    state, to = expected
    assert d.deliver_batch([sms("a2")], NOW) == [state]
    assert [m["to"] for m in outbox.messages()][1:] == ([to] if to else [])


def test_a_number_opted_out_while_its_batch_is_sending_gets_no_sms(store, policy, outbox):
    """The same for a STOP recorded mid-batch (a reply Twilio does not block itself)."""
    book(store, policy, "a1", "c1", 1)
    book(store, policy, "a2", "c2", 2)

    def stop_c2(message: Message) -> None:
        if message.to == phone(1):
            store.set_sms_opt_out(phone(2), True)

    d = deliverer(store, policy, sms=Watching(outbox, stop_c2), outbox=outbox)
    assert d.deliver_batch([sms("a1"), sms("a2")], NOW) == ["sent", "waiting"]
    store.schedule.claim(NOW, 10, 60)
    assert d.deliver_batch([sms("a2")], NOW) != ["sent"]
    assert [m["to"] for m in outbox.messages()] == [phone(1)]


def test_a_send_rate_slot_past_the_expiry_ends_it_expired_not_sent_late(store, policy, outbox):
    """At one SMS every 11.6 days (1e-6 a second), the second confirmation's slot falls
    after its appointment: `expired` at once, saying why, rather than held and sent late."""
    for i in range(2):
        book(store, policy, f"a{i}", f"c{i}", i)
    ids = [sms(f"a{i}") for i in range(2)]
    d = deliverer(store, policy, outbox=outbox)
    d.limiters = {"sms": RateLimiter(store.redis, "sms:test", per_s=1e-6)}
    assert d.deliver_batch(ids, NOW) == ["sent", "expired"]
    n = store.notification(ids[1])
    assert (n["state"], n["reason"]) == (
        "expired", "the send rate could not fit it in before it expired")
    assert due_score(store.redis, ids[1]) is None
    assert len(outbox.messages()) == 1
