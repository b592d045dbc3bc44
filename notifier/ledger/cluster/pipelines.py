"""The ledger's pipelines on a Redis Cluster: a transaction on the node that serves its one
slot, and a plain pipeline spread over the nodes its commands' slots are on.

redis-py's `ClusterPipeline` refuses `EVALSHA`, `MGET` and `SORT` on a pipeline and
sends a transaction through machinery of its own; the ledger's transactions (WATCH, reads,
MULTI, scripts sent as `EVAL`: `LedgerPipeline`) are on one slot by construction, so they
run unchanged on that slot's node, on its plain `redis.Redis` connections.

`ClusterTransaction` (`pipeline()`, `transaction=True`): its first keyed command (a
`WATCH`, `watch_and_read`, or the first command queued after `multi()`) chooses the slot,
and so the node; every later command must name keys of that slot, else `CrossSlot` is
raised before it is sent. A `MOVED`, `ASK` or `TRYAGAIN` reply (a resharding):

- before any reply has gone back to the caller (the first `WATCH` or `watch_and_read`, or
  the `execute` of a transaction that watches nothing): the map is corrected and the same
  commands are sent again, to the slot's owner, up to `REDIRECTS` times, then
  `StoreUnavailable`. Nothing ran where the redirection came from, so this is safe.
- once the caller holds replies read under WATCH: `redis.WatchError` (after `UNWATCH`),
  which the ledger's WATCH loops already answer by starting the transaction again from
  its first read, now on the right node. Those replies came from a node that no longer
  owns the slot, so they are not trusted, exactly as after a concurrent write.

`SpreadPipeline` (`transaction=False`, and `Batch`): at `execute` the commands are grouped
by the node of their slot; every group is written to its node's connection first, then
every group's replies are read, so a pipeline over three nodes costs one round trip, the
nodes working in parallel, with no threads. Replies come back in the caller's order. An
`MGET` over many slots is split into one `MGET` per slot and put back together in key
order; `DEL`, `UNLINK`, `EXISTS` and `TOUCH` are split and summed; any other command over
many slots raises `CrossSlot` when it is queued. Commands that name no key go to the
cluster's default node. A redirected command did not run: it alone is sent again, to the
slot's owner, up to `REDIRECTS` times. A node that fails (refused, lost, timed out) fails
its own commands with `StoreUnavailable` (in place with `raise_on_error=False`, as a
`Batch` reads them; raised otherwise) and not the other nodes'; what it did with them is
unknown, so they are not sent again.

`ASK` is not followed with `ASKING` to the importing node: the ledger's transactions and
scripts name several keys of their slot, which a slot half migrated serves on neither node
(`TRYAGAIN`), so a migrating slot's commands wait `MIGRATING_PAUSE_S` between tries and
then fail with `StoreUnavailable` until the migration of that slot ends (`redis-cli
--cluster reshard` moves a slot's keys in batches; the caller retries later, as for any
`StoreUnavailable`). Plain commands on the client itself follow `ASK` (redis-py does).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import redis
from redis.crc import key_slot
from redis.exceptions import AskError, MovedError, TryAgainError

from notifier.errors import StoreUnavailable
from notifier.ledger.client import LedgerPipeline, store_errors
from notifier.ledger.cluster.routing import (
    Redirected,
    cluster_errors,
    command_keys,
    follow,
    refresh_slots,
    slot_of,
)

if TYPE_CHECKING:
    from redis.cluster import ClusterNode, RedisCluster

T = TypeVar("T")

#: How many times a redirected command or transaction is sent again before
#: `StoreUnavailable`: a slot that moved once is served after one more.
REDIRECTS = 5
#: Seconds waited before sending again after `ASK` or `TRYAGAIN` (a slot migrating),
#: times the attempt: 0.3 s over all `REDIRECTS`.
MIGRATING_PAUSE_S = 0.02
#: Multi-key commands split per slot when their keys are in many: how the parts' replies
#: become the command's (MGET's are put back in key order).
SUMMED = frozenset({"DEL", "UNLINK", "EXISTS", "TOUCH"})


def _pause(redirect: Redirected, attempt: int) -> None:
    if not isinstance(redirect.reply, MovedError):  # ASK, TRYAGAIN: a slot migrating
        time.sleep(MIGRATING_PAUSE_S * (attempt + 1))


def _callbacks(cluster: RedisCluster) -> dict[str, Callable[..., Any]]:
    """The reply callbacks of the cluster's node clients (all alike: one protocol)."""
    internals: Any = cluster  # redis-py leaves its cluster client's methods unannotated
    node = internals.get_redis_connection(internals.get_default_node())
    return dict(node.response_callbacks)


