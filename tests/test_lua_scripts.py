"""The ledger's Lua scripts: every key a script touches is passed in KEYS (what Redis
Cluster needs), each `.lua` file documents its KEYS and ARGV, and the callers that must
read keys out of Redis first (cancel, reschedule) stay correct when a write slips in
between the read and the script."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from notifier.ledger.notifications import SCHEDULE
from notifier.ledger.store import Store
from notifier.policy.plan import Plan, PlannedNotification

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


def planned(i: int, due: datetime = NOW, entity: str = "appointment:a1",
            recipient_id: str = "c1") -> PlannedNotification:
    return PlannedNotification(
        id=f"appointment_reminder:a1:{i}:sms", kind="appointment_reminder", channel="sms",
        recipient="client", recipient_id=recipient_id, entity=entity, due_at=due,
        expires_at=due + timedelta(hours=1),
    )


@pytest.fixture
def store(redis_client):
    return Store(redis_client)


# Reading first, then cancelling ----------------------------------------------------------
def test_cancel_reads_the_entitys_ids_first_and_cancels_each(store):
    store.write_plan(Plan(outcome="applied", add=(planned(1), planned(2))), NOW)
    store.write_plan(Plan(outcome="applied", cancel=("appointment:a1",)), NOW)
    assert store.notification("appointment_reminder:a1:1:sms")["state"] == "cancelled"
    assert store.notification("appointment_reminder:a1:2:sms")["state"] == "cancelled"
    assert store.redis.zcard(SCHEDULE) == 0


def test_an_id_added_between_reading_and_cancelling_is_cancelled_too(store, monkeypatch):
    """The entity's index is WATCHed before it is read: a notification added before the
    transaction commits fails it, and the retry reads the index again."""
    store.write_plan(Plan(outcome="applied", add=(planned(1),)), NOW)
    other = Store(store.redis)
    reads: list[dict[str, list[str]]] = []
    real = Store.cancel_targets

    def racing(self: Store, plan: Plan, pipe: Any) -> dict[str, list[str]]:
        targets = real(self, plan, pipe)
        if not plan.cancel:
            return targets
        reads.append(targets)
        if len(reads) == 1:  # another writer adds to the entity right after the read
            other.write_plan(Plan(outcome="applied", add=(planned(2),)), NOW)
        return targets

    monkeypatch.setattr(Store, "cancel_targets", racing)
    store.write_plan(Plan(outcome="applied", cancel=("appointment:a1",)), NOW)
    assert reads == [{"appointment:a1": ["appointment_reminder:a1:1:sms"]},
                     {"appointment:a1": ["appointment_reminder:a1:1:sms",
                                         "appointment_reminder:a1:2:sms"]}]
    assert store.notification("appointment_reminder:a1:2:sms")["state"] == "cancelled"
    assert store.redis.zcard(SCHEDULE) == 0


def test_the_cancel_script_leaves_an_id_no_longer_in_the_entitys_index_alone(store):
    store.write_plan(Plan(outcome="applied", add=(planned(1), planned(2, entity="x:y"))), NOW)
    with store.redis.pipeline() as pipe:
        store.schedule.cancel_entity(pipe, "appointment:a1", ["appointment_reminder:a1:1:sms",
                                                              "appointment_reminder:a1:2:sms"])
        assert pipe.execute() == [1]
    assert store.notification("appointment_reminder:a1:2:sms")["state"] == "scheduled"


def test_a_plan_that_cancels_without_its_targets_is_refused(store):
    from notifier.errors import StoreError

    with store.redis.pipeline() as pipe, pytest.raises(StoreError):
        store._write_plan(pipe, Plan(outcome="applied", cancel=("appointment:a1",)), NOW)


# Reading first, then rescheduling -------------------------------------------------------
def sending(store: Store, i: int = 1) -> str:
    store.write_plan(Plan(outcome="applied", add=(planned(i),)), NOW)
    nid = f"appointment_reminder:a1:{i}:sms"
    assert store.schedule.begin(nid, NOW, lease_s=60).may_send
    return nid


def test_reschedule_moves_the_notification_in_the_index_its_recipient_names(store):
    nid = sending(store)
    later = NOW + timedelta(hours=1)
    assert store.schedule.reschedule(nid, later, "quiet hours",
                                     recipient=("client", "c1")) == "rescheduled"
    assert store.redis.zscore("n:by-recipient:client:c1", nid) == later.timestamp()
    assert store.redis.zscore(SCHEDULE, nid) == later.timestamp()


def test_reschedule_given_a_recipient_that_no_longer_matches_reads_it_again(store):
    """The script checks `to`/`to_id` against the index key it was given: a mismatch
    changes nothing, and the caller reads the recipient and tries again."""
    nid = sending(store)
    later = NOW + timedelta(hours=1)
    assert store.schedule.reschedule(nid, later, "quiet hours",
                                     recipient=("client", "someone-else")) == "rescheduled"
    assert store.redis.zscore("n:by-recipient:client:c1", nid) == later.timestamp()
    assert not store.redis.exists("n:by-recipient:client:someone-else")


def test_reschedule_of_an_unknown_notification_changes_nothing(store):
    assert store.schedule.reschedule("nope", NOW, "quiet hours") == ""
    assert store.redis.dbsize() == 0
