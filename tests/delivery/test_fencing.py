"""Fencing in the deliverer (issue 13, failing input 1: a paused worker sent twice): a
message is sent only while its lease is this worker's with time left for the call; a
worker whose lease was taken over sends nothing and writes nothing; a message that left
after its lease was lost is recorded and counted as a second send.

Real Redis, real templates, the real outbox. A "pause" is simulated without sleeping:
another worker's `begin` at a later `now` takes the lease over once it has run out, and
the batch's monotonic clock is a list the test moves.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from notifier.config import LEASE_S as DEFAULT_LEASE_S
from notifier.delivery.channels import Message
from notifier.delivery.deliverer import BATCH_SEND_S, Deliverer
from notifier.delivery.fencing import LEASE_MARGIN_S, check_lease_fits, may_send
from notifier.errors import ConfigError
from notifier.ledger.batch import Reply
from notifier.runtime import call_limits_s
from notifier.web.ops import LedgerCollector
from tests.delivery.test_deliver_batch import Watching, book, phone, sms
from tests.delivery.test_deliverer import NOW, deliverer, outbox, store
from tests.ledger_keys import inflight_count

__all__ = ["outbox", "store"]  # the fixtures, shared with test_deliverer

LEASE_S = 60
#: After the first worker's lease has run out.
LATER = NOW + timedelta(seconds=LEASE_S + 1)


def sent_to(outbox) -> list[str]:
    return [m["to"] for m in outbox.messages()]


@pytest.mark.parametrize("seen_by_the_batch_clock", [True, False],
                         ids=["paused", "clocks-disagree"])
@pytest.mark.parametrize("b_sent", [True, False], ids=["b-sent", "b-sending"])
def test_a_worker_whose_lease_was_taken_over_does_not_send(store, policy, outbox,
                                                            seen_by_the_batch_clock, b_sent):
    """Worker A is paused past its lease while sending a1; worker B takes a2 over (and
    sends it, or is still at it). A, back, neither sends a2 nor writes anything about it,
    whether its batch clock saw the pause (the batch ran long) or not (the last look finds
    the lease is not A's any more)."""
    book(store, policy, "a1", "c1", 1)
    book(store, policy, "a2", "c2", 2)
    clock = [0.0]
    b = deliverer(store, policy, outbox=outbox)
    b_lease: list[str] = []

    def paused(message: Message) -> None:
        if message.to == phone(1):
            if seen_by_the_batch_clock:
                clock[0] += 16.0
            if b_sent:
                assert b.deliver_batch([sms("a2")], LATER) == ["sent"]
            else:
                b_lease.append(store.schedule.begin(sms("a2"), LATER, lease_s=LEASE_S).lease)

    a = deliverer(store, policy, sms=Watching(outbox, paused), outbox=outbox)
    a.monotonic = lambda: clock[0]
    assert a.deliver_batch([sms("a1"), sms("a2")], NOW) == ["sent", "taken_over"]
    n = store.notification(sms("a2"))
    if b_sent:
        assert sent_to(outbox) == [phone(2), phone(1)]
        assert n["state"] == "sent" and "sent_again" not in n
        assert store.schedule.outcomes() == {("sent", "sms"): 2}
    else:
        assert sent_to(outbox) == [phone(1)]
        assert (n["state"], n["lease"], n.get("reason", "")) == ("sending", b_lease[0], "")
        assert store.schedule.outcomes() == {("sent", "sms"): 1}


def test_a_send_after_a_lost_lease_is_recorded_and_counted_as_a_second_send(store, policy,
                                                                             outbox):
    """A is paused between a2's last look and the provider's call (the one step no check
    can cover); meanwhile B takes a2 over and sends it. A's message leaves too: the ledger
    keeps a2 `sent` (B's send), and records A's as a second send, in the outcomes and
    /metrics, so every message that left is counted."""
    book(store, policy, "a1", "c1", 1)
    book(store, policy, "a2", "c2", 2)
    b = deliverer(store, policy, outbox=outbox)

    def paused_before_the_call(message: Message) -> None:
        if message.to == phone(2) and not sent_to(outbox):
            assert b.deliver_batch([sms("a2")], LATER) == ["sent"]

    a = deliverer(store, policy, sms=Watching(outbox, paused_before_the_call), outbox=outbox)
    assert a.deliver_batch([sms("a2"), sms("a1")], NOW) == ["sent_again", "sent"]
    assert sent_to(outbox) == [phone(2), phone(2), phone(1)]
    n = store.notification(sms("a2"))
    assert (n["state"], n["sent_again"], n["attempts"]) == ("sent", "1", "2")
    # B's send is the notification's own (its time is B's `now`, not A's).
    assert LATER.timestamp() <= float(n["sent_at"]) < LATER.timestamp() + 5
    assert store.schedule.outcomes() == {("sent", "sms"): 2, ("sent_again", "sms"): 1}
    families = {f.name: f for f in LedgerCollector(store).collect()}
    again = {s.labels["channel"]: s.value for s in families["notifier_sent_again"].samples
             if s.name == "notifier_sent_again_total"}
    sent = {s.labels["channel"]: s.value for s in families["notifier_notifications"].samples
            if s.name == "notifier_notifications_total" and s.labels["state"] == "sent"}
    assert again == {"sms": 1, "email": 0}
    assert sent["sms"] + again["sms"] == len(outbox.messages())
    assert inflight_count(store.redis) == 0


def test_a_send_after_a_lost_lease_that_no_one_sent_yet_is_the_send(store, policy, outbox):
    """B took a2 over but had not sent it when A's message left: A's is a2's send, and B,
    whose lease is gone with it, sends nothing."""
    book(store, policy, "a2", "c2", 2)
    b_lease: list[str] = []

    def paused_before_the_call(message: Message) -> None:
        b_lease.append(store.schedule.begin(sms("a2"), LATER, lease_s=LEASE_S).lease)

    a = deliverer(store, policy, sms=Watching(outbox, paused_before_the_call), outbox=outbox)
    assert a.deliver_batch([sms("a2")], NOW) == ["sent"]
    assert store.notification(sms("a2"))["state"] == "sent"
    assert store.schedule.begin(sms("a2"), LATER, lease_s=LEASE_S).verdict == "sent"
    assert sent_to(outbox) == [phone(2)]
    assert store.schedule.outcomes() == {("sent", "sms"): 1}


@pytest.mark.parametrize(("short_s", "outcome"), [(0.1, "waiting"), (-0.1, "sent")])
def test_a_lease_with_too_little_time_left_for_the_call_is_not_sent(store, policy, outbox,
                                                                    monkeypatch, short_s,
                                                                    outcome):
    """The last look's round trip itself stalls (a long pause inside it): by the batch
    clock the lease now has less left than the channel's longest call and the margin, so
    the message is put back, due at once, not sent; a little more time left, it is."""
    book(store, policy, "a1", "c1", 1)
    clock = [0.0]
    d = deliverer(store, policy, outbox=outbox)
    d.call_limits_s = {"sms": 20.0}
    d.monotonic = lambda: clock[0]
    lease_of = d.store.schedule.lease_of

    def stalled(batch, notification_id):
        reply = lease_of(batch, notification_id)

        def read():
            clock[0] = LEASE_S - 20.0 - LEASE_MARGIN_S + short_s
            return reply.get()

        return Reply(read)

    monkeypatch.setattr(d.store.schedule, "lease_of", stalled)
    assert d.deliver_batch([sms("a1")], NOW) == [outcome]
    if outcome == "sent":
        assert sent_to(outbox) == [phone(1)]
        return
    assert outbox.messages() == []
    n = store.notification(sms("a1"))
    assert (n["state"], n["reason"]) == ("scheduled", "too little of its lease left for the "
                                                      "send: to be decided afresh")


def test_a_lease_too_short_for_the_providers_timeouts_stops_start_up(store, policy, outbox):
    d = deliverer(store, policy, outbox=outbox)
    twilio = dataclasses.replace(d.settings, sms_backend="twilio", lease_s=20)
    limits = call_limits_s(twilio)
    assert limits == {"sms": 20.0}
    with pytest.raises(ConfigError, match=r"^NOTIFIER_LEASE_S: 20 s .* at least 26 "):
        Deliverer(store=store, channels=d.channels, renderer=d.renderer, settings=twilio,
                  policy=policy, call_limits_s=limits)
    # The default lease leaves a provider's call its time after a batch's longest run.
    ok = dataclasses.replace(twilio, lease_s=DEFAULT_LEASE_S)
    assert limits["sms"] + LEASE_MARGIN_S <= DEFAULT_LEASE_S - BATCH_SEND_S
    Deliverer(store=store, channels=d.channels, renderer=d.renderer, settings=ok,
              policy=policy, call_limits_s=limits)
    # The outbox takes no provider's time: a short lease (tests, a demo) is fine.
    assert call_limits_s(d.settings) == {}
    short = dataclasses.replace(d.settings, lease_s=3)
    Deliverer(store=store, channels=d.channels, renderer=d.renderer, settings=short,
              policy=policy)



@pytest.mark.parametrize(("left_s", "call_s", "expected"), [
    (21.0, 20.0, True),   # the call and the margin, exactly
    (20.9, 20.0, False),
    (1.0, 0.0, True),     # the outbox: the margin alone
    (0.5, 0.0, False),
    (-3.0, 0.0, False),   # run out
])
def test_may_send_only_with_the_call_and_the_margin_left(left_s, call_s, expected):
    at_s = 1_800_000_000.0
    assert may_send(repr(at_s + left_s), at_s, call_s) is expected


@pytest.mark.parametrize(("lease_s", "call_limits", "fits"), [
    (60, {"sms": 20.0}, True),
    (26, {"sms": 20.0, "email": 20.0}, True),  # 26 - 5 = 21 = 20 + 1
    (25, {"sms": 20.0}, False),
    (2, {}, True),                              # the outbox: 2 - 1 >= 1
    (1, {}, False),
])
def test_a_lease_fits_the_longest_call_after_a_batch_s_longest_run(lease_s, call_limits, fits):
    if fits:
        check_lease_fits(lease_s, BATCH_SEND_S, call_limits)
    else:
        with pytest.raises(ConfigError, match="NOTIFIER_LEASE_S"):
            check_lease_fits(lease_s, BATCH_SEND_S, call_limits)
