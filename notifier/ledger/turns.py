"""Per-subject event queues and turns in Redis: one worker at a time applies the events
about one subject, oldest `occurred_at` first.

Keys (a subject is an entity ref such as `appointment:apt-1`; each key is in the shard of
its subject, `n:{s}:`, `notifier.ledger.shards.ShardKeys`, so a turn's script and an
event's transaction are on one slot):

- `n:{s}:subject-queue:{ref}`: sorted set of the subject's accepted, unapplied events,
  scored by `occurred_at` (epoch seconds). Members are `{arrival µs:016d}:{event id}`, so
  events with the same `occurred_at` are applied in the order they arrived.
- `n:{s}:turn:{ref}`: the token of the worker whose turn it is, expiring after the lease.
- `n:{s}:turns`: sorted set of the shard's subjects whose turn is taken, scored by lease
  expiry; the clock's sweep re-enqueues the queue of a subject whose holder died
  (`expired`, shard by shard), once its turn key has expired.
- `n:{s}:held:{ref}`: sorted set of closes waiting for the subject's opening event (same
  members and scores as the queue); `n:{s}:events:held`: the shard's held event ids
  scored by the end of the wait.

Why a queue and a turn rather than dramatiq's ordering: dramatiq delivers messages to any
thread in any order and redelivers a dead worker's messages late; ordering by `occurred_at`
needs to see every accepted event of the subject at once, and a lease survives a worker
killed mid-apply. Taking the turn is one `SET NX`; passing to the next event and giving
the turn back are one script, which gives the turn back only when the queue is empty, so an
event queued while the holder finishes is never stranded.

Errors: on the ledger's client (`notifier.ledger.client`, as `Store` builds every part) each
Redis call raises `StoreUnavailable` when Redis cannot be reached or cannot take commands
now, and `StoreError` when it refuses one (a script error, `WRONGTYPE`); the docstrings
below name only the errors of their own.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import redis

from notifier.ledger.batch import Batch, Reply
from notifier.ledger.lua import lua_source
from notifier.ledger.notifications import epoch
from notifier.ledger.shards import ShardKeys


def queue_member(event_id: str, arrived_at: datetime) -> str:
    """The queue member of an event: its arrival in microseconds since the epoch (16 digits)
    and its id, so equal scores keep arrival order."""
    return f"{int(epoch(arrived_at) * 1_000_000):016d}:{event_id}"


def member_event_id(member: str) -> str:
    """The event id of a queue member (`queue_member`'s inverse)."""
    return member.split(":", 1)[1]


# The scripts of turns; each documents its KEYS and ARGV at its top.
TAKE_LUA = lua_source("turn_take")
NEXT_LUA = lua_source("turn_next")
RELEASE_LUA = lua_source("turn_release")
EXPIRED_LUA = lua_source("turn_expired")


class Turns:
    """The Lua-backed turns of subjects; one instance per process."""

    def __init__(self, client: redis.Redis, keys: ShardKeys) -> None:
        # redis-py types its replies as a sync|async union; the client here is sync.
        self.redis: Any = client
        #: the shard count and the keys built with it (`notifier.ledger.shards`)
        self.keys = keys
        self._take = client.register_script(TAKE_LUA)
        self._next = client.register_script(NEXT_LUA)
        self._release = client.register_script(RELEASE_LUA)
        self._expired = client.register_script(EXPIRED_LUA)

    def take(self, ref: str, token: str, now: datetime, lease_s: float) -> bool:
        """Take `ref`'s turn for `lease_s` seconds; False when another worker has it."""
        return bool(self._take(keys=self._turn_keys(ref),
                               args=[token, int(lease_s * 1000), epoch(now) + lease_s, ref]))

    def take_first(self, ref: str, token: str, now: datetime, lease_s: float) -> str | None:
        """Take `ref`'s turn and return its first event's id, in one round trip (`take`,
        then `next`, pipelined); None when another worker has the turn, or when the queue
        is empty (the turn is then given back at once)."""
        with self.redis.pipeline(transaction=False) as pipe:
            self._take(keys=self._turn_keys(ref),
                       args=[token, int(lease_s * 1000), epoch(now) + lease_s, ref],
                       client=pipe)
            self._next(keys=self._next_keys(ref),
                       args=[token, int(lease_s * 1000), epoch(now) + lease_s, ref],
                       client=pipe)
            _, member = pipe.execute()
        return member_event_id(member.decode()) if member else None

    def next(self, ref: str, token: str, now: datetime, lease_s: float) -> str | None:
        """The id of the next event to apply in this turn, oldest first, renewing the lease;
        None when the queue is empty (the turn is then given back) or the turn was lost."""
        member = self._next(keys=self._next_keys(ref),
                            args=[token, int(lease_s * 1000), epoch(now) + lease_s, ref])
        return member_event_id(member.decode()) if member else None

    def release(self, ref: str, token: str) -> None:
        """Give the turn back early (applying failed; the message's retry takes it again)."""
        self._release(keys=self._turn_keys(ref), args=[token, ref])

    def expired(self, now: datetime, limit: int = 500,
                shards: Iterable[int] | None = None) -> list[str]:
        """Subjects whose turn's lease ran out (the holder died) and whose turn key is gone,
        at most `limit` per shard, in `shards` (every shard when None); one whose key still
        holds is looked at again when it expires. One round trip for the candidates of
        every shard, then one script per shard that has any."""
        walked = list(self.keys.all() if shards is None else shards)
        with self.redis.pipeline(transaction=False) as pipe:
            for shard in walked:
                pipe.zrangebyscore(self.keys.turns(shard), "-inf", epoch(now), 0, limit)
            found = pipe.execute()
        expired: list[str] = []
        for shard, refs in zip(walked, found, strict=True):
            candidates = [r.decode() for r in refs]
            if candidates:
                gone = self._expired(
                    keys=[self.keys.turns(shard), *(self.keys.turn(r) for r in candidates)],
                    args=[epoch(now), *candidates])
                expired += [r.decode() for r in gone]
        return expired

    def _turn_keys(self, ref: str) -> list[str]:
        """KEYS of `turn_take.lua` and `turn_release.lua` for subject `ref`."""
        return [self.keys.turn(ref), self.keys.turns(self.keys.of_ref(ref))]

    def _next_keys(self, ref: str) -> list[str]:
        """KEYS of `turn_next.lua` for subject `ref`."""
        return [self.keys.turn(ref), self.keys.subject_queue(ref),
                self.keys.turns(self.keys.of_ref(ref))]

    def heads(self, refs: list[str]) -> list[str]:
        """The oldest queued event id of each subject that has one (one round trip)."""
        with self.redis.pipeline(transaction=False) as pipe:
            for ref in refs:
                pipe.zrange(self.keys.subject_queue(ref), 0, 0)
            heads = pipe.execute()
        return [member_event_id(h[0].decode()) for h in heads if h]

    def unapplied_about(self, refs: list[str]) -> bool:
        """Whether any of these subjects has an accepted event not yet applied (one round
        trip: one EXISTS per shard among them)."""
        if not refs:
            return False
        with self.redis.pipeline(transaction=False) as pipe:
            for group in self.keys.refs_by_shard(refs).values():
                pipe.exists(*(self.keys.subject_queue(r) for r in group))
            return any(pipe.execute())

    def queue_unapplied_about(self, batch: Batch, refs: list[str]) -> Reply[bool]:
        """`unapplied_about`, queued on `batch` (nothing queued for no subjects)."""
        replies = [batch.call("exists", *(self.keys.subject_queue(r) for r in group),
                              parse=bool)
                   for group in self.keys.refs_by_shard(refs).values()]
        return Reply(lambda: any(r.get() for r in replies))
