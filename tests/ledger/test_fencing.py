"""Fencing in the ledger, against a real Redis: a lease's token (its end as `begin` wrote
it) is taken by `finish` and `reschedule`, which refuse a worker whose lease ran out and
was taken over; a message that left after its lease was lost is still recorded, as the
notification's send or as a second one, and counted, never moving the state backwards.

The clocks are the `now` each call is given: a worker "paused past its lease" is one
whose lease another `begin` took over at a later `now`."""

from __future__ import annotations

from datetime import timedelta

import pytest

from notifier.ledger.notifications import Finished, Rescheduled, Verdict, epoch
from notifier.ledger.store import Store
from tests.ledger.test_notifications import NOW, planned, write
from tests.ledger_keys import due_score, inflight_score, notif_key

NID = "appointment_reminder:a1:1:sms"
#: The first worker's lease is 60 s; the second takes it over once it has run out.
LEASE_S = 60
LATER = NOW + timedelta(seconds=LEASE_S + 1)


@pytest.fixture
def store(redis_client):
    return Store(redis_client)


def taken_over(store: Store) -> tuple[str, str]:
    """Worker A begins; its lease runs out and worker B takes it over. Their tokens."""
    write(store, planned(1, NOW))
    a = store.schedule.begin(NID, NOW, lease_s=LEASE_S)
    b = store.schedule.begin(NID, LATER, lease_s=LEASE_S)
    assert (a.verdict, b.verdict) == (Verdict.OK, Verdict.RECOVER)
    assert a.lease != b.lease
    return a.lease, b.lease


def test_the_token_is_the_lease_end_as_written(store):
    write(store, planned(1, NOW))
    begun = store.schedule.begin(NID, NOW, lease_s=LEASE_S)
    assert float(begun.lease) == epoch(NOW) + LEASE_S
    assert store.redis.hget(notif_key(NID), "lease").decode() == begun.lease


def test_finish_and_reschedule_with_a_stale_token_are_refused(store):
    a, b = taken_over(store)
    assert store.schedule.finish(NID, "failed", lease=a, reason="invalid number") is (
        Finished.REFUSED)
    assert store.schedule.finish(NID, "sent", lease=a, reason="sent before a crash") is (
        Finished.REFUSED)  # found sent, not a send: nothing left here to record
    assert store.schedule.reschedule(NID, LATER, "retrying", lease=a) is (
        Rescheduled.NOT_SENDING)
    n = store.notification(NID)
    assert (n["state"], n["lease"]) == ("sending", b)  # B's, untouched
    assert store.schedule.outcomes() == {}
    # B, holding the lease, is not refused.
    assert store.schedule.reschedule(NID, LATER, "retrying", lease=b) is (
        Rescheduled.RESCHEDULED)


def test_a_finish_with_a_stale_token_refuses_even_before_anyone_took_over(store):
    """A worker holds only its own lease: a token that was never this lease's is refused."""
    write(store, planned(1, NOW))
    begun = store.schedule.begin(NID, NOW, lease_s=LEASE_S)
    assert not store.schedule.finish(NID, "failed", lease=str(epoch(NOW) + 1))
    assert store.schedule.finish(NID, "failed", lease=begun.lease) is Finished.FINISHED


def test_a_send_after_a_lost_lease_is_a_second_send_when_another_was_recorded(store):
    a, b = taken_over(store)
    assert store.schedule.finish(NID, "sent", lease=b, sent_at=epoch(LATER),
                                 receipt="SM-b") is Finished.FINISHED
    # A was paused between its last look and the provider's call: its message left too.
    late = epoch(LATER) + 5
    assert store.schedule.finish(NID, "sent", lease=a, sent_at=late, receipt="SM-a") is (
        Finished.SENT_AGAIN)
    n = store.notification(NID)
    assert (n["state"], n["receipt"], n["sent_at"]) == ("sent", "SM-b", str(epoch(LATER)))
    assert (n["sent_again"], float(n["sent_again_at"])) == ("1", late)
    assert store.schedule.outcomes() == {("sent", "sms"): 1, ("sent_again", "sms"): 1}
    # Recording it again (a retry after a lost reply) counts nothing more.
    assert store.schedule.finish(NID, "sent", lease=a, sent_at=late, receipt="SM-a") is (
        Finished.SENT_AGAIN)
    assert store.schedule.outcomes() == {("sent", "sms"): 1, ("sent_again", "sms"): 1}
    # Only first sends are in the lateness.
    assert store.figures().lateness[("appointment_reminder", "sms")].count == 1


