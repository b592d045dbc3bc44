"""Storing an accepted event from the HTTP process, on the asyncio Redis client.

The web's event loop serves every request: a synchronous Redis call there would stop all
of them for a round trip (and, with `appendfsync always`, an fsync), and for as long as
Redis does not answer. So the HTTP side writes with `redis.asyncio`, the worker side keeps
the synchronous client of `notifier.ledger.events.Events`.

The write is the same script, keys and arguments as `Events.store_event`: an event stored
here is read, queued and applied by the worker exactly like one stored there. The web
passes the event's `apply_event` message along (`ledger.broker_messages`), so the event
and its message are one script: one round trip and, with `appendfsync always`, one fsync,
shared by whatever other writes Redis ran in the same pass of its event loop.

On a Redis Cluster the web writes through the ledger's own cluster client instead
(`ThreadedEventStore`), in a thread so that the loop still never waits: the event's
script is one shard's, which that client routes to its master and maps to the ledger's
errors (a master down: `StoreUnavailable`, 503), where redis-py's asyncio cluster client
would need the same routing and error mapping written again.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import redis
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from notifier.ledger.broker_messages import BrokerMessage
from notifier.ledger.client import store_errors
from notifier.ledger.daily import REFUSED_KEEP_S, count_refused, refused_key
from notifier.ledger.events import STORE_EVENT_LUA, Events, store_event_call
from notifier.ledger.shards import ShardKeys

#: The connection settings an asyncio twin of a synchronous client takes over; the rest of
#: the synchronous pool's keyword arguments (its retry object, parser, maintenance
#: handlers) are objects of the synchronous client, not settings.
TWIN_SETTINGS = ("host", "port", "path", "db", "username", "password", "client_name",
                 "socket_timeout", "socket_connect_timeout", "socket_keepalive",
                 "health_check_interval", "ssl_keyfile", "ssl_certfile", "ssl_cert_reqs",
                 "ssl_ca_certs", "ssl_check_hostname")


def async_twin(client: redis.Redis) -> redis.asyncio.Redis:
    """A new asyncio client of the server `client` talks to (TCP, TLS or a Unix socket),
    with its database, credentials and timeouts. It belongs to the event loop that first
    uses it."""
    pool = client.connection_pool
    settings = {k: v for k, v in pool.connection_kwargs.items() if k in TWIN_SETTINGS}
    # The asyncio module has a connection class of the same name for each kind.
    connection_class = getattr(redis.asyncio.connection, pool.connection_class.__name__,
                               redis.asyncio.connection.Connection)
    # One immediate retry on a connection error: a pooled connection that died with a
    # restarted server is replaced by a new one, rather than the next request getting a
    # 503. The event script is idempotent (a retry after a lost reply is a duplicate, as
    # good as accepted); while Redis is down, the retry is refused as fast as the first.
    # from_pool: closing the client closes its pool's connections too.
    return redis.asyncio.Redis.from_pool(redis.asyncio.ConnectionPool(
        connection_class=connection_class, max_connections=pool.max_connections,
        retry=Retry(NoBackoff(), 1), retry_on_error=[redis.ConnectionError], **settings))


#: The connection settings that say which server and database a client writes to.
SERVER_SETTINGS = ("host", "port", "path", "db")


def same_server(a: redis.Redis, b: redis.Redis) -> bool:
    """Whether two clients write to the same Redis database, as their connection settings
    say (host, port or Unix socket path, and database; `localhost` and `127.0.0.1` differ)."""
    def server(client: redis.Redis) -> tuple[object, ...]:
        settings = client.connection_pool.connection_kwargs
        return tuple(settings.get(k) for k in SERVER_SETTINGS)
    return server(a) == server(b)


class AsyncEventStore:
    """The event writes of the HTTP process, awaited rather than blocking."""

    def __init__(self, client: redis.asyncio.Redis, keys: ShardKeys) -> None:
        """`keys`: the ledger's shard keys (a `Store`'s): an event is stored in its
        subject's shard."""
        self.redis = client
        self.keys = keys
        self._store_event = client.register_script(STORE_EVENT_LUA)

    async def store_event(self, event_id: str, raw: bytes, now: datetime,
                          subject: str | None = None, occurred_at: datetime | None = None,
                          message: BrokerMessage | None = None) -> bool:
        """Store a raw event durably, queue it for its subject and enqueue `message`, in
        one script; False when this id was accepted before (nothing written or enqueued).
        Raises `StoreUnavailable` when Redis cannot be reached or take commands now,
        `StoreError` when it refuses the script, `ValueError` for a `message` without a
        subject."""
        names, args = store_event_call(self.keys, event_id, raw, now, subject, occurred_at,
                                       message)
        with store_errors():
            return bool(await self._store_event(keys=names, args=args))

    async def count_refused(self, event_type: str, now: datetime) -> None:
        """Count an event of `event_type` refused at the door (422) at `now`
        (`notifier.ledger.daily.count_refused`), in one round trip. Raises
        `StoreUnavailable` / `StoreError` as `store_event` does."""
        with store_errors():
            await count_refused(self.redis, event_type, now)

    async def close(self) -> None:
        """Close the client and every connection of its pool."""
        await self.redis.aclose()


class ThreadedEventStore:
    """`AsyncEventStore`'s calls on a synchronous ledger client (a `LedgerCluster`), each
    run in a thread of the loop's default executor: the event loop does not wait, a
    request does, for at most the client's timeouts."""

    def __init__(self, events: Events) -> None:
        """`events`: the ledger's event store (a `Store`'s `events`), on the cluster."""
        self.events = events

    async def store_event(self, event_id: str, raw: bytes, now: datetime,
                          subject: str | None = None, occurred_at: datetime | None = None,
                          message: BrokerMessage | None = None) -> bool:
        """As `AsyncEventStore.store_event` (`Events.store_event`, in a thread)."""
        return await asyncio.to_thread(self.events.store_event, event_id, raw, now,
                                       subject, occurred_at, message)

    async def count_refused(self, event_type: str, now: datetime) -> None:
        """As `AsyncEventStore.count_refused`, in a thread; one key, so one master."""
        def count() -> None:
            key = refused_key(now.astimezone(UTC).date())
            with self.events.redis.pipeline(transaction=False) as pipe:
                pipe.hincrby(key, event_type, 1)
                pipe.expire(key, REFUSED_KEEP_S)
                pipe.execute()
        await asyncio.to_thread(count)

    async def close(self) -> None:
        """Nothing to close: the client is the ledger's."""
