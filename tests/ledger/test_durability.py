"""Redis's fsync policy as `CONFIG GET` reports it: read, reported by `/healthz`, logged
when a command starts. A private redis-server per test, whose settings it may change."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from redis.backoff import NoBackoff
from redis.retry import Retry

from notifier.cli.common import open_runtime
from notifier.config import Settings
from notifier.errors import StoreUnavailable
from notifier.ledger.durability import fsync_policy, log_fsync_policy
from notifier.ledger.embedded_redis import EmbeddedRedis, free_port
from notifier.ledger.store import Store
from notifier.web.app import create_app
from notifier.worker.actors import build_broker
from tests.conftest import private_redis


@pytest.fixture
def durable_url(tmp_path: Path) -> Iterator[str]:
    yield from private_redis(tmp_path, "--appendonly", "yes", "--appendfsync", "always")


@pytest.fixture
def durable(durable_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(durable_url)
    yield client
    client.close()


def test_each_policy_is_read_as_redis_runs_it(durable):
    assert fsync_policy(durable) == "always"
    durable.config_set("appendfsync", "everysec")
    assert fsync_policy(durable) == "everysec"
    durable.config_set("appendfsync", "no")
    assert fsync_policy(durable) == "no"
    durable.config_set("appendonly", "no")
    assert fsync_policy(durable) == "off"


def test_a_redis_that_refuses_config_is_unknown_not_an_error(tmp_path):
    # Managed Redis services rename or disable CONFIG.
    for url in private_redis(tmp_path, "--rename-command", "CONFIG", '""'):
        client = redis.Redis.from_url(url)
        with pytest.raises(redis.ResponseError):
            client.config_get("appendonly")
        assert fsync_policy(client) == "unknown"
        client.close()


def test_an_unreachable_redis_raises():
    with pytest.raises(StoreUnavailable):
        fsync_policy(redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1,
                                 retry=Retry(NoBackoff(), 0)))


def test_the_policy_is_logged_a_warning_when_a_power_loss_can_take_acknowledged_writes(
        durable, caplog):
    caplog.set_level(logging.INFO, logger="notifier.ledger.durability")
    assert log_fsync_policy(durable) == "always"
    durable.config_set("appendfsync", "no")
    assert log_fsync_policy(durable) == "no"
    assert [(r.levelname, r.getMessage().split(";")[0]) for r in caplog.records] == [
        ("INFO", "redis fsync policy: always"), ("WARNING", "redis fsync policy: no")]


def test_a_serving_command_logs_the_policy_when_it_starts_a_one_shot_does_not(
        durable_url, tmp_path, caplog):
    """dev, web, worker and clock open the runtime `serving`; `notifications` or
    `send-event` print their answer alone."""
    caplog.set_level(logging.INFO, logger="notifier.ledger.durability")
    settings = Settings.from_env({"NOTIFIER_REDIS_URL": durable_url,
                                  "NOTIFIER_OUTBOX_DIR": str(tmp_path / "outbox"),
                                  "NOTIFIER_VAR_DIR": str(tmp_path / "var")},
                                 dotenv=Path("/nonexistent"))
    with open_runtime(settings):
        pass
    assert caplog.records == []
    with open_runtime(settings, serving=True):
        pass
    assert [r.getMessage() for r in caplog.records] == ["redis fsync policy: always"]


def test_healthz_reports_the_policy(durable_url, durable):
    settings = Settings.from_env({"NOTIFIER_WEBHOOK_SECRET": "whsec_" + "A" * 44},
                                 dotenv=Path("/nonexistent"))
    broker = build_broker(durable_url)
    with TestClient(create_app(settings, Store(durable), broker)) as client:
        assert client.get("/healthz").json() == {"status": "ok", "redis": "ok",
                                                 "redis_fsync": "always",
                                                 "ledger_shards_lost": 0}
        durable.config_set("appendfsync", "everysec")
        assert client.get("/healthz").json()["redis_fsync"] == "everysec"
    broker.close()


def test_the_embedded_redis_fsyncs_every_write(tmp_path):
    """README, Guarantees: the embedded Redis (`notifier dev`, and every command run without
    `NOTIFIER_REDIS_URL`) runs with `appendfsync always`, so its 202s survive a power loss."""
    with EmbeddedRedis(tmp_path / "var") as server:
        client = redis.Redis.from_url(server.url)
        try:
            assert fsync_policy(client) == "always"
        finally:
            client.close()
