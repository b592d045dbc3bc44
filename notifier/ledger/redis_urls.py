"""Redis URLs read without redis-py: one server's schemes, and a Redis Cluster's URL
listing some of its nodes, whose form is checked here (`parse_cluster_url`).

    redis+cluster://[user:password@]host:port[,host:port...][/]
    rediss+cluster://...        the same over TLS

An IPv6 host is written in brackets (`[::1]:7000`). A cluster has one database, so the URL
has no database number, and options are passed to `notifier.ledger.connect.connect()`,
never in a query string.

Apart from `notifier.ledger.connect` so that settings (`notifier.config`, which the
policy imports) check a URL without importing redis-py.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import SplitResult, unquote, urlsplit

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


def split_url(url: str) -> SplitResult:
    """`url`'s parts (`urllib.parse.urlsplit`). Raises `ConfigError` for a URL that cannot
    be split, with the reason but not the URL (it may hold a password)."""
    try:
        return urlsplit(url)
    except ValueError as exc:  # an unclosed IPv6 bracket, say
        # Not the URL itself: nothing says where its password would be.
        raise ConfigError(f"a Redis URL that cannot be read: {exc}") from None


def shown_url(url: str) -> str:
    """`url` as an error message may show it: a password replaced by `***`."""
    parts = split_url(url)
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
    parts, url = split_url(url), shown_url(url)
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


def is_cluster_url(url: str | None) -> bool:
    """Whether `url` names a Redis Cluster (`redis+cluster://`, `rediss+cluster://`);
    False for None. Raises nothing: a URL that cannot be split names no cluster."""
    if url is None:
        return False
    try:
        return urlsplit(url).scheme in CLUSTER_SCHEMES
    except ValueError:
        return False
