"""The webhook outbox on a real Redis: what each change records, in which order, and how
messages are fanned out, claimed, retried, disabled and replayed (time injected)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from notifier.ledger.store import Store
from notifier.policy.plan import Plan, PlannedNotification
from notifier.webhooks.catalogue import expand
from notifier.webhooks.endpoints import Endpoint
from notifier.webhooks.outbox import (
    KEEP_S,
    WebhookOutbox,
    due_key,
    endpoint_key,
    log_key,
    message_key,
    pending_key,
)
from tests.ledger_keys import KEYS, outbox_entries, outbox_waiting

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
NID = "appointment_reminder:a1:72h:sms"


def endpoint(name: str = "ehr", events: tuple[str, ...] = ("*",), max_in_flight: int = 2
             ) -> Endpoint:
    return Endpoint(name=name, url=f"http://127.0.0.1:9/{name}", events=expand(list(events)),
                    secret=SecretStr("whsec_" + "QUJD" * 8), max_in_flight=max_in_flight)


@pytest.fixture
def store(redis_client) -> Store:
    return Store(redis_client)


def planned(nid: str = NID, entity: str = "appointment:a1") -> PlannedNotification:
    return PlannedNotification(id=nid, kind="appointment_reminder", channel="sms",
                               recipient="client", recipient_id="c1", entity=entity,
                               due_at=NOW, expires_at=NOW + timedelta(hours=1))


def entries(store: Store) -> list[tuple[str, str, int]]:
    """The outboxes' entries as (type, subject, sequence), in the order made."""
    return [(e.type, e.subject, e.sequence) for e in outbox_entries(store.redis, store.keys)]


# What each change records -------------------------------------------------------------
def test_a_notifications_changes_are_recorded_in_the_order_they_happen(store):
    store.write_plan(Plan(outcome="applied", add=(planned(),)), NOW)
    lease = store.schedule.begin(NID, NOW, lease_s=60).lease
    assert store.schedule.finish(NID, "sent", lease=lease, sent_at=NOW.timestamp() + 1)
    store.schedule.record_delivery(NID, "sent", "", NOW)  # not final: nothing to announce
    store.schedule.record_delivery(NID, "delivered", "", NOW)
    store.schedule.record_delivery(NID, "undelivered", "30003", NOW)  # final one stands
    recorded = entries(store)
    assert [(t, s) for t, s, _ in recorded] == [
        ("notification.scheduled", NID), ("notification.sent", NID),
        ("notification.delivered", NID)]
    sequences = [n for *_, n in recorded]
    assert sequences == sorted(sequences) and len(set(sequences)) == 3


def test_a_report_before_the_send_is_recorded_is_announced_after_it(store):
    """Twilio's callback can beat its own HTTP answer: `delivered` still follows `sent`."""
    store.write_plan(Plan(outcome="applied", add=(planned(),)), NOW)
    lease = store.schedule.begin(NID, NOW, lease_s=60).lease
    store.schedule.record_delivery(NID, "undelivered", "30005", NOW)
    assert [t for t, *_ in entries(store)] == ["notification.scheduled"]
    store.schedule.finish(NID, "sent", lease=lease, sent_at=NOW.timestamp() + 1)
    recorded = outbox_entries(store.redis, store.keys)
    assert [e.type for e in recorded] == ["notification.scheduled", "notification.sent",
                                          "notification.failed"]
    assert recorded[-1].payload()["data"]["error_code"] == "30005"


def test_a_refused_change_records_nothing(store):
    store.write_plan(Plan(outcome="applied", add=(planned(),)), NOW)
    store.schedule.begin(NID, NOW, lease_s=60)
    assert not store.schedule.finish(NID, "failed", lease="not-the-lease")
    store.write_plan(Plan(outcome="applied", add=(planned(),)), NOW)  # planned before
    assert [t for t, *_ in entries(store)] == ["notification.scheduled"]


def test_cancels_are_recorded_one_per_notification(store):
    other = "appointment_reminder:a1:24h:sms"
    store.write_plan(Plan(outcome="applied", add=(planned(), planned(other))), NOW)
    store.write_plan(Plan(outcome="applied", cancel=("appointment:a1",)), NOW)
    assert sorted((t, s) for t, s, _ in entries(store)[2:]) == [
        ("notification.cancelled", other), ("notification.cancelled", NID)]


