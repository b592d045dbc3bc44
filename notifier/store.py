"""Redis storage of events, entity records and plans; the read side of notifications.

Keys (all under `n:`): `event:{id}` (hash: raw body, status), `events:pending` (accepted,
not yet applied, scored by arrival), `rec:{ref}` (entity record JSON), and the
notification keys of `notifier.schedule`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis

from notifier.policy.plan import Plan, PlannedNotification
from notifier.records import RECORD_TYPES, Record
from notifier.schedule import (
    INFLIGHT,
    PREFIX,
    SCHEDULE,
    Schedule,
    by_entity_key,
    by_recipient_key,
    epoch,
    from_epoch,
    notif_key,
)

#: A planner given a stored raw event and a loader of (watched) records.
Decide = Callable[[bytes, Callable[[list[str]], dict[str, Record]]], Plan]

PENDING_EVENTS = PREFIX + "events:pending"
#: How long an applied event's id is remembered for duplicate detection.
EVENT_RETENTION_S = 30 * 24 * 3600
#: At most this many notifications per client are returned by the read API.
READ_LIMIT = 200

# Store an event unless its id is known: SET NX semantics on a hash, plus the pending index.
STORE_EVENT_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'raw', ARGV[1], 'status', 'accepted', 'received_at', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return 1
"""


def event_key(event_id: str) -> str:
    return f"{PREFIX}event:{event_id}"


def record_key(ref: str) -> str:
    return f"{PREFIX}rec:{ref}"


def _notification_fields(n: PlannedNotification, now: datetime) -> list[Any]:
    fields = {
        "kind": n.kind, "channel": n.channel, "to": n.recipient, "to_id": n.recipient_id,
        "entity": n.entity, "due": epoch(n.due_at), "expires": epoch(n.expires_at),
        "state": n.state, "reason": n.reason, "params": json.dumps(n.params, sort_keys=True),
        "attempts": 0, "created": epoch(now),
    }
    return [item for pair in fields.items() for item in pair]


@dataclass(frozen=True)
class NotificationView:
    """A notification as the read API shows it."""

    id: str
    kind: str
    channel: str
    due_at: datetime
    expires_at: datetime
    state: str
    reason: str
    sent_at: datetime | None
    code: str | None


