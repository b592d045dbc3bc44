"""The audit stream `n:audit`: an entry per record, those past the retention trimmed by
MINID on each append."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import redis

from notifier.console.audit import AUDIT_STREAM, AuditEntry, AuditLog
from notifier.ledger.keyspace import family_of
from notifier.timeutil import utcnow
from tests.ledger_keys import KEYS


def test_records_are_kept_with_their_fields(redis_client: redis.Redis):
    audit = AuditLog(redis_client, keep_days=2192, keys=KEYS)
    at = datetime(2030, 3, 4, 12, 0, tzinfo=UTC)
    audit.record("ana", "view", "client:c-1", at)
    audit.record("", "login-failed", "bob", at)
    assert audit.recent() == [AuditEntry("", "login-failed", "bob", at),
                              AuditEntry("ana", "view", "client:c-1", at)]
    assert family_of(AUDIT_STREAM) is not None and family_of(AUDIT_STREAM).pattern == "n:audit"


def test_entries_past_the_retention_are_trimmed_by_minid(redis_client: redis.Redis):
    now = utcnow()
    old_ms = int((now - timedelta(days=31)).timestamp() * 1000)
    recent_ms = int((now - timedelta(days=29)).timestamp() * 1000)
    fields = {"operator": "ana", "action": "view", "subject": "x", "at": "..."}
    redis_client.xadd(AUDIT_STREAM, fields, id=f"{old_ms}-0")
    redis_client.xadd(AUDIT_STREAM, fields, id=f"{recent_ms}-0")
    AuditLog(redis_client, keep_days=30, keys=KEYS).record("ana", "logout", "", now)
    ids = [entry_id.decode() for entry_id, _ in redis_client.xrange(AUDIT_STREAM)]
    assert ids[0] == f"{recent_ms}-0"
    assert len(ids) == 2


def test_recent_merges_the_global_and_every_shard_stream_newest_first(redis_client):
    """Actions are audited in the stream of the shard they change (`ShardKeys.audit`);
    `recent` reads every stream and orders the entries by id, whatever stream holds them."""
    fields = {"operator": "ana", "action": "", "subject": "x",
              "at": "2030-03-04T12:00:00+00:00"}
    last = KEYS.count - 1
    for stream, entry_id, action in ((AUDIT_STREAM, "1000-0", "view:a"),
                                     (KEYS.audit(last), "1000-1", "cancel:b"),
                                     (KEYS.audit(0), "999-5", "cancel:c"),
                                     (AUDIT_STREAM, "2000-0", "view:d"),
                                     (KEYS.audit(3), "1500-0", "copy:e")):
        redis_client.xadd(stream, {**fields, "action": action}, id=entry_id)
    audit = AuditLog(redis_client, keep_days=30, keys=KEYS)
    assert [e.action for e in audit.recent()] == [
        "view:d", "copy:e", "cancel:b", "view:a", "cancel:c"]
    assert [e.action for e in audit.recent(count=2)] == ["view:d", "copy:e"]
    assert family_of(KEYS.audit(3)).pattern == "n:{*}:audit"  # type: ignore[union-attr]


def test_an_audited_cancel_is_appended_to_its_shards_stream_and_trimmed_by_minid(
        redis_client):
    from notifier.ledger.store import Store
    from notifier.policy.plan import Plan, PlannedNotification

    store, now = Store(redis_client), utcnow()
    nid = "appointment_reminder:a7:r1:sms"
    store.write_plan(Plan(outcome="applied", add=(PlannedNotification(
        id=nid, kind="appointment_reminder", channel="sms", recipient="client",
        recipient_id="c1", entity="appointment:a7", due_at=now + timedelta(days=1),
        expires_at=now + timedelta(days=2)),)), now)
    stream = store.keys.audit(store.keys.of_notification(nid))
    old_ms = int((now - timedelta(days=31)).timestamp() * 1000)
    redis_client.xadd(stream, {"operator": "x", "action": "old", "subject": "y",
                               "at": "..."}, id=f"{old_ms}-0")
    audit = AuditLog(redis_client, keep_days=30, keys=store.keys)
    assert store.schedule.cancel_one(nid, "by hand", audit.entry("ana", "cancel", nid, now))
    assert [f[b"action"] for _, f in redis_client.xrange(stream)] == [b"cancel"]
    assert not redis_client.exists(AUDIT_STREAM)
    assert audit.recent()[0] == AuditEntry("ana", "cancel", nid,
                                           now.astimezone(UTC))
