"""`connect()`: one server's URL as redis-py reads it, or a cluster's startup nodes."""

from __future__ import annotations

import re

import pytest
import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from notifier.errors import ConfigError
from notifier.ledger.connect import connect, connect_cluster, is_cluster_node
from notifier.ledger.redis_process import free_port
from notifier.ledger.redis_urls import ClusterURL, parse_cluster_url


@pytest.mark.parametrize(("url", "expected"), [
    ("redis+cluster://127.0.0.1:7000", ClusterURL(((("127.0.0.1", 7000)),), None, None, False)),
    ("redis+cluster://a:7000,b.example:7001/",
     ClusterURL((("a", 7000), ("b.example", 7001)), None, None, False)),
    ("rediss+cluster://[::1]:7000,10.0.0.2:7001",
     ClusterURL((("::1", 7000), ("10.0.0.2", 7001)), None, None, True)),
    ("redis+cluster://:s%40cret@h:1", ClusterURL((("h", 1),), None, "s@cret", False)),
    ("redis+cluster://ops:pw@h:65535/", ClusterURL((("h", 65535),), "ops", "pw", False)),
    ("redis+cluster://ops@h:1", ClusterURL((("h", 1),), "ops", None, False)),
])
def test_a_cluster_url_gives_its_startup_nodes_and_credentials(url, expected):
    assert parse_cluster_url(url) == expected


@pytest.mark.parametrize(("url", "message"), [
    ("redis://h:1", "not a cluster URL"),
    ("redis+cluster://", "no startup nodes"),
    ("redis+cluster:///", "no startup nodes"),
    ("redis+cluster://ops@", "no startup nodes"),
    ("redis+cluster://h:1,,h:2", "an empty entry"),
    ("redis+cluster://h:1,", "an empty entry"),
    ("redis+cluster://h", "'h' has no port"),
    ("redis+cluster://:7000", "':7000' has no host"),
    ("redis+cluster://h:0", "the port must be 1 to 65535"),
    ("redis+cluster://h:65536", "the port must be 1 to 65535"),
    ("redis+cluster://h:70x", "the port must be 1 to 65535"),
    ("redis+cluster://h:", "the port must be 1 to 65535"),
    ("redis+cluster://[::1]7000", "expected [IPv6]:port"),
    ("redis+cluster://h:1/0", "a cluster has one database"),
    ("redis+cluster://h:1?socket_timeout=1", "options are passed to connect()"),
    ("redis+cluster://h:1#x", "options are passed to connect()"),
])
def test_a_malformed_cluster_url_is_refused_saying_why(url, message):
    with pytest.raises(ConfigError, match=re.escape(repr(url)) + ": .*" + re.escape(message)):
        parse_cluster_url(url)


def test_a_refused_url_never_shows_its_password():
    with pytest.raises(ConfigError) as refused:
        parse_cluster_url("redis+cluster://ops:hunter2@h:1/0")
    assert "hunter2" not in str(refused.value)
    assert "'redis+cluster://ops:***@h:1/0'" in str(refused.value)
    with pytest.raises(ConfigError) as refused:
        connect("http://ops:hunter2@h:1")
    assert "hunter2" not in str(refused.value)


def test_a_url_that_cannot_be_split_is_refused_without_showing_it():
    for url in ("redis+cluster://ops:hunter2@[::1", "redis://ops:hunter2@[::1"):
        with pytest.raises(ConfigError, match="a Redis URL that cannot be read: Invalid IPv6") \
                as refused:
            connect(url)
        assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize("url", ["http://h:1", "h:6379", "redis+sentinel://h:1", ""])
def test_connect_refuses_other_schemes_naming_the_ones_it_takes(url):
    with pytest.raises(ConfigError, match="expected a URL starting with one of redis://, "
                       r"redis\+cluster://, rediss://, rediss\+cluster://, unix://"):
        connect(url)


def test_one_servers_url_gives_a_plain_client(redis_url):
    client = connect(redis_url, socket_timeout=2)
    try:
        assert type(client) is redis.Redis
        assert client.connection_pool.connection_kwargs["socket_timeout"] == 2
        assert client.ping()
    finally:
        client.close()


def test_a_cluster_url_gives_a_cluster_client_that_found_every_master(cluster):
    client = connect(cluster.url, socket_timeout=1)
    try:
        assert isinstance(client, RedisCluster)
        assert {node.port for node in client.get_primaries()} == {n.port for n in cluster.nodes}
        client.set("{connect}k", "v")
        assert client.get("{connect}k") == b"v"
    finally:
        client.close()


def test_one_live_startup_node_is_enough(cluster):
    dead = free_port()
    client = connect(f"redis+cluster://127.0.0.1:{dead},127.0.0.1:{cluster.nodes[1].port}")
    try:
        assert len(client.get_primaries()) == len(cluster.nodes)
    finally:
        client.close()


def test_a_cluster_url_where_no_node_answers_raises_redis_pys_error():
    with pytest.raises(RedisClusterException, match="cannot be connected"):
        connect_cluster(f"redis+cluster://127.0.0.1:{free_port()}")


def test_is_cluster_node_says_which_redis_runs_in_cluster_mode(cluster, redis_url):
    assert is_cluster_node(cluster.nodes[0].url) is True
    assert is_cluster_node(redis_url) is False
    assert is_cluster_node("redis://127.0.0.1:1/0", timeout_s=0.2) is None  # nothing known
