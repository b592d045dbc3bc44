"""The web's asyncio event writes on the real 3-master cluster (`async_events`): the twin
of the runtime's `LedgerCluster` is a `redis.asyncio.cluster.RedisCluster` with its
settings, and an event stored through it is read by the worker's synchronous store."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
import redis
import redis.asyncio.cluster

from notifier.errors import StoreUnavailable
from notifier.ledger.async_events import AsyncEventStore, async_twin
from notifier.ledger.cluster.server import LocalCluster
from notifier.ledger.daily import refused_key
from notifier.ledger.store import Store
from notifier.runtime import CLUSTER_SOCKET_TIMEOUT_S

NOW = datetime.now(UTC).replace(microsecond=0)



def subjects_on_every_master(store: Store, cluster: LocalCluster) -> dict[int, str]:
    found: dict[int, str] = {}
    for i in range(200):
        subject = f"appointment:a{i}"
        key = store.keys.subject_queue(subject)
        found.setdefault(cluster.node_of_slot(store.redis.keyslot(key)), subject)
    assert len(found) == len(cluster.nodes)
    return found


def test_the_twin_of_a_cluster_client_is_an_asyncio_cluster_client_with_its_settings(store):
    twin = async_twin(store.redis)
    assert isinstance(twin, redis.asyncio.cluster.RedisCluster)
    assert {(n.host, n.port) for n in twin.nodes_manager.startup_nodes.values()} == \
        {(n.host, n.port) for n in store.redis.get_primaries()}
    assert twin.connection_kwargs["socket_timeout"] == CLUSTER_SOCKET_TIMEOUT_S
    assert twin.retry.get_retries() == store.redis.retry.get_retries()
    asyncio.run(twin.aclose())


def test_events_stored_on_every_master_are_read_by_the_worker_store(store, cluster):
    subjects = subjects_on_every_master(store, cluster)

    async def post() -> list[bool]:
        events = AsyncEventStore(async_twin(store.redis), store.keys)
        try:
            stored = [await events.store_event(f"evt-{n}", b"{}", NOW, subject=subject,
                                               occurred_at=NOW)
                      for n, subject in subjects.items()]
            stored.append(await events.store_event("evt-0", b"{}", NOW,
                                                   subject=subjects[0], occurred_at=NOW))
            await events.count_refused("appointment.booked", NOW)
            await events.count_refused("appointment.booked", NOW)
            return stored
        finally:
            await events.close()

    assert asyncio.run(post()) == [True] * len(subjects) + [False]  # the repeat: a duplicate
    for n, subject in subjects.items():
        assert store.event_subject(f"evt-{n}") == ("accepted", subject)
    assert store.redis.hget(refused_key(NOW.date()), "appointment.booked") == b"2"


def test_a_killed_master_fails_the_asyncio_write_with_store_unavailable_fast(
        store, cluster, master_back):
    subjects = subjects_on_every_master(store, cluster)

    async def post(subject: str) -> bool:
        # As the web does: the slot map read at start (`connect`). A client left to read
        # it on first use sometimes sent a live shard's write to the dead master first
        # (about 6 in 40 fresh clients, none of 40 connected ones).
        events = AsyncEventStore(async_twin(store.redis), store.keys)
        try:
            await events.connect()
            return await events.store_event(f"evt-{subject}", b"{}", NOW, subject=subject,
                                            occurred_at=NOW)
        finally:
            await events.close()

    master_back.append(1)
    cluster.kill(1)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        asyncio.run(post(subjects[1]))
    assert time.monotonic() - started < 5
    assert asyncio.run(post(subjects[0]))  # the other masters' shards still take events