def test_a_superseded_send_put_back_is_recorded_cancelled(store):
    store.write_plan(Plan(outcome="applied", add=(planned(),)), NOW)
    lease = store.schedule.begin(NID, NOW, lease_s=60).lease
    store.write_plan(Plan(outcome="applied", cancel=("appointment:a1",)), NOW)
    assert [t for t, *_ in entries(store)] == ["notification.scheduled"]  # being sent
    assert store.schedule.reschedule(NID, NOW, "retrying", lease=lease) == "cancelled"
    assert [t for t, *_ in entries(store)][-1] == "notification.cancelled"


def test_one_planned_as_ended_is_recorded_as_it_ended(store):
    store.write_plan(Plan(outcome="applied", add=(PlannedNotification(
        id=NID, kind="appointment_reminder", channel="sms", recipient="client",
        recipient_id="c1", entity="appointment:a1", due_at=NOW, expires_at=NOW,
        state="expired"),)), NOW)
    assert [t for t, *_ in entries(store)] == ["notification.expired"]


def test_an_opt_out_is_recorded_once_with_the_clients_not_the_number(store):
    store.redis.sadd(store.keys.phone_clients(0, "+14155550123"), "c2", "c1")
    assert store.set_sms_opt_out("+14155550123", True, "carrier", "21610")
    assert not store.set_sms_opt_out("+14155550123", True)  # already: nothing new
    assert store.set_sms_opt_out("+14155550123", False)
    recorded = outbox_entries(store.redis, store.keys)
    assert [e.type for e in recorded] == ["client.opted_out", "client.opted_in"]
    assert recorded[0].payload()["data"] == {
        "sequence": recorded[0].sequence, "client_ids": ["c1", "c2"], "channel": "sms",
        "source": "carrier", "error_code": "21610"}
    assert "+1415" not in json.dumps([e.payload() for e in recorded])


def test_a_rejected_event_is_recorded_once_without_its_reason(store):
    store.store_event("e1", json.dumps({"id": "e1", "type": "refill.sent",
                                        "data": {"request_id": "Ana's +14155550123"}}).encode(),
                      NOW)
    store.reject_event("e1", "data.request_id: Ana's +14155550123 is not an id", NOW)
    store.reject_event("e1", "again", NOW)
    (entry,) = outbox_entries(store.redis, store.keys)
    assert entry.type == "event.rejected"
    assert entry.payload()["data"] == {"sequence": entry.sequence, "event_id": "e1",
                                       "event_type": "refill.sent", "status": "rejected",
                                       "subject": None}


# Fan-out -------------------------------------------------------------------------------
def test_fan_out_gives_each_endpoint_what_it_subscribed_to(store):
    ehr, crm = endpoint("ehr"), endpoint("crm", events=("client.*",))
    outbox = WebhookOutbox(store.redis, [crm, ehr], KEYS)
    store.write_plan(Plan(outcome="applied", add=(planned(),)), NOW)
    store.set_sms_opt_out("+14155550123", True)
    assert outbox.fan_out(NOW) == 2
    assert outbox_waiting(store.redis) == 0
    assert store.redis.zcard(due_key("ehr")) == 2
    (crm_id,) = [i.decode() for i in store.redis.zrange(due_key("crm"), 0, -1)]
    message = store.redis.hgetall(message_key("crm", crm_id))
    assert json.loads(message[b"body"])["type"] == "client.opted_out"
    assert message[b"state"] == b"pending"
    assert 0 < store.redis.ttl(message_key("crm", crm_id)) <= KEEP_S
    # the same id at both endpoints: a receiver of both dedupes on it
    assert store.redis.zscore(due_key("ehr"), crm_id) is not None


def test_a_fan_out_that_lost_the_race_changes_nothing(store):
    outbox = WebhookOutbox(store.redis, [endpoint()], KEYS)
    store.write_plan(Plan(outcome="applied", add=(planned(),)), NOW)
    shard = KEYS.of_notification(NID)
    read = [(shard, store.redis.lrange(KEYS.webhook_outbox(shard), 0, -1))]
    assert outbox.fan_out(NOW) == 1
    # another clock read the same head before this one trimmed it: it adds nothing, and
    # trims nothing (a change made since stays)
    store.write_plan(Plan(outcome="applied", add=(planned(f"{NID}2"),)), NOW)
    assert outbox.add_messages(NOW, read) == 0
    assert outbox.trim_outboxes(read) == {shard: 0}
    assert store.redis.zcard(due_key("ehr")) == 1
    assert outbox_waiting(store.redis) == 1


