"""The ledger's Redis client on a Redis Cluster: redis-py's `RedisCluster`, with the
ledger's errors and the ledger's pipelines, so code written for `LedgerRedis` runs on it
unchanged as long as each transaction and each script names keys of one slot.

- A command goes where redis-py's cluster client sends it (the node of its keys' slot,
  following `MOVED` and `ASK`, reading the map again after a failure), except that keys of
  more than one slot raise `CrossSlot` before anything is sent, where redis-py raises its
  `RedisClusterException`. `mget` is split per slot (`mget_nonatomic`: one `MGET` per
  slot, all sent in one round trip): its values are not read at one instant when the keys
  are in many slots. `delete`, `exists`, `unlink` and `touch` are split and summed as
  redis-py splits them, in one round trip too.
- `pipeline()` is a `ClusterTransaction` (on the node of its slot) and
  `pipeline(transaction=False)` a `SpreadPipeline` (grouped per node): see
  `notifier.ledger.cluster.pipelines`.
- Errors: as `LedgerRedis`'s (`store_errors()`), and `StoreUnavailable` when no node
  answers with a slot map, a slot has no node, or `MOVED` keeps coming
  (`notifier.ledger.cluster.routing`).

The service makes one for a cluster NOTIFIER_REDIS_URL (`notifier.runtime.connect_ledger`).
"""

from __future__ import annotations

from typing import Any

from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from notifier.errors import StoreUnavailable
from notifier.ledger.client import store_errors
from notifier.ledger.cluster.pipelines import ClusterTransaction, SpreadPipeline
from notifier.ledger.cluster.routing import Redirected, cluster_errors, command_keys, slot_of


class LedgerCluster(RedisCluster):
    """A `RedisCluster` whose commands and pipelines are the ledger's; see the module's
    docstring. Made like a `RedisCluster`, or from one with `adopt`."""

    #: True for a client made by `adopt`: the nodes and pools are its original's to close.
    _borrowed = False

    @classmethod
    def adopt(cls, cluster: RedisCluster) -> LedgerCluster:
        """`cluster` as a `LedgerCluster`: itself if it is one, else one sharing its nodes,
        slot map, connection pools and settings (no connection is made, no map read);
        closing it leaves them open, closing `cluster` closes them for both."""
        if isinstance(cluster, cls):
            return cluster
        # A RedisCluster's state is its attributes (nodes manager, command table, retry
        # policy...): shared, not built again, which would read the slot map again.
        view = cls.__new__(cls)
        view.__dict__.update(vars(cluster))
        view._borrowed = True
        return view

    def close(self) -> None:
        """Close the nodes' connections, unless they are an adopted cluster's."""
        if not self._borrowed:
            super().close()

    def execute_command(self, *args: Any, **options: Any) -> Any:
        """Run one command; returns redis-py's reply. Raises `CrossSlot` (nothing sent),
        `StoreUnavailable` and `StoreError` (see the module's docstring)."""
        try:
            with store_errors(), cluster_errors(self, refresh=False):
                # redis-py leaves execute_command unannotated
                return super().execute_command(  # type: ignore[no-untyped-call]
                    *args, **options)
        except Redirected as redirect:  # redis-py follows them: not expected here
            raise StoreUnavailable(f"the Redis Cluster redirected a command: {redirect}") \
                from redirect.reply

    def determine_slot(self, *args: Any) -> int | None:
        """The slot of command `args`, as redis-py routes it; keys of many slots raise
        `CrossSlot` (redis-py: `RedisClusterException`)."""
        keys = command_keys(self, args)
        if keys:
            return slot_of(self, keys)
        return super().determine_slot(*args)

    def register_script(self, script: Any) -> NodeScript:
        """A script callable as redis-py's `Script`, that sends its source to the node of
        its keys when that node lacks it (`NodeScript`)."""
        return NodeScript(self, script)

    def pipeline(self, transaction: bool | None = True, shard_hint: Any = None
                 ) -> ClusterTransaction | SpreadPipeline:
        """A `ClusterTransaction` (MULTI/EXEC on one slot's node), or a `SpreadPipeline`
        when `transaction` is False or None; `shard_hint` is not used (one was never
        needed)."""
        return ClusterTransaction(self) if transaction else SpreadPipeline(self)

    def mget(self, keys: Any, *args: Any) -> list[Any]:
        """`MGET` of keys in any slots: one per slot, in one round trip; values in key
        order (not read at one instant when the keys are in many slots)."""
        return self.mget_nonatomic(keys, *args)

    def _execute_pipeline_by_slot(self, command: str, slots_to_args: Any) -> list[Any]:
        """redis-py's helper for `mget_nonatomic`, `delete`, `exists`...: one command per
        slot, here on a `SpreadPipeline` (one round trip, in the order of the slots)."""
        with self.pipeline(transaction=False) as pipe:
            for slot_args in slots_to_args.values():
                pipe.execute_command(command, *slot_args)  # type: ignore[no-untyped-call]
            return pipe.execute()


class NodeScript(Script):
    """redis-py's `Script`, but for a node that does not have the script (a restarted or
    newly promoted master: a script cache is neither saved nor replicated) the call is
    sent again as `EVAL` with its source, to that node, which compiles it for the calls
    after. redis-py's `Script` sends `SCRIPT LOAD` instead, which on a cluster goes to
    every master and fails, for every shard, while any one is down. In a pipeline it is
    redis-py's (the ledger's pipelines send scripts as `EVAL` already)."""

    def __call__(self, keys: Any = None, args: Any = None, client: Any = None) -> Any:
        """Run the script on `keys` and `args`; raises what the client raises."""
        if client is not None and not isinstance(client, RedisCluster):
            return super().__call__(keys, args, client)
        client = client or self.registered_client
        keys, args = list(keys or []), list(args or [])
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return client.eval(self.script, len(keys), *keys, *args)
