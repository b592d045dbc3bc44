"""Which clients a number belongs to: a family may share one phone (issue 10, item 5).

Every client of a number is kept in a Redis set per number, maintained as client.upserted
events change or remove numbers; the string older versions kept (one client per number,
last write won) is still read. Real Redis, events applied as the worker applies them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from notifier.ledger.record_store import legacy_phone_key, phone_index_changes
from notifier.ledger.records import ClientRecord, ProviderRecord
from notifier.ledger.store import Store
from notifier.policy.plan import Plan, entity_ref
from tests.kit import client_upserted, store_and_apply
from tests.ledger_keys import phone_clients, record_key

NOW = datetime(2030, 3, 4, 15, 0, tzinfo=UTC)
HOME, OTHER = "+14155550123", "+14155550177"


@pytest.fixture
def store(redis_client) -> Store:
    return Store(redis_client)


def upsert(store: Store, policy, client_id: str, phone: str | None, minutes: int = 0,
           **fields) -> None:
    at = NOW + timedelta(minutes=minutes)
    store_and_apply(store, policy, client_upserted(client_id, "America/New_York", at,
                                                   phone=phone, **fields), at)


def ids(store: Store, phone: str) -> list[str]:
    return [r.client.id for r in store.clients_for_phone(phone)]


def client_record(client_id: str, phone: str | None) -> ClientRecord:
    client = client_upserted(client_id, "America/New_York", NOW, phone=phone)["data"]["client"]
    return ClientRecord.model_validate({"client": client, "updated_at": NOW})


def test_every_client_of_a_shared_number_is_found(store, policy):
    upsert(store, policy, "parent", HOME, first_name="Maria")
    upsert(store, policy, "child", HOME, minutes=1, first_name="Leo")
    assert ids(store, HOME) == ["child", "parent"]


def test_a_client_whose_number_changed_leaves_the_old_number(store, policy):
    upsert(store, policy, "parent", HOME)
    upsert(store, policy, "child", HOME, minutes=1)
    upsert(store, policy, "child", OTHER, minutes=2)
    assert ids(store, HOME) == ["parent"]
    assert ids(store, OTHER) == ["child"]
    assert phone_clients(store.redis, HOME) == {b"parent"}


def test_a_client_whose_number_was_removed_leaves_it(store, policy):
    upsert(store, policy, "child", HOME)
    upsert(store, policy, "child", None, minutes=1)
    assert ids(store, HOME) == []
    assert phone_clients(store.redis, HOME) == set()


def test_a_stale_upsert_does_not_move_the_client_back(store, policy):
    upsert(store, policy, "child", OTHER, minutes=5)
    upsert(store, policy, "child", HOME, minutes=1)  # older, arriving late: stale
    assert ids(store, HOME) == []
    assert ids(store, OTHER) == ["child"]


def test_an_unknown_number_has_no_clients(store):
    assert ids(store, HOME) == []


def test_the_string_older_versions_wrote_is_still_read(store):
    # As the old code left it: the record and `n:phone:{phone}` -> id, no set.
    store.redis.set(record_key("client:parent"), client_record("parent", HOME).model_dump_json())
    store.redis.set(legacy_phone_key(HOME), "parent")
    assert ids(store, HOME) == ["parent"]


def test_the_old_string_and_the_new_set_together(store, policy):
    store.redis.set(record_key("client:parent"), client_record("parent", HOME).model_dump_json())
    store.redis.set(legacy_phone_key(HOME), "parent")
    upsert(store, policy, "child", HOME)
    assert ids(store, HOME) == ["child", "parent"]


def test_an_old_string_left_behind_by_a_change_finds_no_one(store, policy):
    store.redis.set(record_key("client:parent"), client_record("parent", HOME).model_dump_json())
    store.redis.set(legacy_phone_key(HOME), "parent")
    upsert(store, policy, "parent", OTHER, minutes=1)
    assert ids(store, HOME) == []
    assert ids(store, OTHER) == ["parent"]


def test_an_index_entry_whose_record_is_gone_finds_no_one(store):
    store.redis.sadd(store.keys.phone_clients(store.keys.of_ref("client:ghost"), HOME),
                     "ghost")
    store.redis.set(legacy_phone_key(HOME), "ghost2")
    assert ids(store, HOME) == []


def test_write_plan_keeps_the_sets_too(store):
    # A plan written outside an event (as cron jobs write theirs) moves numbers the same way.
    ref = entity_ref("client", "child")
    store.write_plan(Plan(outcome="applied", records={ref: client_record("child", HOME)}), NOW)
    store.write_plan(Plan(outcome="applied", records={ref: client_record("child", OTHER)}), NOW)
    assert ids(store, HOME) == [] and ids(store, OTHER) == ["child"]


@pytest.mark.parametrize(("before", "after", "leave", "join"), [
    (None, HOME, [], [(HOME, "c1")]),                # new client
    (None, None, [], []),                            # new client without a number
    (HOME, HOME, [], [(HOME, "c1")]),                # unchanged: re-adding is harmless
    (HOME, OTHER, [(HOME, "c1")], [(OTHER, "c1")]),  # changed
    (HOME, None, [(HOME, "c1")], []),                # removed
    (None, OTHER, [], [(OTHER, "c1")]),              # added to a client who had none
])
def test_phone_index_changes(before, after, leave, join):
    ref = entity_ref("client", "c1")
    stored = {} if before is None and after == HOME else {ref: client_record("c1", before)}
    assert phone_index_changes(stored, {ref: client_record("c1", after)}) == (leave, join)


def test_phone_index_changes_ignores_other_records():
    provider = ProviderRecord.model_validate({"updated_at": NOW, "provider": {
        "id": "p1", "name": "Dr. Rivera", "email": "r@example.com", "phone": HOME,
        "timezone": "America/Chicago"}})
    assert phone_index_changes({}, {"provider:p1": provider}) == ([], [])
