"""Delivery-webhook messages in Redis: the outbox, its fan-out to the endpoints, and each
message's attempts. Keys (under `n:wh:`):

- `outbox` (a list of JSON entries) and `seq` (their sequence): written by the scripts
  that make the changes (`ledger/lua/_webhook_emit.lua`), or in the caller's transaction
  (`notifier.ledger.announcements`); the clock fans the outbox out
  (`WebhookOutbox.fan_out`);
- `msg:{endpoint}:{message id}`: a message to one endpoint, a hash: `body` (the JSON
  exactly as signed), `type`, `created`, `state` (`pending`, `delivered`, `failed`),
  `attempts`, and the last attempt's `last_at`, `last_status`, `last_error`; kept
  `KEEP_S` after it was made, so that `replay` can send it again;
- `due:{endpoint}` (ids by when the next attempt is due), `inflight:{endpoint}` (ids being
  sent, by lease end), `pending:{endpoint}` (ids not yet ended, by when made: the age of
  the oldest), `log:{endpoint}` (every id kept, by when made: what `replay` reads);
- `ep:{endpoint}`: the endpoint's counts (`delivered`, `failed`, `retried`) and health
  (`failing_since`, `disabled_at`).

Errors: each Redis call raises `StoreUnavailable` or `StoreError` as the ledger's do.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import redis

from notifier.ledger.lua import lua_source
from notifier.ledger.notifications import PREFIX, WEBHOOK_OUTBOX, epoch, from_epoch
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
#: How many outbox entries one fan-out takes.
FAN_OUT_BATCH = 200

FANOUT_LUA = lua_source("webhook_fanout")
CLAIM_LUA = lua_source("webhook_claim")
FINISH_LUA = lua_source("webhook_finish")


def message_key(endpoint: str, message_id: str) -> str:
    return f"{WEBHOOKS}msg:{endpoint}:{message_id}"


def due_key(endpoint: str) -> str:
    return f"{WEBHOOKS}due:{endpoint}"


def inflight_key(endpoint: str) -> str:
    return f"{WEBHOOKS}inflight:{endpoint}"


def pending_key(endpoint: str) -> str:
    return f"{WEBHOOKS}pending:{endpoint}"


def log_key(endpoint: str) -> str:
    return f"{WEBHOOKS}log:{endpoint}"


def endpoint_key(endpoint: str) -> str:
    return f"{WEBHOOKS}ep:{endpoint}"


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
    """The outbox and the messages of every endpoint; one instance per process."""

    def __init__(self, client: redis.Redis, endpoints: Sequence[Endpoint]) -> None:
        # redis-py types its replies as a sync|async union; the client here is sync.
        self.redis: Any = client
        self.endpoints = tuple(endpoints)
        self._fanout = client.register_script(FANOUT_LUA)
        self._claim = client.register_script(CLAIM_LUA)
        self._finish = client.register_script(FINISH_LUA)

    def fan_out(self, now: datetime, batch: int = FAN_OUT_BATCH) -> int:
        """Move up to `batch` outbox entries into messages for the endpoints that want
        them (an entry no endpoint wants just leaves); returns how many entries left the
        outbox (0 when another clock fanned the same ones out first). An entry that does
        not parse is logged and dropped: it would otherwise stop the outbox for good."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.lrange(WEBHOOK_OUTBOX, 0, batch - 1)
            for endpoint in self.endpoints:
                pipe.hexists(endpoint_key(endpoint.name), "disabled_at")
            raw, *disabled = pipe.execute()
        if not raw:
            return 0
        keys: list[str] = [WEBHOOK_OUTBOX]
        args: list[Any] = [len(raw), raw[0], epoch(now), KEEP_S]
        for entry in _parsed(raw):
            body = json.dumps(entry.payload(), separators=(",", ":"))
            for endpoint, off in zip(self.endpoints, disabled, strict=True):
                if endpoint.wants(entry.type):
                    keys += [message_key(endpoint.name, entry.message_id),
                             due_key(endpoint.name), log_key(endpoint.name),
                             pending_key(endpoint.name), endpoint_key(endpoint.name)]
                    args += [entry.message_id, body, "0" if off else "1", entry.type]
        return len(raw) if self._fanout(keys=keys, args=args) else 0

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
        found = {key.decode().removeprefix(pending_key("")): key
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


def _parsed(raw: Iterable[bytes]) -> Iterable[OutboxEntry]:
    for item in raw:
        try:
            yield parse_entry(item)
        except ValueError:
            log.exception("webhook outbox: dropping an entry that does not parse")
