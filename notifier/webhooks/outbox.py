"""Delivery-webhook messages in Redis: the outboxes, their fan-out to the endpoints, and
each message's attempts. Keys:

- `n:{s}:wh:outbox` (a list of JSON entries) and `n:{s}:wh:seq` (their counter), one pair
  per ledger shard (`ShardKeys.webhook_outbox`): written by the scripts that make the
  changes (`ledger/lua/_webhook_emit.lua`), or in the caller's transaction
  (`notifier.ledger.announcements`), in the shard of what changed; the clock fans each
  shard's outbox out (`WebhookOutbox.fan_out`). An entry numbered n in shard s is
  announced with `data.sequence` n x S + s (`ShardKeys.announced_sequence`);
- under one hash tag per endpoint, `n:wh:{endpoint}:` (so each endpoint's scripts name
  keys of one slot, on a Redis Cluster too):
  - `msg:{message id}`: a message to the endpoint, a hash: `body` (the JSON exactly as
    signed), `type`, `created`, `state` (`pending`, `delivered`, `failed`), `attempts`,
    and the last attempt's `last_at`, `last_status`, `last_error`; kept `KEEP_S` after it
    was made, so that `replay` can send it again;
  - `due` (ids by when the next attempt is due), `inflight` (ids being sent, by lease
    end), `pending` (ids not yet ended, by when made: the age of the oldest), `log` (every
    id kept, by when made: what `replay` reads);
  - `ep`: the endpoint's counts (`delivered`, `failed`, `retried`) and health
    (`failing_since`, `disabled_at`).

The fan-out cannot be one script (a shard's outbox and every endpoint's keys are in many
slots), so it is two steps, each idempotent: the endpoints' messages are added, one
script per endpoint and shard that adds only a message not there yet (`webhook_add.lua`;
ids come from the entries), then the shard's outbox is trimmed if its head is still the
entry read (`webhook_trim.lua`). A crash (or another clock) between the two fans the same
entries out again, and that adds nothing twice.

Errors: each Redis call raises `StoreUnavailable` or `StoreError` as the ledger's do.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import redis

from notifier.ledger.lua import lua_source
from notifier.ledger.notifications import PREFIX, epoch, from_epoch
from notifier.ledger.shards import ShardKeys
from notifier.webhooks.catalogue import OutboxEntry, parse_entry
from notifier.webhooks.retries import DISABLE_AFTER_S, endpoints_fault

if TYPE_CHECKING:
    from notifier.webhooks.endpoints import Endpoint

log = logging.getLogger(__name__)

WEBHOOKS = PREFIX + "wh:"
#: How long a message is kept after it was made, seconds: past the retry schedule's 27.6
#: hours and the 5 days after which a failing endpoint is disabled, with a week left to
#: fix it and replay (`notifier webhooks replay --since`).
KEEP_S = 14 * 24 * 3600
#: How many entries of one shard's outbox one fan-out round takes.
FAN_OUT_BATCH = 200

ADD_LUA = lua_source("webhook_add")
TRIM_LUA = lua_source("webhook_trim")
CLAIM_LUA = lua_source("webhook_claim")
FINISH_LUA = lua_source("webhook_finish")


def endpoint_tag(endpoint: str) -> str:
    """The prefix of an endpoint's keys, `n:wh:{ehr}:`: its hash tag is the endpoint's
    name (`[a-z0-9][a-z0-9_-]*`, no braces), so they are all in one slot."""
    return f"{WEBHOOKS}{{{endpoint}}}:"


def message_key(endpoint: str, message_id: str) -> str:
    return f"{endpoint_tag(endpoint)}msg:{message_id}"


def due_key(endpoint: str) -> str:
    return endpoint_tag(endpoint) + "due"


def inflight_key(endpoint: str) -> str:
    return endpoint_tag(endpoint) + "inflight"


def pending_key(endpoint: str) -> str:
    return endpoint_tag(endpoint) + "pending"


def log_key(endpoint: str) -> str:
    return endpoint_tag(endpoint) + "log"


def endpoint_key(endpoint: str) -> str:
    return endpoint_tag(endpoint) + "ep"


def announced(keys: ShardKeys, shard: int, raw: bytes | str) -> OutboxEntry:
    """The entry `raw` of `shard`'s outbox as announced: its sequence is the shard's
    counter made unique across shards (`ShardKeys.announced_sequence`). Raises
    ValueError for an entry that does not parse (`parse_entry`)."""
    entry = parse_entry(raw)
    return dataclasses.replace(entry, sequence=keys.announced_sequence(entry.sequence, shard))


def queue_waiting(pipe: Any, keys: ShardKeys) -> None:
    """Queue on `pipe` the length of every shard's outbox, S replies: their sum is how
    many changes wait to be fanned out."""
    for shard in keys.all():
        pipe.llen(keys.webhook_outbox(shard))


@dataclass(frozen=True)
class Message:
    """A message claimed for sending: its id (`webhook-id`), its body as signed, how many
    attempts were made before this one."""

    id: str
    body: str
    attempts: int


@dataclass(frozen=True)
class EndpointStatus:
    """An endpoint's figures for /metrics and `notifier webhooks list`: messages
    delivered and failed (given up) since the data began, attempts retried, messages
    waiting for a retry's time, pending, the age of the oldest pending one (seconds, 0
    for none), and when it was disabled (None: it is not)."""

    name: str
    delivered: int
    failed: int
    retried: int
    retrying: int
    pending: int
    oldest_pending_s: float
    disabled_at: datetime | None


class WebhookOutbox:
    """The outboxes and the messages of every endpoint; one instance per process."""

    def __init__(self, client: redis.Redis, endpoints: Sequence[Endpoint],
                 keys: ShardKeys) -> None:
        """`keys`: the ledger's shard keys (which outboxes there are)."""
        # redis-py types its replies as a sync|async union; the client here is sync.
        self.redis: Any = client
        self.endpoints = tuple(endpoints)
        self.keys = keys
        self._add = client.register_script(ADD_LUA)
        self._trim = client.register_script(TRIM_LUA)
        self._claim = client.register_script(CLAIM_LUA)
        self._finish = client.register_script(FINISH_LUA)

    def fan_out(self, now: datetime, batch: int = FAN_OUT_BATCH,
                shards: Iterable[int] | None = None) -> int:
        """`fan_out_round` of `shards` (default: every shard); returns how many entries
        left the outboxes (0: they are empty, or another clock took them first)."""
        chosen = list(self.keys.all() if shards is None else shards)
        return sum(self.fan_out_round(now, chosen, batch).values())

    def fan_out_round(self, now: datetime, shards: list[int], batch: int = FAN_OUT_BATCH
                      ) -> dict[int, int]:
        """One round: up to `batch` entries from the head of the outbox of each of
        `shards` become messages for the endpoints that want them (an entry no endpoint
        wants just leaves), then leave their outbox. Returns, per shard that had entries,
        how many left (0 for those another clock trimmed first). Three round trips: the
        reads, the adds, the trims. An entry that does not parse is logged and dropped: it
        would otherwise stop its outbox for good."""
        with self.redis.pipeline(transaction=False) as pipe:
            for shard in shards:
                pipe.lrange(self.keys.webhook_outbox(shard), 0, batch - 1)
            heads = pipe.execute()
        read = [(shard, raw) for shard, raw in zip(shards, heads, strict=True) if raw]
        if not read:
            return {}
        self.add_messages(now, read)
        return self.trim_outboxes(read)

    def add_messages(self, now: datetime, read: list[tuple[int, list[bytes]]]) -> int:
        """The fan-out's first step: the messages of the entries `read` (per shard, as
        read from the head of its outbox) added for every endpoint that wants them, one
        `webhook_add.lua` per endpoint and shard, in one round trip; returns how many were
        new (a message already there is left as it is)."""
        calls: list[tuple[list[str], list[Any]]] = []
        for shard, raw in read:
            entries = list(_parsed(self.keys, shard, raw))
            bodies = {e.message_id: json.dumps(e.payload(), separators=(",", ":"))
                      for e in entries}
            for endpoint in self.endpoints:
                wanted = [e for e in entries if endpoint.wants(e.type)]
                if not wanted:
                    continue
                name = endpoint.name
                keys = [due_key(name), log_key(name), pending_key(name), endpoint_key(name)]
                args: list[Any] = [epoch(now), KEEP_S]
                for entry in wanted:
                    keys.append(message_key(name, entry.message_id))
                    args += [entry.message_id, bodies[entry.message_id], entry.type]
                calls.append((keys, args))
        if not calls:
            return 0
        with self.redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                self._add(keys=keys, args=args, client=pipe)
            return sum(int(n) for n in pipe.execute())

    def trim_outboxes(self, read: list[tuple[int, list[bytes]]]) -> dict[int, int]:
        """The fan-out's second step: each shard's entries `read` leave its outbox, if its
        head is still the first of them (`webhook_trim.lua`), in one round trip; returns
        how many left, per shard."""
        with self.redis.pipeline(transaction=False) as pipe:
            for shard, raw in read:
                self._trim(keys=[self.keys.webhook_outbox(shard)], args=[len(raw), raw[0]],
                           client=pipe)
            return {shard: int(n) for (shard, _), n in zip(read, pipe.execute(), strict=True)}

    def waiting(self) -> int:
        """How many entries wait in the outboxes, summed over the shards (one round
        trip)."""
        with self.redis.pipeline(transaction=False) as pipe:
            queue_waiting(pipe, self.keys)
            return sum(int(n) for n in pipe.execute())

    def claim(self, endpoint: Endpoint, now: datetime, lease_s: float,
              limit: int = 1) -> list[Message]:
        """Claim up to `limit` of `endpoint`'s due messages, leased for `lease_s` seconds,
        within its `max_in_flight`; none while it is disabled. A message no longer kept
        (its hash expired) is dropped from the endpoint's sets rather than returned."""
        ids = [i.decode() for i in self._claim(
            keys=[due_key(endpoint.name), inflight_key(endpoint.name),
                  endpoint_key(endpoint.name)],
            args=[epoch(now), epoch(now) + lease_s, endpoint.max_in_flight, limit])]
        if not ids:
            return []
        with self.redis.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.hmget(message_key(endpoint.name, i), "body", "attempts")
            found = pipe.execute()
        claimed = []
        for i, (body, attempts) in zip(ids, found, strict=True):
            if body is None:
                self.finish(endpoint, i, "failed", now, error="no longer kept")
                continue
            claimed.append(Message(i, body.decode(), int(attempts or 0)))
        return claimed

    def finish(self, endpoint: Endpoint, message_id: str, outcome: str, now: datetime, *,
               next_at: datetime | None = None, status: int | None = None,
               error: str = "", disable_after_s: float = DISABLE_AFTER_S) -> int:
        """Record an attempt's `outcome` (`delivered`, `retry` due at `next_at`, or
        `failed`) after HTTP `status` (None: no answer); returns 0 when the message was no
        longer pending, 1 when recorded, 2 when recorded and the endpoint disabled by it:
        it has failed (no answer, 429, 5xx; a 4xx is not the endpoint's failure) with no
        success since `disable_after_s` seconds ago (`webhook_finish.lua`)."""
        return int(self._finish(
            keys=[message_key(endpoint.name, message_id), due_key(endpoint.name),
                  inflight_key(endpoint.name), endpoint_key(endpoint.name),
                  pending_key(endpoint.name)],
            args=[message_id, outcome, epoch(now), "" if next_at is None else epoch(next_at),
                  "" if status is None else status, error[:200], disable_after_s,
                  "1" if endpoints_fault(status) else "0"]))

    def statuses(self, now: datetime) -> list[EndpointStatus]:
        """Every configured endpoint's figures, in one round trip."""
        with self.redis.pipeline(transaction=False) as pipe:
            for e in self.endpoints:
                pipe.hgetall(endpoint_key(e.name))
                pipe.zcount(due_key(e.name), f"({epoch(now)}", "+inf")
                pipe.zcard(pending_key(e.name))
                pipe.zrange(pending_key(e.name), 0, 0, withscores=True)
            replies = pipe.execute()
        statuses = []
        for n, e in enumerate(self.endpoints):
            counts, retrying, pending, oldest = replies[4 * n:4 * n + 4]
            fields = {k.decode(): v.decode() for k, v in counts.items()}
            disabled = fields.get("disabled_at")
            statuses.append(EndpointStatus(
                name=e.name, delivered=int(fields.get("delivered", 0)),
                failed=int(fields.get("failed", 0)), retried=int(fields.get("retried", 0)),
                retrying=int(retrying), pending=int(pending),
                oldest_pending_s=max(0.0, epoch(now) - oldest[0][1]) if oldest else 0.0,
                disabled_at=None if disabled is None else from_epoch(disabled)))
        return statuses

    def replay(self, endpoint: Endpoint, since: datetime, now: datetime) -> int:
        """Enable `endpoint` again and make every message to it made since `since` that
        ended `failed` pending again, due now, with its attempts from zero and kept
        `KEEP_S` from now (the same `webhook-id`, so a receiver that had it dedupes it);
        returns how many."""
        ids = [i.decode() for i in self.redis.zrangebyscore(
            log_key(endpoint.name), epoch(since), "+inf")]
        with self.redis.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.hmget(message_key(endpoint.name, i), "state", "created")
            found = pipe.execute()
        again = [(i, float(created)) for i, (state, created) in zip(ids, found, strict=True)
                 if state == b"failed"]
        with self.redis.pipeline() as pipe:
            pipe.hdel(endpoint_key(endpoint.name), "disabled_at", "failing_since")
            for i, created in again:
                pipe.hset(message_key(endpoint.name, i),
                          mapping={"state": "pending", "attempts": 0})
                pipe.hdel(message_key(endpoint.name, i), "ended")
                pipe.expire(message_key(endpoint.name, i), KEEP_S)
                pipe.zadd(due_key(endpoint.name), {i: epoch(now)})
                pipe.zadd(pending_key(endpoint.name), {i: created})
            pipe.execute()
        return len(again)

    def unconfigured(self) -> dict[str, int]:
        """Endpoints with messages still pending in Redis that are no longer configured
        (renamed or removed: a name is an endpoint's identity), with how many: nothing
        sends those. One SCAN of `pending:*` keys."""
        names = {e.name for e in self.endpoints}
        # `n:wh:{NAME}:pending`: the name is what stands for "" in `pending_key("")`.
        head, tail = pending_key("").split("{}")
        found = {key.decode()[len(head) + 1:-len(tail) - 1]: key
                 for key in self.redis.scan_iter(match=pending_key("*"), count=1000)}
        left = sorted(name for name in found if name not in names)
        with self.redis.pipeline(transaction=False) as pipe:
            for name in left:
                pipe.zcard(found[name])
            counts = pipe.execute()
        return {name: int(n) for name, n in zip(left, counts, strict=True) if n}

    def trim(self, now: datetime) -> None:
        """Drop ids of messages no longer kept from each endpoint's log and pending set."""
        cutoff = f"({epoch(now) - KEEP_S}"
        with self.redis.pipeline(transaction=False) as pipe:
            for e in self.endpoints:
                pipe.zremrangebyscore(log_key(e.name), "-inf", cutoff)
                pipe.zremrangebyscore(pending_key(e.name), "-inf", cutoff)
            pipe.execute()


def _parsed(keys: ShardKeys, shard: int, raw: Iterable[bytes]) -> Iterable[OutboxEntry]:
    for item in raw:
        try:
            yield announced(keys, shard, item)
        except ValueError:
            log.exception("webhook outbox: dropping an entry of shard %d that does not parse",
                          shard)
