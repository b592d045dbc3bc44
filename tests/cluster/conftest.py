"""A client on the session's 3-master Redis Cluster (`cluster`, in `tests/conftest.py`)
that fails fast (`master_back`, for tests that kill or pause a master, is there too).

The client's timeouts: a killed master refuses connections at once on loopback, but a hung
one (paused) would hold redis-py 8's default cluster client for 5 s (`socket_timeout`)
times 11 attempts (10 retries), about 55 s measured. With 0.25 s and one retry a command
for a hung master's slot raises `TimeoutError` after about 0.5 s, under the cluster's
1 s node timeout, so no test waits on a dead node for long.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from notifier.ledger.cluster.server import LocalCluster
from notifier.ledger.store import Store
from notifier.runtime import connect_ledger

#: Seconds a command waits to connect to, and hear from, a node.
TIMEOUT_S = 0.25


@pytest.fixture(scope="session")
def cluster_client(cluster: LocalCluster) -> Iterator[RedisCluster]:
    client = cluster.client(socket_connect_timeout=TIMEOUT_S, socket_timeout=TIMEOUT_S,
                            retry=Retry(NoBackoff(), 1))
    yield client
    client.close()


@pytest.fixture
def store(cluster: LocalCluster) -> Iterator[Store]:
    """A `Store` of 8 shards on the session's cluster, emptied first, through the client
    the service builds (`connect_ledger`: its timeouts and retries). A module's own
    `store` fixture takes its place there."""
    for node in cluster.nodes:
        with redis.Redis.from_url(node.url) as client:
            client.flushall()
    client = connect_ledger(cluster.url)
    yield Store(client, shards=8)
    client.close()
