"""The chaos suite's arithmetic: what counts as sent, lost, expected failed, and which
window of README "At most one send per notification" a duplicate falls in, or none; which
delivery webhooks count as lost, resent, or one change under two ids."""

from __future__ import annotations

import pytest

from chaos.tally import (
    KILLED_WITHIN_S,
    Copy,
    Made,
    Received,
    Seen,
    Webhooks,
    owed_webhooks,
    tally,
    tally_webhooks,
)

DUE = 1_000.0


def one(seen: Seen, *, provider: bool = False, kills: tuple[float, ...] = ()):
    return tally("x", {"n": DUE}, {"n": seen}, provider=provider, kills=kills)


def test_sent_once_is_sent_with_its_lateness() -> None:
    row = one(Seen((Copy(DUE + 2.5),), "sent"))
    assert (row.expected, row.sent, row.lost, row.dup_in_window, row.dup_outside) == (
        1, 1, 0, 0, 0)
    assert row.lateness_p99_s == 2.5 and not row.failed


def test_nothing_left_is_lost() -> None:
    row = one(Seen((), "scheduled"))
    assert (row.sent, row.lost) == (0, 1)
    assert row.examples["lost"] == ["n (scheduled, 1 attempts, 0 copies, 0 recorded again)"]
    assert row.failed


def test_a_second_copy_nobody_can_explain_is_outside_the_windows() -> None:
    row = one(Seen((Copy(DUE), Copy(DUE + 1)), "sent"))
    assert (row.dup_in_window, row.dup_outside) == (0, 1) and row.failed


def test_a_recorded_copy_stamped_before_the_other_is_a_stall_in_the_send() -> None:
    """Window 1 with the outbox: stamped at its last look, written after the takeover."""
    stalled = Copy(DUE, late_write=True)
    row = one(Seen((Copy(DUE + 4), stalled), "sent", sent_again=1))
    assert (row.dup_in_window, row.dup_outside, row.windows) == (
        1, 0, {"1 stalled in the send": 1})
    assert not row.failed


def test_a_recorded_copy_begun_after_the_lease_was_lost_is_outside() -> None:
    """Recorded, but stamped after the other copy: it began after its lease was gone."""
    row = one(Seen((Copy(DUE), Copy(DUE + 4)), "sent", sent_again=1))
    assert (row.dup_in_window, row.dup_outside) == (0, 1)


def test_an_unrecorded_late_write_is_outside() -> None:
    row = one(Seen((Copy(DUE + 4), Copy(DUE, late_write=True)), "sent"))
    assert row.dup_outside == 1


def test_a_provider_copy_the_ledger_counts_is_in_window() -> None:
    row = one(Seen((Copy(DUE), Copy(DUE + 4)), "sent", sent_again=1), provider=True)
    assert row.windows == {"1 stalled in the send": 1} and not row.failed


def test_a_retry_after_an_answer_lost_to_a_timeout_is_window_3() -> None:
    row = one(Seen((Copy(DUE, answer_lost=True), Copy(DUE + 12)), "sent", attempts=2),
              provider=True)
    assert (row.windows, row.dup_outside, row.retried) == ({"3 answer lost": 1}, 0, 1)


def test_a_copy_just_before_a_kill_explains_one_more_through_a_provider_only() -> None:
    kills = (DUE + KILLED_WITHIN_S / 2,)
    seen = Seen((Copy(DUE), Copy(DUE + 5)), "sent")
    assert one(seen, provider=True, kills=kills).windows == {"3 killed": 1}
    # The outbox answers `already_sent`: a killed worker's send is never repeated.
    assert one(seen, kills=kills).dup_outside == 1
    # A kill long after the copy left did not keep it from being recorded.
    assert one(seen, provider=True, kills=(DUE + 3,)).dup_outside == 1


def test_a_permanent_refusal_recorded_as_failed_is_expected_failed() -> None:
    row = one(Seen((), "failed", refused=True))
    assert (row.expected_failed, row.lost, row.unrecorded_failure) == (1, 0, 0)
    assert not row.failed


def test_a_permanent_refusal_not_recorded_as_failed_fails_the_run() -> None:
    row = one(Seen((), "scheduled", refused=True))
    assert (row.expected_failed, row.unrecorded_failure) == (0, 1) and row.failed


def test_a_send_the_ledger_does_not_know_of_fails_the_run() -> None:
    row = one(Seen((Copy(DUE),), "sending"))
    assert row.ledger_disagrees == 1 and row.failed


