"""Fixtures of the console tests: an operators file, settings naming it, and the app on
the real Redis of the session, reached over https (the cookies are `Secure`)."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from notifier.config import Settings
from notifier.console.operators import Operator, write_operators
from notifier.ledger.store import Store
from notifier.web.app import create_app
from notifier.worker.actors import build_broker

NAME = "ana"
PASSWORD = "correct horse battery"
CONSOLE_SECRET = secrets.token_urlsafe(32)


@pytest.fixture(scope="session")
def ana_hash() -> str:
    """A real argon2id hash of PASSWORD, made with argon2's smallest costs: every sign-in
    of the suite verifies it, and at the production costs (64 MiB, 3 passes) that is most
    of the console tests' time. `verify_password` reads the costs from the hash itself;
    tests/console/test_operators.py checks what `hash_password` makes."""
    return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)


@pytest.fixture
def operators_file(tmp_path: Path, ana_hash: str) -> Path:
    path = tmp_path / "var" / "console" / "operators.toml"
    write_operators(path, {NAME: Operator(NAME, ana_hash)})
    return path


def console_env(operators_file: Path, **extra: str) -> dict[str, str]:
    return {"NOTIFIER_WEBHOOK_SECRET":
            "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
            "NOTIFIER_CONSOLE_SECRET": CONSOLE_SECRET,
            "NOTIFIER_CONSOLE_OPERATORS_FILE": str(operators_file), **extra}


@pytest.fixture
def settings(operators_file: Path) -> Settings:
    return Settings.from_env(console_env(operators_file), dotenv=Path("/nonexistent"))


@pytest.fixture
def client(settings: Settings, redis_client: redis.Redis, redis_url: str) -> Iterator[Any]:
    broker = build_broker(redis_url)
    try:
        app = create_app(settings, Store(redis_client), broker)
        with TestClient(app, base_url="https://testserver") as test_client:
            yield test_client
    finally:
        broker.close()
