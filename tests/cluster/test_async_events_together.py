"""Events posted together to a web on the real 3-master cluster: the asyncio twin reads the
slot map before requests share it (`AsyncEventStore.connect`), because redis-py 8.1's
asyncio cluster client, left to read it on first use, failed some of the requests that
arrived together (found by `python -m bench.cluster_burst`: 16 connections posting at
once; here, without `connect`, 1 to 10 of 64 failed in about half of the rounds)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
import redis.asyncio.cluster
import uvloop
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from notifier.errors import StoreUnavailable
from notifier.ledger.async_events import AsyncEventStore, async_twin
from notifier.ledger.cluster.server import LocalCluster, cluster_ports
from notifier.ledger.shards import ShardKeys
from notifier.ledger.store import Store
from notifier.runtime import connect_ledger
from notifier.web.events import EventStores

NOW = datetime.now(UTC).replace(microsecond=0)
TOGETHER = 64
ROUNDS = 6



def test_events_posted_together_on_a_new_client_are_all_stored(store: Store) -> None:
    async def together(round_: int) -> list[object]:
        events = AsyncEventStore(async_twin(store.redis), store.keys)
        await events.connect()
        try:
            return await asyncio.gather(*(
                events.store_event(f"evt-{round_}-{i}", b"{}", NOW,
                                   subject=f"appointment:a{round_}-{i}", occurred_at=NOW)
                for i in range(TOGETHER)), return_exceptions=True)
        finally:
            await events.close()

    # uvloop, as uvicorn runs the web: the race showed there most.
    outcomes = [uvloop.run(together(round_)) for round_ in range(ROUNDS)]

    assert outcomes == [[True] * TOGETHER] * ROUNDS
    assert store.event_subject(f"evt-{ROUNDS - 1}-{TOGETHER - 1}") == (
        "accepted", f"appointment:a{ROUNDS - 1}-{TOGETHER - 1}")


def dead_cluster_store() -> AsyncEventStore:
    """An event store on a cluster of two ports where nothing listens."""
    nodes = [redis.asyncio.cluster.ClusterNode("127.0.0.1", port)
             for port in cluster_ports(2)]
    client = redis.asyncio.cluster.RedisCluster(
        startup_nodes=nodes, socket_connect_timeout=0.25, socket_timeout=0.25,
        retry=Retry(NoBackoff(), 0))
    return AsyncEventStore(client, ShardKeys(8))


def test_connecting_to_a_cluster_where_no_master_answers_is_store_unavailable() -> None:
    async def connect() -> None:
        events = dead_cluster_store()
        try:
            await events.connect()
        finally:
            await events.close()

    with pytest.raises(StoreUnavailable, match="Redis Cluster"):
        asyncio.run(connect())


def test_the_web_starts_serving_when_the_cluster_cannot_be_read_at_start(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lone = LocalCluster(tmp_path, masters=1).start()
    client = connect_ledger(lone.url)
    lone.stop()  # gone between the web's start-up checks and its lifespan
    stores = EventStores(Store(client, shards=8))

    async def serve() -> bool:
        async with stores.serving():
            return True

    try:
        with caplog.at_level(logging.WARNING, logger="notifier.web.events"):
            assert asyncio.run(serve())
    finally:
        client.close()
    assert "could not connect at start" in caplog.text


def test_connecting_on_one_redis_is_nothing(store: Store) -> None:
    single = redis.asyncio.Redis(host="127.0.0.1", port=1)  # nothing listens: never used

    async def connect() -> None:
        events = AsyncEventStore(single, ShardKeys(8))
        await events.connect()
        await events.close()

    asyncio.run(connect())
