"""The ledger's sharded keys as tests read them: a notification's hash, an entity's index,
the schedule and in-flight sets and the webhook outboxes over every shard, at the count a plain
`Store(redis_client)` uses (`DEFAULT_SHARDS`) unless a test passes its own `ShardKeys`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from notifier.ledger.events import find_event
from notifier.ledger.shards import ShardKeys
from notifier.webhooks.catalogue import OutboxEntry
from notifier.webhooks.outbox import announced, queue_waiting

#: The keys of a `Store` built with the default shard count.
KEYS = ShardKeys()


def notif_key(notification_id: str, keys: ShardKeys = KEYS) -> str:
    """A notification's hash."""
    return keys.notif(notification_id)


def by_entity_key(ref: str, keys: ShardKeys = KEYS) -> str:
    """An entity's index of notification ids."""
    return keys.by_entity(ref)


def schedule_key(notification_id: str, keys: ShardKeys = KEYS) -> str:
    """The schedule of the notification's shard."""
    return keys.schedule(keys.of_notification(notification_id))


def inflight_key(notification_id: str, keys: ShardKeys = KEYS) -> str:
    """The in-flight set of the notification's shard."""
    return keys.inflight(keys.of_notification(notification_id))


def due_score(redis: Any, notification_id: str, keys: ShardKeys = KEYS) -> float | None:
    """The notification's due time on its schedule (epoch seconds), None when not on it."""
    return redis.zscore(schedule_key(notification_id, keys), notification_id)


def inflight_score(redis: Any, notification_id: str, keys: ShardKeys = KEYS) -> float | None:
    """The notification's lease end in flight (epoch seconds), None when not in flight."""
    return redis.zscore(inflight_key(notification_id, keys), notification_id)


def _members(redis: Any, keys: Iterable[str]) -> list[str]:
    with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.zrange(key, 0, -1)
        return sorted(i.decode() for ids in pipe.execute() for i in ids)


def scheduled_ids(redis: Any, keys: ShardKeys = KEYS) -> list[str]:
    """Every scheduled id, over all shards, sorted."""
    return _members(redis, (keys.schedule(s) for s in keys.all()))


def inflight_ids(redis: Any, keys: ShardKeys = KEYS) -> list[str]:
    """Every id in flight, over all shards, sorted."""
    return _members(redis, (keys.inflight(s) for s in keys.all()))


def scheduled_count(redis: Any, keys: ShardKeys = KEYS) -> int:
    """How many ids are scheduled, over all shards."""
    return len(scheduled_ids(redis, keys))


def inflight_count(redis: Any, keys: ShardKeys = KEYS) -> int:
    """How many ids are in flight, over all shards."""
    return len(inflight_ids(redis, keys))


def put_on_schedule(redis: Any, due: Mapping[str, float], keys: ShardKeys = KEYS) -> None:
    """ZADD each id to its own shard's schedule at its due time (epoch seconds)."""
    for shard, ids in keys.by_shard(due).items():
        redis.zadd(keys.schedule(shard), {i: due[i] for i in ids})


def take_out_of_flight(redis: Any, ids: Iterable[str], keys: ShardKeys = KEYS) -> None:
    """ZREM each id from its shard's in-flight set (as if its send had finished)."""
    for shard, group in keys.by_shard(ids).items():
        redis.zrem(keys.inflight(shard), *group)


def notification_ids(redis: Any, pattern: str = "*") -> list[str]:
    """The ids of the notification hashes whose id matches `pattern` (a Redis glob), by
    SCAN over every shard's `n:{s}:notif:`, sorted."""
    found = (k.decode().split(":notif:", 1)[1]
             for k in redis.scan_iter(match="n:{*}:notif:" + pattern, count=1000))
    return sorted(found)


def recipient_key(notification_id: str, recipient: str, recipient_id: str,
                  keys: ShardKeys = KEYS) -> str:
    """The recipient index the notification joins: its recipient's, in its shard."""
    return keys.recipient_index_of(notification_id, recipient, recipient_id)


def recipient_ids(redis: Any, recipient: str, recipient_id: str,
                  keys: ShardKeys = KEYS) -> list[str]:
    """The ids in a recipient's indexes over every shard, by due time then id."""
    with redis.pipeline(transaction=False) as pipe:
        for key in keys.recipient_indexes(recipient, recipient_id):
            pipe.zrange(key, 0, -1, withscores=True)
        found = [(score, i.decode()) for rows in pipe.execute() for i, score in rows]
    return [i for _, i in sorted(found)]


def awaiting_key(notification_id: str, keys: ShardKeys = KEYS) -> str:
    """The index of sends awaiting a report of the notification's shard."""
    return keys.awaiting_report(keys.of_notification(notification_id))


def awaiting_scores(redis: Any, keys: ShardKeys = KEYS) -> dict[str, float]:
    """Every send awaiting a report, over all shards: id -> look-up time."""
    with redis.pipeline(transaction=False) as pipe:
        for shard in keys.all():
            pipe.zrange(keys.awaiting_report(shard), 0, -1, withscores=True)
        return {i.decode(): score for rows in pipe.execute() for i, score in rows}


