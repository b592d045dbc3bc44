"""Every notification script call is given one shard's keys (issue 17, step 6), the
webhook outbox and its sequence included: for random entity ids, recipients, counts and
days, the KEYS each call gets, captured from the very code that builds them (`Schedule`,
`PlanWriter._write_plan`, `Reports`, `IndexTrimmer`), hash to one slot."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from notifier.ledger.audit_write import AuditWrite
from notifier.ledger.batch import Batch
from notifier.ledger.store import Store
from notifier.policy.plan import Plan, PlannedNotification

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
#: Ids as intake takes them (`notifier.intake.events.Id`).
IDS = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._~-]{0,40}\Z")
COUNTS = st.sampled_from([1, 4, 16, 1024]) | st.integers(min_value=1, max_value=1024)
AUDIT = AuditWrite("n:audit", 0, "ana", "cancel", "x", NOW.isoformat())


class Recorder:
    """Stands for a script, or for the pipeline a plan is queued on: keeps the KEYS of
    each call and sends nothing."""

    def __init__(self, calls: list[tuple[str, list[str]]], name: str) -> None:
        self.calls, self.name = calls, name

    def __call__(self, keys: Sequence[str] = (), args: Sequence[Any] = (),
                 client: Any = None) -> int:
        self.calls.append((self.name, list(keys)))
        return 1

    def __len__(self) -> int:
        return 0


def recorded_store(count: int) -> tuple[Store, list[tuple[str, list[str]]]]:
    """A store on no Redis (none is reached): its plan and cancel scripts are `Recorder`s."""
    store = Store(redis.Redis(port=1), shards=count)
    calls: list[tuple[str, list[str]]] = []
    for attr in ("add_script", "cancel_script", "_cancel_one"):
        setattr(store.schedule, attr, Recorder(calls, attr))
    return store, calls


def batch_calls(batch: Batch) -> list[tuple[str, list[str]]]:
    """The KEYS of each script call queued on `batch` (not run)."""
    queued = batch._queued  # noqa: SLF001 - what the batch would send
    return [(command, list(args[1:1 + int(args[0])])) for _, command, args in queued]


@settings(max_examples=200, deadline=None)
@given(entity_id=IDS, occasion=IDS, client_id=IDS, count=COUNTS,
       days=st.integers(min_value=-400, max_value=400))
def test_every_notification_script_call_is_given_one_shards_keys(
        entity_id, occasion, client_id, count, days):
    store, calls = recorded_store(count)
    now = NOW + timedelta(days=days)
    entity = f"appointment:{entity_id}"
    sms = PlannedNotification(
        id=f"appointment_reminder:{entity_id}:{occasion}:sms", kind="appointment_reminder",
        channel="sms", recipient="client", recipient_id=client_id, entity=entity,
        due_at=now, expires_at=now + timedelta(days=1))
    email = replace(sms, id=sms.id[:-3] + "email", channel="email")
    store.plans._write_plan(Recorder(calls, "pipeline"),  # noqa: SLF001 - its KEYS
                            Plan(outcome="applied", cancel=(entity,), add=(sms, email)),
                            now, targets={entity: [sms.id, email.id]}, audit=AUDIT)
    s = store.schedule
    s.cancel_one(sms.id, "by hand", audit=AUDIT)
    batch = Batch(store.redis)
    s.queue_begin(batch, sms.id, now, lease_s=60)
    s.queue_finish(batch, sms.id, "sent", lease="1", report_at=now.timestamp() + 60,
                   sent_at=now.timestamp())
    s.queue_finish(batch, email.id, "failed", lease="1", code="30003")
    s.queue_reschedule(batch, sms.id, now, "quiet hours", lease="1", not_an_attempt=False,
                       slot=0.0, recipient=("client", client_id))
    s.queue_delivery(batch, sms.id, "undelivered", "30003", now)
    calls += batch_calls(batch)
    assert [name for name, _ in calls] == [
        "cancel_script", "add_script", "add_script", "_cancel_one", *["evalsha"] * 5]
    home = {key_slot(s.keys.tag(s.keys.of_notification(sms.id)).encode())}
    for name, keys in calls:
        assert {key_slot(k.encode()) for k in keys} == home, (name, keys)
    audited = [keys[-1] for name, keys in calls if name in ("add_script", "_cancel_one")]
    assert audited[0] == audited[-1] == s.keys.audit(s.keys.of_notification(sms.id))