def test_an_entry_that_does_not_parse_is_dropped_and_said(store, caplog):
    outbox = WebhookOutbox(store.redis, [endpoint()], KEYS)
    store.redis.rpush(KEYS.webhook_outbox(KEYS.of_notification(NID)), b"not json")
    store.write_plan(Plan(outcome="applied", add=(planned(),)), NOW)
    with caplog.at_level(logging.ERROR):
        assert outbox.fan_out(NOW) == 2
    assert "does not parse" in caplog.text
    assert store.redis.zcard(due_key("ehr")) == 1


def test_with_no_endpoint_the_outbox_still_drains(store):
    store.write_plan(Plan(outcome="applied", add=(planned(),)), NOW)
    assert WebhookOutbox(store.redis, (), KEYS).fan_out(NOW) == 1
    assert outbox_waiting(store.redis) == 0


class Crash(Exception):
    """The process dying between the fan-out's two steps."""


class CrashingBeforeTrim(WebhookOutbox):
    """A fan-out that dies after adding the messages, before trimming the outboxes."""

    def trim_outboxes(self, read: list[tuple[int, list[bytes]]]) -> dict[int, int]:
        raise Crash


def test_a_fan_out_that_died_before_trimming_is_done_again_adding_nothing_twice(
        redis_client):
    store = Store(redis_client, shards=4)
    ehr, off = endpoint("ehr"), endpoint("off")
    redis_client.hset(endpoint_key("off"), "disabled_at", NOW.timestamp())
    entities = [f"a{i}" for i in range(12)]
    for e in entities:
        store.write_plan(Plan(outcome="applied", add=(
            planned(f"appointment_reminder:{e}:72h:sms", f"appointment:{e}"),)), NOW)
    store.set_sms_opt_out("+14155550123", True)
    assert len({store.keys.of_ref(f"appointment:{e}") for e in entities}) == 4  # every shard
    crashing = CrashingBeforeTrim(redis_client, [ehr, off], store.keys)
    with pytest.raises(Crash):
        crashing.fan_out(NOW)
    assert outbox_waiting(redis_client, store.keys) == 13  # nothing trimmed
    made = {i.decode() for i in redis_client.zrange(log_key("ehr"), 0, -1)}
    assert len(made) == 13
    # the next fan-out (this clock's next tick, or another clock's) takes the same entries
    outbox = WebhookOutbox(redis_client, [ehr, off], store.keys)
    assert outbox.add_messages(NOW + timedelta(seconds=1), [
        (s, redis_client.lrange(store.keys.webhook_outbox(s), 0, -1))
        for s in store.keys.all()]) == 0
    assert outbox.fan_out(NOW + timedelta(seconds=1)) == 13
    assert outbox_waiting(redis_client, store.keys) == 0
    assert {i.decode() for i in redis_client.zrange(log_key("ehr"), 0, -1)} == made
    assert {i.decode() for i in redis_client.zrange(log_key("off"), 0, -1)} == made
    ehr_status, off_status = outbox.statuses(NOW)
    assert (ehr_status.pending, ehr_status.failed) == (13, 0)
    assert (off_status.pending, off_status.failed) == (0, 13)  # counted once each
    # each kept as first made (the repeat came a second later and changed nothing)
    assert {float(redis_client.hget(message_key("ehr", i), "created")) for i in made} == {
        NOW.timestamp()}