def test_a_send_after_a_lost_lease_is_the_send_when_none_was_recorded(store):
    """B took the lease over but has sent nothing yet: A's message is the notification's
    send. B's own send, if it makes one, is the second; B's "found sent" is refused."""
    a, b = taken_over(store)
    assert store.schedule.finish(NID, "sent", lease=a, sent_at=epoch(LATER),
                                 receipt="SM-a") is Finished.FINISHED
    n = store.notification(NID)
    assert (n["state"], n["receipt"]) == ("sent", "SM-a")
    assert "lease" not in n and inflight_score(store.redis, NID) is None
    assert store.schedule.finish(NID, "sent", lease=b, reason="sent before a crash") is (
        Finished.REFUSED)
    assert store.schedule.finish(NID, "sent", lease=b, sent_at=epoch(LATER) + 1,
                                 receipt="SM-b") is Finished.SENT_AGAIN
    assert store.schedule.outcomes() == {("sent", "sms"): 1, ("sent_again", "sms"): 1}


def test_a_send_after_a_lost_lease_ends_a_notification_put_back_meanwhile(store):
    """B put it back (a retry later): A's message left, so it is sent, off the schedule,
    and not sent again later."""
    a, b = taken_over(store)
    store.schedule.reschedule(NID, LATER + timedelta(minutes=5), "retrying", lease=b)
    assert store.schedule.finish(NID, "sent", lease=a, sent_at=epoch(LATER),
                                 receipt="SM-a") is Finished.FINISHED
    assert store.notification(NID)["state"] == "sent"
    assert due_score(store.redis, NID) is None
    assert store.schedule.begin(NID, LATER + timedelta(minutes=5), LEASE_S).verdict == "sent"


def test_a_send_after_a_lost_lease_fills_in_a_send_found_after_a_crash(store):
    """B asked the channel, which had A's message: B recorded it as found sent (no
    `sent_at`). A's record of that very message fills it in and counts nothing more."""
    a, b = taken_over(store)
    assert store.schedule.finish(NID, "sent", lease=b, reason="sent before a crash")
    assert store.schedule.finish(NID, "sent", lease=a, sent_at=epoch(LATER),
                                 receipt="SM-a") is Finished.FINISHED
    n = store.notification(NID)
    assert (n["state"], n["receipt"], n["reason"]) == ("sent", "SM-a", "sent before a crash")
    assert store.schedule.outcomes() == {("sent", "sms"): 1}


@pytest.mark.parametrize("state", ["failed", "suppressed", "expired"])
def test_a_send_after_a_lost_lease_never_moves_an_ended_notification(store, state):
    a, b = taken_over(store)
    assert store.schedule.finish(NID, state, lease=b, reason="decided by B")
    assert store.schedule.finish(NID, "sent", lease=a, sent_at=epoch(LATER),
                                 receipt="SM-a") is Finished.SENT_AGAIN
    assert store.notification(NID)["state"] == state
    assert store.schedule.outcomes() == {(state, "sms"): 1, ("sent_again", "sms"): 1}


def test_a_send_after_its_entry_expired_is_still_counted(store):
    assert store.schedule.finish(NID, "sent", lease="1", sent_at=epoch(NOW)) is (
        Finished.SENT_AGAIN)
    assert not store.redis.exists(notif_key(NID))  # not made again, without an expiry
    assert store.schedule.outcomes() == {("sent_again", "sms"): 1}
