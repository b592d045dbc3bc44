"""The ledger's sharded keys as tests read them: a notification's hash, an entity's index,
the schedule and in-flight sets and the webhook outboxes over every shard, at the count a plain
`Store(redis_client)` uses (`DEFAULT_SHARDS`) unless a test passes its own `ShardKeys`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

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