def test_sequences_are_unique_across_shards_and_grow_with_each_notifications_changes(
        redis_client):
    """`data.sequence` is n x S + s: its shard's counter n, so two shards never announce
    the same sequence, and the later state of one notification has the higher one."""
    store = Store(redis_client, shards=4)
    ids = [f"appointment_reminder:a{i}:72h:sms" for i in range(12)]
    for i, nid in enumerate(ids):
        store.write_plan(Plan(outcome="applied", add=(planned(nid, f"appointment:a{i}"),)),
                         NOW)
    for nid in ids:
        lease = store.schedule.begin(nid, NOW, lease_s=60).lease
        assert store.schedule.finish(nid, "sent", lease=lease, sent_at=NOW.timestamp() + 1)
        store.schedule.record_delivery(nid, "delivered", "", NOW)
    recorded = outbox_entries(redis_client, store.keys)
    assert len(recorded) == 3 * len(ids)
    sequences = [e.sequence for e in recorded]
    assert len(set(sequences)) == len(sequences)
    for nid in ids:
        own = [e for e in recorded if e.subject == nid]
        assert [e.type for e in sorted(own, key=lambda e: e.sequence)] == [
            "notification.scheduled", "notification.sent", "notification.delivered"]
        assert {e.sequence % 4 for e in own} == {store.keys.of_notification(nid)}
    # and the message a receiver gets carries it
    outbox = WebhookOutbox(redis_client, [endpoint()], store.keys)
    assert outbox.fan_out(NOW) == len(recorded)
    bodies = [json.loads(redis_client.hget(message_key("ehr", i.decode()), "body"))
              for i in redis_client.zrange(log_key("ehr"), 0, -1)]
    assert sorted(b["data"]["sequence"] for b in bodies) == sorted(sequences)


# Claims, attempts, disabling, replay ------------------------------------------------------
def messages(store: Store, outbox: WebhookOutbox, count: int) -> None:
    for i in range(count):
        store.write_plan(Plan(outcome="applied", add=(planned(f"{NID}{i}"),)), NOW)
    outbox.fan_out(NOW)


def test_claims_keep_within_the_endpoints_bound_and_a_lapsed_lease_comes_back(store):
    ehr = endpoint(max_in_flight=2)
    outbox = WebhookOutbox(store.redis, [ehr], KEYS)
    messages(store, outbox, 3)
    first = outbox.claim(ehr, NOW, lease_s=30, limit=5)
    assert len(first) == 2
    assert outbox.claim(ehr, NOW, lease_s=30) == []
    later = NOW + timedelta(seconds=31)  # both senders died: their messages are due again
    again = outbox.claim(ehr, later, lease_s=30, limit=5)
    assert len(again) == 2
    left = {i.decode() for i in store.redis.zrange(due_key("ehr"), 0, -1)}
    made = {i.decode() for i in store.redis.zrange(log_key("ehr"), 0, -1)}
    assert len(made) == 3 and {m.id for m in again} | left == made


def test_attempts_retry_then_deliver_and_a_success_resets_the_failing_clock(store):
    ehr = endpoint()
    outbox = WebhookOutbox(store.redis, [ehr], KEYS)
    messages(store, outbox, 1)
    (m,) = outbox.claim(ehr, NOW, lease_s=30)
    assert outbox.finish(ehr, m.id, "retry", NOW, next_at=NOW + timedelta(seconds=5),
                         status=503) == 1
    assert outbox.claim(ehr, NOW + timedelta(seconds=4), lease_s=30) == []
    (m,) = outbox.claim(ehr, NOW + timedelta(seconds=5), lease_s=30)
    assert m.attempts == 1
    (status,) = outbox.statuses(NOW + timedelta(seconds=5))
    assert (status.pending, status.retried) == (1, 1)
    assert outbox.finish(ehr, m.id, "delivered", NOW + timedelta(seconds=6), status=200) == 1
    assert outbox.finish(ehr, m.id, "delivered", NOW + timedelta(seconds=6)) == 0  # again
    (status,) = outbox.statuses(NOW + timedelta(seconds=7))
    assert (status.delivered, status.failed, status.pending, status.oldest_pending_s) == (
        1, 0, 0, 0.0)
    assert not store.redis.hexists(endpoint_key("ehr"), "failing_since")


