"""The ledger's shards: a notification id locates its own shard, which is its entity's;
the keys one script call gets for a notification share one hash slot; the real policy's
plans keep that true; the count is fixed once the ledger is written; stores of other
counts work side by side."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from notifier.console.allowed import resend_id
from notifier.console.operations import invite_id
from notifier.errors import ConfigError, StoreError
from notifier.intake.events import parse_event
from notifier.ledger.records import State
from notifier.ledger.shards import (
    DEFAULT_SHARDS,
    SHARDS_KEY,
    ShardKeys,
    check_shards,
    ledger_keys,
    shard_of_entity_id,
    shard_of_notification,
    shard_of_ref,
)
from notifier.ledger.store import Store
from notifier.policy.common import for_client, for_support
from notifier.policy.digest import digest_id
from notifier.policy.plan import Plan, PlannedNotification
from tests.kit import (
    Ledger,
    appointment,
    client_upserted,
    event_dict,
    message_received,
    prescription_filled,
    provider_upserted,
    refill_requested,
)
from tests.ledger_keys import notification_ids, scheduled_ids

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
#: Ids as intake takes them (`notifier.intake.events.Id`).
IDS = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._~-]{0,40}\Z")
KINDS = st.sampled_from(["appointment_reminder", "refill_due", "message_ack",
                         "followup_nudge", "appointment_changed"])
ENTITY_KINDS = st.sampled_from(["appointment", "prescription", "refill_request", "message",
                                "client", "followup"])
COUNTS = st.sampled_from([1, 4, 16, 1024]) | st.integers(min_value=1, max_value=1024)


def one_slot(keys: list[str]) -> bool:
    return len({key_slot(k.encode()) for k in keys}) == 1


@settings(max_examples=300, deadline=None)
@given(entity_kind=ENTITY_KINDS, entity_id=IDS, kind=KINDS, occasion=IDS,
       count=COUNTS, n=st.integers(min_value=1, max_value=5),
       seq=st.integers(min_value=0, max_value=99))
def test_every_id_the_policy_builds_is_in_its_entitys_shard_and_one_slot(
        policy, entity_kind, entity_id, kind, occasion, count, n, seq):
    keys = ShardKeys(count)
    entity = f"{entity_kind}:{entity_id}"
    state = State.from_records({})
    client = for_client(kind=kind, entity=entity, occasion=occasion, channel="sms",
                        client_id="c1", due_at=NOW, expires_at=NOW + timedelta(days=1),
                        state=state, policy=policy)
    support = for_support(kind=kind, entity=entity, occasion=occasion, due_at=NOW,
                          params={})
    ids = [client.id, *(s.id for s in support),
           resend_id(client.id, n), resend_id(resend_id(client.id, n), n + 1),
           client.id.rsplit(":", 1)[0] + ":email"]  # a fallback on the other channel
    made = [(entity, i) for i in ids]
    if entity_kind == "appointment":
        made.append((entity, invite_id("appointment_invite", entity_id, n, seq)))
    made.append((f"provider:{entity_id}", digest_id(entity_id, NOW)))
    for ref, notification_id in made:
        shard = keys.of_notification(notification_id)
        assert shard == keys.of_ref(ref) == shard_of_entity_id(entity_id, count)
        assert 0 <= shard < count
        assert one_slot([keys.notif(notification_id), keys.schedule(shard),
                         keys.inflight(shard), keys.by_entity(ref), keys.clock_lease(shard)])


@given(notification_id=st.text(min_size=1, max_size=30), count=COUNTS)
def test_braces_in_an_id_cannot_move_its_key_out_of_its_shards_slot(notification_id, count):
    """Redis hashes the first `{…}` of a key: the shard's tag comes first, so whatever an
    id holds (intake lets no brace through) its hash stays in its shard's slot."""
    keys = ShardKeys(count)
    shard = keys.of_notification(notification_id)
    assert one_slot([keys.notif(notification_id), keys.schedule(shard)])


