"""Trimming the indexes of notification ids, and retiring notifications past the
retention, on the clock: not when an index is read or grows.

The indexes that hold notification ids, `n:{shard}:by-recipient:{to}:{to_id}` (the read
API's, by due time, a recipient's notifications in one shard) and
`n:{shard}:by-entity:{ref}` (what a plan cancels), each expire as a whole some time after
their last add (`notif_add.lua`). An index that keeps being added to would still keep, for
ever, the ids of notifications whose hashes expired long ago: a client's follow-up index
gains ids with every completed visit. `IndexTrimmer.run` walks the keyspace a page at a time
(SCAN, so Redis is never blocked) and, per index, drops the ids whose hash is gone; in a
recipient's index, each notification due before the retention's start
(`NOTIFIER_RETENTION_DAYS`) that has ended is retired, its hash cut down to a content-free
row kept `history_s` more (`NOTIFIER_HISTORY_DAYS`), and leaves the index
(`index_trim.lua`). The clock calls it every `trim_every_s` with the cursor where the last
run stopped, so each run does a bounded amount of work and a whole pass takes as many runs
as the keyspace needs.

Why a content-free row rather than nothing: a notification id is its dedupe key, and a
notification whose hash exists (in any state but `cancelled`) is never planned again
(`notif_add.lua`); the row keeps that true, and the outcome and times countable, for as
long as it is kept, at a fraction of the bytes (`tests/ledger/test_trimming.py` measures
both with MEMORY USAGE). A hash's own expiry (retention + history from when it ended) is
the backstop should the clock not run.

The script is given one shard's keys a call: every index is in one shard (its tag) and
holds only that shard's ids (an entity's ids are in the entity's shard, and a recipient's
index is kept per shard: `ShardKeys.by_recipient`), so one call trims one index.

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
from redis.cluster import RedisCluster

from notifier.ledger.client import store_errors
from notifier.ledger.lua import lua_source
from notifier.ledger.notifications import PREFIX, epoch
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
#: An index of notification ids, `n:{shard}:by-entity:{ref}` or
#: `n:{shard}:by-recipient:{to}:{to_id}`: group 1 is the shard, group 2 which index.
INDEX = re.compile(r"^n:\{(\d+)\}:by-(entity|recipient):.+$")


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
            # `n:{shard}:by-recipient:…` and `n:{shard}:by-entity:…` in one pattern;
            # matched exactly below (a notification's key may hold `by-` in its id)
            cursor, keys = scan_page(self.redis, cursor, PREFIX + "*by-*", SCAN_PAGE)
            found = [k.decode() for k in keys if INDEX.match(k.decode())]
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
                if not _is_recipients(key):
                    pipe.srandmember(key, IDS_PER_INDEX)
            replies = iter(pipe.execute(raise_on_error=False))
        members = []
        for key in keys:
            found = next(replies)
            if not _is_recipients(key):
                as_set = next(replies)
                found = as_set if isinstance(found, Exception) else found
            if isinstance(found, Exception):
                with store_errors():  # as `StoreError`, like every other Redis refusal
                    raise found
            members.append(found)
        start = epoch(now) - self.keep_finished_s
        with self.redis.pipeline(transaction=False) as pipe:
            for key, ids in zip(keys, members, strict=True):
                # the notifications' keys in the index's own shard (its tag): an id of
                # another shard cannot be there, and would read as gone, not cross slots
                tag = self.keys.tag(_shard_of_index(key))
                decoded = [i.decode() for i in ids]
                cutoff = start if _is_recipients(key) else ""
                self._trim(keys=[key, *(tag + "notif:" + i for i in decoded)],
                           args=[cutoff, math.floor(epoch(now)), self.history_s, *decoded],
                           client=pipe)
            replies = pipe.execute()
        return (sum(int(r[0]) for r in replies), sum(int(r[1]) for r in replies))


def scan_page(client: Any, cursor: int, match: str, count: int) -> tuple[int, list[bytes]]:
    """One SCAN page from `cursor` (0: the start) of the keys matching `match`: (the cursor
    to go on from, 0 when the pass is complete; the keys). On one Redis, SCAN itself. On a
    Redis Cluster (`redis.cluster.RedisCluster`) each master's keyspace is SCANned in turn
    (masters by node name), and the cursor carries which master and where in it: the
    master's own cursor x masters + its index, so that 0 is still the start and the end.
    A pass over a cluster whose masters change meanwhile may see a key twice or miss one
    moved; the next pass sees it (an index trimmed twice is trimmed once more, no harm)."""
    if not isinstance(client, RedisCluster):
        found, keys = client.scan(cursor, match=match, count=count)
        return int(found), keys
    cluster: Any = client  # redis-py leaves the cluster's scan and nodes unannotated
    masters = sorted(cluster.get_primaries(), key=lambda node: node.name)
    index, node_cursor = cursor % len(masters), cursor // len(masters)
    cursors, keys = cluster.scan(cursor=node_cursor, match=match, count=count,
                                target_nodes=masters[index])
    node_cursor = int(next(iter(cursors.values())))
    if node_cursor != 0:
        return node_cursor * len(masters) + index, keys
    return (index + 1 if index + 1 < len(masters) else 0), keys


def _shard_of_index(key: str) -> int:
    """The shard of an index `INDEX` matched, from its tag."""
    found = INDEX.match(key)
    assert found is not None  # `run` keeps only the keys it matches
    return int(found.group(1))


def _is_recipients(key: str) -> bool:
    """Whether `key` (matched by `INDEX`) is a recipient's index, not an entity's."""
    found = INDEX.match(key)
    return found is not None and found.group(2) == "recipient"