def test_an_endpoint_failing_every_attempt_for_five_days_is_disabled_then_replayed(store):
    ehr = endpoint()
    outbox = WebhookOutbox(store.redis, [ehr], KEYS)
    messages(store, outbox, 1)
    (m,) = outbox.claim(ehr, NOW, lease_s=30)
    assert outbox.finish(ehr, m.id, "failed", NOW, status=503) == 1  # retries spent
    day5 = NOW + timedelta(days=5)
    store.write_plan(Plan(outcome="applied", add=(planned("other:a1:y:sms"),)), NOW)
    outbox.fan_out(day5)
    (m2,) = outbox.claim(ehr, day5, lease_s=30)
    assert outbox.finish(ehr, m2.id, "retry", day5, next_at=day5, status=500) == 2
    (status,) = outbox.statuses(day5)
    assert status.disabled_at == day5
    assert outbox.claim(ehr, day5 + timedelta(hours=1), lease_s=30) == []
    # a change made while disabled is kept, failed, for the replay
    store.write_plan(Plan(outcome="applied", add=(planned("third:a1:y:sms"),)), NOW)
    outbox.fan_out(day5)
    (status,) = outbox.statuses(day5)
    assert (status.failed, status.pending) == (2, 1)  # m and the third; m2 waits
    assert outbox.replay(ehr, NOW - timedelta(minutes=1), day5) == 2  # m and the third
    claimed = outbox.claim(ehr, day5, lease_s=30, limit=5)
    assert {c.id for c in claimed} >= {m.id}
    assert all(c.attempts == 0 for c in claimed if c.id != m2.id)


def test_a_message_no_longer_kept_is_dropped_when_claimed(store):
    ehr = endpoint()
    outbox = WebhookOutbox(store.redis, [ehr], KEYS)
    messages(store, outbox, 1)
    (mid,) = [i.decode() for i in store.redis.zrange(due_key("ehr"), 0, -1)]
    store.redis.delete(message_key("ehr", mid))
    assert outbox.claim(ehr, NOW, lease_s=30) == []
    assert store.redis.zcard(pending_key("ehr")) == 0


def test_trim_forgets_ids_past_the_keep(store):
    ehr = endpoint()
    outbox = WebhookOutbox(store.redis, [ehr], KEYS)
    messages(store, outbox, 1)
    outbox.trim(NOW + timedelta(seconds=KEEP_S - 1))
    assert store.redis.zcard(log_key("ehr")) == 1
    outbox.trim(NOW + timedelta(seconds=KEEP_S + 1))
    assert store.redis.zcard(log_key("ehr")) == 0
    assert store.redis.zcard(pending_key("ehr")) == 0


def test_a_4xx_neither_starts_nor_ends_an_endpoints_failing_time(store):
    """An endpoint refusing one message (400) on Monday and quiet since is up, not failing:
    Saturday's first 503 starts its 5 days, it does not end them (found by QA)."""
    ehr = endpoint()
    outbox = WebhookOutbox(store.redis, [ehr], KEYS)
    messages(store, outbox, 1)
    (m,) = outbox.claim(ehr, NOW, lease_s=30)
    assert outbox.finish(ehr, m.id, "failed", NOW, status=400) == 1
    assert not store.redis.hexists(endpoint_key("ehr"), "failing_since")
    saturday = NOW + timedelta(days=6)
    store.write_plan(Plan(outcome="applied", add=(planned("other:a1:y:sms"),)), NOW)
    outbox.fan_out(saturday)
    (m2,) = outbox.claim(ehr, saturday, lease_s=30)
    assert outbox.finish(ehr, m2.id, "retry", saturday, next_at=saturday, status=503) == 1
    assert outbox.statuses(saturday)[0].disabled_at is None
    # and a 4xx later does not clear the 503's clock: the endpoint is failing
    (m2,) = outbox.claim(ehr, saturday, lease_s=30)
    assert outbox.finish(ehr, m2.id, "failed", saturday, status=404) == 1
    assert float(store.redis.hget(endpoint_key("ehr"), "failing_since")) == saturday.timestamp()


def test_an_endpoint_renamed_with_messages_pending_is_said(store, caplog):
    """A name is an endpoint's identity: renamed or removed with messages pending, nothing
    sends those, and the webhooks process says so when it starts (found by QA)."""
    import threading

    from notifier.webhooks.dispatcher import Dispatcher

    old = WebhookOutbox(store.redis, [endpoint("crm")], KEYS)
    messages(store, old, 2)
    renamed = WebhookOutbox(store.redis, [endpoint("crm2")], KEYS)
    assert renamed.unconfigured() == {"crm": 2}
    stop = threading.Event()
    stop.set()
    with caplog.at_level(logging.WARNING):
        Dispatcher(renamed).serve(stop)
    assert "endpoint crm is no longer configured and has 2 messages pending" in caplog.text
    assert WebhookOutbox(store.redis, [endpoint("crm")], KEYS).unconfigured() == {}
