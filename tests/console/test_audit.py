"""The audit stream `n:audit`: an entry per record, those past the retention trimmed by
MINID on each append."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import redis

from notifier.console.audit import AUDIT_STREAM, AuditEntry, AuditLog
from notifier.ledger.keyspace import family_of
from notifier.timeutil import utcnow


def test_records_are_kept_with_their_fields(redis_client: redis.Redis):
    audit = AuditLog(redis_client, keep_days=2192)
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
    AuditLog(redis_client, keep_days=30).record("ana", "logout", "", now)
    ids = [entry_id.decode() for entry_id, _ in redis_client.xrange(AUDIT_STREAM)]
    assert ids[0] == f"{recent_ms}-0"
    assert len(ids) == 2