def test_the_shard_functions_agree_and_name_the_entity_id_part():
    assert shard_of_ref("appointment:a1", 16) == shard_of_entity_id("a1", 16)
    assert shard_of_notification("appointment_reminder:a1:72h:sms", 16) == \
        shard_of_entity_id("a1", 16)
    assert shard_of_entity_id("a1", 16) == key_slot(b"a1") % 16
    assert {shard_of_entity_id(f"a{i}", 16) for i in range(200)} == set(range(16))
    assert shard_of_entity_id("anything", 1) == 0
    keys = ShardKeys(16)
    shard = keys.of_ref("appointment:a1")
    assert keys.notif("appointment_reminder:a1:72h:sms") == \
        f"n:{{{shard}}}:notif:appointment_reminder:a1:72h:sms"
    assert keys.by_entity("appointment:a1") == f"n:{{{shard}}}:by-entity:appointment:a1"
    assert (keys.schedule(3), keys.inflight(3), keys.clock_lease(3)) == (
        "n:{3}:schedule", "n:{3}:inflight", "n:{3}:clock")


@pytest.mark.parametrize("count", [0, -1, 1025])
def test_a_count_out_of_range_is_refused(count):
    with pytest.raises(ValueError, match="1..1024"):
        ShardKeys(count)


def test_the_policys_real_plans_keep_every_notification_in_its_entitys_shard(policy):
    """A few events through the pure policy, as the worker plans them: every planned
    notification's id names its entity's shard."""
    ledger = Ledger()
    start = NOW + timedelta(days=5)
    events = [
        client_upserted("c1", "America/New_York", NOW - timedelta(days=3)),
        provider_upserted("prov-1", NOW - timedelta(days=3)),
        appointment("appointment.scheduled", "apt-7f3", "c1", start, NOW),
        appointment("appointment.rescheduled", "apt-7f3", "c1", start + timedelta(days=1),
                    NOW + timedelta(minutes=5)),
        prescription_filled("rx-9", "c1", date(2026, 11, 20), NOW),
        refill_requested("rr-1", "rx-9", "c1", NOW + timedelta(minutes=10)),
        message_received("msg-1", "c1", NOW + timedelta(minutes=20)),
        event_dict("appointment.cancelled", {"appointment_id": "apt-7f3",
                                             "cancelled_by": "client"},
                   NOW + timedelta(minutes=30)),
    ]
    planned: list[PlannedNotification] = []
    for evt in events:
        planned += ledger.apply(parse_event(json.dumps(evt).encode()), NOW, policy).add
    assert len({n.entity.split(":", 1)[0] for n in planned}) >= 3, planned
    for count in (1, 4, 16):
        assert [n.id for n in planned
                if shard_of_notification(n.id, count) != shard_of_ref(n.entity, count)] == []


def test_a_plan_whose_id_does_not_name_its_entity_is_refused(redis_client):
    """One script gets one shard's keys: an id in another shard than its entity's index
    would break that, so the plan is refused before anything is written."""
    store = Store(redis_client)
    wrong = PlannedNotification(
        id="appointment_reminder:a1:72h:sms", kind="appointment_reminder", channel="sms",
        recipient="client", recipient_id="c1", entity="appointment:zz-other", due_at=NOW,
        expires_at=NOW + timedelta(hours=1))
    assert store.keys.of_notification(wrong.id) != store.keys.of_ref(wrong.entity)
    with pytest.raises(StoreError, match="does not name its entity"):
        store.write_plan(Plan(outcome="applied", add=(wrong,)), NOW)
    assert notification_ids(redis_client) == []


# The count is part of the data -------------------------------------------------------------

def test_the_count_is_recorded_once_and_another_is_refused(redis_client):
    assert ledger_keys(redis_client).count == DEFAULT_SHARDS  # none recorded: the default
    assert check_shards(redis_client, 4) == 4
    assert redis_client.get(SHARDS_KEY) == b"4"
    assert check_shards(redis_client, 4) == 4, "the same count again: fine"
    with pytest.raises(ConfigError, match="NOTIFIER_LEDGER_SHARDS: 16, but the ledger in "
                                          "Redis was written with 4 shards"):
        check_shards(redis_client, 16)
    assert redis_client.get(SHARDS_KEY) == b"4", "the refused count changed nothing"
    assert ledger_keys(redis_client).count == 4