class ClusterTransaction(LedgerPipeline):
    """A `LedgerPipeline` on the node of its one slot; see the module's docstring."""

    def __init__(self, cluster: RedisCluster) -> None:
        # The connection pool is the slot's node's, chosen by the first key (`_pin`).
        super().__init__(None, _callbacks(cluster), True, None)  # type: ignore[arg-type]
        # redis-py leaves its cluster client's methods unannotated.
        self.cluster_client: Any = cluster
        self.slot: int | None = None
        self._first_key: Any = None

    @contextmanager
    def _translated(self) -> Iterator[None]:
        with store_errors(), cluster_errors(self.cluster_client):
            yield

    # redis-py's Pipeline.reset shadows the RESET command's method (typed to return bytes).
    def reset(self) -> None:  # type: ignore[override]
        """As redis-py's (UNWATCH, back to the pool), and the slot is chosen afresh."""
        super().reset()
        self.slot, self._first_key = None, None

    def _pin(self, keys: Sequence[Any]) -> None:
        """Take `keys`' slot as the transaction's (the first keys) or check they are in it.
        Raises `CrossSlot` (nothing sent) when they are not."""
        if not keys:
            return
        if self.slot is None:
            self.slot = slot_of(self.cluster_client, keys, "one transaction")
            self._first_key = keys[0]
            self._route()
        else:
            slot_of(self.cluster_client, [self._first_key, *keys], "one transaction")

    def _route(self) -> None:
        """Use the pool of the node that serves the slot now (the default node while no
        key has chosen one)."""
        if self.connection is not None:
            self.connection_pool.release(self.connection)
            self.connection = None
        cluster = self.cluster_client
        with self._translated():
            node = (cluster.get_default_node() if self.slot is None
                    else cluster.nodes_manager.get_node_from_slot(self.slot))
            self.connection_pool = cluster.get_redis_connection(node).connection_pool

    def _contact(self, send: Callable[[], T], restore: Callable[[], None]) -> T:
        """`send()`, following a redirection as the module's docstring says; `restore()`
        puts back what a failed `send()` used up, before it is sent again."""
        first = not self.watching
        for attempt in range(REDIRECTS + 1):
            try:
                return send()
            except Redirected as redirect:
                follow(self.cluster_client, redirect)
                if not first:
                    self.reset()
                    raise redis.WatchError(
                        f"the slot's node answered {redirect} while keys were watched: "
                        "start the transaction again") from None
                last = redirect
                _pause(redirect, attempt)
                restore()
                self._route()
        raise StoreUnavailable(f"slot {self.slot} still redirected after {REDIRECTS + 1} "
                               f"tries (the cluster is resharding): {last}")

    def execute_command(self, *args: Any, **options: Any) -> Any:
        """Queue the command, or run it now while WATCHing (its reply), on the
        transaction's node. Raises `CrossSlot` before sending when its keys are not in the
        transaction's slot, and what `LedgerPipeline.execute_command` raises."""
        self._pin(command_keys(self.cluster_client, args))
        send = super().execute_command
        if (self.watching or args[0] == "WATCH") and not self.explicit_transaction:
            return self._contact(lambda: send(*args, **options), lambda: None)
        return send(*args, **options)

    def watch_and_read(self, keys: list[str], reads: redis.client.Pipeline) -> list[Any]:
        """As `LedgerPipeline.watch_and_read`, on the slot's node; raises `CrossSlot`
        (nothing sent) when the watched keys and the reads' keys are not in one slot."""
        commands = list(reads.command_stack)
        self._pin([*keys, *(key for args, _ in commands
                            for key in command_keys(self.cluster_client, args))])
        send = super().watch_and_read

        def restore() -> None:
            reads.command_stack = list(commands)

        return self._contact(lambda: send(keys, reads), restore)

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        """As `LedgerPipeline.execute`, on the slot's node (see the module's docstring for
        a redirection)."""
        if self.connection_pool is None:
            if not self.command_stack and not self.watching:
                return []
            self._route()  # only keyless commands: any node serves them
        saved = (list(self.command_stack), set(self.scripts), self.explicit_transaction,
                 self.slot, self._first_key)
        send = super().execute

        def restore() -> None:
            stack, scripts, self.explicit_transaction, self.slot, self._first_key = saved
            self.command_stack, self.scripts = list(stack), set(scripts)

        return self._contact(lambda: send(raise_on_error), restore)


