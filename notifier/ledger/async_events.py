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
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError

from notifier.ledger.broker_messages import BrokerMessage
from notifier.ledger.client import client_store_errors
from notifier.ledger.connect import cluster_masters, cluster_settings
from notifier.ledger.daily import count_refused
from notifier.ledger.events import STORE_EVENT_LUA, store_event_call
from notifier.ledger.shards import ShardKeys

#: The connection settings an asyncio twin of a synchronous client takes over; the rest of
#: the synchronous pool's keyword arguments (its retry object, parser, maintenance
#: handlers) are objects of the synchronous client, not settings.
TWIN_SETTINGS = ("host", "port", "path", "db", "username", "password", "client_name",
                 "socket_timeout", "socket_connect_timeout", "socket_keepalive",
                 "health_check_interval", "ssl_keyfile", "ssl_certfile", "ssl_cert_reqs",
                 "ssl_ca_certs", "ssl_check_hostname")


#: The asyncio client of the web: of one Redis, or of a Redis Cluster.
AsyncClient = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster

def async_twin(client: redis.Redis | RedisCluster) -> AsyncClient:
    """A new asyncio client of the server `client` talks to (TCP, TLS or a Unix socket),
    with its database, credentials and timeouts; of the same cluster for a `RedisCluster`
    (`async_cluster_twin`). It belongs to the event loop that first uses it."""
    if isinstance(client, RedisCluster):
        return async_cluster_twin(client)
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


def async_cluster_twin(cluster: RedisCluster) -> redis.asyncio.cluster.RedisCluster:
    """A new asyncio client of the cluster `cluster` talks to: its masters as startup
    nodes, its credentials, TLS and timeouts, and its retries (the runtime's, which keep a
    dead master's requests short: `notifier.runtime.connect_ledger`). No connection is
    made until the first command, which reads the slot map; it belongs to the event loop
    that first uses it."""
    retry = cluster.retry
    nodes = [redis.asyncio.cluster.ClusterNode(host, port)
             for host, port in cluster_masters(cluster)]
    return redis.asyncio.cluster.RedisCluster(
        startup_nodes=nodes, retry=Retry(retry._backoff, retry.get_retries()),
        **cluster_settings(cluster))


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

    def __init__(self, client: AsyncClient, keys: ShardKeys) -> None:
        """`keys`: the ledger's shard keys (a `Store`'s): an event is stored in its
        subject's shard."""
        self.redis = client
        self.keys = keys
        # The whole source, as the worker's `Events` registers it: one compiled copy.
        self._body = STORE_EVENT_LUA
        self._sha = hashlib.sha1(self._body.encode()).hexdigest()

    async def connect(self) -> None:
        """On a cluster, read the slot map now, before requests share the client. redis-py
        8.1's asyncio `RedisCluster` reads it on first use, and requests that arrive
        together on a client that has not read it yet fail at random (a connection closed
        under another request as it connects: `AttributeError` on `writelines`, or
        `ConnectionError`), about one in ten of 16 concurrent first events measured; once
        the map is read they do not. Nothing for one Redis. Raises `StoreUnavailable`
        when no master answers (the web's start-up has just reached the ledger, so rarely)."""
        if isinstance(self.redis, redis.asyncio.cluster.RedisCluster):
            with client_store_errors():
                await self.redis.initialize()

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
        with client_store_errors():
            return bool(await self._run_store_event(names, args))

    async def _run_store_event(self, names: list[str], args: list[Any]) -> Any:
        """The script by its hash, and by its source when the node has not compiled it
        yet (a new or restarted server), which compiles it there. Not redis-py's
        `register_script`, which loads a missing script with SCRIPT LOAD: on a cluster
        that goes to every master, and fails, for every shard, while one is down."""
        try:
            return await self.redis.evalsha(self._sha, len(names), *names, *args)
        except NoScriptError:
            return await self.redis.eval(self._body, len(names), *names, *args)

    async def count_refused(self, event_type: str, now: datetime) -> None:
        """Count an event of `event_type` refused at the door (422) at `now`
        (`notifier.ledger.daily.count_refused`), in one round trip. Raises
        `StoreUnavailable` / `StoreError` as `store_event` does."""
        with client_store_errors():
            await count_refused(self.redis, event_type, now)

    async def close(self) -> None:
        """Close the client and every connection of its pool."""
        await self.redis.aclose()
