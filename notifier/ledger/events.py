"""Stored events: storing and queueing them for their subject, their statuses, holding a
close until its opening, rejecting, and the clock's sweeps of unapplied and held events.

Keys: each event is in the shard of its subject (`notifier.ledger.shards.ShardKeys.of_event`;
an event stored without a subject, in the shard of its id), so storing it and applying it
are each on one slot:
`n:{s}:event:{id}` (hash: raw body, status, subject, queue member; once applied, only what
its id's 30 days of duplicate detection and `GET /v1/events/{id}` need, see `settle`),
`n:{s}:events:pending` (the shard's accepted, not yet applied events, scored by arrival;
for the clock's sweep), `n:{s}:stats:events-set-aside` (how many of the shard's accepted
events were `rejected` or `failed`, summed for `/metrics`), and the per-subject queues and
held sets of `notifier.ledger.turns`.

Looking an event up by its id alone (`event_status`, the worker's first read of a message,
which carries only the id) does not know the shard: it reads the id's key in every shard
in one pipeline (`find_event`): one round trip on one Redis, one per node (in parallel) on
a cluster, S small HMGETs. Chosen over a pointer `n:event-shard:{id}`: the pointer would be
in the id's slot, not the subject's, so storing an event at the door would become two
writes on a cluster (not one script, not atomic), and the door is the hot path; the
worker's extra reads ride on a round trip it makes anyway.

Duplicates are known per subject: an id is a duplicate when the same subject's shard holds
it (the script's `EXISTS`, in the slot it writes). An id sent again about *another*
subject in another shard is stored as a second event (a sender re-using an id for another
subject); checking every shard at the door would cost another round trip on every event.
`find_event` then takes the one with the earliest arrival.

On a cluster with a master down, `find_event` reads the shards that answer: an event of
the other masters' shards is found and applied while it is down (else every event would
wait for it). An id found in none of them while some did not answer raises
`StoreUnavailable` (it may be there). The price, only while a master is down and only
for an id re-used about another subject: the later copy may be taken for the earlier.

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
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import redis

from notifier.errors import StoreError
from notifier.ledger.announcements import queue_announcement
from notifier.ledger.broker_messages import BrokerMessage
from notifier.ledger.lua import lua_source
from notifier.ledger.notifications import epoch, from_epoch
from notifier.ledger.shards import ShardKeys
from notifier.ledger.turns import member_event_id, queue_member
from notifier.policy.plan import Plan
from notifier.webhooks.catalogue import Announcement

#: The statuses of an accepted event that will never be applied.
SET_ASIDE_STATUSES = ("rejected", "failed")
#: How long an applied event's id is remembered for duplicate detection.
EVENT_RETENTION_S = 30 * 24 * 3600

STORE_EVENT_LUA = lua_source("event_store")


def store_event_call(keys: ShardKeys, event_id: str, raw: bytes, now: datetime,
                     subject: str | None, occurred_at: datetime | None,
                     message: BrokerMessage | None = None
                     ) -> tuple[list[str], list[bytes | str | float]]:
    """The KEYS and ARGV of `STORE_EVENT_LUA` for one event (for `Events.store_event` and
    the web's asyncio twin): the event's hash and its shard's pending index and, with a
    subject, the subject's queue, all in the subject's shard; with a `message`, its
    dramatiq queue and messages hash too (only when the broker is on the ledger's one
    Redis, `notifier.worker.queueing`: on a cluster the broker is apart and the message
    is sent after). Raises `ValueError` for a message without a subject (the script's
    KEYS are positional)."""
    shard = keys.of_event(event_id, subject)
    names = [keys.event(shard, event_id), keys.events_pending(shard)]
    args: list[bytes | str | float] = [raw, epoch(now), event_id]
    if subject is not None and occurred_at is not None:
        names.append(keys.subject_queue(subject))
        args += [subject, epoch(occurred_at), queue_member(event_id, now)]
    if message is not None:
        if len(names) < 3:
            raise ValueError("an event is stored with its message only with its subject")
        names += [message.queue_key, message.messages_key]
        args += [message.redis_message_id, message.data]
    return names, args


def find_event(client: Any, keys: ShardKeys, event_id: str, *fields: str
               ) -> tuple[int | None, list[bytes | None]]:
    """(shard, values of `fields`) of a stored event looked up by id alone: the id's key in
    every shard read in one pipeline (see the module's docstring). (None, [None, ...])
    for an unknown id. Of two copies (an id re-used for another subject, or a copy left
    by `Events.queue_event` cut short) the one with a subject and the earliest
    `received_at` wins. Shards that do not answer (a cluster's master down) are skipped
    when a copy is found in another; with none found, their error is raised
    (`StoreUnavailable`, `StoreError`). See the module's docstring."""
    with client.pipeline(transaction=False) as pipe:
        for shard in keys.all():
            pipe.hmget(keys.event(shard, event_id), "status", "subject", "received_at",
                       *fields)
        found = pipe.execute(raise_on_error=False)
    copies = [(subject is None, float(received or 0), shard, values)
              for shard, reply in zip(keys.all(), found, strict=True)
              if not isinstance(reply, Exception)
              for status, subject, received, *values in (reply,)
              if status is not None]
    if not copies:
        failed = [reply for reply in found if isinstance(reply, Exception)]
        if failed:
            raise failed[0]
        return None, [None] * len(fields)
    _, _, shard, values = min(copies, key=lambda c: c[:3])
    return shard, values


def settle(pipe: Any, key: str, plan: Plan, now: datetime, subject: bytes | None,
           received: bytes | None, occurred: bytes | None) -> None:
    """Queue on `pipe` an applied (or stale, or ignored) event's last form: its status,
    reason and times, its subject, kept `EVENT_RETENTION_S` so a duplicate is known.

    The raw body (and the queue member) go: nothing reads them once the event is applied,
    and the body, a few hundred bytes, made the hash a hashtable (Redis keeps a hash
    compact only while each value is at most 64 bytes) that outweighed the notifications
    the event planned. The hash is written anew, since Redis never makes a hashtable
    compact again. A `rejected` or `failed` event keeps its body (`Events.reject_event`).
    `key`: the event's hash (`ShardKeys.event`).
    """
    kept = {"status": plan.outcome, "reason": plan.reason, "applied_at": epoch(now),
            "subject": subject, "received_at": received, "occurred": occurred}
    pipe.delete(key)
    pipe.hset(key, mapping={k: v for k, v in kept.items() if v is not None})
    pipe.expire(key, EVENT_RETENTION_S)


def hold(pipe: Any, keys: ShardKeys, event_id: str, plan: Plan, ref: str | None,
         member: bytes | None, occurred: bytes | None, now: datetime) -> None:
    """Park a close beside its subject's queue until its opening (or the wait's end), in
    the subject's shard. Only queues commands on `pipe`. Raises `StoreError` when the
    event has no subject queue or the plan no `held_until`."""
    if not ref or not member or plan.held_until is None:
        raise StoreError(f"event {event_id} cannot be held: it has no subject queue")
    shard = keys.of_ref(ref)
    pipe.hset(keys.event(shard, event_id), mapping={"status": "held", "reason": plan.reason,
                                                    "held_at": epoch(now)})
    pipe.zadd(keys.held(ref), {member: float(occurred or epoch(now))})
    pipe.zadd(keys.events_held(shard), {event_id: epoch(plan.held_until)})


def unhold(pipe: Any, keys: ShardKeys, ref: str, held: list[tuple[bytes, float]],
           now: datetime) -> None:
    """Put a subject's held events back into its queue (scores are their occurred_at),
    accepted again, so this turn applies them next, in order (all in the subject's
    shard)."""
    shard = keys.of_ref(ref)
    pipe.zadd(keys.subject_queue(ref), dict(held))
    pipe.delete(keys.held(ref))
    ids = [member_event_id(m.decode()) for m, _ in held]
    pipe.zrem(keys.events_held(shard), *ids)
    pipe.zadd(keys.events_pending(shard), {i: epoch(now) for i in ids})
    for i in ids:
        pipe.hset(keys.event(shard, i), "status", "accepted")


def pending_count(client: Any, keys: ShardKeys) -> int:
    """How many accepted events are not applied yet, over every shard (one round trip):
    for tools that wait for a ledger to settle (the benchmarks, chaos runs)."""
    with client.pipeline(transaction=False) as pipe:
        for shard in keys.all():
            pipe.zcard(keys.events_pending(shard))
        return sum(pipe.execute())


class Events:
    """The stored events and their statuses, outside of applying them (`PlanWriter`)."""

    def __init__(self, client: redis.Redis, keys: ShardKeys) -> None:
        """`keys`: the ledger's shard keys (an event, its subject's queue and a rejected
        event's announcement are in the event's shard)."""
        # redis-py types its replies as a sync|async union; the client here is sync.
        self.redis: Any = client
        self.keys = keys
        self._store_event = client.register_script(STORE_EVENT_LUA)

    def store_event(self, event_id: str, raw: bytes, now: datetime, subject: str | None = None,
                    occurred_at: datetime | None = None,
                    message: BrokerMessage | None = None) -> bool:
        """Store a raw event durably and queue it for its subject (an entity ref, see
        `policy.ordering.subject_ref`), and enqueue `message` (its `apply_event`) in the
        same script; False when this id was accepted before about this subject (nothing is
        enqueued then; see the module's docstring on duplicates).

        Without `subject` the event is stored in its id's shard and queued by the worker
        that first applies it (events stored by an older version, tests of the store
        alone). Raises `ValueError` for a `message` without a subject.
        """
        names, args = store_event_call(self.keys, event_id, raw, now, subject, occurred_at,
                                       message)
        return bool(self._store_event(keys=names, args=args))

    def event_subject(self, event_id: str) -> tuple[str | None, str | None]:
        """(status, subject ref) of a stored event; (None, None) for an unknown id. One
        round trip (`find_event`)."""
        _, (status, subject) = find_event(self.redis, self.keys, event_id, "status",
                                          "subject")
        return (status.decode() if status else None, subject.decode() if subject else None)

    def event_raw(self, event_id: str) -> bytes | None:
        """The raw body of a stored event (None when it is unknown or applied)."""
        _, (raw,) = find_event(self.redis, self.keys, event_id, "raw")
        return raw

    def queue_event(self, event_id: str, subject: str, occurred_at: datetime) -> None:
        """Queue a stored event that has no subject yet (stored by an older version). It
        moves to its subject's shard (a copy there with the queue entry in one MULTI, then
        the copy in its id's shard deleted), so that applying it is one shard's
        transaction; cut short between the two, `find_event` prefers the copy with a
        subject and the left-over copy is applied as a duplicate (not again)."""
        shard, _ = find_event(self.redis, self.keys, event_id)
        if shard is None:
            return
        old = self.keys.event(shard, event_id)
        fields = self.redis.hgetall(old)
        arrived = fields.get(b"received_at")
        member = queue_member(event_id, from_epoch(arrived) if arrived else occurred_at)
        target = self.keys.of_ref(subject)
        new = self.keys.event(target, event_id)
        with self.redis.pipeline() as pipe:
            if new != old:
                pipe.hset(new, mapping=fields)
                pipe.zadd(self.keys.events_pending(target), {event_id: float(arrived or 0)})
            pipe.hset(new, mapping={"subject": subject, "member": member,
                                    "occurred": epoch(occurred_at)})
            pipe.zadd(self.keys.subject_queue(subject), {member: epoch(occurred_at)})
            pipe.execute()
        if new != old:
            with self.redis.pipeline() as pipe:
                pipe.delete(old)
                pipe.zrem(self.keys.events_pending(shard), event_id)
                pipe.execute()

    def event_status(self, event_id: str) -> dict[str, str]:
        """Every field of the event's hash, decoded (`status`, `reason`, `subject`, `raw`
        until it is applied (`settle`), times such as `received_at` and `applied_at` in
        epoch seconds); {} for an unknown or expired id. Two round trips: `find_event`,
        then the hash."""
        shard, _ = find_event(self.redis, self.keys, event_id)
        if shard is None:
            return {}
        raw = self.redis.hgetall(self.keys.event(shard, event_id))
        return {k.decode(): v.decode() for k, v in raw.items()}

    def unapplied_events(self, older_than: datetime, now: datetime, limit: int = 500,
                         shards: Iterable[int] | None = None) -> list[str]:
        """Events accepted before `older_than` and still not applied, in `shards` (every
        shard when None); each is stamped `now`, so it comes up again only after another
        grace period, not on every sweep. Returns their ids, at most `limit` per shard,
        oldest first within a shard. One round trip to read, one to stamp."""
        walked = list(self.keys.all() if shards is None else shards)
        with self.redis.pipeline(transaction=False) as pipe:
            for shard in walked:
                pipe.zrangebyscore(self.keys.events_pending(shard), "-inf", epoch(older_than),
                                   0, limit)
            found = pipe.execute()
        if not any(found):
            return []
        with self.redis.pipeline(transaction=False) as pipe:
            for shard, ids in zip(walked, found, strict=True):
                if ids:
                    pipe.zadd(self.keys.events_pending(shard), {i: epoch(now) for i in ids},
                              xx=True)
            pipe.execute()
        return [i.decode() for ids in found for i in ids]

    def count_apply_failure(self, event_id: str) -> int:
        """How many times applying this event failed unexpectedly, this one included (0
        when the event is unknown: nothing is written)."""
        shard, _ = find_event(self.redis, self.keys, event_id)
        if shard is None:
            return 0
        return int(self.redis.hincrby(self.keys.event(shard, event_id), "failures", 1))

    def release_expired_holds(self, now: datetime, limit: int = 500,
                              shards: Iterable[int] | None = None) -> list[str]:
        """Held closes whose wait for an opening is over, in `shards` (every shard when
        None), put back into their subjects' queues to be applied as they are; returns
        their ids (to enqueue). One round trip for the due ids, one for their fields, one
        transaction per shard that has any."""
        walked = list(self.keys.all() if shards is None else shards)
        with self.redis.pipeline(transaction=False) as pipe:
            for shard in walked:
                pipe.zrangebyscore(self.keys.events_held(shard), "-inf", epoch(now), 0, limit)
            due = [(shard, i.decode()) for shard, ids in zip(walked, pipe.execute(),
                                                               strict=True) for i in ids]
        if not due:
            return []
        with self.redis.pipeline(transaction=False) as pipe:
            for shard, i in due:
                pipe.hmget(self.keys.event(shard, i), "status", "subject", "member",
                           "occurred")
            found = pipe.execute()
        for shard in {s for s, _ in due}:
            with self.redis.pipeline() as pipe:
                for (s, i), (status, subject, member, occurred) in zip(due, found,
                                                                       strict=True):
                    if s != shard:
                        continue
                    pipe.zrem(self.keys.events_held(shard), i)
                    if status != b"held" or not subject or not member:
                        continue
                    ref = subject.decode()
                    pipe.zrem(self.keys.held(ref), member)
                    pipe.zadd(self.keys.subject_queue(ref),
                              {member: float(occurred or epoch(now))})
                    pipe.zadd(self.keys.events_pending(shard), {i: epoch(now)})
                    pipe.hset(self.keys.event(shard, i), "status", "accepted")
                pipe.execute()
        return [i for (_, i), (status, *_) in zip(due, found, strict=True)
                if status == b"held"]

    def reject_event(self, event_id: str, reason: str, now: datetime,
                     status: str = "rejected") -> None:
        """Mark a stored event that cannot be applied (`rejected`: no longer validates;
        `failed`: planning kept failing); it is kept for inspection, never retried, and
        leaves its subject's queue so the subject's later events go on. Counted once in
        its shard's `events_set_aside` (summed for `/metrics`: an accepted event that will
        never apply is worth an alert), and announced to delivery webhooks
        (`event.rejected`) in the same transaction: the event's id and type, the status,
        and whether it was invalid or its planning failed (never the reason's text, which
        may quote the event's data). Nothing is written for an unknown id."""
        shard, (before, subject, member, raw) = find_event(
            self.redis, self.keys, event_id, "status", "subject", "member", "raw")
        if shard is None:
            return
        key = self.keys.event(shard, event_id)
        with self.redis.pipeline() as pipe:
            pipe.hset(key, mapping={"status": status, "reason": reason,
                                    "applied_at": epoch(now)})
            if before not in (b"rejected", b"failed"):
                pipe.hincrby(self.keys.events_set_aside(shard), status, 1)
                # announced in the event's own shard: this MULTI is one slot
                rejected = Announcement("event.rejected", event_id, {
                    "event_id": event_id, "event_type": _event_type(raw),
                    "status": status, "subject": subject.decode() if subject else None})
                queue_announcement(pipe, self.keys, rejected, shard)
            pipe.expire(key, EVENT_RETENTION_S)
            pipe.zrem(self.keys.events_pending(shard), event_id)
            if subject and member:
                pipe.zrem(self.keys.subject_queue(subject.decode()), member)
            pipe.execute()


def _event_type(raw: bytes | None) -> str | None:
    """The `type` of a stored event's body, None when it has none to read."""
    try:
        body = json.loads(raw or b"")
    except ValueError:
        return None
    kind = body.get("type") if isinstance(body, dict) else None
    return kind if isinstance(kind, str) else None
