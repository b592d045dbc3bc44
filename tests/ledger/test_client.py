"""A Redis failure reaches the web, the worker and delivery as the project's own
`StoreUnavailable` (or `StoreError`), never as a `redis` exception: the ledger's client
translates, and nothing outside `notifier/ledger/` catches redis-py's errors."""

from __future__ import annotations

import ast
import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from notifier.errors import StoreError, StoreUnavailable
from notifier.intake.apply import apply_stored_event
from notifier.intake.events import parse_event
from notifier.ledger.async_events import AsyncEventStore, async_twin
from notifier.ledger.client import LedgerRedis, ledger_client, store_errors
from notifier.ledger.embedded_redis import free_port
from notifier.ledger.shards import ShardKeys
from notifier.ledger.store import Store
from notifier.policy.ordering import subject_ref
from tests.kit import client_upserted

NOW = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
NOTIFIER = Path(__file__).resolve().parent.parent / "notifier"
LEDGER = NOTIFIER / "ledger"


def down_client() -> redis.Redis:
    """A client of a port nothing listens on, failing at once rather than retrying."""
    return redis.Redis(host="127.0.0.1", port=free_port(), retry=Retry(NoBackoff(), 0),
                       socket_connect_timeout=1)


def redis_names(tree: ast.Module) -> set[str]:
    """The local names bound to the redis package or to names imported from it."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.asname or a.name.split(".")[0] for a in node.names
                      if a.name.split(".")[0] == "redis"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "redis":
            names |= {a.asname or a.name for a in node.names}
    return names


def test_no_redis_exception_is_caught_outside_the_ledger():
    offenders = []
    for path in sorted(NOTIFIER.rglob("*.py")):
        if LEDGER in path.parents:
            continue
        tree = ast.parse(path.read_text(), str(path))
        names = redis_names(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.ExceptHandler) or node.type is None:
                continue
            for sub in ast.walk(node.type):
                if isinstance(sub, ast.Name) and sub.id in names:
                    offenders.append(f"{path.relative_to(NOTIFIER.parent)}:{node.lineno}: "
                                     f"except {ast.unparse(node.type)}")
                    break
    assert offenders == []


def test_the_static_check_sees_a_redis_exception_however_it_is_imported():
    tree = ast.parse("import redis as r\nfrom redis.exceptions import TimeoutError as T\n")
    assert redis_names(tree) == {"r", "T"}


def test_an_unreachable_redis_raises_store_unavailable_from_commands_pipelines_scripts():
    client = ledger_client(down_client())
    with pytest.raises(StoreUnavailable, match="Connection refused") as raised:
        client.get("x")
    assert isinstance(raised.value.__cause__, redis.ConnectionError)
    with pytest.raises(StoreUnavailable), client.pipeline() as pipe:
        pipe.get("x")
        pipe.execute()
    with pytest.raises(StoreUnavailable):
        client.register_script("return 1")()
    with pytest.raises(StoreUnavailable):
        Store(down_client()).event_status("evt-1")


def test_a_refused_command_is_a_store_error_and_watch_errors_pass_through(redis_client):
    client = ledger_client(redis_client)
    assert ledger_client(client) is client
    client.set("s", "a string")
    with pytest.raises(StoreError, match="WRONGTYPE") as raised:
        client.hget("s", "field")
    assert not isinstance(raised.value, StoreUnavailable)
    with pytest.raises(StoreError, match="boom"):
        client.register_script("return redis.error_reply('boom')")()
    # A script not loaded yet is loaded by redis-py, not turned into an error.
    client.script_flush()
    assert client.register_script("return 7")() == 7
    with pytest.raises(redis.WatchError), client.pipeline() as pipe:
        pipe.watch("s")
        redis_client.set("s", "changed")
        pipe.multi()
        pipe.set("s", "mine")
        pipe.execute()


def test_the_web_stores_events_with_the_same_errors_on_the_asyncio_client():
    async def store_one() -> bool:
        events = AsyncEventStore(async_twin(down_client()), ShardKeys())
        try:
            return await events.store_event("evt-1", b"{}", NOW)
        finally:
            await events.close()

    with pytest.raises(StoreUnavailable):
        asyncio.run(store_one())


def test_store_errors_translates_around_awaits_too():
    async def fails() -> None:
        with store_errors():
            raise redis.TimeoutError("Timeout reading from socket")

    with pytest.raises(StoreUnavailable, match="Timeout"):
        asyncio.run(fails())


def test_the_runtime_client_is_a_ledger_client(redis_client):
    assert isinstance(Store(redis_client).redis, LedgerRedis)


def test_applying_with_redis_down_raises_store_unavailable():
    with pytest.raises(StoreUnavailable):
        apply_stored_event(Store(down_client()), "evt-1", policy=None,  # type: ignore[arg-type]
                           now=NOW)


def test_store_unavailable_while_applying_is_retried_not_counted_against_the_event(
        redis_client, policy, monkeypatch):
    store = Store(redis_client)
    evt = client_upserted("c1", "UTC", NOW - timedelta(hours=1))
    raw = json.dumps(evt).encode()
    parsed = parse_event(raw)
    store.store_event(evt["id"], raw, NOW, subject=subject_ref(parsed),
                      occurred_at=parsed.occurred_at)

    def away(*args, **kwargs):
        raise StoreUnavailable("Connection refused")

    monkeypatch.setattr(store, "apply_event", away)
    with pytest.raises(StoreUnavailable):
        apply_stored_event(store, evt["id"], policy, NOW)
    assert "failures" not in store.event_status(evt["id"]), "not the event's fault"
    assert store.event_status(evt["id"])["status"] == "accepted"