class _Part(NamedTuple):
    """One command sent to one node: the whole of a caller's command (`number`) or its
    share of the keys of one slot (None: no key)."""

    number: int
    slot: int | None
    args: tuple[Any, ...]
    options: dict[str, Any]


class SpreadPipeline(LedgerPipeline):
    """A `transaction=False` pipeline over the nodes; see the module's docstring."""

    def __init__(self, cluster: RedisCluster) -> None:
        super().__init__(None, _callbacks(cluster), False, None)  # type: ignore[arg-type]
        # redis-py leaves its cluster client's methods unannotated.
        self.cluster_client: Any = cluster

    def execute_command(self, *args: Any, **options: Any) -> Any:
        """Queue the command (the pipeline itself). Raises `CrossSlot` (nothing queued)
        for a multi-key command over many slots that is not split (see the module's
        docstring)."""
        options.pop("target_nodes", None)  # redis-py's per-slot helpers name a node; keys route
        self._split(0, args, options)
        return self.pipeline_execute_command(*args, **options)

    def _split(self, number: int, args: tuple[Any, ...], options: dict[str, Any]
               ) -> list[_Part]:
        """The parts command `number` is sent as: itself, or one per slot of its keys."""
        keys = command_keys(self.cluster_client, args)
        slots = [key_slot(self.cluster_client.encoder.encode(key)) for key in keys]
        if len(set(slots)) <= 1:
            return [_Part(number, slots[0] if slots else None, args, options)]
        name = str(args[0]).upper()
        if name != "MGET" and name not in SUMMED:
            slot_of(self.cluster_client, keys)  # raises CrossSlot, naming them
        by_slot: dict[int, list[Any]] = {}
        for key, slot in zip(keys, slots, strict=True):
            by_slot.setdefault(slot, []).append(key)
        return [_Part(number, slot, (args[0], *part), dict(options))
                for slot, part in by_slot.items()]

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Send the queued commands (one round trip, every node at once); returns their
        replies in order. A refused command's reply is its redis-py error and a failed
        node's commands' is `StoreUnavailable` (with `raise_on_error`, the first
        `StoreUnavailable`, else the first refusal as `StoreError`, is raised instead)."""
        stack = self.command_stack
        if not stack:
            return []
        try:
            if self.scripts:
                self.load_scripts()
            parts = [part for number, (args, options) in enumerate(stack)
                     for part in self._split(number, args, options)]
            replies = self._send(parts)
        finally:
            self.reset()
        answers = self._join(stack, parts, replies)
        if raise_on_error:
            for answer in answers:
                if isinstance(answer, StoreUnavailable):
                    raise answer
            with store_errors():
                self.raise_first_error(stack, answers)  # type: ignore[no-untyped-call]
        return answers

    @staticmethod
    def _join(stack: list[Any], parts: list[_Part], replies: list[Any]) -> list[Any]:
        """Each command's reply from its parts': an error if one failed, MGET's values in
        key order, a split count summed."""
        shares: list[list[tuple[_Part, Any]]] = [[] for _ in stack]
        for part, reply in zip(parts, replies, strict=True):
            shares[part.number].append((part, reply))
        answers: list[Any] = []
        for (args, _), share in zip(stack, shares, strict=True):
            failed = [reply for _, reply in share if isinstance(reply, Exception)]
            if failed:
                answers.append(failed[0])
            elif len(share) == 1:
                answers.append(share[0][1])
            elif str(args[0]).upper() == "MGET":
                values = {key: value for part, reply in share
                          for key, value in zip(part.args[1:], reply, strict=True)}
                answers.append([values[key] for key in args[1:]])
            else:
                answers.append(sum(int(reply) for _, reply in share))
        return answers

    def _node(self, part: _Part) -> Any:
        if part.slot is None:
            return self.cluster_client.get_default_node()
        return self.cluster_client.nodes_manager.get_node_from_slot(part.slot)

    def _send(self, parts: list[_Part]) -> list[Any]:
        """Every part's reply (in order), redirected parts sent again (see the module's
        docstring)."""
        replies: list[Any] = [None] * len(parts)
        pending = list(range(len(parts)))
        for attempt in range(REDIRECTS + 1):
            self._round(parts, pending, replies)
            redirected = [i for i in pending
                          if isinstance(replies[i], (AskError, TryAgainError))]
            if not redirected:
                return replies
            followed: set[int | None] = set()
            for i in redirected:
                if parts[i].slot not in followed:
                    followed.add(parts[i].slot)
                    follow(self.cluster_client, Redirected(replies[i]))
            _pause(Redirected(replies[redirected[0]]), attempt)
            pending = redirected
        for i in pending:
            replies[i] = StoreUnavailable(f"slot {parts[i].slot} still redirected after "
                                          f"{REDIRECTS + 1} tries (the cluster is "
                                          f"resharding): {Redirected(replies[i])}")
        return replies

    def _round(self, parts: list[_Part], pending: list[int], replies: list[Any]) -> None:
        """One round trip: the `pending` parts written to their nodes, then read; fills
        `replies` in place (a failed node's parts: `StoreUnavailable`)."""
        groups: dict[str, tuple[ClusterNode, list[int]]] = {}
        for i in pending:
            try:
                with cluster_errors(self.cluster_client):
                    node = self._node(parts[i])
            except StoreUnavailable as exc:  # a slot no node serves
                replies[i] = exc
                continue
            groups.setdefault(node.name, (node, []))[1].append(i)
        sent: list[tuple[ClusterNode, Any, Any, list[int]]] = []
        failed = False
        for node, numbers in groups.values():
            pool = self.cluster_client.get_redis_connection(node).connection_pool
            conn: Any = None
            try:
                conn = pool.get_connection()
                conn.send_packed_command(conn.pack_commands([parts[i].args for i in numbers]))
                sent.append((node, pool, conn, numbers))
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                failed = True
                self._lost(pool, conn, node, numbers, replies, exc)
        for node, pool, conn, numbers in sent:
            read = 0
            try:
                for i in numbers:
                    try:
                        replies[i] = self.parse_response(  # type: ignore[no-untyped-call]
                            conn, parts[i].args[0], **parts[i].options)
                    except redis.ResponseError as exc:
                        replies[i] = exc
                    read += 1
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                # The replies read stand (those commands ran); the rest are unknown.
                failed = True
                self._lost(pool, conn, node, numbers[read:], replies, exc)
            else:
                pool.release(conn)
        if failed:
            refresh_slots(self.cluster_client)  # a failover may have moved the slots

    @staticmethod
    def _lost(pool: Any, conn: Any, node: ClusterNode, numbers: list[int],
              replies: list[Any], error: Exception) -> None:
        """A node failed mid-round: its parts fail with `StoreUnavailable`, its connection
        and idle ones are dropped (a restarted node gets fresh ones)."""
        if conn is not None:
            conn.disconnect()
            pool.release(conn)
        pool.disconnect(inuse_connections=False)
        unavailable = StoreUnavailable(f"the Redis Cluster node {node.name} failed: {error}")
        unavailable.__cause__ = error
        for i in numbers:
            replies[i] = unavailable
