"""A Redis client from a URL: one server (`redis://`, `rediss://`, `unix://`, as redis-py
reads them) or a Redis Cluster given by some of its nodes.

A cluster URL lists startup nodes, any of which the client asks for the slot map:

    redis+cluster://[user:password@]host:port[,host:port...][/]
    rediss+cluster://...        the same over TLS

An IPv6 host is written in brackets (`[::1]:7000`). A cluster has one database, so the URL
has no database number, and options are passed to `connect()`, never in a query string.

The service takes a cluster URL as NOTIFIER_REDIS_URL (`notifier.config`, with a broker
of its own) and connects with `notifier.runtime.connect_ledger`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster

from notifier.errors import ConfigError

#: Schemes of one server, read by `redis.Redis.from_url`.
SINGLE_SCHEMES = frozenset({"redis", "rediss", "unix"})
#: Schemes of a cluster, and whether each speaks TLS.
CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}


@dataclass(frozen=True)
class ClusterURL:
    """A parsed cluster URL: its startup nodes as (host, port), credentials (percent-
    decoded, `None` when absent) and whether it speaks TLS."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    ssl: bool


def _split(url: str) -> SplitResult:
    try:
        return urlsplit(url)
    except ValueError as exc:  # an unclosed IPv6 bracket, say
        # Not the URL itself: nothing says where its password would be.
        raise ConfigError(f"a Redis URL that cannot be read: {exc}") from None


def shown_url(url: str) -> str:
    """`url` as an error message may show it: a password replaced by `***`."""
    parts = _split(url)
    credentials, at, hosts = parts.netloc.rpartition("@")
    if not at or ":" not in credentials:
        return url
    user = credentials.partition(":")[0]
    return parts._replace(netloc=f"{user}:***@{hosts}").geturl()


def _node(url: str, text: str) -> tuple[str, int]:
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ConfigError(f"{url!r}: expected [IPv6]:port, got {text!r}")
        port = rest[1:]
    else:
        host, colon, port = text.rpartition(":")
        if not colon:
            raise ConfigError(f"{url!r}: startup node {text!r} has no port (host:port)")
    if not host:
        raise ConfigError(f"{url!r}: startup node {text!r} has no host")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{url!r}: startup node {text!r}: the port must be 1 to 65535")
    return host, int(port)


def parse_cluster_url(url: str) -> ClusterURL:
    """The startup nodes, credentials and TLS of a `redis+cluster://` or
    `rediss+cluster://` URL (see the module's docstring for the form).

    Raises `ConfigError` naming the URL (its password as `***`) and what is wrong: another
    scheme, no nodes, an empty entry, a node without a host or a port, a port out of
    1–65535, a database number, a query string or a fragment; or, for a URL that cannot
    be split at all, the reason without the URL."""
    parts, url = _split(url), shown_url(url)
    if parts.scheme not in CLUSTER_SCHEMES:
        raise ConfigError(f"{url!r}: not a cluster URL (redis+cluster:// or rediss+cluster://)")
    if parts.path not in ("", "/"):
        raise ConfigError(f"{url!r}: a cluster has one database; the URL names none "
                          f"(got the path {parts.path!r})")
    if parts.query or parts.fragment:
        raise ConfigError(f"{url!r}: options are passed to connect(), not in the URL")
    # Not `parts.hostname`/`.port`: they read one host, and the netloc holds a list.
    credentials, at, hosts = parts.netloc.rpartition("@")
    if not hosts:
        raise ConfigError(f"{url!r}: no startup nodes (host:port,host:port...)")
    username = password = None
    if at:
        user, colon, secret = credentials.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    entries = hosts.split(",")
    if any(not entry for entry in entries):
        raise ConfigError(f"{url!r}: an empty entry in the list of startup nodes")
    return ClusterURL(nodes=tuple(_node(url, entry) for entry in entries),
                      username=username, password=password,
                      ssl=CLUSTER_SCHEMES[parts.scheme])


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
    scheme = _split(url).scheme
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
