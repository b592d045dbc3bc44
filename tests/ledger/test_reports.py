"""The index of sends awaiting a delivery report (`notifier.ledger.reports`) and the rule
that delivery reports only move forward, against a real Redis."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from notifier.ledger.notifications import epoch
from notifier.ledger.reading import shown_state
from notifier.ledger.reports import Awaiting, Settle
from notifier.ledger.store import Store
from notifier.policy.plan import Plan, PlannedNotification
from tests.kit import counted_pipelines
from tests.ledger_keys import awaiting_scores, notif_key

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
WAIT_S = 3600.0


@pytest.fixture
def store(redis_client) -> Store:
    return Store(redis_client)


def planned(i: int, channel: str = "sms") -> PlannedNotification:
    return PlannedNotification(
        id=f"appointment_reminder:a1:{i}:{channel}", kind="appointment_reminder",
        channel=channel, recipient="client", recipient_id="c1", entity="appointment:a1",
        due_at=NOW, expires_at=NOW + timedelta(hours=1))


def sent(store: Store, i: int, *, channel: str = "sms", at: datetime = NOW,
         awaits: bool = True) -> str:
    """Plan notification `i` and record its send at `at`, through a provider that reports
    delivery (`awaits`) or the outbox; returns its id."""
    n = planned(i, channel)
    store.write_plan(Plan(outcome="applied", add=(n,)), NOW)
    begun = store.schedule.begin(n.id, at, lease_s=60)
    assert begun.may_send
    store.schedule.finish(n.id, "sent", lease=begun.lease,
                          report_at=epoch(at) + WAIT_S if awaits else None,
                          sent_at=epoch(at), receipt=f"SM{i:032d}")
    return n.id


def awaiting(store: Store) -> dict[str, float]:
    return awaiting_scores(store.redis, store.keys)


def delivery(store: Store, notification_id: str) -> tuple[str, str]:
    fields = store.notification(notification_id)
    return fields.get("delivery", ""), shown_state(fields)


# What goes into the index, and what takes it out ------------------------------------------

def test_a_send_through_a_provider_awaits_its_report_until_the_wait_is_over(store):
    sms = sent(store, 1)
    outbox = sent(store, 2, awaits=False)
    assert awaiting(store) == {sms: epoch(NOW) + WAIT_S}
    assert outbox not in awaiting(store), "the outbox reports nothing: nothing to wait for"


@pytest.mark.parametrize("status", ["delivered", "undelivered", "failed", "bounce", "dropped",
                                    "unknown"])
def test_a_final_report_or_unknown_ends_the_wait(store, status):
    sms = sent(store, 1)
    assert store.schedule.record_delivery(sms, status, "", NOW)
    assert awaiting(store) == {}


@pytest.mark.parametrize("status", ["queued", "sending", "sent", "deferred", "processed",
                                    "something-new"])
def test_a_report_on_the_way_leaves_it_waiting(store, status):
    sms = sent(store, 1)
    store.schedule.record_delivery(sms, status, "", NOW)
    assert sms in awaiting(store)


def test_a_final_report_that_came_before_the_send_was_recorded_means_no_wait(store):
    """Callbacks race the provider's answer: a `delivered` may be in before `finish`."""
    n = planned(1)
    store.write_plan(Plan(outcome="applied", add=(n,)), NOW)
    begun = store.schedule.begin(n.id, NOW, lease_s=60)
    store.schedule.record_delivery(n.id, "delivered", "", NOW)
    store.schedule.finish(n.id, "sent", lease=begun.lease, report_at=epoch(NOW) + WAIT_S,
                          sent_at=epoch(NOW))
    assert awaiting(store) == {}
    assert delivery(store, n.id) == ("delivered", "delivered")


def test_a_second_send_after_a_lost_lease_does_not_wait_again(store):
    sms = sent(store, 1)
    store.schedule.record_delivery(sms, "delivered", "", NOW)
    again = store.schedule.finish(sms, "sent", lease="0", report_at=epoch(NOW) + 99,
                                  sent_at=epoch(NOW) + 5)
    assert again == "sent_again" and awaiting(store) == {}


# Forward only -------------------------------------------------------------------------------

def test_a_late_sent_never_overwrites_delivered(store):
    sms = sent(store, 1)
    store.schedule.record_delivery(sms, "delivered", "", NOW)
    store.schedule.record_delivery(sms, "sent", "", NOW + timedelta(minutes=1))
    store.schedule.record_delivery(sms, "unknown", "", NOW + timedelta(minutes=2))
    assert delivery(store, sms) == ("delivered", "delivered")


def test_unknown_stands_against_late_non_final_reports_but_a_final_one_replaces_it(store):
    sms = sent(store, 1)
    store.schedule.record_delivery(sms, "unknown", "", NOW)
    store.schedule.record_delivery(sms, "sent", "", NOW)
    store.schedule.record_delivery(sms, "deferred", "", NOW)
    assert delivery(store, sms) == ("unknown", "sent")
    store.schedule.record_delivery(sms, "undelivered", "30003", NOW)
    assert delivery(store, sms) == ("undelivered", "failed")
    assert store.notification(sms)["code"] == "30003"


