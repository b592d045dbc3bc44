"""The console's audit log: one entry per page viewed and action taken, in the Redis stream
`n:audit` (fields `operator`, `action`, `subject`, `at`), kept NOTIFIER_CONSOLE_AUDIT_DAYS
(six years by default, as HIPAA keeps access logs: 45 CFR 164.316(b)(2)).

Each XADD trims, exactly, the entries older than the retention (MINID on the stream's
millisecond ids), so the stream is bounded by what the console does in that time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from notifier.ledger.audit_write import AuditWrite

#: The stream's key (a family of `notifier.ledger.keyspace`).
AUDIT_STREAM = "n:audit"


@dataclass(frozen=True)
class AuditEntry:
    """One record: who did what to which subject, when (`at`, timezone-aware)."""

    operator: str
    action: str
    subject: str
    at: datetime


class AuditLog:
    """Appends to `n:audit` through `redis` (a redis-py client), keeping `keep_days`."""

    def __init__(self, redis: Any, keep_days: int) -> None:
        self.redis = redis
        self.keep = timedelta(days=keep_days)

    def entry(self, operator: str, action: str, subject: str, now: datetime) -> AuditWrite:
        """The entry `record` appends, for a ledger action to append in the same script as
        its change (`notifier.ledger.audit_write`): `operator` may be "" for a sign-in
        under an unknown name, which `subject` then holds; the MINID drops the entries
        older than the retention at `now`."""
        min_id = int((now - self.keep).timestamp() * 1000)
        return AuditWrite(AUDIT_STREAM, max(min_id, 0), operator, action, subject,
                          now.astimezone(UTC).isoformat())

    def record(self, operator: str, action: str, subject: str, now: datetime) -> str:
        """Append `entry(operator, action, subject, now)` (a page view, a sign-in) and drop
        those older than the retention; returns the entry's id. Raises redis-py's errors:
        a view that cannot be audited fails."""
        entry = self.entry(operator, action, subject, now)
        entry_id = self.redis.xadd(
            AUDIT_STREAM,
            {"operator": entry.operator, "action": entry.action, "subject": entry.subject,
             "at": entry.at},
            minid=entry.min_id, approximate=False)
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    def recent(self, count: int = 100) -> list[AuditEntry]:
        """The latest `count` entries, newest first."""
        entries = []
        for _, fields in self.redis.xrevrange(AUDIT_STREAM, count=count):
            text = {k.decode(): v.decode() for k, v in fields.items()}
            entries.append(AuditEntry(text["operator"], text["action"], text["subject"],
                                      datetime.fromisoformat(text["at"])))
        return entries
