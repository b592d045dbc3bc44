"""Clocks sharing the shards of the schedule: a lease per shard (`n:{shard}:clock`).

A claim is atomic in its shard already (`notif_claim.lua`), so two clocks can never claim
one notification twice; the leases are about spreading the work, so that each shard is
claimed by one clock and several clocks each take a part of a burst. Each tick a clock
(1) beats in the heartbeat set `n:clocks` and learns how many clocks are alive (those
that beat within a lease), (2) renews the leases it holds, (3) gives up those past its
fair share, ceil(S / live clocks), and (4) takes free shards up to that share. A clock
that dies stops renewing: within a lease its shards are free, and its heartbeat gone, so
the others' fair share grows to take them. A clock that stops (`release_all`) frees its
shards at once.

Lease times are Redis's (`PX`, and `TIME` in `clock_heartbeat.lua`), not the callers':
clocks on hosts whose clocks disagree still agree on who holds what.

Errors: on the ledger's client each Redis call raises `StoreUnavailable` when Redis cannot
be reached or take commands now, and `StoreError` when it refuses one.
"""

from __future__ import annotations

import logging
import math
import random
import secrets
from typing import Any

import redis

from notifier.ledger.lua import lua_source
from notifier.ledger.shards import PREFIX, ShardKeys

log = logging.getLogger(__name__)

#: The heartbeat set: each live clock's token, scored by its last beat (Redis's ms).
CLOCKS = PREFIX + "clocks"
HEARTBEAT_LUA = lua_source("clock_heartbeat")
SHARD_LEASE_LUA = lua_source("shard_lease")
#: How long a clock's shard leases and heartbeat last without a renewal, seconds: a tick
#: renews them (four a second at the defaults), so 5 s outlasts a tick slowed by a burst
#: or a pause many times over, and a dead clock's shards wait at most this long.
SHARD_LEASE_S = 5.0


class ShardLeases:
    """One clock's leases on the shards of `keys`; `renew` each tick."""

    def __init__(self, client: redis.Redis, keys: ShardKeys, lease_s: float = SHARD_LEASE_S,
                 rng: random.Random | None = None, token: str | None = None) -> None:
        # redis-py types its replies as a sync|async union; the client here is sync.
        self.redis: Any = client
        self.keys = keys
        self.lease_ms = max(1, int(lease_s * 1000))
        self.rng = rng if rng is not None else random.Random()
        #: this clock's token, in its leases and the heartbeat set
        self.token = token if token is not None else secrets.token_hex(8)
        #: the shards this clock held after its last `renew`, ascending
        self.held: list[int] = []
        #: whether the last renewal could not read the heartbeat set (counted itself alone)
        self.alone = False
        self._beat = client.register_script(HEARTBEAT_LUA)
        self._lease = client.register_script(SHARD_LEASE_LUA)

    def renew(self) -> list[int]:
        """Beat, renew what is held, give up what is past the fair share, take free
        shards up to it; returns the shards held now, ascending. One round trip, two
        when shards change hands.

        On a cluster a master that does not answer fails only its own shards' commands:
        those shards are neither held nor taken until it answers again (a lease this
        clock held there is still its own then, until it expires, and `take` renews it),
        so the clock goes on claiming the other shards, and takes them back once they
        answer.
        With the heartbeat set's master down the count of live clocks is unknown: this
        clock then takes shards as if it were the only one, and gives the excess back once
        the count is read again. Raises `StoreUnavailable` or `StoreError` when nothing
        answers (one Redis down, or every master)."""
        with self.redis.pipeline(transaction=False) as pipe:
            self._beat(keys=[CLOCKS], args=[self.token, self.lease_ms], client=pipe)
            for shard in self.held:
                self._call(pipe, shard, "keep")
            for shard in self.keys.all():
                pipe.get(self.keys.clock_lease(shard))
            replies = pipe.execute(raise_on_error=False)
        beat = replies[0]
        if isinstance(beat, Exception):
            if len(replies) == 1 or all(isinstance(r, Exception) for r in replies[1:]):
                raise beat
            # The heartbeat set's master is down, not the others: with the count of live
            # clocks unknown, act as the only one (keep what is held, take what is free;
            # the leases still give each shard one clock), so that its shards' loss does
            # not stop the claims of every other shard.
            if not self.alone:
                log.warning("clock %s: the heartbeat set cannot be read (%s); taking "
                            "shards as if alone until it can", self.token, beat)
            self.alone, beat = True, 1
        elif self.alone:
            log.info("clock %s: the heartbeat set is read again", self.token)
            self.alone = False
        live, kept = int(beat), replies[1:1 + len(self.held)]
        holders = replies[1 + len(self.held):]
        unreachable = {s for s, holder in enumerate(holders) if isinstance(holder, Exception)}
        held = [s for s, ok in zip(self.held, kept, strict=True)
                if not isinstance(ok, Exception) and int(ok)]
        fair = math.ceil(self.keys.count / max(1, live))
        release, held = held[fair:], held[:fair]
        # A lease still this clock's but not held: kept on a master that did not answer
        # at the last renewal and is back (its lease not yet expired). `take` renews it.
        free = [s for s, holder in enumerate(holders)
                if holder is None or (holder == self.token.encode() and s not in held)]
        take = self.rng.sample(free, min(len(free), fair - len(held)))
        if release or take:
            with self.redis.pipeline(transaction=False) as pipe:
                for shard in release:
                    self._call(pipe, shard, "release")
                for shard in take:
                    self._call(pipe, shard, "take")
                taken = pipe.execute(raise_on_error=False)[len(release):]
            held += [s for s, ok in zip(take, taken, strict=True)
                     if not isinstance(ok, Exception) and int(ok)]
        if sorted(held) != self.held:
            log.info("clock %s holds %d of %d shards (%d clocks)%s", self.token, len(held),
                     self.keys.count, live,
                     f"; {len(unreachable)} shards unreachable: {sorted(unreachable)}"
                     if unreachable else "")
        self.held = sorted(held)
        return self.held

    def release_all(self) -> None:
        """Give up every lease held and leave the heartbeat set (a clock stopping), so the
        other clocks take the shards at their next tick, not a lease later."""
        with self.redis.pipeline(transaction=False) as pipe:
            for shard in self.held:
                self._call(pipe, shard, "release")
            pipe.zrem(CLOCKS, self.token)
            pipe.execute()
        self.held = []

    def _call(self, pipe: Any, shard: int, mode: str) -> None:
        self._lease(keys=[self.keys.clock_lease(shard)],
                    args=[self.token, mode, self.lease_ms], client=pipe)
