"""Stored events: storing and queueing them for their subject, their statuses, holding a
close until its opening, rejecting, and the clock's sweeps of unapplied and held events.

Keys (all under `n:`): `event:{id}` (hash: raw body, status, subject, queue member; once
applied, only what its id's 30 days of duplicate detection and `GET /v1/events/{id}` need,
see `settle`),
`events:pending` (accepted, not yet applied, scored by arrival; for the clock's sweep),
`stats:events-set-aside` (how many accepted events were `rejected` or `failed`, for
`/metrics`), and the per-subject queues and held sets of `notifier.ledger.turns`.

An event's `status`: `accepted` (stored, waiting for its subject's turn), `held` (a close
waiting for its opening event), then `applied`, `stale` or `ignored`, or `rejected` /
`failed` when it cannot be applied.

Errors: on the ledger's client (`notifier.ledger.client`, as `Store` builds every part) each
Redis call raises `StoreUnavailable` when Redis cannot be reached or cannot take commands
now, and `StoreError` when it refuses one (a script error, `WRONGTYPE`); the docstrings
below name only the errors of their own.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import redis

from notifier.errors import StoreError
from notifier.ledger.announcements import queue_announcement
from notifier.ledger.broker_messages import BrokerMessage
from notifier.ledger.lua import lua_source
from notifier.ledger.notifications import PREFIX, epoch, from_epoch
from notifier.ledger.shards import ShardKeys
from notifier.ledger.turns import HELD_EVENTS, held_key, queue_key, queue_member
from notifier.policy.plan import Plan
from notifier.webhooks.catalogue import Announcement

PENDING_EVENTS = PREFIX + "events:pending"
#: How many accepted events were set aside, never applied: `rejected` / `failed` -> count.
#: Two counters for the life of the deployment (like `notifications.OUTCOMES`): no expiry.
SET_ASIDE = PREFIX + "stats:events-set-aside"
#: The statuses of an accepted event that will never be applied.
SET_ASIDE_STATUSES = ("rejected", "failed")
#: How long an applied event's id is remembered for duplicate detection.
EVENT_RETENTION_S = 30 * 24 * 3600

STORE_EVENT_LUA = lua_source("event_store")


def store_event_call(event_id: str, raw: bytes, now: datetime, subject: str | None,
                     occurred_at: datetime | None, message: BrokerMessage | None = None
                     ) -> tuple[list[str], list[bytes | str | float]]:
    """The KEYS and ARGV of `STORE_EVENT_LUA` for one event (for `Events.store_event` and
    the web's asyncio twin): the event's hash, the pending index and, with a subject, the
    subject's queue; with a `message`, its dramatiq queue and messages hash too. Raises
    `ValueError` for a message without a subject (the script's KEYS are positional)."""
    keys = [event_key(event_id), PENDING_EVENTS]
    args: list[bytes | str | float] = [raw, epoch(now), event_id]
    if subject is not None and occurred_at is not None:
        keys.append(queue_key(subject))
        args += [subject, epoch(occurred_at), queue_member(event_id, now)]
    if message is not None:
        if len(keys) < 3:
            raise ValueError("an event is stored with its message only with its subject")
        keys += [message.queue_key, message.messages_key]
        args += [message.redis_message_id, message.data]
    return keys, args


def event_key(event_id: str) -> str:
    """The key of a stored event's hash: `n:event:{id}`."""
    return f"{PREFIX}event:{event_id}"


def settle(pipe: Any, event_id: str, plan: Plan, now: datetime, subject: bytes | None,
           received: bytes | None, occurred: bytes | None) -> None:
    """Queue on `pipe` an applied (or stale, or ignored) event's last form: its status,
    reason and times, its subject, kept `EVENT_RETENTION_S` so a duplicate is known.

    The raw body (and the queue member) go: nothing reads them once the event is applied,
    and the body, a few hundred bytes, made the hash a hashtable (Redis keeps a hash
    compact only while each value is at most 64 bytes) that outweighed the notifications
    the event planned. The hash is written anew, since Redis never makes a hashtable
    compact again. A `rejected` or `failed` event keeps its body (`Events.reject_event`).
    """
    key = event_key(event_id)
    kept = {"status": plan.outcome, "reason": plan.reason, "applied_at": epoch(now),
            "subject": subject, "received_at": received, "occurred": occurred}
    pipe.delete(key)
    pipe.hset(key, mapping={k: v for k, v in kept.items() if v is not None})
    pipe.expire(key, EVENT_RETENTION_S)


def hold(pipe: Any, event_id: str, plan: Plan, ref: str | None, member: bytes | None,
         occurred: bytes | None, now: datetime) -> None:
    """Park a close beside its subject's queue until its opening (or the wait's end). Only
    queues commands on `pipe`. Raises `StoreError` when the event has no subject queue or
    the plan no `held_until`."""
    if not ref or not member or plan.held_until is None:
        raise StoreError(f"event {event_id} cannot be held: it has no subject queue")
    pipe.hset(event_key(event_id), mapping={"status": "held", "reason": plan.reason,
                                            "held_at": epoch(now)})
    pipe.zadd(held_key(ref), {member: float(occurred or epoch(now))})
    pipe.zadd(HELD_EVENTS, {event_id: epoch(plan.held_until)})


def unhold(pipe: Any, ref: str, held: list[tuple[bytes, float]], now: datetime) -> None:
    """Put a subject's held events back into its queue (scores are their occurred_at),
    accepted again, so this turn applies them next, in order."""
    pipe.zadd(queue_key(ref), dict(held))
    pipe.delete(held_key(ref))
    ids = [m.decode().split(":", 1)[1] for m, _ in held]
    pipe.zrem(HELD_EVENTS, *ids)
    pipe.zadd(PENDING_EVENTS, {i: epoch(now) for i in ids})
    for i in ids:
        pipe.hset(event_key(i), "status", "accepted")


class Events:
    """The stored events and their statuses, outside of applying them (`PlanWriter`)."""

    def __init__(self, client: redis.Redis, keys: ShardKeys) -> None:
        """`keys`: the ledger's shard keys (a rejected event's announcement goes to a
        shard's outbox)."""
        # redis-py types its replies as a sync|async union; the client here is sync.
        self.redis: Any = client
        self.keys = keys
        self._store_event = client.register_script(STORE_EVENT_LUA)

    def store_event(self, event_id: str, raw: bytes, now: datetime, subject: str | None = None,
                    occurred_at: datetime | None = None,
                    message: BrokerMessage | None = None) -> bool:
        """Store a raw event durably and queue it for its subject (an entity ref, see
        `policy.ordering.subject_ref`), and enqueue `message` (its `apply_event`) in the
        same script; False when this id was accepted before (nothing is enqueued then).

        Without `subject` the event is queued by the worker that first applies it (events
        stored by an older version, tests of the store alone). Raises `ValueError` for a
        `message` without a subject.
        """
        keys, args = store_event_call(event_id, raw, now, subject, occurred_at, message)
        return bool(self._store_event(keys=keys, args=args))

    def event_subject(self, event_id: str) -> tuple[str | None, str | None]:
        """(status, subject ref) of a stored event; (None, None) for an unknown id."""
        status, subject = self.redis.hmget(event_key(event_id), "status", "subject")
        return (status.decode() if status else None, subject.decode() if subject else None)

    def queue_event(self, event_id: str, subject: str, occurred_at: datetime) -> None:
        """Queue a stored event that has no subject yet (stored by an older version)."""
        arrived = self.redis.hget(event_key(event_id), "received_at")
        member = queue_member(event_id, from_epoch(arrived) if arrived else occurred_at)
        with self.redis.pipeline() as pipe:
            pipe.hset(event_key(event_id), mapping={"subject": subject, "member": member,
                                                    "occurred": epoch(occurred_at)})
            pipe.zadd(queue_key(subject), {member: epoch(occurred_at)})
            pipe.execute()

    def event_status(self, event_id: str) -> dict[str, str]:
        """Every field of the event's hash, decoded (`status`, `reason`, `subject`, `raw`
        until it is applied (`settle`), times such as `received_at` and `applied_at` in
        epoch seconds); {} for an unknown or expired id."""
        raw = self.redis.hgetall(event_key(event_id))
        return {k.decode(): v.decode() for k, v in raw.items()}

    def unapplied_events(self, older_than: datetime, now: datetime,
                         limit: int = 500) -> list[str]:
        """Events accepted before `older_than` and still not applied; each is stamped `now`,
        so it comes up again only after another grace period, not on every sweep. Returns
        their ids, at most `limit`, oldest first."""
        ids = self.redis.zrangebyscore(PENDING_EVENTS, "-inf", epoch(older_than), 0, limit)
        if ids:
            self.redis.zadd(PENDING_EVENTS, {i: epoch(now) for i in ids}, xx=True)
        return [i.decode() for i in ids]

    def count_apply_failure(self, event_id: str) -> int:
        """How many times applying this event failed unexpectedly, this one included."""
        return int(self.redis.hincrby(event_key(event_id), "failures", 1))

    def release_expired_holds(self, now: datetime, limit: int = 500) -> list[str]:
        """Held closes whose wait for an opening is over, put back into their subjects'
        queues to be applied as they are; returns their ids (to enqueue)."""
        ids = [i.decode() for i in self.redis.zrangebyscore(HELD_EVENTS, "-inf", epoch(now),
                                                              0, limit)]
        if not ids:
            return []
        with self.redis.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.hmget(event_key(i), "status", "subject", "member", "occurred")
            found = pipe.execute()
        with self.redis.pipeline() as pipe:
            for i, (status, subject, member, occurred) in zip(ids, found, strict=True):
                pipe.zrem(HELD_EVENTS, i)
                if status != b"held" or not subject or not member:
                    continue
                ref = subject.decode()
                pipe.zrem(held_key(ref), member)
                pipe.zadd(queue_key(ref), {member: float(occurred or epoch(now))})
                pipe.zadd(PENDING_EVENTS, {i: epoch(now)})
                pipe.hset(event_key(i), "status", "accepted")
            pipe.execute()
        return [i for i, (status, *_) in zip(ids, found, strict=True) if status == b"held"]

    def reject_event(self, event_id: str, reason: str, now: datetime,
                     status: str = "rejected") -> None:
        """Mark a stored event that cannot be applied (`rejected`: no longer validates;
        `failed`: planning kept failing); it is kept for inspection, never retried, and
        leaves its subject's queue so the subject's later events go on. Counted once in
        `SET_ASIDE` (for `/metrics`: an accepted event that will never apply is worth an
        alert), and announced to delivery webhooks (`event.rejected`) in the same
        transaction: the event's id and type, the status, and whether it was invalid or
        its planning failed (never the reason's text, which may quote the event's data)."""
        before, subject, member, raw = self.redis.hmget(event_key(event_id), "status",
                                                        "subject", "member", "raw")
        with self.redis.pipeline() as pipe:
            pipe.hset(event_key(event_id), mapping={"status": status, "reason": reason,
                                                    "applied_at": epoch(now)})
            if before not in (b"rejected", b"failed"):
                pipe.hincrby(SET_ASIDE, status, 1)
                # In the shard issue 17's design gives the event itself (its subject's,
                # else its id's), so that this MULTI is one slot once the event is too.
                shard = (self.keys.of_ref(subject.decode()) if subject
                         else self.keys.of_subject(event_id))
                rejected = Announcement("event.rejected", event_id, {
                    "event_id": event_id, "event_type": _event_type(raw),
                    "status": status, "subject": subject.decode() if subject else None})
                queue_announcement(pipe, self.keys, rejected, shard)
            pipe.expire(event_key(event_id), EVENT_RETENTION_S)
            pipe.zrem(PENDING_EVENTS, event_id)
            if subject and member:
                pipe.zrem(queue_key(subject.decode()), member)
            pipe.execute()



def _event_type(raw: bytes | None) -> str | None:
    """The `type` of a stored event's body, None when it has none to read."""
    try:
        body = json.loads(raw or b"")
    except ValueError:
        return None
    kind = body.get("type") if isinstance(body, dict) else None
    return kind if isinstance(kind, str) else None
