"""Property: every script call that writes a delivery-webhook outbox names the outbox and
counter (and a once key) of one shard, the shard of what it announces: a notification's
changes its own shard's, an announcement its subject's (or, in a plan that adds, the added
notifications'), an opt-out shard 0's. Checked on a real Redis by recording the KEYS of
every script call the ledger sends (the cluster client would refuse a call of two slots;
this checks the shard is the right one too), over generated entity ids and shard counts."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notifier.ledger.client import LedgerPipeline, LedgerRedis
from notifier.ledger.records import Record
from notifier.ledger.shards import OPT_OUTS_SHARD, ShardKeys
from notifier.ledger.store import Store
from notifier.policy.plan import Plan, PlannedNotification
from notifier.webhooks.catalogue import Announcement

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
#: An outbox, counter or once key of a shard: `n:{7}:wh:outbox`.
SHARDED = re.compile(r"n:\{(\d+)\}:wh:(outbox|seq|once:.*)")
#: Ids as intake takes them (`notifier.intake.events.Id`).
IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,24}", fullmatch=True)


@contextmanager
def script_calls() -> Iterator[list[list[str]]]:
    """The KEYS of every script call (EVAL, EVALSHA) sent meanwhile, on a client or in a
    pipeline of the ledger's, in order."""
    calls: list[list[str]] = []
    originals = {cls: cls.execute_command for cls in (LedgerRedis, LedgerPipeline)}

    def recording(original: Any) -> Any:
        def execute_command(self: Any, *args: Any, **options: Any) -> Any:
            # Recorded once sent (or queued): a NOSCRIPT answer, which redis-py's Script
            # answers by loading the script and calling again, is not a call of its own.
            reply = original(self, *args, **options)
            if args and args[0] in ("EVAL", "EVALSHA"):
                calls.append([str(k) for k in args[3:3 + int(args[2])]])
            return reply
        return execute_command

    for cls, original in originals.items():
        cls.execute_command = recording(original)
    try:
        yield calls
    finally:
        for cls, original in originals.items():
            cls.execute_command = original


def announced_in(calls: list[list[str]]) -> list[set[int]]:
    """Per call that writes an outbox, the shards of its outbox, counter and once keys; a
    call naming an outbox key of no shard, or an outbox without its counter, fails."""
    found = []
    for keys in calls:
        assert not any(re.fullmatch(r"n:wh:(outbox|seq|once:.*)", k) for k in keys), keys
        matched = [m for k in keys if (m := SHARDED.fullmatch(k))]
        if matched:
            assert {m.group(2) for m in matched} >= {"outbox", "seq"}, keys
            found.append({int(m.group(1)) for m in matched})
    return found


def assert_in(calls: list[list[str]], shard: int, expected_calls: int) -> None:
    """`expected_calls` calls wrote an outbox, each only in `shard`."""
    assert announced_in(calls) == [{shard}] * expected_calls, calls


def planned(nid: str, entity: str) -> PlannedNotification:
    return PlannedNotification(id=nid, kind="appointment_reminder", channel="sms",
                               recipient="client", recipient_id="c1", entity=entity,
                               due_at=NOW, expires_at=NOW + timedelta(hours=1))


class Confirmed(Record):
    """A record an update writes, whatever its kind (the announcement is what is checked)."""

    updated_at: datetime = NOW


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(entity=IDS, client=IDS, shards=st.sampled_from([1, 3, 16, 1024]))
def test_every_emitting_script_call_writes_the_outbox_of_its_subjects_shard(
        redis_client, entity, client, shards):
    redis_client.flushdb()
    store = Store(redis_client, shards=shards)
    k: ShardKeys = store.keys
    ref = f"appointment:{entity}"
    nid, other, third = (f"appointment_reminder:{entity}:{o}:sms" for o in ("72h", "24h", "2h"))
    mine = k.of_ref(ref)
    assert k.of_notification(nid) == mine

    with script_calls() as calls:  # notif_add, one each
        store.write_plan(Plan(outcome="applied", add=(planned(nid, ref), planned(other, ref))),
                         NOW)
    assert_in(calls, mine, 2)
    with script_calls() as calls:  # notif_begin (no outbox), notif_finish, notif_delivery
        lease = store.schedule.begin(nid, NOW, lease_s=60).lease
        assert store.schedule.finish(nid, "sent", lease=lease, sent_at=NOW.timestamp())
        store.schedule.record_delivery(nid, "delivered", "", NOW)
    assert_in(calls, mine, 2)
    with script_calls() as calls:  # notif_cancel
        assert store.schedule.cancel_one(other, "operator")
    assert_in(calls, mine, 1)
    with script_calls() as calls:  # notif_add, notif_cancel_entity, notif_reschedule
        store.write_plan(Plan(outcome="applied", add=(planned(third, ref),)), NOW)
        lease = store.schedule.begin(third, NOW, lease_s=60).lease
        store.write_plan(Plan(outcome="applied", cancel=(ref,)), NOW)
        assert store.schedule.reschedule(third, NOW, "retrying", lease=lease) == "cancelled"
    assert_in(calls, mine, 3)

    with script_calls() as calls:  # webhook_emit in a record's MULTI (a C reply)
        assert store.update_record(ref, lambda _: Confirmed(), announce=(Announcement(
            "appointment.confirmed", entity, {"appointment_id": entity},
            once=f"SM{entity}"),))
    assert_in(calls, k.of_subject(entity), 1)
    alert = f"reschedule_request:{client}:SM{entity}:email"
    with script_calls() as calls:  # webhook_emit in a plan that adds: the adds' shard
        store.write_plan(Plan(outcome="applied", add=(planned(alert, f"client:{client}"),),
                              announce=(Announcement("appointment.reschedule_requested",
                                                     entity, once=f"R{entity}"),)), NOW)
    assert_in(calls, k.of_ref(f"client:{client}"), 2)
    with script_calls() as calls:  # webhook_emit in a plan that only announces
        store.write_plan(Plan(outcome="applied", announce=(Announcement(
            "appointment.confirmed", entity),)), NOW)
    assert_in(calls, k.of_subject(entity), 1)

    store.store_event(f"e{entity}", json.dumps({"type": "x"}).encode(), NOW, subject=ref,
                      occurred_at=NOW)
    store.store_event(f"f{entity}", b"{}", NOW)
    with script_calls() as calls:  # webhook_emit in reject_event's MULTI
        store.reject_event(f"e{entity}", "invalid", NOW)
        store.reject_event(f"f{entity}", "invalid", NOW)
    assert announced_in(calls) == [{mine}, {k.of_subject(f"f{entity}")}]

    with script_calls() as calls:  # optout_set
        assert store.set_sms_opt_out("+14155550123", True)
        assert store.set_sms_opt_out("+14155550123", False)
    assert_in(calls, OPT_OUTS_SHARD, 2)