class Store:
    def __init__(self, client: redis.Redis) -> None:
        # redis-py types its replies as a sync|async union; the client here is sync.
        self.redis: Any = client
        self.schedule = Schedule(client)
        self._store_event = client.register_script(STORE_EVENT_LUA)

    # Events ---------------------------------------------------------------------------
    def store_event(self, event_id: str, raw: bytes, now: datetime) -> bool:
        """Store a raw event durably; False when this id was accepted before."""
        return bool(self._store_event(keys=[event_key(event_id), PENDING_EVENTS],
                                      args=[raw, epoch(now), event_id]))

    def event_status(self, event_id: str) -> dict[str, str]:
        raw = self.redis.hgetall(event_key(event_id))
        return {k.decode(): v.decode() for k, v in raw.items()}

    def unapplied_events(self, older_than: datetime, limit: int = 500) -> list[str]:
        ids = self.redis.zrangebyscore(PENDING_EVENTS, "-inf", epoch(older_than), 0, limit)
        return [i.decode() for i in ids]

    # Records ----------------------------------------------------------------------------
    def load_records(self, refs: list[str], pipe: Any = None) -> dict[str, Record]:
        if not refs:
            return {}
        values = (pipe or self.redis).mget([record_key(r) for r in refs])
        records: dict[str, Record] = {}
        for ref, value in zip(refs, values, strict=True):
            if value is not None:
                records[ref] = RECORD_TYPES[ref.split(":", 1)[0]].model_validate_json(value)
        return records

    def load_record(self, ref: str) -> Record | None:
        return self.load_records([ref]).get(ref)

    # Applying plans ------------------------------------------------------------------------
    def apply_event(self, event_id: str, decide: Decide, now: datetime) -> Plan | None:
        """Apply a stored event exactly once: load, plan, write, all under WATCH.

        `decide(raw, load)` plans, loading the records it needs through `load`, which
        watches them. The writes, the plan's
        notifications and the event's new status commit in one MULTI, so a crash leaves
        either nothing or everything; a concurrent change to a watched key replans.
        Returns None when the event was applied before (or is unknown).
        """
        key = event_key(event_id)
        while True:
            with self.redis.pipeline() as pipe:
                try:
                    pipe.watch(key)
                    status, raw = pipe.hmget(key, "status", "raw")
                    if status != b"accepted" or raw is None:
                        return None

                    def load(more: list[str], pipe: Any = pipe) -> dict[str, Record]:
                        if more:
                            pipe.watch(*(record_key(r) for r in more))
                        return self.load_records(more, pipe)

                    plan = decide(raw, load)
                    pipe.multi()
                    self._write_plan(pipe, plan, now)
                    pipe.hset(key, mapping={"status": plan.outcome, "reason": plan.reason,
                                            "applied_at": epoch(now)})
                    pipe.expire(key, EVENT_RETENTION_S)
                    pipe.zrem(PENDING_EVENTS, event_id)
                    pipe.execute()
                    return plan
                except redis.WatchError:
                    continue

    def reject_event(self, event_id: str, reason: str, now: datetime) -> None:
        """Mark a stored event that can no longer be parsed; it is kept for inspection."""
        with self.redis.pipeline() as pipe:
            pipe.hset(event_key(event_id), mapping={"status": "rejected", "reason": reason,
                                                    "applied_at": epoch(now)})
            pipe.zrem(PENDING_EVENTS, event_id)
            pipe.execute()

    def write_plan(self, plan: Plan, now: datetime) -> None:
        """Write a plan not tied to an event (a cron job's), in one transaction."""
        with self.redis.pipeline() as pipe:
            self._write_plan(pipe, plan, now)
            pipe.execute()

    def _write_plan(self, pipe: Any, plan: Plan, now: datetime) -> None:
        for ref, record in plan.records.items():
            pipe.set(record_key(ref), record.model_dump_json())
        for ref in plan.cancel:
            self.schedule.cancel_script(keys=[by_entity_key(ref), SCHEDULE, INFLIGHT],
                                        args=[PREFIX + "notif:", "superseded"], client=pipe)
        for n in plan.add:
            self.schedule.add_script(
                keys=[notif_key(n.id), SCHEDULE, by_recipient_key(n.recipient, n.recipient_id),
                      *(by_entity_key(ref) for ref in (n.entity, *n.also_cancelled_by))],
                args=[n.id, epoch(n.due_at), *_notification_fields(n, now)],
                client=pipe,
            )

    # Reading -----------------------------------------------------------------------------
    def notification(self, notification_id: str) -> dict[str, str]:
        raw = self.redis.hgetall(notif_key(notification_id))
        return {k.decode(): v.decode() for k, v in raw.items()}

    def notifications_for(self, recipient: str, recipient_id: str) -> list[NotificationView]:
        ids = self.redis.zrange(by_recipient_key(recipient, recipient_id), 0, READ_LIMIT - 1)
        with self.redis.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.hgetall(notif_key(i.decode()))
            hashes = pipe.execute()
        views = []
        for i, h in zip(ids, hashes, strict=True):
            f = {k.decode(): v.decode() for k, v in h.items()}
            if not f:
                continue
            views.append(NotificationView(
                id=i.decode(), kind=f["kind"], channel=f["channel"],
                due_at=from_epoch(f["due"]), expires_at=from_epoch(f["expires"]),
                state=f["state"], reason=f.get("reason", ""),
                sent_at=from_epoch(f["sent_at"]) if f.get("sent_at") else None,
                code=f.get("code") or None,
            ))
        return views
