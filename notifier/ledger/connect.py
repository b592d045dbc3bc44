"""A Redis client from a URL: one server (`redis://`, `rediss://`, `unix://`, as redis-py
reads them) or a Redis Cluster given by some of its nodes.

A cluster URL lists startup nodes, any of which the client asks for the slot map; its
form is read in `notifier.ledger.redis_urls` (without redis-py, for the settings).

The service takes a cluster URL as NOTIFIER_REDIS_URL (`notifier.config`, with a broker
of its own) and connects with `notifier.runtime.connect_ledger`.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster

from notifier.errors import ConfigError
from notifier.ledger.redis_urls import (
    CLUSTER_SCHEMES,
    SINGLE_SCHEMES,
    ClusterURL,
    parse_cluster_url,
    shown_url,
    split_url,
)

__all__ = ["CLUSTER_SCHEMES", "SINGLE_SCHEMES", "ClusterURL", "cluster_masters",
           "cluster_settings", "connect", "connect_cluster", "is_cluster_node",
           "parse_cluster_url", "shown_url"]

def connect_cluster(url: str, **options: Any) -> RedisCluster:
    """A `RedisCluster` client for a cluster URL, which asks its startup nodes for the slot
    map now; `options` go to it. Raises `ConfigError` for a malformed URL (see
    `parse_cluster_url`), and redis-py's `RedisClusterException` or `ConnectionError`
    when no startup node answers with a slot map."""
    parsed = parse_cluster_url(url)
    if parsed.ssl:
        options.setdefault("ssl", True)
    # redis-py's ClusterNode has no annotations.
    nodes = [ClusterNode(host, port)  # type: ignore[no-untyped-call]
             for host, port in parsed.nodes]
    return RedisCluster(startup_nodes=nodes, username=parsed.username,
                        password=parsed.password, **options)


def connect(url: str, **options: Any) -> redis.Redis | RedisCluster:
    """A client for `url`: `redis.Redis` for one server, `RedisCluster` for a cluster URL
    (`connect_cluster`).

    `options` go to the client (`socket_timeout`, `retry`, `health_check_interval`...).
    No connection is made for one server until the first command. Raises `ConfigError`
    for a URL of another scheme or a malformed cluster URL, and what `connect_cluster`
    raises."""
    scheme = split_url(url).scheme
    if scheme in SINGLE_SCHEMES:
        return redis.Redis.from_url(url, **options)
    if scheme not in CLUSTER_SCHEMES:
        allowed = ", ".join(f"{s}://" for s in sorted(SINGLE_SCHEMES | set(CLUSTER_SCHEMES)))
        raise ConfigError(f"{shown_url(url)!r}: expected a URL starting with one of {allowed}")
    return connect_cluster(url, **options)


#: The connection settings another client of the same cluster takes over from a
#: `RedisCluster` (its nodes' connections' settings; TLS is told by their class).
CLUSTER_SETTINGS = ("username", "password", "client_name", "socket_timeout",
                    "socket_connect_timeout", "socket_keepalive", "ssl_keyfile",
                    "ssl_certfile", "ssl_cert_reqs", "ssl_ca_certs", "ssl_check_hostname")


def cluster_settings(cluster: RedisCluster) -> dict[str, Any]:
    """The keyword arguments that make another client (redis-py's asyncio cluster client,
    `limits`' cluster storage) connect to `cluster`'s nodes as `cluster` does:
    credentials, TLS and timeouts (`CLUSTER_SETTINGS`). Not its nodes
    (`cluster_masters`) nor its retries, objects of each client's own kind."""
    kwargs = cluster.nodes_manager.connection_kwargs
    settings = {k: v for k, v in kwargs.items() if k in CLUSTER_SETTINGS}
    if kwargs.get("ssl") or kwargs.get("connection_class") is redis.SSLConnection:
        settings["ssl"] = True
    return settings


def cluster_masters(cluster: RedisCluster) -> list[tuple[str, int]]:
    """(host, port) of each master `cluster` knows now: startup nodes for another client."""
    return [(node.host, node.port)
            for node in cluster.get_primaries()]  # type: ignore[no-untyped-call]


def is_cluster_node(url: str, timeout_s: float = 1.0) -> bool | None:
    """Whether the one Redis at `url` (`redis://`, `rediss://`, `unix://`) runs in cluster
    mode (`INFO cluster` says `cluster_enabled:1`): such a node answers PING but MOVED for
    most keys, so a one-server client or dramatiq's Redis broker cannot use it. None when
    it does not answer within `timeout_s` seconds, or refuses INFO (nothing known)."""
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=timeout_s,
                                  socket_timeout=timeout_s) as client:
            return bool(client.info("cluster").get("cluster_enabled"))
    except (redis.RedisError, OSError, ValueError):
        return None