# Claims, facts, writes -----------------------------------------------------------------------

def test_a_claim_takes_the_overdue_oldest_first_at_most_the_limit_and_leases_them(store):
    ids = [sent(store, i, at=NOW + timedelta(seconds=i)) for i in range(1, 5)]
    later = NOW + timedelta(seconds=WAIT_S + 3)  # ids 1 to 3 are overdue
    assert store.reports.overdue(later) == 3
    assert store.reports.claim(later, 2, claim_s=300) == ids[:2]
    assert store.reports.claim(later, 10, claim_s=300) == [ids[2]], "claimed ones are leased"
    assert store.reports.overdue(later) == 0
    back = later + timedelta(seconds=300)
    assert store.reports.claim(back, 10, claim_s=300) == [ids[3], *ids[:3]], (
        "a dead run's claims come back, after the one never claimed")


def test_a_claim_takes_from_every_shard_at_most_the_limit_in_all(store):
    """Each shard keeps its own index (`ShardKeys.awaiting_report`): a claim reads every
    shard's count due, then claims in each, up to the limit in all; the settle's writes
    and the figures go to each id's own shard."""
    by_shard: dict[int, str] = {}
    for candidate in (f"a{i}" for i in range(100)):
        by_shard.setdefault(store.keys.of_ref(f"appointment:{candidate}"), candidate)
    ids = []
    for i, entity in enumerate(list(by_shard.values())[:4]):
        n = replace(planned(i), id=f"appointment_reminder:{entity}:{i}:sms",
                    entity=f"appointment:{entity}")
        store.write_plan(Plan(outcome="applied", add=(n,)), NOW)
        begun = store.schedule.begin(n.id, NOW, lease_s=60)
        store.schedule.finish(n.id, "sent", lease=begun.lease, report_at=epoch(NOW) + WAIT_S,
                              sent_at=epoch(NOW), receipt=f"SM{i:032d}")
        ids.append(n.id)
    shards = {store.keys.of_notification(i) for i in ids}
    assert len(shards) == 4
    later = NOW + timedelta(seconds=WAIT_S + 1)
    assert store.reports.overdue(later) == 4
    first = store.reports.claim(later, 3, claim_s=300)
    assert len(first) == 3 and set(first) < set(ids)
    assert store.reports.claim(later, 10, claim_s=300) == sorted(set(ids) - set(first))
    assert store.reports.claim(later, 10, claim_s=300) == []
    store.reports.settle(Settle(record=[], drop=[ids[0]], again=ids[1:], counts=Counter()),
                         later, again_at=later)
    assert awaiting(store) == dict.fromkeys(ids[1:], epoch(later))
    assert store.reports.figures(later).awaiting == 3 == store.reports.overdue(later)


def test_facts_give_channel_and_receipt_or_none_for_an_expired_notification(store):
    sms, email = sent(store, 1), sent(store, 2, channel="email")
    store.redis.delete(notif_key(sms))
    assert store.reports.facts([sms, email]) == {
        sms: None, email: Awaiting(id=email, channel="email", receipt=f"SM{2:032d}")}


def test_a_batch_is_settled_in_one_round_trip(store):
    delivered, gone, again, settled = (sent(store, i) for i in range(1, 5))
    store.redis.delete(notif_key(gone))
    store.schedule.record_delivery(settled, "delivered", "", NOW)  # while the job asked
    with counted_pipelines(store.redis) as calls:
        found = store.reports.settle(Settle(
            record=[(delivered, "delivered", "")], drop=[gone], again=[again, settled],
            counts=Counter({("delivered", "sms"): 1, ("gone", "sms"): 1})), NOW,
            again_at=NOW + timedelta(seconds=1))
    assert len(calls) == 1
    assert found == {delivered: "delivered"}, "the delivery on record after each report"
    assert awaiting(store) == {again: epoch(NOW) + 1}, "a settled one is not put back"
    assert store.reports.figures(NOW).lookups == {("delivered", "sms"): 1, ("gone", "sms"): 1}


def test_figures_count_the_waiting_and_the_overdue(store):
    for i in range(1, 4):
        sent(store, i, at=NOW + timedelta(hours=i))
    figures = store.reports.figures(NOW + timedelta(hours=2, seconds=WAIT_S))
    assert (figures.awaiting, figures.overdue, figures.lookups) == (3, 2, {})


def test_every_member_falls_due_long_before_its_notification_expires():
    """The index needs no expiry of its own: the job takes each member when it is due, or
    drops it once its hash expired; the wait is far shorter than the shortest retention,
    so a send is looked up while its receipt is still kept."""
    from notifier.config import DELIVERY_REPORT_WAIT_S, MIN_RETENTION_DAYS

    assert DELIVERY_REPORT_WAIT_S <= MIN_RETENTION_DAYS * 86400 / 10
