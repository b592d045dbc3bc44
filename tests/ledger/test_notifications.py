"""The Lua-backed ledger and schedule, against a real Redis."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from notifier.delivery.decide import Outcome
from notifier.ledger.notifications import LATENESS_BUCKETS_S, Begun, Rescheduled, Verdict
from notifier.ledger.store import Store
from notifier.policy.plan import Plan, PlannedNotification
from tests.ledger_keys import (
    by_entity_key,
    due_score,
    inflight_count,
    inflight_score,
    notif_key,
    recipient_key,
    scheduled_count,
    summed_hash,
)

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
#: c1's recipient index in the shard of a1, which every notification here is about.
C1_INDEX = recipient_key("appointment_reminder:a1:1:sms", "client", "c1")


def planned(i: int, due: datetime, entity: str = "appointment:a1",
            state: str = "scheduled") -> PlannedNotification:
    return PlannedNotification(
        id=f"appointment_reminder:a1:{i}:sms", kind="appointment_reminder", channel="sms",
        recipient="client", recipient_id="c1", entity=entity, due_at=due,
        expires_at=due + timedelta(hours=1), state=state,  # type: ignore[arg-type]
    )


def write(store: Store, *notifications: PlannedNotification, cancel: tuple[str, ...] = ()) -> None:
    store.write_plan(Plan(outcome="applied", add=notifications, cancel=cancel), NOW)


@pytest.fixture
def store(redis_client):
    return Store(redis_client)


def test_add_keeps_the_first_plan(store):
    write(store, planned(1, NOW))
    write(store, planned(1, NOW + timedelta(hours=5)))
    assert due_score(store.redis, "appointment_reminder:a1:1:sms") == NOW.timestamp()
    assert store.notification("appointment_reminder:a1:1:sms")["state"] == "scheduled"


def test_cancel_then_add_in_one_plan_revives_a_cancelled_notification(store):
    write(store, planned(1, NOW))
    write(store, cancel=("appointment:a1",))
    assert store.notification("appointment_reminder:a1:1:sms")["state"] == "cancelled"
    assert scheduled_count(store.redis) == 0
    write(store, planned(1, NOW + timedelta(minutes=5)), cancel=("appointment:a1",))
    n = store.notification("appointment_reminder:a1:1:sms")
    assert n["state"] == "scheduled"
    assert due_score(store.redis, "appointment_reminder:a1:1:sms") == (
        NOW + timedelta(minutes=5)).timestamp()


def test_planned_as_expired_is_recorded_but_never_scheduled(store):
    write(store, planned(1, NOW, state="expired"))
    assert store.notification("appointment_reminder:a1:1:sms")["state"] == "expired"
    assert scheduled_count(store.redis) == 0
    assert [v.state for v in store.notifications_for("client", "c1")] == ["expired"]


def test_claim_takes_only_due_ids_once_and_leases_them(store):
    write(store, planned(1, NOW - timedelta(seconds=1)), planned(2, NOW),
          planned(3, NOW + timedelta(seconds=1)))
    first = store.schedule.claim(NOW, limit=10, lease_s=30)
    assert sorted(first) == ["appointment_reminder:a1:1:sms", "appointment_reminder:a1:2:sms"]
    assert store.schedule.claim(NOW, limit=10, lease_s=30) == []
    assert inflight_score(store.redis, first[0]) == NOW.timestamp() + 30
    assert store.schedule.pending_count() == (1, 2)


def test_claim_respects_the_batch_limit_and_the_in_flight_cap(store):
    write(store, *(planned(i, NOW) for i in range(10)))
    assert len(store.schedule.claim(NOW, limit=3, lease_s=30, max_inflight=100)) == 3
    assert len(store.schedule.claim(NOW, limit=10, lease_s=30, max_inflight=5)) == 2
    assert store.schedule.claim(NOW, limit=10, lease_s=30, max_inflight=5) == []


def test_sweep_returns_expired_leases_to_the_schedule(store):
    write(store, planned(1, NOW))
    [claimed] = store.schedule.claim(NOW, limit=10, lease_s=30)
    assert store.schedule.sweep(NOW + timedelta(seconds=29)) == []
    assert store.schedule.sweep(NOW + timedelta(seconds=31)) == [claimed]
    assert store.schedule.claim(NOW + timedelta(seconds=31), 10, 30) == [claimed]


def test_begin_is_a_compare_and_set(store):
    write(store, planned(1, NOW))
    nid = "appointment_reminder:a1:1:sms"
    first = store.schedule.begin(nid, NOW, lease_s=60)
    assert first.verdict == "ok" and first.fields["kind"] == "appointment_reminder"
    assert first.fields["attempts"] == "1"
    assert store.schedule.begin(nid, NOW, lease_s=60).verdict == "busy"
    assert store.schedule.finish(nid, "sent", lease=first.lease, sent_at=NOW.timestamp())
    assert store.schedule.begin(nid, NOW, lease_s=60).verdict == "sent"
    assert not store.schedule.finish(nid, "failed", lease=first.lease)
    assert store.notification(nid)["state"] == "sent"
    assert inflight_count(store.redis) == 0


def test_begin_refuses_a_notification_not_yet_due(store):
    write(store, planned(1, NOW + timedelta(minutes=10)))
    assert store.schedule.begin("appointment_reminder:a1:1:sms", NOW, 60).verdict == "not_due"
    assert store.notification("appointment_reminder:a1:1:sms")["state"] == "scheduled"


def test_begin_recovers_a_send_whose_lease_ran_out(store):
    write(store, planned(1, NOW))
    nid = "appointment_reminder:a1:1:sms"
    store.schedule.begin(nid, NOW, lease_s=60)
    later = store.schedule.begin(nid, NOW + timedelta(seconds=61), lease_s=60)
    assert later.verdict == "recover"
    assert later.fields["attempts"] == "2"


def test_begin_of_a_cancelled_or_unknown_notification_does_nothing(store):
    write(store, planned(1, NOW))
    write(store, cancel=("appointment:a1",))
    assert store.schedule.begin("appointment_reminder:a1:1:sms", NOW, 60).verdict == "cancelled"
    assert store.schedule.begin("nope", NOW, 60).verdict == "missing"


def test_reschedule_moves_the_due_time_everywhere(store):
    write(store, planned(1, NOW))
    nid = "appointment_reminder:a1:1:sms"
    lease = store.schedule.begin(nid, NOW, lease_s=60).lease
    later = NOW + timedelta(minutes=3)
    assert store.schedule.reschedule(nid, later, "quiet hours", lease=lease)
    assert due_score(store.redis, nid) == later.timestamp()
    assert inflight_count(store.redis) == 0
    [view] = store.notifications_for("client", "c1")
    assert (view.state, view.due_at, view.reason) == ("scheduled", later, "quiet hours")


def test_cancel_leaves_sent_notifications_alone(store):
    write(store, planned(1, NOW), planned(2, NOW))
    lease = store.schedule.begin("appointment_reminder:a1:1:sms", NOW, 60).lease
    store.schedule.finish("appointment_reminder:a1:1:sms", "sent", lease=lease)
    write(store, cancel=("appointment:a1",))
    states = {v.id: v.state for v in store.notifications_for("client", "c1")}
    assert states == {"appointment_reminder:a1:1:sms": "sent",
                      "appointment_reminder:a1:2:sms": "cancelled"}


def test_an_event_whose_planning_keeps_failing_is_set_aside(store, policy, monkeypatch):
    from notifier.intake import apply
    from notifier.intake.apply import MAX_APPLY_FAILURES, apply_stored_event
    from tests.kit import client_upserted
    from tests.ledger_keys import event_key, pending_events, queue_key

    evt = {**client_upserted("c1", "UTC", NOW), "id": "evt-1"}
    store.store_event("evt-1", json.dumps(evt).encode(), NOW, subject="client:c1",
                      occurred_at=NOW)

    def broken(policy, now):
        def decide(raw, load, arrived_at):
            raise OverflowError("date value out of range")
        return decide

    monkeypatch.setattr(apply, "decide_for", broken)
    assert MAX_APPLY_FAILURES == 5  # README, "Event order": "after 5 tries"
    for _ in range(MAX_APPLY_FAILURES - 1):
        with pytest.raises(OverflowError):
            apply_stored_event(store, "evt-1", policy, NOW)
    assert store.event_status("evt-1")["status"] == "accepted"
    assert apply_stored_event(store, "evt-1", policy, NOW) is None
    status = store.event_status("evt-1")
    assert status["status"] == "failed"
    assert status["reason"] == "planning failed: OverflowError: date value out of range"
    assert pending_events(store.redis) == []
    assert store.redis.exists(queue_key("client:c1")) == 0, "its subject goes on"
    # Kept for inspection as long as an applied event is remembered, then it expires.
    assert store.redis.ttl(event_key("evt-1", "client:c1")) > 0


def test_finished_and_cancelled_notifications_expire_after_the_retention(store):
    from notifier.ledger.notifications import KEEP_FINISHED_S

    write(store, planned(1, NOW), planned(2, NOW))
    lease = store.schedule.begin("appointment_reminder:a1:1:sms", NOW, 60).lease
    store.schedule.finish("appointment_reminder:a1:1:sms", "sent", lease=lease)
    write(store, cancel=("appointment:a1",))
    for i in (1, 2):
        ttl = store.redis.ttl(notif_key(f"appointment_reminder:a1:{i}:sms"))
        assert KEEP_FINISHED_S - 5 <= ttl <= KEEP_FINISHED_S


def test_an_entitys_index_expires_180_days_after_something_was_last_planned_about_it(store):
    """README, "Retention and that rule": the index that says whether a client was told of
    a booking lasts 180 days from the last plan about the entity, renewed by each."""
    days_s = 24 * 3600
    write(store, planned(1, NOW))
    assert 180 * days_s - 5 <= store.redis.ttl(by_entity_key("appointment:a1")) <= 180 * days_s
    store.redis.expire(by_entity_key("appointment:a1"), days_s)
    write(store, planned(2, NOW + timedelta(days=1)))
    assert store.redis.ttl(by_entity_key("appointment:a1")) > 179 * days_s


def test_the_read_window_starts_at_since_and_drops_old_index_entries(store):
    from notifier.ledger.notifications import KEEP_FINISHED_S

    old = NOW - timedelta(seconds=KEEP_FINISHED_S + 3600)
    write(store, planned(1, old, state="expired"), planned(2, NOW - timedelta(days=1)),
          planned(3, NOW))
    store.trimmer.run(NOW)  # the clock's trimming
    since = NOW - timedelta(hours=1)
    assert [v.id for v in store.notifications_for("client", "c1", since)] == [
        "appointment_reminder:a1:3:sms"]
    assert [v.id for v in store.notifications_for("client", "c1")] == [
        "appointment_reminder:a1:2:sms", "appointment_reminder:a1:3:sms"]


def test_the_clock_trims_a_recipients_index_of_entries_past_the_retention(store):
    """Trimmed by the clock now, not by the write (issue 13): an entry must stay until its
    notification is retired (`notifier.ledger.trimming`)."""
    from notifier.ledger.notifications import KEEP_FINISHED_S

    retention = timedelta(seconds=KEEP_FINISHED_S)
    long_ago = NOW - retention - timedelta(days=10)
    later = NOW + timedelta(days=30)  # keeps the index alive past the first's retention
    with store.redis.pipeline() as pipe:  # as a write at that time left it
        store.plans._write_plan(pipe, Plan(outcome="applied", add=(
            planned(9, later), planned(1, long_ago, state="expired"))), long_ago)
        pipe.execute()
    assert store.redis.zcard(C1_INDEX) == 2
    write(store, planned(2, NOW - retention + timedelta(hours=1)), planned(3, NOW))
    assert store.redis.zcard(C1_INDEX) == 4, "a write trims nothing"
    assert store.trimmer.run(NOW).retired == 1
    assert [m.decode() for m in store.redis.zrange(C1_INDEX, 0, -1)] == [
        "appointment_reminder:a1:2:sms", "appointment_reminder:a1:3:sms",
        "appointment_reminder:a1:9:sms"]
    assert store.write_plan(Plan(outcome="applied", add=(planned(4, NOW),)), NOW) == 1


def test_a_recipients_index_expires_its_retention_after_the_latest_due_in_it(store):
    """Bounded data (issue 13): a recipient nothing is planned for again leaves no index
    behind; each add moves the expiry to the latest due time in it plus the retention."""
    from notifier.ledger.notifications import KEEP_FINISHED_S

    key = C1_INDEX
    soon, later = NOW + timedelta(days=2), NOW + timedelta(days=40)

    def expires_at() -> float:  # EXPIRETIME is Redis 7; the tests run on 6.2 too
        return time.time() + store.redis.ttl(key)

    write(store, planned(1, later))
    assert expires_at() == pytest.approx(later.timestamp() + KEEP_FINISHED_S, abs=5)
    write(store, planned(2, soon))  # an earlier due does not shorten it
    assert expires_at() == pytest.approx(later.timestamp() + KEEP_FINISHED_S, abs=5)
    # A recipient whose latest due is past its retention keeps no index at all.
    store.redis.delete(key)
    write(store, planned(4, NOW - timedelta(seconds=KEEP_FINISHED_S + 60)))
    assert not store.redis.exists(key)


# Counted for /metrics: every way a notification ends, and how late each send was ---------

def ended(store: Store) -> dict[tuple[str, str], int]:
    return store.schedule.outcomes()


def send(store: Store, notification_id: str, at: datetime, **fields: object) -> None:
    begun = store.schedule.begin(notification_id, at, lease_s=60)
    assert begun.may_send
    assert store.schedule.finish(notification_id, "sent", lease=begun.lease, **fields)


def test_planned_expired_or_suppressed_count_as_ended_once(store):
    write(store, planned(1, NOW, state="expired"), planned(2, NOW, state="suppressed"),
          planned(3, NOW))
    # The same plan again (a replayed event) adds nothing, so counts nothing.
    write(store, planned(1, NOW, state="expired"), planned(2, NOW, state="suppressed"))
    assert ended(store) == {("expired", "sms"): 1, ("suppressed", "sms"): 1}
    # Kept for the retention, as one that ends later is (issue 13: they never expired);
    # the scheduled one has no expiry until it ends.
    from notifier.ledger.notifications import KEEP_FINISHED_S

    ttls = [store.redis.ttl(notif_key(f"appointment_reminder:a1:{i}:sms")) for i in (1, 2, 3)]
    assert [t == pytest.approx(KEEP_FINISHED_S, abs=5) for t in ttls[:2]] == [True, True]
    assert ttls[2] == -1


def test_cancelled_counts_each_scheduled_notification_it_cancels(store):
    write(store, planned(1, NOW), planned(2, NOW), planned(3, NOW))
    send(store, "appointment_reminder:a1:3:sms", NOW, sent_at=NOW.timestamp())
    write(store, cancel=("appointment:a1",))
    write(store, cancel=("appointment:a1",))  # nothing left to cancel: counts nothing
    assert ended(store) == {("cancelled", "sms"): 2, ("sent", "sms"): 1}


def test_superseded_while_sending_counts_as_cancelled_when_put_back(store):
    write(store, planned(1, NOW))
    lease = store.schedule.begin("appointment_reminder:a1:1:sms", NOW, lease_s=60).lease
    write(store, cancel=("appointment:a1",))  # it is being sent: only marked superseded
    assert ended(store) == {}
    assert store.schedule.reschedule("appointment_reminder:a1:1:sms", NOW + timedelta(
        minutes=1), "retrying: busy", lease=lease) == "cancelled"
    assert ended(store) == {("cancelled", "sms"): 1}


def lateness_fields(store: Store) -> dict[str, str]:
    return summed_hash(store.redis, store.keys.lateness, store.keys)


@pytest.mark.parametrize(("late_s", "in_buckets"), [
    (-0.5, LATENESS_BUCKETS_S),        # begun up to a second early: on time, not negative
    (0.0, LATENESS_BUCKETS_S),
    (1.0, LATENESS_BUCKETS_S),         # a bound is inclusive (Prometheus `le`)
    (1.25, LATENESS_BUCKETS_S[1:]),
    (60.0, (60, 300, 900, 3600)),
    (3600.5, ()),                      # later than the last bound: only in +Inf
])
def test_a_send_is_counted_in_every_lateness_bucket_it_fits(store, late_s, in_buckets):
    write(store, planned(1, NOW))
    send(store, "appointment_reminder:a1:1:sms", NOW,
         sent_at=(NOW + timedelta(seconds=late_s)).timestamp())
    series = store.figures().lateness[("appointment_reminder", "sms")]
    assert series.buckets == tuple((float(b), int(b in in_buckets))
                                   for b in LATENESS_BUCKETS_S)
    assert (series.count, series.total_s) == (1, max(0.0, late_s))


def test_lateness_is_kept_per_kind_and_channel_and_summed(store):
    write(store, planned(1, NOW), planned(2, NOW))
    send(store, "appointment_reminder:a1:1:sms", NOW, sent_at=NOW.timestamp() + 3)
    send(store, "appointment_reminder:a1:2:sms", NOW, sent_at=NOW.timestamp() + 120)
    series = store.figures().lateness
    assert list(series) == [("appointment_reminder", "sms")]
    assert series[("appointment_reminder", "sms")].count == 2
    assert series[("appointment_reminder", "sms")].total_s == 123.0
    assert dict(series[("appointment_reminder", "sms")].buckets)[5.0] == 1


def test_lateness_is_measured_from_the_due_time_it_was_sent_for(store):
    # Put back (quiet hours, a retry): the lateness counts from the new due time, so it
    # measures how far the workers lag, not the hold.
    write(store, planned(1, NOW))
    lease = store.schedule.begin("appointment_reminder:a1:1:sms", NOW, lease_s=60).lease
    morning = NOW + timedelta(hours=9)
    store.schedule.reschedule("appointment_reminder:a1:1:sms", morning, "quiet hours",
                              lease=lease, not_an_attempt=True)
    send(store, "appointment_reminder:a1:1:sms", morning, sent_at=morning.timestamp() + 2)
    assert store.figures().lateness[("appointment_reminder", "sms")].total_s == 2.0


def test_a_send_without_sent_at_counts_as_sent_but_has_no_lateness(store):
    # Found sent after a crash: when it went out is not known, so it is not guessed.
    write(store, planned(1, NOW))
    send(store, "appointment_reminder:a1:1:sms", NOW)
    assert ended(store) == {("sent", "sms"): 1}
    assert lateness_fields(store) == {}
    assert store.figures().lateness == {}


def test_only_sends_have_a_lateness(store):
    write(store, planned(1, NOW))
    lease = store.schedule.begin("appointment_reminder:a1:1:sms", NOW, lease_s=60).lease
    store.schedule.finish("appointment_reminder:a1:1:sms", "failed", lease=lease,
                          reason="invalid number", sent_at=NOW.timestamp())
    assert ended(store) == {("failed", "sms"): 1}
    assert lateness_fields(store) == {}


def test_figures_read_backlog_outcomes_and_lateness_at_once(store):
    write(store, planned(1, NOW), planned(2, NOW + timedelta(hours=1)))
    store.schedule.claim(NOW, limit=10, lease_s=60)
    figures = store.figures()
    assert (figures.scheduled, figures.in_flight, figures.events_pending) == (1, 1, 0)
    assert (figures.outcomes, figures.lateness) == ({}, {})


def test_every_verdict_but_a_send_is_an_outcome_of_deliver():
    """`deliver` reports a verdict that stops the send as `Outcome(verdict)`."""
    for verdict in Verdict:
        if not Begun(verdict, {}).may_send:
            assert Outcome(verdict) == verdict
    assert {v for v in Verdict if Begun(v, {}).may_send} == {Verdict.OK, Verdict.RECOVER}


def test_begin_and_reschedule_answer_with_their_enums(store):
    write(store, planned(1, NOW))
    nid = "appointment_reminder:a1:1:sms"
    begun = store.schedule.begin(nid, NOW, lease_s=60)
    assert begun.verdict is Verdict.OK
    assert store.schedule.reschedule(nid, NOW, "held", lease=begun.lease) is (
        Rescheduled.RESCHEDULED)
    assert store.schedule.reschedule(nid, NOW, "held", lease=begun.lease) is (
        Rescheduled.NOT_SENDING)
    assert not Rescheduled.NOT_SENDING


def test_the_shards_counters_are_summed_as_integers_or_floats():
    from notifier.ledger.notifications import parse_lateness, parse_outcomes, sum_counts

    summed = sum_counts([{b"sent:sms": b"2", b"k:sms:sum": b"1.5", b"k:sms:count": b"1"},
                         {b"sent:sms": b"-1", b"failed:sms": b"4", b"k:sms:sum": b"2"},
                         {}])
    assert summed == {b"sent:sms": b"1", b"failed:sms": b"4", b"k:sms:sum": b"3.5",
                      b"k:sms:count": b"1"}
    assert parse_outcomes({k: summed[k] for k in (b"sent:sms", b"failed:sms")}) == {
        ("sent", "sms"): 1, ("failed", "sms"): 4}
    assert parse_lateness({b"k:sms:sum": summed[b"k:sms:sum"],
                           b"k:sms:count": b"1"})[("k", "sms")].total_s == 3.5
    with pytest.raises(ValueError):
        sum_counts([{b"sent:sms": b"x"}])


def test_outcomes_are_summed_over_the_shards(store):
    keys = store.keys
    store.redis.hset(keys.outcomes(0), mapping={"sent:sms": 2, "cancelled:email": 1})
    store.redis.hset(keys.outcomes(keys.count - 1), mapping={"sent:sms": 3})
    assert store.schedule.outcomes() == {("sent", "sms"): 5, ("cancelled", "email"): 1}
    assert store.figures().outcomes == store.schedule.outcomes()
