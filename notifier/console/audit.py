"""The console's audit log: one entry per page viewed and action taken, in Redis streams
(fields `operator`, `action`, `subject`, `at`), kept NOTIFIER_CONSOLE_AUDIT_DAYS (six
years by default, as HIPAA keeps access logs: 45 CFR 164.316(b)(2)).

Page views and sign-ins go to `n:audit`. An action's entry is written by the ledger's
script of the change it records, so it goes to the stream of the shard it changes,
`n:{s}:audit` (`ShardKeys.audit`: a script's keys are one shard's, for Redis Cluster);
`recent` merges every stream by entry id.

Each XADD trims, exactly, the entries older than the retention (MINID on the stream's
millisecond ids), so each stream is bounded by what the console does in that time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from notifier.ledger.audit_write import AuditWrite
from notifier.ledger.shards import ShardKeys

#: The stream of page views and sign-ins, and of actions on what is in no shard (a family
#: of `notifier.ledger.keyspace`).
AUDIT_STREAM = "n:audit"


@dataclass(frozen=True)
class AuditEntry:
    """One record: who did what to which subject, when (`at`, timezone-aware)."""

    operator: str
    action: str
    subject: str
    at: datetime


class AuditLog:
    """Appends to `n:audit` through `redis` (a redis-py client), keeping `keep_days`, and
    reads it with the shards' streams of `keys` (the ledger's `ShardKeys`)."""

    def __init__(self, redis: Any, keep_days: int, *, keys: ShardKeys) -> None:
        self.redis = redis
        self.keep = timedelta(days=keep_days)
        #: the shard streams `recent` merges (`ShardKeys.audit_streams`)
        self.keys = keys

    def entry(self, operator: str, action: str, subject: str, now: datetime) -> AuditWrite:
        """The entry `record` appends, for a ledger action to append in the same script as
        its change (`notifier.ledger.audit_write`): `operator` may be "" for a sign-in
        under an unknown name, which `subject` then holds; the MINID drops the entries
        older than the retention at `now`. Its `stream` is `n:audit`: an action of the
        ledger appends it to the stream of the shard it changes instead."""
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
        """The latest `count` entries of every stream, newest first (by entry id: its
        milliseconds, then its sequence; two streams' entries of one millisecond in
        stream order). One round trip: each stream's latest `count`, merged."""
        with self.redis.pipeline(transaction=False) as pipe:
            for stream in (AUDIT_STREAM, *self.keys.audit_streams()):
                pipe.xrevrange(stream, count=count)
            found = [(_entry_order(entry_id), fields)
                     for rows in pipe.execute() for entry_id, fields in rows]
        entries = []
        for _, fields in sorted(found, key=lambda row: row[0], reverse=True)[:count]:
            text = {k.decode(): v.decode() for k, v in fields.items()}
            entries.append(AuditEntry(text["operator"], text["action"], text["subject"],
                                      datetime.fromisoformat(text["at"])))
        return entries


def _entry_order(entry_id: bytes | str) -> tuple[int, int]:
    """A stream entry id, `{ms}-{seq}`, as the pair it sorts by."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)
