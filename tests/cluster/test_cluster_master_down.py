"""The clock's shard leases and claims, and an event's lookup by id, with one master of the
3-master cluster killed (no replicas: its shards have no server): the shards of the other
masters are still held and claimed, the dead master's are skipped, and taken back when it
returns; with the heartbeat set's (`n:clocks`) master down a clock counts itself alone;
an event of a live shard is found by its id alone. The end-to-end run of the same:
`tests/end_to_end/test_cluster_end_to_end.py`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from notifier.errors import StoreUnavailable
from notifier.ledger.cluster.server import LocalCluster
from notifier.ledger.shard_leases import CLOCKS, ShardLeases
from notifier.ledger.store import Store
from tests.ledger_keys import put_on_schedule

NOW = datetime.now(UTC)


@pytest.fixture
def store(cluster: LocalCluster, cluster_client: RedisCluster) -> Store:
    for node in cluster.nodes:
        with redis.Redis.from_url(node.url) as client:
            client.flushall()
    return Store(cluster_client)


def shards_on(cluster: LocalCluster, store: Store, master: int) -> set[int]:
    keys = store.keys
    return {s for s in keys.all()
            if cluster.node_of_slot(key_slot(keys.schedule(s).encode())) == master}


def a_master_without_the_heartbeat(cluster: LocalCluster) -> int:
    clocks = cluster.node_of_slot(key_slot(CLOCKS.encode()))
    return next(i for i in range(len(cluster.nodes)) if i != clocks)


def test_leases_skip_a_dead_masters_shards_and_take_them_back(cluster, store, master_back):
    leases = ShardLeases(store.redis, store.keys)
    every = list(store.keys.all())
    assert leases.renew() == every
    killed = a_master_without_the_heartbeat(cluster)
    dead = shards_on(cluster, store, killed)
    assert dead
    master_back.append(killed)
    cluster.kill(killed)
    assert leases.renew() == sorted(set(every) - dead)
    cluster.restart(killed)
    # Its leases there are still this clock's (not expired): taken back at once.
    assert leases.renew() == every
    assert {store.redis.get(store.keys.clock_lease(s)) for s in dead} == {
        leases.token.encode()}


def test_leases_go_on_as_if_alone_when_the_heartbeat_sets_master_is_down(
        cluster, store, master_back):
    """Two clocks share the shards; the heartbeat set's master dies: each counts itself
    alone, keeps what it holds and takes what is free on the live masters (one clock per
    shard still), so no live shard is left unclaimed; the fair share is back with it."""
    first, second = (ShardLeases(store.redis, store.keys) for _ in range(2))
    for clock in (first, second, first, second):  # the first gives back half, to the second
        clock.renew()
    assert len(first.held) == len(second.held) == 8
    clocks = cluster.node_of_slot(key_slot(CLOCKS.encode()))
    live = set(store.keys.all()) - shards_on(cluster, store, clocks)
    master_back.append(clocks)
    cluster.kill(clocks)
    second.held = []  # as if the second clock died with the master: its leases run out
    for shard in live:
        store.redis.delete(store.keys.clock_lease(shard))
    assert set(first.renew()) == live and first.alone
    assert second.renew() == [] and second.alone
    cluster.restart(clocks)
    # The second's beat is still in the set (not yet expired): two clocks, eight each.
    assert len(first.renew()) == 8 and not first.alone
    with pytest.raises(StoreUnavailable):
        for index in range(len(cluster.nodes)):
            master_back.append(index)
            cluster.kill(index)
        first.renew()


def test_the_live_masters_shards_are_claimed_while_one_is_down(cluster, store, master_back):
    keys = store.keys
    due = {f"appointment_reminder:apt{i}:r1:sms": NOW.timestamp() - 1 for i in range(40)}
    put_on_schedule(store.redis, due, keys)
    killed = a_master_without_the_heartbeat(cluster)
    dead = shards_on(cluster, store, killed)
    on_dead = {i for i in due if keys.of_notification(i) in dead}
    assert on_dead and on_dead != set(due)
    master_back.append(killed)
    cluster.kill(killed)
    held = ShardLeases(store.redis, store.keys).renew()
    # The in-flight count of every shard is read for the cap: the dead ones count none.
    claimed = store.schedule.claim(NOW, 100, 30, shards=held)
    assert set(claimed) == set(due) - on_dead
    # Asked for the dead shards, it finds nothing due there rather than failing.
    assert store.schedule.claim(NOW, 100, 30, shards=sorted(dead)) == []
    cluster.restart(killed)
    assert set(store.schedule.claim(NOW + timedelta(seconds=1), 100, 30)) == on_dead


def test_an_event_is_found_by_id_in_the_shards_that_answer(cluster, store, master_back):
    """A lookup by id alone reads every shard: the live masters' answer is enough to find
    an event of theirs; an id found nowhere, some shards unread, may be there: raised."""
    keys = store.keys
    killed = a_master_without_the_heartbeat(cluster)
    dead = shards_on(cluster, store, killed)
    subject = next(f"client:c{i}" for i in range(100) if keys.of_ref(f"client:c{i}")
                   not in dead)
    assert store.store_event("evt-live", b"{}", NOW, subject=subject, occurred_at=NOW)
    master_back.append(killed)
    cluster.kill(killed)
    assert store.event_status("evt-live")["status"] == "accepted"
    with pytest.raises(StoreUnavailable):
        store.event_status("evt-unknown")
    cluster.restart(killed)
    assert store.event_status("evt-unknown") == {}
