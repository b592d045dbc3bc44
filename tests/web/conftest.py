"""Fixtures of the web tests: a webhook secret, the broker and the ledger on the session's
Redis, and the app under a TestClient built from the `settings` each module defines."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator

import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from fastapi.testclient import TestClient

from notifier.config import Settings
from notifier.ledger.store import Store
from notifier.web.app import create_app
from notifier.worker.actors import build_broker


def new_secret() -> str:
    """A fresh Standard Webhooks secret, `whsec_<base64 of 32 random bytes>`."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture
def secret() -> str:
    return new_secret()


@pytest.fixture
def broker(redis_url: str) -> Iterator[RedisBroker]:
    broker = build_broker(redis_url)
    yield broker
    broker.close()


@pytest.fixture
def store(redis_client: redis.Redis) -> Store:
    return Store(redis_client)


@pytest.fixture
def client(settings: Settings, store: Store, broker: RedisBroker) -> Iterator[TestClient]:
    with TestClient(create_app(settings, store, broker)) as test_client:
        yield test_client