@pytest.mark.parametrize("old", [
    ("zadd", "n:schedule", {"appointment_reminder:appt-1:72h.20270315T150000Z:sms": 1.8e9}),
    ("hset", "n:notif:appointment_confirmation:appt-1:booked:sms", "state", "sent"),
    ("set", "n:rec:client:client-1", "{}"),
], ids=["schedule", "notification", "record"])
def test_a_ledger_written_before_shards_is_refused_not_read_as_empty(redis_client, old):
    """QA (issue 17): a Redis the version before shards wrote (`make run`'s var/redis/)
    was read as empty, so posting its events again sent their confirmations again and the
    reminders it held never went. The first start refuses it, naming what it found, and
    records no count; a Redis with only new keys starts."""
    command, *args = old
    getattr(redis_client, command)(*args)
    with pytest.raises(ConfigError, match=f"written before shards .*{args[0]}"):
        check_shards(redis_client, 16)
    assert redis_client.get(SHARDS_KEY) is None
    redis_client.delete(args[0])
    redis_client.set("n:{3}:rec:client:client-1", "{}")
    redis_client.set("n:rate:sms:+14155550100", "1")  # a family that did not move
    assert check_shards(redis_client, 16) == 16


def test_a_process_started_with_another_count_refuses_to_start(redis_url, redis_client,
                                                               tmp_path):
    from pathlib import Path

    from notifier.cli.common import open_runtime
    from notifier.config import Settings

    def settings(count: int) -> Settings:
        return Settings.from_env({"NOTIFIER_REDIS_URL": redis_url,
                                  "NOTIFIER_LEDGER_SHARDS": str(count),
                                  "NOTIFIER_OUTBOX_DIR": str(tmp_path / "outbox"),
                                  "NOTIFIER_VAR_DIR": str(tmp_path / "var")},
                                 dotenv=Path("/nonexistent"))

    with open_runtime(settings(8)) as runtime:
        assert runtime.store.keys.count == 8
    with pytest.raises(ConfigError, match="written with 8 shards"), open_runtime(settings(16)):
        pass


@pytest.mark.parametrize("count", [1, 4])
def test_a_store_of_any_count_plans_claims_and_sends(redis_client, count):
    """Stores of other counts in one process (each holds its own `ShardKeys`, nothing
    process-wide): the whole path through the shards of `count`."""
    store = Store(redis_client, shards=count)
    ids = [f"appointment_reminder:a{i}:72h:sms" for i in range(12)]
    store.write_plan(Plan(outcome="applied", add=tuple(PlannedNotification(
        id=i, kind="appointment_reminder", channel="sms", recipient="client",
        recipient_id="c1", entity=f"appointment:a{n}", due_at=NOW,
        expires_at=NOW + timedelta(hours=1)) for n, i in enumerate(ids))), NOW)
    assert scheduled_ids(redis_client, store.keys) == sorted(ids)
    assert {k.decode().split(":")[1] for k in redis_client.keys("n:{*}:schedule")} == {
        f"{{{s}}}" for s in {store.keys.of_notification(i) for i in ids}}
    assert len({store.keys.of_notification(i) for i in ids}) == (1 if count == 1 else 4)
    assert store.schedule.pending_count() == (12, 0)
    claimed = store.schedule.claim(NOW, 100, lease_s=60)
    assert sorted(claimed) == sorted(ids)
    assert store.schedule.pending_count() == (0, 12)
    begun = store.schedule.begin(ids[0], NOW, lease_s=60)
    assert begun.may_send
    assert store.schedule.finish(ids[0], "sent", lease=begun.lease, sent_at=NOW.timestamp())
    assert store.notification(ids[0])["state"] == "sent"
    store.write_plan(Plan(outcome="applied", cancel=("appointment:a1",)), NOW)
    assert store.notification(ids[1])["state"] == "cancelled"
    assert store.figures().in_flight == 10, "one sent, one cancelled, in their shards"
