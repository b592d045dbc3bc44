"""The ledger's Redis client: redis-py's, with Redis failures as Notifier's own errors.

Everything above the ledger (the web, the worker, delivery, the CLI) catches
`StoreUnavailable` and `StoreError`, never a `redis` exception. The translation happens
here, once, at the outermost call of the client (`execute_command`, and a pipeline's
`execute`), so redis-py has done its own clean-up (disconnect, retries) before the error
is changed:

- Redis cannot be reached or cannot take the command now (connection refused or lost, a
  timeout, loading, a read-only replica after a failover, out of memory, cluster down):
  `StoreUnavailable`, retry later;
- Redis refused the command (`WRONGTYPE`, an error inside a Lua script): `StoreError`;
- `WatchError` and `NoScriptError` stay what they are: the ledger's WATCH loops and
  redis-py's `Script` handle them as part of their normal work.

Two round trips redis-py would make are saved here, for the ledger's transactions:

- a pipeline holding scripts sends each one's source (`EVAL`) rather than asking
  `SCRIPT EXISTS` first and sending `EVALSHA` (`LedgerPipeline.load_scripts`): no round
  trip, and no moment between the check and the `EXEC` where a flushed script cache
  could make one command of a transaction fail while the others commit;
- `LedgerPipeline.watch_and_read` sends a `WATCH` and the reads it guards together.

`Store` wraps the client it is given (`ledger_client`), so every part of the ledger
built from it speaks these errors; code that talks to Redis some other way (the dramatiq
broker, the asyncio client of `async_events`) translates with `store_errors()` (or
`client_store_errors()`, for a client that may be a cluster's).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import redis
import redis.client
from redis.cluster import RedisCluster
from redis.exceptions import (
    ClusterDownError,
    ClusterError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    TryAgainError,
)

from notifier.errors import StoreError, StoreUnavailable

if TYPE_CHECKING:
    from notifier.ledger.cluster.client import LedgerCluster

#: Redis errors that mean "not now": the command may succeed later, unchanged.
UNAVAILABLE: tuple[type[redis.RedisError], ...] = (
    redis.ConnectionError, redis.TimeoutError, ReadOnlyError, OutOfMemoryError,
    ClusterDownError, TryAgainError)
#: Redis errors redis-py or the ledger handle themselves: never translated.
PASSED_THROUGH: tuple[type[redis.RedisError], ...] = (redis.WatchError, NoScriptError)


@contextmanager
def store_errors() -> Iterator[None]:
    """Inside it, a Redis failure raises `StoreUnavailable` and a refused command
    `StoreError` (the original chained as `__cause__`); see the module's docstring."""
    try:
        yield
    except PASSED_THROUGH:
        raise
    except UNAVAILABLE as exc:
        raise StoreUnavailable(str(exc)) from exc
    except redis.ResponseError as exc:
        raise StoreError(str(exc)) from exc


@contextmanager
def client_store_errors() -> Iterator[None]:
    """`store_errors()` for a client of redis-py's own (not the ledger's) that may be a
    cluster's (the asyncio twin, the `limits` storage): also a cluster's failures as
    `StoreUnavailable`, no node answering with a slot map (`RedisClusterException`) and
    redirections that do not end (`ClusterError`). The ledger's `LedgerCluster` reads
    these itself (`notifier.ledger.cluster.routing`)."""
    try:
        with store_errors():
            yield
    except (RedisClusterException, ClusterError) as exc:
        raise StoreUnavailable(f"the Redis Cluster: {exc}") from exc


@lru_cache(maxsize=64)
def script_body(source: str) -> str:
    """A Lua script's source without its leading comment block (its documentation), as
    sent with every `EVAL`: the same program in fewer bytes."""
    lines = source.splitlines()
    first = next((i for i, line in enumerate(lines)
                  if line.strip() and not line.lstrip().startswith("--")), len(lines))
    return "\n".join(lines[first:]) + "\n"


