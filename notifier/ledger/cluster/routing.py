"""Where a command goes on a Redis Cluster, and what the ledger makes of a cluster's errors.

A command's keys decide its slot (`command_keys`, `slot_of`); a command, script or
transaction whose keys are in more than one slot is refused here with `CrossSlot` before
anything is sent. Keys are found without a round trip: a script's from its `numkeys`,
`SORT`'s from its first argument (and `STORE`), every other command's from the command
table redis-py read from the cluster when it connected (`COMMAND`); only a command with
"movable keys" that is none of these (`ZUNIONSTORE`, `XREAD`...) asks the server
(`COMMAND GETKEYS`), as redis-py's own cluster client does.

The cluster's own errors, as the ledger speaks them (`cluster_errors`):

- `RedisClusterException` (no startup node answers with a slot map, a slot no node
  serves) and `ClusterError` (redis-py gave up after following `MOVED` 16 times):
  `StoreUnavailable`;
- `MOVED`, `ASK` and `TRYAGAIN` replies to the ledger's own pipelines: `Redirected`, which
  the pipelines follow (`notifier.ledger.cluster.pipelines`), never seen above them;
- a connection that fails: the slot map is read again (a failover may have given the
  slots to another node), then the error goes on to `store_errors()` (`StoreUnavailable`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, cast

import redis
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterError,
    MovedError,
    RedisClusterException,
    TryAgainError,
)

from notifier.errors import CrossSlot, StoreUnavailable

if TYPE_CHECKING:
    from redis.cluster import RedisCluster

#: Commands whose keys are found here, not in redis-py's table: scripts (`numkeys`) and
#: SORT, whose keys redis-py would ask the server for (SORT has "movable keys").
SCRIPT_COMMANDS = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO"})
SORT_COMMANDS = frozenset({"SORT", "SORT_RO"})


class Redirected(Exception):
    """A node answered `MOVED`, `ASK` or `TRYAGAIN` (in `reply`): the command did not run
    there. Raised inside the ledger's cluster pipelines, which follow it."""

    def __init__(self, reply: redis.ResponseError) -> None:
        kind = ("MOVED" if isinstance(reply, MovedError) else
                "ASK" if isinstance(reply, AskError) else "TRYAGAIN")
        super().__init__(f"{kind} {reply}")
        self.reply = reply


def command_keys(cluster: RedisCluster, args: Sequence[Any]) -> list[Any]:
    """The keys command `args` (name first, as redis-py queues it) names; [] for a
    command that names none. Raises `StoreUnavailable` when a "movable keys" command's keys
    had to be asked for and no node answered."""
    name = str(args[0]).upper()
    if name in SCRIPT_COMMANDS:
        return list(args[3:3 + int(args[2])])
    if name in SORT_COMMANDS:
        # redis-py writes SORT's options as bytes (b"STORE"); a caller may write str.
        options = [a.decode("latin-1") if isinstance(a, bytes) else a for a in args]
        stored = [args[i + 1] for i in range(2, len(args) - 1)
                  if isinstance(options[i], str) and options[i].upper() == "STORE"]
        return [args[1], *stored]
    internals: Any = cluster  # redis-py leaves its cluster client's methods unannotated
    with cluster_errors(cluster):
        node = internals.get_redis_connection(internals.get_default_node())
        keys = internals.commands_parser.get_keys(node, *args)
    return list(keys or [])


def slot_of(cluster: RedisCluster, keys: Sequence[Any], what: str = "one command") -> int:
    """The one slot `keys` (not empty) hash to, as redis-py routes them. Raises `CrossSlot`
    naming each key and its slot when they are in more than one; `what` says what needed
    them together (in the message)."""
    encoder: Any = cluster.encoder  # unannotated in redis-py
    slots = {key: key_slot(encoder.encode(key)) for key in keys}
    distinct = set(slots.values())
    if len(distinct) > 1:
        listed = ", ".join(f"{key!r} in slot {slot}" for key, slot in slots.items())
        raise CrossSlot(f"keys in {len(distinct)} slots, where {what} needs one: {listed}")
    return distinct.pop()


def refresh_slots(cluster: RedisCluster) -> None:
    """Read the slot map again from the startup nodes. Never raises: it is called on the
    way out of a failure, which is what the caller reports; the next command retries."""
    with suppress(RedisClusterException, redis.RedisError):
        cluster.nodes_manager.initialize()


@contextmanager
def cluster_errors(cluster: RedisCluster, refresh: bool = True) -> Iterator[None]:
    """Inside it, the cluster's errors as the module's docstring lists them; any other
    error goes on unchanged (to `store_errors()`, which callers put around this).
    `refresh`: whether a failed connection reads the slot map again (False where
    redis-py's cluster client has done it already)."""
    try:
        yield
    except (MovedError, AskError, TryAgainError) as exc:  # MovedError is an AskError
        raise Redirected(exc) from exc
    except (redis.ConnectionError, redis.TimeoutError):
        if refresh:
            refresh_slots(cluster)
        raise
    except (RedisClusterException, ClusterError) as exc:
        raise StoreUnavailable(f"the Redis Cluster cannot serve this now: {exc}") from exc


def follow(cluster: RedisCluster, redirect: Redirected) -> None:
    """Learn from a redirection before the command is sent again: a `MOVED` slot is
    taken as the reply says (redis-py's own bookkeeping: every `reinitialize_steps`-th
    one reads the whole map again); `ASK` and `TRYAGAIN` (a slot migrating) change
    nothing, the caller waits a little and tries the slot's owner again."""
    reply, internals = redirect.reply, cast(Any, cluster)  # unannotated in redis-py
    if isinstance(reply, MovedError):
        internals.reinitialize_counter += 1
        if internals._should_reinitialized():  # redis-py's own policy, kept
            refresh_slots(cluster)
            internals.reinitialize_counter = 0
        else:
            internals.nodes_manager.move_slot(reply)