def test_a_message_nobody_planned_fails_the_run() -> None:
    row = tally("x", {}, {"stranger": Seen((Copy(DUE),), "sent")})
    assert row.unexpected == 1 and row.failed
    assert row.examples["unexpected"] == ["stranger (sent, 1 attempts, 1 copies, 0 recorded again)"]


def test_problems_fail_the_run() -> None:
    row = one(Seen((Copy(DUE),), "sent"))
    row.problems.append("an event refused")
    assert row.failed


# Delivery webhooks: a change is (notification id, type); received verified at least once.

SENT = {"state": "sent", "attempts": "1"}


def hooks(ledger: dict[str, dict[str, str]], made: list[Made], received: list[Received]):
    return tally_webhooks(ledger, made, received)


def test_every_change_received_once_is_nothing_lost() -> None:
    got = [Received("m1", "notification.scheduled", "n"), Received("m2", "notification.sent", "n")]
    w = hooks({"n": SENT}, [Made("m1", "notification.scheduled", "n"),
                            Made("m2", "notification.sent", "n")], got)
    assert (w.made, w.received, w.resent, w.lost, w.two_ids, w.unverified) == (2, 2, 0, 0, 0, 0)
    assert not w.failed


def test_a_final_state_the_ledger_shows_never_received_is_lost() -> None:
    """Whether or not the outbox made it: a change never emitted is lost too."""
    w = hooks({"n": SENT}, [], [Received("m1", "notification.scheduled", "n")])
    assert (w.lost, w.examples["webhook lost"]) == (1, ["notification.sent n"])
    assert w.failed


def test_a_message_made_and_never_received_is_lost() -> None:
    w = hooks({}, [Made("m9", "client.opted_out", '{"to": "x"}')], [])
    assert w.lost == 1 and w.failed


def test_the_same_id_received_again_is_resent_not_a_failure() -> None:
    again = Received("m2", "notification.sent", "n")
    w = hooks({"n": SENT}, [], [Received("m1", "notification.scheduled", "n"), again, again])
    assert (w.received, w.resent, w.two_ids) == (2, 1, 0) and not w.failed


def test_one_change_under_two_ids_fails_the_run() -> None:
    got = [Received("m1", "notification.scheduled", "n"), Received("m2", "notification.sent", "n"),
           Received("m3", "notification.sent", "n")]
    w = hooks({"n": SENT}, [], got)
    assert w.two_ids == 1 and w.failed
    assert w.examples["webhook under two ids"] == ["notification.sent n: ['m2', 'm3']"]


def test_a_change_the_outbox_made_twice_is_under_two_ids_even_if_received_once() -> None:
    made = [Made("m1", "notification.sent", "n"), Made("m2", "notification.sent", "n")]
    w = hooks({}, made, [Received("m1", "notification.sent", "n")])
    assert (w.two_ids, w.lost) == (1, 0)


def test_an_unverified_request_fails_the_run_and_brings_nothing() -> None:
    w = hooks({"n": SENT}, [], [Received("m1", "notification.scheduled", "n", verified=False),
                                Received("m2", "notification.sent", "n")])
    assert (w.unverified, w.lost, w.received) == (1, 1, 1) and w.failed


@pytest.mark.parametrize(("fields", "owed"), [
    ({}, set()),
    ({"state": "scheduled"}, {"notification.scheduled"}),
    ({"state": "failed", "attempts": "2"}, {"notification.scheduled", "notification.failed"}),
    ({"state": "sent", "delivery": "undelivered"},
     {"notification.scheduled", "notification.sent", "notification.failed"}),
    ({"state": "sent", "delivery": "sent"}, {"notification.scheduled", "notification.sent"}),
    # planned already ended: announced in that state only
    ({"state": "expired", "attempts": "0"}, {"notification.expired"}),
    ({"state": "suppressed", "attempts": "1"},
     {"notification.scheduled", "notification.suppressed"}),
    ({"state": "cancelled", "attempts": "0"},
     {"notification.scheduled", "notification.cancelled"}),
])
def test_what_the_ledger_owes(fields: dict[str, str], owed: set[str]) -> None:
    assert owed_webhooks(fields) == owed


def test_a_webhook_failure_fails_the_row() -> None:
    row = one(Seen((Copy(DUE),), "sent"))
    row.webhooks = Webhooks(two_ids=1)
    assert row.failed
