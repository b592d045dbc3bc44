"""Clocks sharing the schedule's shards (`notifier.ledger.shard_leases`): each takes its
fair share, every due notification is claimed once, a stopped clock's shards are taken at
once and a dead one's within the lease, and a clock never renews a lease another took."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from datetime import UTC, datetime

import pytest

from notifier.ledger.shard_leases import CLOCKS, ShardLeases
from notifier.ledger.store import Store
from notifier.worker.actors import build_broker
from notifier.worker.clock import Clock
from tests.ledger_keys import inflight_count, put_on_schedule, scheduled_count

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


@pytest.fixture
def store(redis_client) -> Store:
    return Store(redis_client)


def clock(store: Store, redis_url: str, **kwargs) -> Clock:
    return Clock(store, build_broker(redis_url), **kwargs)


def settle(*clocks: Clock, rounds: int = 4) -> None:
    """Tick each clock in turn, a few rounds: enough for the shares to settle (a clock
    gives up extras at one tick, the others take them at their next)."""
    for _ in range(rounds):
        for c in clocks:
            c.tick(NOW)


def held(c: Clock) -> set[int]:
    assert c.leases is not None
    return set(c.leases.held)


def handed_ids(store: Store) -> list[str]:
    """Every id in every queued `deliver` message."""
    return [i for m in store.redis.hvals("notifier-dq:deliver.msgs")
            for i in json.loads(m)["args"][0]]


def due_ids(count: int) -> list[str]:
    return [f"appointment_reminder:apt-{i:04d}:72h:sms" for i in range(count)]


def wait_until(check, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_two_clocks_share_sixteen_shards_eight_each(store, redis_url):
    first, second = clock(store, redis_url), clock(store, redis_url)
    settle(first, second)
    assert len(held(first)) == len(held(second)) == 8
    assert held(first) | held(second) == set(range(16))
    assert int(store.redis.zcard(CLOCKS)) == 2


def test_each_clock_claims_only_in_its_own_shards(store, redis_url):
    first, second = clock(store, redis_url), clock(store, redis_url)
    settle(first, second)
    ids = due_ids(400)
    put_on_schedule(store.redis, {i: NOW.timestamp() - 1 for i in ids})
    assert first.tick(NOW) + second.tick(NOW) == 400
    shards = Counter(store.keys.of_notification(i) for i in handed_ids(store))
    assert set(shards) == set(range(16)), "the ids fall in every shard"
    assert sorted(handed_ids(store)) == ids, "each claimed once"


def test_two_running_clocks_claim_every_due_notification_exactly_once(store, redis_url):
    """Both clocks' own loops, at the same time, on notifications due now and falling due
    while they run: none is claimed twice, none is left."""
    clocks = [clock(store, redis_url, poll_s=0.01, min_wait_s=0.001) for _ in range(2)]
    stop = threading.Event()
    threads = [threading.Thread(target=c.run, args=(stop,), daemon=True) for c in clocks]
    ids = due_ids(1200)
    now = time.time()
    put_on_schedule(store.redis, {i: now - 1 for i in ids[:600]})
    for t in threads:
        t.start()
    try:
        put_on_schedule(store.redis, {i: now + 0.5 for i in ids[600:]})
        wait_until(lambda: len(handed_ids(store)) >= len(ids), "every id handed over")
        wait_until(lambda: all(len(held(c)) == 8 for c in clocks if c.leases),
                   "the shares to settle")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    assert sorted(handed_ids(store)) == ids
    assert scheduled_count(store.redis) == 0 and inflight_count(store.redis) == len(ids)
    assert held(clocks[0]) == held(clocks[1]) == set(), "a stopped clock gives its shards up"
    assert store.redis.zcard(CLOCKS) == 0


def test_a_stopped_clock_hands_its_shards_over_at_the_next_tick(store, redis_url):
    first, second = clock(store, redis_url), clock(store, redis_url)
    settle(first, second)
    first.release_shards()
    second.tick(NOW)
    assert held(second) == set(range(16))


def test_a_dead_clocks_shards_are_taken_over_within_the_lease(store, redis_url):
    """The first clock stops ticking without giving anything up (killed): once its leases
    and its heartbeat run out, the other clock's fair share is every shard."""
    first = clock(store, redis_url, shard_lease_s=0.5)
    second = clock(store, redis_url, shard_lease_s=0.5)
    settle(first, second)
    assert len(held(second)) == 8
    dead = held(first)

    def taken() -> bool:
        second.tick(NOW)
        return held(second) == set(range(16))

    wait_until(taken, "the dead clock's shards taken over")
    assert dead <= held(second)
    assert list(store.redis.zrange(CLOCKS, 0, -1)) == [second.leases.token.encode()]


def test_three_clocks_take_six_six_and_four(store, redis_url):
    clocks = [clock(store, redis_url) for _ in range(3)]
    settle(*clocks)
    assert sorted(len(held(c)) for c in clocks) == [4, 6, 6]
    assert set().union(*(held(c) for c in clocks)) == set(range(16))


def test_a_lease_taken_by_another_clock_is_neither_renewed_nor_released(store):
    """A clock whose lease ran out (paused past it) finds it taken: its renewal keeps
    nothing and its release deletes nothing of the new holder's."""
    old = ShardLeases(store.redis, store.keys, token="old")
    assert old.renew() == list(range(16))
    store.redis.delete(store.keys.clock_lease(3))  # run out
    new = ShardLeases(store.redis, store.keys, token="new")
    store.redis.zrem(CLOCKS, "old")  # the old one's heartbeat ran out too
    assert 3 in new.renew()
    store.redis.zadd(CLOCKS, {"old": 0})  # it beats again (dropped at the next beat)
    assert 3 not in old.renew()
    old.held.append(3)  # as if it still thought so
    old.release_all()
    assert store.redis.get(store.keys.clock_lease(3)) == b"new"


def test_a_clock_of_a_store_with_one_shard_claims_it_all(redis_client, redis_url):
    store = Store(redis_client, shards=1)
    c = clock(store, redis_url)
    ids = due_ids(30)
    put_on_schedule(store.redis, {i: NOW.timestamp() - 1 for i in ids}, store.keys)
    assert c.tick(NOW) == 30
    assert held(c) == {0}
    assert sorted(handed_ids(store)) == ids


def test_a_clock_that_cannot_release_its_shards_says_they_expire(redis_url, caplog):
    """Redis gone as the clock stops: the release fails, the stop goes on, and the log
    says the shards are free within the lease."""
    from notifier.ledger.client import LedgerRedis

    down = Store(LedgerRedis(host="127.0.0.1", port=1, socket_connect_timeout=0.2))
    c = clock(down, redis_url, shard_lease_s=5)
    c.leases = ShardLeases(down.redis, down.keys)
    c.leases.held = [3]
    c.release_shards()
    assert [r.getMessage() for r in caplog.records] == [
        "could not release the clock's shards; they are free within 5 s"]