def summed_hash(redis: Any, key_of: Any, keys: ShardKeys = KEYS) -> dict[str, str]:
    """A per-shard counter hash (`key_of(shard)`, e.g. `KEYS.lateness`) summed over every
    shard, decoded."""
    from notifier.ledger.notifications import sum_counts
    with redis.pipeline(transaction=False) as pipe:
        for shard in keys.all():
            pipe.hgetall(key_of(shard))
        return {k.decode(): v.decode() for k, v in sum_counts(pipe.execute()).items()}


def outbox_entries(redis: Any, keys: ShardKeys = KEYS) -> list[OutboxEntry]:
    """Every entry waiting in the webhook outboxes, over all shards, as announced
    (`outbox.announced`: the sequence unique across shards), in the order Redis made
    them (its TIME, then the sequence: one script's entries share a TIME and a shard)."""
    with redis.pipeline(transaction=False) as pipe:
        for shard in keys.all():
            pipe.lrange(keys.webhook_outbox(shard), 0, -1)
        found = pipe.execute()
    entries = [announced(keys, shard, raw)
               for shard, raws in zip(keys.all(), found, strict=True) for raw in raws]
    return sorted(entries, key=lambda e: (e.at, e.sequence))


def outbox_waiting(redis: Any, keys: ShardKeys = KEYS) -> int:
    """How many entries wait in the webhook outboxes, over all shards."""
    with redis.pipeline(transaction=False) as pipe:
        queue_waiting(pipe, keys)
        return sum(int(n) for n in pipe.execute())


# Events, turns and held sets: in their subject's shard (`ShardKeys.of_event`).
def event_key(event_id: str, subject: str | None = None, keys: ShardKeys = KEYS) -> str:
    """The hash of event `event_id` about `subject` (None: stored without one)."""
    return keys.event(keys.of_event(event_id, subject), event_id)


def stored_event_key(redis: Any, event_id: str, keys: ShardKeys = KEYS) -> str | None:
    """The hash of a stored event, found by id over every shard; None when unknown."""
    shard, _ = find_event(redis, keys, event_id)
    return None if shard is None else keys.event(shard, event_id)


def event_field(redis: Any, event_id: str, field: str, keys: ShardKeys = KEYS
                ) -> bytes | None:
    """One field of a stored event's hash, found by id; None when unknown or unset."""
    _, (value,) = find_event(redis, keys, event_id, field)
    return value


def event_keys(redis: Any) -> list[str]:
    """Every stored event's key, over all shards, sorted (SCAN)."""
    return sorted(k.decode() for k in redis.scan_iter(match="n:{*}:event:*", count=1000))


def queue_key(ref: str, keys: ShardKeys = KEYS) -> str:
    """A subject's queue of unapplied events."""
    return keys.subject_queue(ref)


def turn_key(ref: str, keys: ShardKeys = KEYS) -> str:
    """A subject's turn."""
    return keys.turn(ref)


def held_key(ref: str, keys: ShardKeys = KEYS) -> str:
    """A subject's held closes."""
    return keys.held(ref)


def turns_key(ref: str, keys: ShardKeys = KEYS) -> str:
    """The taken turns of the subject's shard."""
    return keys.turns(keys.of_ref(ref))


def pending_events(redis: Any, keys: ShardKeys = KEYS) -> list[str]:
    """Every accepted, unapplied event id, over all shards, sorted."""
    return _members(redis, (keys.events_pending(s) for s in keys.all()))


def held_events(redis: Any, keys: ShardKeys = KEYS) -> list[str]:
    """Every held event id, over all shards, sorted."""
    return _members(redis, (keys.events_held(s) for s in keys.all()))


def taken_turns(redis: Any, keys: ShardKeys = KEYS) -> list[str]:
    """Every subject whose turn is taken, over all shards, sorted."""
    return _members(redis, (keys.turns(s) for s in keys.all()))


# Records and their indexes: a record in its own ref's shard, the indexes per shard.
def record_key(ref: str, keys: ShardKeys = KEYS) -> str:
    """An entity's record (not one kept in parts: `record_part_key`)."""
    return keys.record(ref)


def record_part_key(ref: str, shard: int, keys: ShardKeys = KEYS) -> str:
    """Shard `shard`'s part of a record kept in parts (visits, a provider's queue)."""
    return keys.record_part(ref, shard)


def _union(redis: Any, names: Iterable[str]) -> set[bytes]:
    with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.smembers(name)
        return {m for found in pipe.execute() for m in found}


def phone_clients(redis: Any, phone: str, keys: ShardKeys = KEYS) -> set[bytes]:
    """The ids in every shard's set of the clients with `phone`."""
    return _union(redis, (keys.phone_clients(s, phone) for s in keys.all()))


def email_clients(redis: Any, email: str, keys: ShardKeys = KEYS) -> set[bytes]:
    """The ids in every shard's set of the clients with (normalised) `email`."""
    return _union(redis, (keys.email_clients(s, email) for s in keys.all()))


def client_entities(redis: Any, client_id: str, keys: ShardKeys = KEYS) -> set[bytes]:
    """The refs in every shard's set of a client's entities."""
    return _union(redis, (keys.client_entities(s, client_id) for s in keys.all()))


def providers(redis: Any, keys: ShardKeys = KEYS) -> set[bytes]:
    """The ids in every shard's set of providers."""
    return _union(redis, (keys.providers(s) for s in keys.all()))
