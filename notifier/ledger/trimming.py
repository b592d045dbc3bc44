"""Trimming the indexes of notification ids, and retiring notifications past the
retention, on the clock: not when an index is read or grows.

The indexes that hold notification ids, `n:by-recipient:{to}:{to_id}` (the read API's, by
due time) and `n:{shard}:by-entity:{ref}` (what a plan cancels), each expire as a whole
some time after their last add (`notif_add.lua`). An index that keeps being added to would still
keep, for ever, the ids of notifications whose hashes expired long ago: a client's
follow-up index gains ids with every completed visit. `IndexTrimmer.run` walks the
keyspace a page at a time (SCAN, so Redis is never blocked) and, per index, drops the ids
whose hash is gone; in a recipient's index, each notification due before the retention's
start (`NOTIFIER_RETENTION_DAYS`) that has ended is retired, its hash cut down to a
content-free row kept `history_s` more (`NOTIFIER_HISTORY_DAYS`), and leaves the index
(`index_trim.lua`). The clock calls it every `trim_every_s` with the cursor where the last
run stopped, so each run does a bounded amount of work and a whole pass takes as many runs
as the keyspace needs.

Why a content-free row rather than nothing: a notification id is its dedupe key, and a
notification whose hash exists (in any state but `cancelled`) is never planned again
(`notif_add.lua`); the row keeps that true, and the outcome and times countable, for as
long as it is kept, at a fraction of the bytes (`tests/ledger/test_trimming.py` measures
both with MEMORY USAGE). A hash's own expiry (retention + history from when it ended) is
the backstop should the clock not run.

The script is given one shard's notification keys a call: an entity's index and its ids
are in the entity's shard; a recipient's index (not sharded yet) is trimmed by one call per
shard its ids are in.

The other sets of ids (each shard's schedule and in-flight set) hold only pending
notifications and are emptied by the clock as they are sent; `n:{s}:phone-clients:{phone}`
holds client ids, whose records are kept (see the README's key table).

Errors: on the ledger's client each Redis call raises `StoreUnavailable` when Redis cannot
be reached or take commands now, and `StoreError` when it refuses one.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis

from notifier.ledger.client import store_errors
from notifier.ledger.lua import lua_source
from notifier.ledger.notifications import PREFIX, RECIPIENT_INDEXES, epoch
from notifier.ledger.shards import ShardKeys

INDEX_TRIM_LUA = lua_source("index_trim")
#: Keys SCAN is asked to look at per page (a hint: Redis may return more or fewer).
SCAN_PAGE = 1000
#: What stands, in an entity's index, for the ids the trimming dropped from it: read as a
#: notification no longer on record (`index_trim.lua` says why). No notification id is it.
GONE_MARKER = "~"
#: Ids of one index looked at per run: a recipient's index holds at most the retention's
#: worth (the support team's is the largest), an entity's a few dozen.
IDS_PER_INDEX = 1000
#: An entity's index, `n:{shard}:by-entity:{ref}`: the ref is group 1.
ENTITY_INDEX = re.compile(r"^n:\{\d+\}:by-entity:(.+)$")


@dataclass(frozen=True)
class TrimRun:
    """What one run did: where to go on from (`cursor`, 0 when the pass over the keyspace
    is complete), the indexes looked at, the ids removed from them, and the notifications
    retired."""

    cursor: int
    indexes: int
    removed: int
    retired: int = 0


class IndexTrimmer:
    """Trims the notification indexes, a bounded slice of the keyspace per run."""

    def __init__(self, client: redis.Redis, keep_finished_s: int, history_s: int = 0, *,
                 keys: ShardKeys) -> None:
        # redis-py types its replies as a sync|async union; the client here is sync.
        self.redis: Any = client
        #: the shard count and the keys built with it (`notifier.ledger.shards`)
        self.keys = keys
        #: the retention, seconds: a notification due longer ago than this is retired
        self.keep_finished_s = keep_finished_s
        #: how long a retired notification's content-free row is kept, seconds
        self.history_s = history_s
        self._trim = client.register_script(INDEX_TRIM_LUA)

    def run(self, now: datetime, cursor: int = 0, pages: int = 10) -> TrimRun:
        """Look at up to `pages` SCAN pages of keys from `cursor` and trim each index found
        on them: three round trips per page (SCAN, the ids of its indexes, the scripts).
        Returns where the next run starts (0: the pass is complete; pass it back)."""
        indexes = removed = retired = 0
        for _ in range(pages):
            # `n:by-recipient:…` and `n:{shard}:by-entity:…` in one pattern; matched
            # exactly below (a notification's key may hold `by-` in its id)
            cursor, keys = self.redis.scan(cursor, match=PREFIX + "*by-*", count=SCAN_PAGE)
            found = [k.decode() for k in keys if k.startswith(RECIPIENT_INDEXES.encode())
                     or ENTITY_INDEX.match(k.decode())]
            indexes += len(found)
            dropped, ended = self._trim_indexes(found, now)
            removed, retired = removed + dropped, retired + ended
            if cursor == 0:
                break
        return TrimRun(cursor=int(cursor), indexes=indexes, removed=removed, retired=retired)

    def _trim_indexes(self, keys: list[str], now: datetime) -> tuple[int, int]:
        if not keys:
            return 0, 0
        with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                # Oldest due first in a recipient's index: those past the retention are at
                # the front. An entity's index is a sorted set or a set: both are asked,
                # and the one of the wrong type answers WRONGTYPE. Not `SORT BY nosort`
                # (one command for either, as readers use): Redis refuses SORT over
                # `maxmemory`, and this is the job that frees memory.
                pipe.zrange(key, 0, IDS_PER_INDEX - 1)
                if not key.startswith(RECIPIENT_INDEXES):
                    pipe.srandmember(key, IDS_PER_INDEX)
            replies = iter(pipe.execute(raise_on_error=False))
        members = []
        for key in keys:
            found = next(replies)
            if not key.startswith(RECIPIENT_INDEXES):
                as_set = next(replies)
                found = as_set if isinstance(found, Exception) else found
            if isinstance(found, Exception):
                with store_errors():  # as `StoreError`, like every other Redis refusal
                    raise found
            members.append(found)
        start = epoch(now) - self.keep_finished_s
        with self.redis.pipeline(transaction=False) as pipe:
            for key, ids in zip(keys, members, strict=True):
                for shard, decoded in self._by_shard(key, [i.decode() for i in ids]):
                    cutoff = start if key.startswith(RECIPIENT_INDEXES) else ""
                    self._trim(keys=[key, *(self.keys.tag(shard) + "notif:" + i
                                            for i in decoded)],
                               args=[cutoff, math.floor(epoch(now)), self.history_s,
                                     *decoded],
                               client=pipe)
            replies = pipe.execute()
        return (sum(int(r[0]) for r in replies), sum(int(r[1]) for r in replies))

    def _by_shard(self, key: str, ids: list[str]) -> list[tuple[int, list[str]]]:
        """The script calls for one index: (shard, ids). An entity's index is one call in
        its entity's shard, which holds every id it lists (and the `~` marker, which is
        no id); a recipient's, one call per shard its ids are in."""
        entity = ENTITY_INDEX.match(key)
        if entity is not None:
            return [(self.keys.of_ref(entity.group(1)), ids)]
        return sorted(self.keys.by_shard(ids).items()) or [(0, [])]
