"""The console's sign-in throttle on the real 3-master cluster: `limits`' cluster storage,
made from the ledger's `LedgerCluster` (its nodes, credentials, timeouts and retries),
counts across web processes as on one Redis."""

from __future__ import annotations

import time

import pytest
import redis

from notifier.console.throttle import KEY_PREFIX, NAME_LIMIT, SignInThrottle
from notifier.errors import StoreUnavailable
from notifier.ledger.cluster.server import LocalCluster
from notifier.runtime import connect_ledger


@pytest.fixture
def ledger(cluster: LocalCluster):
    for node in cluster.nodes:
        with redis.Redis.from_url(node.url) as client:
            client.flushall()
    client = connect_ledger(cluster.url)
    yield client
    client.close()


def limit_keys(cluster: LocalCluster) -> dict[bytes, int]:
    """Each throttle key in the cluster, and the index of the master holding it."""
    found = {}
    for index, node in enumerate(cluster.nodes):
        with redis.Redis.from_url(node.url) as client:
            found.update((key, index) for key in client.scan_iter(match=KEY_PREFIX + ":*"))
    return found


def test_the_throttle_counts_on_the_cluster_across_processes(ledger, cluster):
    one, other = SignInThrottle(ledger), SignInThrottle(ledger)  # two web processes
    for n in range(NAME_LIMIT.amount):
        assert (one if n % 2 else other).attempt("ana", f"10.0.0.{n}") is None
    refusal = one.attempt("ana", "10.0.0.9")
    assert refusal is not None and refusal.what == "this name"
    assert 0 < refusal.retry_after_s <= 900
    keys = limit_keys(cluster)
    # The name's, and each address's (the refused attempt stopped at the name).
    assert len(keys) == 1 + NAME_LIMIT.amount
    assert len(set(keys.values())) > 1  # spread over the masters
    assert all(0 < ledger.ttl(key) <= 900 for key in keys)
    other.succeeded("ana")
    assert one.attempt("ana", "10.0.0.1") is None


def test_a_dead_master_holding_a_names_count_is_store_unavailable(ledger, cluster,
                                                                  master_back):
    throttle = SignInThrottle(ledger)
    assert throttle.attempt("bo", "10.0.0.1") is None
    [name_key] = [k for k in limit_keys(cluster) if b"name:" in k]
    index = limit_keys(cluster)[name_key]
    master_back.append(index)
    cluster.kill(index)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        throttle.attempt("bo", "10.0.0.1")
    assert time.monotonic() - started < 5
