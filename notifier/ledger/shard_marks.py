"""Each shard's mark, `n:{s}:mark`: how a shard that lost its data is told from one that
has none yet.

Why: on a Redis Cluster a master restarted without its append-only file (or replaced by an
empty one) serves its slots again, empty. Its shards' events, records and planned
notifications are gone, and nothing else would say so: an empty shard looks like a new
one, a reminder planned there is never sent, an event posted again is taken as new (its
confirmation sent a second time). So the ledger writes one small key per shard when it is
first used (`ensure_marks`, at start-up after the shard count is checked), and a shard whose mark is
missing while the ledger has been used has lost what it held. `/healthz` says so
(`degraded`, `ledger_shards_lost`), `/metrics` counts them (`notifier_ledger_shards_lost`),
and start-up logs CRITICAL naming them. An operator who has restored what could be
restored (or accepted the loss: the integrators post their upcoming bookings again) marks
them again with `notifier shards mark`.

On one Redis the marks and everything else go together: a Redis that lost everything
looks new, as it did before (`NOTIFIER_REDIS_URL`: run it with `appendonly yes`).

Errors: as the ledger's client raises them (`StoreUnavailable`); `lost_shards` counts a
shard whose master does not answer as not lost (it is down, which `/healthz` says apart).
"""

from __future__ import annotations

import logging
from typing import Any

from notifier.errors import StoreUnavailable
from notifier.ledger.shards import SHARDS_KEY, ShardKeys, check_shards, count_mismatch

log = logging.getLogger(__name__)


def mark_key(keys: ShardKeys, shard: int) -> str:
    """Shard `shard`'s mark (`n:{7}:mark`), in its slot."""
    return keys.tag(shard) + "mark"


def open_shards(client: Any, shards: int) -> list[int]:
    """At start-up: the shard count checked (`check_shards`), then the marks
    (`ensure_marks`); returns the lost shards. When the master holding the count
    (`n:shards`, one key) does not answer, the count is read from any shard's mark, which
    holds it, so that a process (re)started while one master is down serves the others'
    shards. Raises `ConfigError` for a count that differs from the ledger's, and
    `StoreUnavailable` when neither the count nor any mark can be read."""
    try:
        if client.get(SHARDS_KEY) is None:
            # The count's master back empty (or a new ledger): the marks hold the count
            # written, which another setting must not replace (found by QA).
            recorded = marked_count(client, shards)
            if recorded is not None and recorded != shards:
                raise count_mismatch(shards, recorded)
        check_shards(client, shards)
    except StoreUnavailable:
        recorded = marked_count(client, shards)
        if recorded is None:
            raise
        if recorded != shards:
            raise count_mismatch(shards, recorded) from None
        log.warning("the shard count's master does not answer: read %d from the shards' "
                    "marks", recorded)
    return ensure_marks(client, ShardKeys(shards))


def marked_count(client: Any, shards: int) -> int | None:
    """The shard count the marks of shards 0 .. `shards` - 1 hold (the first that
    answers), or None when none does. A mark's key does not depend on the count, so a
    process set to another count still finds them. One pipeline."""
    with client.pipeline(transaction=False) as pipe:
        for shard in range(shards):
            pipe.get(mark_key(ShardKeys(shards), shard))
        answers = pipe.execute(raise_on_error=False)
    return next((int(value) for value in answers
                 if value is not None and not isinstance(value, Exception)), None)


def write_marks(client: Any, keys: ShardKeys, shards: list[int] | None = None) -> None:
    """Mark `shards` (every shard when None), in one pipeline (one round trip per node
    on a cluster)."""
    with client.pipeline(transaction=False) as pipe:
        for shard in range(keys.count) if shards is None else shards:
            pipe.set(mark_key(keys, shard), keys.count)
        pipe.execute()


def mark_states(client: Any, keys: ShardKeys) -> list[bool | None]:
    """Each shard's mark, by shard: True (there), False (missing), None (its master did
    not answer). One pipeline."""
    with client.pipeline(transaction=False) as pipe:
        for shard in range(keys.count):
            pipe.exists(mark_key(keys, shard))
        answers = pipe.execute(raise_on_error=False)
    return [None if isinstance(found, Exception) else bool(found) for found in answers]


def lost_shards(client: Any, keys: ShardKeys) -> list[int]:
    """The shards whose mark is missing while another shard's is there, ascending; []
    when none is marked (a ledger not marked yet: `ensure_marks` marks it at start-up).
    A shard whose master does not answer is left out (it is down, not known lost). One
    pipeline."""
    return lost_of(mark_states(client, keys))


def lost_of(states: list[bool | None]) -> list[int]:
    """`lost_shards` of marks already read (`mark_states`)."""
    if True not in states:
        return []
    return [shard for shard, marked in enumerate(states) if marked is False]


def ensure_marks(client: Any, keys: ShardKeys) -> list[int]:
    """At start-up, after the shard count is checked (`open_shards`): mark every shard when none is
    marked (a ledger used for the first time, or one written before marks); else return
    the shards whose mark is missing, logged CRITICAL, and leave them so until an
    operator marks them (`notifier shards mark`). Raises what the client raises.

    Not "mark them when the shard count was just recorded": the count is one key, on one
    master, and a master that lost its data may be the one that held it."""
    states = mark_states(client, keys)
    if True not in states:
        if None in states:
            # Marked only once every master answers: marks written on some masters only
            # would make the others' shards look lost once they are back (found by QA).
            log.warning("ledger shards not marked yet: a master does not answer; they "
                        "are marked at a start when every master does")
        else:
            write_marks(client, keys)
        return []
    lost = lost_of(states)
    if lost:
        log.critical("ledger shards %s lost their data (their mark is gone: a master "
                     "restarted without its append-only file?): what they held is not "
                     "there; restore it, or post the upcoming events again, then run "
                     "`notifier shards mark`", ", ".join(map(str, lost)))
    return lost
