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

`Store` wraps the client it is given (`ledger_client`), so every part of the ledger
built from it speaks these errors; code that talks to Redis some other way (the dramatiq
broker, the asyncio client of `async_events`) translates with `store_errors()`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
import redis.client
from redis.exceptions import (
    ClusterDownError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    TryAgainError,
)

from notifier.errors import StoreError, StoreUnavailable

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


class LedgerPipeline(redis.client.Pipeline):
    """A pipeline whose commands (run at once while WATCHing, or queued and sent by
    `execute`) raise the ledger's errors."""

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        """Run one command now (while WATCHing: its reply) or queue it (the pipeline
        itself), raising `StoreUnavailable` / `StoreError` in place of redis-py's errors."""
        with store_errors():
            # redis-py leaves execute_command unannotated
            return super().execute_command(*args, **kwargs)  # type: ignore[no-untyped-call]

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Send the queued commands; returns their replies, in order. Raises
        `StoreUnavailable` / `StoreError`, or `redis.WatchError` when a WATCHed key changed
        (nothing was written)."""
        with store_errors():
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


def ledger_client(client: redis.Redis) -> LedgerRedis:
    """`client` as a `LedgerRedis`: itself if it is one, else a new one on its connection
    pool (same server, settings and connections; closing it leaves the pool open)."""
    if isinstance(client, LedgerRedis):
        return client
    return LedgerRedis(connection_pool=client.connection_pool)