class LedgerPipeline(redis.client.Pipeline):
    """A pipeline whose commands (run at once while WATCHing, or queued and sent by
    `execute`) raise the ledger's errors; see the module's docstring for the round trips
    it saves."""

    def _translated(self) -> AbstractContextManager[None]:
        """Where redis-py's errors become the ledger's: `store_errors()` here; a cluster
        node's transaction (`notifier.ledger.cluster.pipelines`) also reads redirections."""
        return store_errors()

    def load_scripts(self) -> None:
        """Make the queued scripts runnable without a round trip: each `EVALSHA` of a
        script queued through redis-py's `Script` becomes an `EVAL` of its source (Redis
        compiles a script once and finds it again by its hash). redis-py instead asks
        `SCRIPT EXISTS` before every `execute` that holds scripts, one round trip each
        time. Called by `execute`, which has already taken the command stack: it is
        changed in place."""
        bodies = {script.sha: script.script for script in self.scripts}
        for number, (args, options) in enumerate(self.command_stack):
            if args[0] == "EVALSHA" and args[1] in bodies:
                source = bodies[args[1]]
                text = source.decode() if isinstance(source, bytes) else str(source)
                self.command_stack[number] = (("EVAL", script_body(text), *args[2:]),
                                              options)

    def watch_and_read(self, keys: list[str], reads: redis.client.Pipeline) -> list[Any]:
        """`WATCH keys`, then the commands queued on `reads` (a `transaction=False`
        pipeline, emptied here), sent together on this pipeline's connection: one round
        trip where `watch` and then the reads make two. Returns the reads' replies, in
        order. The reads come after the `WATCH` on one connection, so a change to a
        watched key after them still fails the `EXEC`.

        Raises `redis.WatchError` when the connection fails while this pipeline already
        watched keys (the watch is lost: the caller's loop starts again); otherwise a
        failing connection is retried as redis-py retries, then raises `StoreUnavailable`.
        A refused command raises `StoreError` once every reply has been read."""
        if self.explicit_transaction:
            raise redis.RedisError("Cannot issue a WATCH after a MULTI")
        commands = [(("WATCH", *keys), {}), *reads.command_stack]
        reads.reset()
        conn = self.connection
        if conn is None:
            conn = self.connection_pool.get_connection()
            self.connection = conn

        def fail(error: Exception) -> None:
            # As redis-py's own WATCH does: a watch on a dead connection is lost.
            conn.disconnect()  # type: ignore[no-untyped-call]
            if self.watching:
                self.reset()
                raise redis.WatchError(f"a {type(error).__name__} while watching keys")

        with self._translated():
            replies = conn.retry.call_with_retry(lambda: self._send_reads(conn, commands),
                                                 fail)
        return replies[1:]

    def _send_reads(self, conn: Any, commands: list[tuple[tuple[Any, ...], dict[str, Any]]]
                    ) -> list[Any]:
        """Send `commands` in one write and read every reply (so the connection stays in
        step), then raise the first refusal, if any."""
        conn.send_packed_command(conn.pack_commands([args for args, _ in commands]))
        replies: list[Any] = []
        for args, options in commands:
            try:
                # redis-py leaves parse_response unannotated
                replies.append(self.parse_response(  # type: ignore[no-untyped-call]
                    conn, args[0], **options))
            except redis.ResponseError as exc:
                replies.append(exc)
        for reply in replies:
            if isinstance(reply, redis.ResponseError):
                raise reply
        return replies

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        """Run one command now (while WATCHing: its reply) or queue it (the pipeline
        itself), raising `StoreUnavailable` / `StoreError` in place of redis-py's errors."""
        with self._translated():
            # redis-py leaves execute_command unannotated
            return super().execute_command(*args, **kwargs)  # type: ignore[no-untyped-call]

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Send the queued commands; returns their replies, in order. Raises
        `StoreUnavailable` / `StoreError`, or `redis.WatchError` when a WATCHed key changed
        (nothing was written)."""
        with self._translated():
            return super().execute(raise_on_error)


class LedgerRedis(redis.Redis):
    """A synchronous Redis client whose commands and pipelines raise the ledger's errors
    (`StoreUnavailable`, `StoreError`) instead of redis-py's."""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        """Run one command; returns redis-py's reply. Raises `StoreUnavailable` /
        `StoreError` in place of redis-py's errors."""
        with store_errors():
            # redis-py leaves execute_command unannotated
            return super().execute_command(*args, **options)  # type: ignore[no-untyped-call]

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> LedgerPipeline:
        """A `LedgerPipeline` on this client's connection pool (MULTI/EXEC unless
        `transaction` is False)."""
        return LedgerPipeline(self.connection_pool, self.response_callbacks, transaction,
                              shard_hint)


def ledger_client(client: redis.Redis | RedisCluster) -> LedgerRedis | LedgerCluster:
    """`client` as the ledger's client: itself if it is one already; for one server a new
    `LedgerRedis` on its connection pool (same server, settings and connections; closing it
    leaves the pool open); for a `RedisCluster` a `LedgerCluster` sharing its nodes, slot
    map and pools (`LedgerCluster.adopt`: closing it leaves them open)."""
    if isinstance(client, LedgerRedis):
        return client
    if isinstance(client, RedisCluster):
        # Imported here: the cluster modules build on this one.
        from notifier.ledger.cluster.client import LedgerCluster

        return LedgerCluster.adopt(client)
    return LedgerRedis(connection_pool=client.connection_pool)
