"""The ledger's client on the real 3-master cluster (`LedgerCluster`, its transaction on one
slot's node and its pipeline spread over the nodes), and the same calls on one Redis:
WATCH/MULTI with a ledger script, a concurrent write retried, replies in the caller's
order, a `Batch` over three masters, `CrossSlot` before anything is sent, a killed
master, a slot moved under the client, a slot that keeps moving, a slot migrating."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from notifier.errors import CrossSlot, StoreError, StoreUnavailable
from notifier.ledger.batch import Batch
from notifier.ledger.client import LedgerRedis, ledger_client
from notifier.ledger.cluster.client import LedgerCluster
from notifier.ledger.cluster.pipelines import ClusterTransaction, SpreadPipeline
from notifier.ledger.cluster.server import LocalCluster
from notifier.ledger.lua import lua_source
from tests.cluster.conftest import TIMEOUT_S

NOW = 1_800_000_000
ECHO = "return {KEYS[1], ARGV[1]}"


def shard_on(cluster: LocalCluster, index: int) -> str:
    """The lowest shard number whose hash tag (`n:{7}:...`) master `index` serves."""
    return next(str(n) for n in range(1000)
                if cluster.node_of_slot(key_slot(str(n).encode())) == index)


def node(cluster: LocalCluster, index: int) -> redis.Redis:
    """A plain client on master `index` alone (close it after)."""
    return redis.Redis.from_url(cluster.nodes[index].url)


def fresh_client(cluster: LocalCluster, **options: Any) -> RedisCluster:
    """A cluster client of its own (its own slot map), failing fast as the session's."""
    return cluster.client(socket_connect_timeout=TIMEOUT_S, socket_timeout=TIMEOUT_S,
                          retry=Retry(NoBackoff(), 1), **options)


def command_calls(cluster: LocalCluster, *names: str) -> dict[tuple[int, str], int]:
    """How many times each master has run each of `names` (INFO commandstats)."""
    calls = {}
    for index in range(len(cluster.nodes)):
        client = node(cluster, index)
        stats = client.info("commandstats")
        client.close()
        for name in names:
            calls[index, name] = int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
    return calls


@dataclass
class Ledger:
    """The ledger's client under test, a plain client writing beside it, and one shard per
    master (three shards on one Redis too, where they all live in the one server)."""

    client: Any
    other: Any
    shards: list[str]
    flush_scripts: Callable[[], None]
    cluster: LocalCluster | None = None

    def key(self, master: int, name: str) -> str:
        return f"n:{{{self.shards[master]}}}:{name}"

    def on_master(self, master: int, key: str) -> bool:
        """Whether `key` is stored by `master` itself (always true on one Redis)."""
        if self.cluster is None:
            return bool(self.other.exists(key))
        client = node(self.cluster, master)
        try:
            return bool(client.exists(key))
        finally:
            client.close()


@pytest.fixture(params=["one Redis", "cluster"])
def ledger(request: pytest.FixtureRequest) -> Iterator[Ledger]:
    if request.param == "one Redis":
        plain = request.getfixturevalue("redis_client")
        yield Ledger(ledger_client(plain), plain, ["0", "1", "2"], plain.script_flush)
        return
    cluster: LocalCluster = request.getfixturevalue("cluster")
    raw: RedisCluster = request.getfixturevalue("cluster_client")
    for index in range(len(cluster.nodes)):
        client = node(cluster, index)
        client.flushall()
        client.close()

    def flush_scripts() -> None:
        for index in range(len(cluster.nodes)):
            client = node(cluster, index)
            client.script_flush()
            client.close()

    yield Ledger(ledger_client(raw), raw, [shard_on(cluster, i) for i in range(3)],
                 flush_scripts, cluster)


def claim_due(ledger: Ledger, master: int, interfere: Callable[[], None] | None = None
              ) -> tuple[int, list[bytes]]:
    """The clock's claim as a WATCH loop (reads under WATCH, then MULTI and the
    `notif_claim` script): (tries taken, ids claimed). `interfere` runs once, between the
    first try's reads and its EXEC."""
    claim = ledger.client.register_script(lua_source("notif_claim"))
    schedule, inflight = ledger.key(master, "schedule"), ledger.key(master, "inflight")
    for attempt in range(5):
        with ledger.client.pipeline() as pipe:
            try:
                with ledger.client.pipeline(transaction=False) as reads:
                    reads.zcard(inflight)
                    reads.zrangebyscore(schedule, "-inf", NOW)
                    _, due = pipe.watch_and_read([schedule, inflight], reads)
                if interfere is not None and attempt == 0:
                    interfere()
                pipe.multi()
                claim(keys=[schedule, inflight], args=[NOW, 10, NOW + 60, 100], client=pipe)
                pipe.hset(ledger.key(master, "seen"), "due", len(due))
                claimed, _ = pipe.execute()
                return attempt + 1, claimed
            except redis.WatchError:
                continue
    raise AssertionError("never claimed")


def test_a_watched_transaction_with_a_ledger_script_runs_on_its_slots_master(ledger):
    schedule = ledger.key(1, "schedule")
    ledger.other.zadd(schedule, {"a": NOW - 10, "b": NOW - 5, "later": NOW + 100})
    ledger.flush_scripts()  # the script goes as EVAL of its source: no NOSCRIPT in EXEC
    assert claim_due(ledger, 1) == (1, [b"a", b"b"])
    inflight = ledger.key(1, "inflight")
    assert ledger.other.zrange(inflight, 0, -1, withscores=True) == [
        (b"a", NOW + 60), (b"b", NOW + 60)]
    assert ledger.other.zrange(schedule, 0, -1) == [b"later"]
    assert ledger.on_master(1, inflight)
    assert ledger.other.hget(ledger.key(1, "seen"), "due") == b"2"


def test_a_concurrent_write_to_a_watched_key_runs_the_transaction_again(ledger):
    schedule = ledger.key(2, "schedule")
    ledger.other.zadd(schedule, {"a": NOW - 10})
    tries, claimed = claim_due(ledger, 2, lambda: ledger.other.zadd(schedule, {"b": NOW}))
    assert (tries, claimed) == (2, [b"a", b"b"])
    assert ledger.other.hget(ledger.key(2, "seen"), "due") == b"2"  # read again, fresh


def test_a_plain_pipeline_over_every_master_answers_in_the_callers_order(ledger):
    k0, k1, k2 = (ledger.key(i, "k") for i in range(3))
    echo = ledger.client.register_script(ECHO)
    with ledger.client.pipeline(transaction=False) as pipe:
        pipe.set(k0, "a")
        pipe.set(k1, "b")
        pipe.set(k2, "c")
        pipe.get(k2)
        pipe.get(k0)
        pipe.mget([k0, k1, ledger.key(0, "none"), k2])
        pipe.exists(k0, k1, k2, ledger.key(1, "none"))
        echo(keys=[k1], args=["x"], client=pipe)
        pipe.delete(k0, k1)
        pipe.echo("no key")  # any master answers
        pipe.sadd(ledger.key(2, "set"), "m")
        pipe.sort(ledger.key(2, "set"), by="nosort")  # SORT: keys found without asking
        pipe.zadd(ledger.key(1, "z"), {"m": 1})
        pipe.zunionstore(ledger.key(1, "union"), [ledger.key(1, "z")])  # keys asked for
        replies = pipe.execute()
    assert replies == [True, True, True, b"c", b"a", [b"a", b"b", None, b"c"], 3,
                       [k1.encode(), b"x"], 2, b"no key", 1, [b"m"], 1, 1]
    assert ledger.on_master(2, k2)
    assert ledger.on_master(1, ledger.key(1, "union"))


def test_a_transaction_of_keyless_commands_runs_on_any_master(ledger):
    with ledger.client.pipeline() as pipe:
        pipe.multi()
        pipe.echo("a")
        pipe.echo("b")
        assert pipe.execute() == [b"a", b"b"]


def test_a_refused_command_of_a_plain_pipeline_is_raised_as_store_error(ledger):
    k0, k1 = ledger.key(0, "str"), ledger.key(1, "str")
    ledger.other.set(k0, "v")
    with ledger.client.pipeline(transaction=False) as pipe:
        pipe.set(k1, "w")
        pipe.smembers(k0)  # WRONGTYPE
        with pytest.raises(StoreError, match="WRONGTYPE"):
            pipe.execute()
    assert ledger.other.get(k1) == b"w"  # the others ran, as on one Redis


def test_a_batch_of_script_calls_over_every_master_each_gets_its_answer(ledger):
    claim = ledger.client.register_script(lua_source("notif_claim"))
    for master in range(3):
        ledger.other.zadd(ledger.key(master, "schedule"), {f"due{master}": NOW - master})
        ledger.other.set(ledger.key(master, "note"), f"note{master}")
    ledger.client.script_load(claim.script)
    ledger.flush_scripts()  # NOSCRIPT on every master: each call is run again, loading it
    batch = Batch(ledger.client)
    claims = [batch.script(claim, [ledger.key(m, "schedule"), ledger.key(m, "inflight")],
                           [NOW, 10, NOW + 60, 100], parse=list)
              for m in range(3)]
    notes = batch.call("mget", [ledger.key(m, "note") for m in (2, 0, 1)], parse=list)
    wrong = batch.call("get", ledger.key(1, "schedule"), parse=bytes)
    batch.run()
    assert [c.get() for c in claims] == [[b"due0"], [b"due1"], [b"due2"]]
    assert notes.get() == [b"note2", b"note0", b"note1"]  # split per slot, in key order
    with pytest.raises(StoreError, match="WRONGTYPE"):
        wrong.get()
    assert all(ledger.on_master(m, ledger.key(m, "inflight")) for m in range(3))


def test_ledger_client_of_a_cluster_shares_its_nodes_and_leaves_them_open(cluster_client):
    ledger = ledger_client(cluster_client)
    assert isinstance(ledger, LedgerCluster)
    assert ledger.nodes_manager is cluster_client.nodes_manager
    assert ledger_client(ledger) is ledger
    assert isinstance(ledger.pipeline(), ClusterTransaction)
    assert isinstance(ledger.pipeline(transaction=False), SpreadPipeline)
    ledger.close()
    del ledger
    cluster_client.set("after-close", "still open")
    assert cluster_client.get("after-close") == b"still open"
    assert isinstance(ledger_client(redis.Redis()), LedgerRedis)


def test_keys_of_many_slots_raise_cross_slot_before_anything_is_sent(cluster, cluster_client):
    ledger = ledger_client(cluster_client)
    k0, k1 = f"n:{{{shard_on(cluster, 0)}}}:a", f"n:{{{shard_on(cluster, 1)}}}:b"
    sent = ("watch", "multi", "exec", "set", "get", "sunion", "eval", "evalsha")
    before = command_calls(cluster, *sent)
    with ledger.pipeline() as pipe:
        pipe.multi()
        pipe.set(k0, "1")
        with pytest.raises(CrossSlot, match=re.escape(f"'{k0}' in slot {key_slot(k0.encode())}, "
                                                      f"'{k1}' in slot {key_slot(k1.encode())}")):
            pipe.set(k1, "1")
    with ledger.pipeline() as pipe, pytest.raises(CrossSlot):
        pipe.watch(k0, k1)
    with ledger.pipeline() as pipe, ledger.pipeline(transaction=False) as reads:
        reads.get(k1)
        with pytest.raises(CrossSlot):
            pipe.watch_and_read([k0], reads)
    echo = ledger.register_script(ECHO)
    with ledger.pipeline() as pipe:
        pipe.multi()
        with pytest.raises(CrossSlot):
            echo(keys=[k0, k1], args=["x"], client=pipe)
    with ledger.pipeline(transaction=False) as pipe, pytest.raises(CrossSlot):
        pipe.sunion(k0, k1)
    with ledger.pipeline(transaction=False) as pipe, pytest.raises(CrossSlot):
        pipe.sort(k0, store=k1)
    with pytest.raises(CrossSlot):
        ledger.sunion(k0, k1)
    batch = Batch(ledger)
    fine = batch.call("set", k0, "1", parse=bool)
    mixed = batch.script(echo, [k0, k1], ["x"], parse=list)
    batch.run()
    for reply in (fine, mixed):  # a mistake in the batch: all of it fails, nothing sent
        with pytest.raises(CrossSlot):
            reply.get()
    with pytest.raises(CrossSlot):
        echo(keys=[k0, k1], args=["x"])
    assert command_calls(cluster, *sent) == before
    assert cluster_client.exists(k0, k1) == 0


def test_a_killed_master_is_store_unavailable_at_once_and_serves_again_after_restart(
        cluster, cluster_client, master_back):
    ledger = ledger_client(cluster_client)
    shards = [shard_on(cluster, i) for i in range(3)]
    keys = [f"n:{{{s}}}:kept" for s in shards]
    for key in keys:
        ledger.set(key, key)
    # A client that knows only master 2: with it down, no startup node answers.
    only = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", cluster.nodes[2].port)],
                        dynamic_startup_nodes=False, socket_timeout=TIMEOUT_S,
                        socket_connect_timeout=TIMEOUT_S, retry=Retry(NoBackoff(), 1))
    master_back.append(2)
    cluster.kill(2)
    with pytest.raises(StoreUnavailable):
        ledger.get(keys[2])
    with pytest.raises(StoreUnavailable) as no_node:
        ledger_client(only).get(keys[2])
    assert isinstance(no_node.value.__cause__, RedisClusterException)
    with ledger.pipeline() as pipe, pytest.raises(StoreUnavailable):
        pipe.watch(keys[2])
    with ledger.pipeline() as pipe:
        pipe.multi()
        pipe.set(keys[2], "lost?")
        with pytest.raises(StoreUnavailable):
            pipe.execute()
    with ledger.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.get(key)
        got = pipe.execute(raise_on_error=False)
    assert got[:2] == [k.encode() for k in keys[:2]]
    assert isinstance(got[2], StoreUnavailable)
    batch = Batch(ledger)
    replies = [batch.call("get", key, parse=bytes.decode) for key in keys]
    batch.run()
    assert [r.get() for r in replies[:2]] == keys[:2]
    with pytest.raises(StoreUnavailable):
        replies[2].get()
    assert ledger.get(keys[0]) == keys[0].encode()  # the others' slots are served
    cluster.restart(2)
    master_back.clear()
    assert ledger.get(keys[2]) == keys[2].encode()  # its append-only file kept it
    with ledger.pipeline() as pipe:
        pipe.watch(keys[2])
        pipe.multi()
        pipe.set(keys[2], "after")
        assert pipe.execute() == [True]
    assert ledger_client(only).get(keys[2]) == b"after"
    only.close()


def test_a_hung_master_is_store_unavailable_after_the_clients_timeout(
        cluster, cluster_client, master_back):
    ledger = ledger_client(cluster_client)
    hung, served = (f"n:{{{shard_on(cluster, i)}}}:hung" for i in (2, 0))
    ledger.set(hung, "v")
    ledger.set(served, "w")
    master_back.append(2)
    cluster.pause(2)
    # Not a speed check (those are benchmarks): what it rules out is waiting on the hung
    # node without end (redis-py's defaults: about 55 s). The client's own bound is its
    # timeout (0.25 s) times its two attempts, for each of the two calls (1 s); 15 s leaves
    # a loaded 2-core CI machine all the room it needs.
    bound_s = 15.0
    started = time.monotonic()
    with ledger.pipeline() as pipe, pytest.raises(StoreUnavailable, match="Timeout"):
        pipe.watch(hung)
    with ledger.pipeline(transaction=False) as pipe:
        pipe.get(served)
        pipe.get(hung)
        got = pipe.execute(raise_on_error=False)
    assert got[0] == b"w"
    assert isinstance(got[1], StoreUnavailable)
    assert time.monotonic() - started < bound_s
    cluster.resume(2)
    master_back.clear()
    assert ledger.get(hung) == b"v"


def test_a_slot_the_clients_map_gives_no_node_is_store_unavailable(cluster):
    ledger = ledger_client(fresh_client(cluster))
    lost, kept = (f"n:{{{shard_on(cluster, i)}}}:k" for i in (1, 0))
    # As after a map read while the slot's master was being replaced: no node for it.
    del ledger.nodes_manager.slots_cache[key_slot(lost.encode())]
    with ledger.pipeline() as pipe, pytest.raises(StoreUnavailable, match="not covered"):
        pipe.watch(lost)
    with ledger.pipeline(transaction=False) as pipe:
        pipe.set(kept, "v")
        pipe.get(lost)
        got = pipe.execute(raise_on_error=False)
    assert got[0] is True
    assert isinstance(got[1], StoreUnavailable)
    ledger.close()


def node_id(cluster: LocalCluster, index: int) -> str:
    client = node(cluster, index)
    try:
        return str(client.execute_command("CLUSTER", "MYID"), "ascii")
    finally:
        client.close()


def set_slot(cluster: LocalCluster, slot: int, *steps: tuple[int, str, int]) -> None:
    """`CLUSTER SETSLOT slot <how> <id of master target>` on master `on`, per
    (on, how, target); `how` "STABLE" takes no target."""
    for on, how, target in steps:
        client = node(cluster, on)
        args = [] if how == "STABLE" else [node_id(cluster, target)]
        client.execute_command("CLUSTER", "SETSLOT", slot, how, *args)
        client.close()


def empty(cluster: LocalCluster, slot: int) -> None:
    """Delete every key of `slot`, on every master."""
    for index in range(len(cluster.nodes)):
        client = node(cluster, index)
        for key in client.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000):
            client.delete(key)
        client.close()


@pytest.fixture
def empty_slot(cluster: LocalCluster) -> Iterator[tuple[str, int]]:
    """A shard on master 0 whose slot holds no key, for tests that move it; given back to
    master 0 (its keys deleted) after, and the cluster ready again."""
    shard = shard_on(cluster, 0)
    slot = key_slot(shard.encode())
    empty(cluster, slot)
    yield shard, slot
    empty(cluster, slot)
    set_slot(cluster, slot, (0, "STABLE", 0), (1, "STABLE", 0),
             (1, "NODE", 0), (0, "NODE", 0), (2, "NODE", 0))
    cluster.wait_ready()


def test_a_slot_moved_under_the_client_is_followed_and_a_watch_across_it_starts_again(
        cluster, empty_slot):
    shard, slot = empty_slot
    key = f"n:{{{shard}}}:moved"
    transactions, pipelines = (ledger_client(fresh_client(cluster)) for _ in range(2))
    with transactions.pipeline() as watching, transactions.pipeline(transaction=False) as reads:
        reads.get(key)
        assert watching.watch_and_read([key], reads) == [None]  # on master 0
        set_slot(cluster, slot, (1, "NODE", 1), (0, "NODE", 1), (2, "NODE", 1))
        watching.multi()
        watching.set(key, "never")
        with pytest.raises(redis.WatchError):  # its reads came from a master that lost the slot
            watching.execute()
    with transactions.pipeline() as pipe, transactions.pipeline(transaction=False) as reads:
        reads.get(key)
        assert pipe.watch_and_read([key], reads) == [None]  # now on master 1
        pipe.multi()
        pipe.set(key, "moved")
        assert pipe.execute() == [True]
    with pipelines.pipeline(transaction=False) as pipe:  # its map still says master 0
        pipe.get(key)
        pipe.set(f"n:{{{shard}}}:second", "x")
        assert pipe.execute() == [b"moved", True]
    on_one = node(cluster, 1)
    assert on_one.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 2
    on_one.close()
    for client in (transactions, pipelines):
        client.close()


def test_a_slot_that_keeps_moving_is_store_unavailable(cluster, empty_slot):
    shard, slot = empty_slot
    key = f"n:{{{shard}}}:pingpong"
    ledger = ledger_client(fresh_client(cluster))
    # Master 0 says master 1 has the slot; master 1 still says master 0 has it.
    set_slot(cluster, slot, (0, "NODE", 1))
    with pytest.raises(StoreUnavailable, match="TTL exhausted"):
        ledger.get(key)
    with ledger.pipeline() as pipe:
        pipe.multi()
        pipe.set(key, "x")
        with pytest.raises(StoreUnavailable, match=f"slot {slot} still redirected"):
            pipe.execute()
    with ledger.pipeline(transaction=False) as pipe:
        pipe.set(key, "x")
        with pytest.raises(StoreUnavailable, match=f"slot {slot} still redirected"):
            pipe.execute()
    ledger.close()


def test_a_migrating_slot_waits_a_little_then_is_store_unavailable(cluster, empty_slot):
    shard, slot = empty_slot
    key = f"n:{{{shard}}}:migrating"
    ledger = ledger_client(fresh_client(cluster))
    set_slot(cluster, slot, (1, "IMPORTING", 0), (0, "MIGRATING", 1))
    # A key not on master 0 (any more): ASK, to master 1.
    with ledger.pipeline() as pipe, pytest.raises(StoreUnavailable, match="ASK"):
        pipe.watch(key)
    with ledger.pipeline(transaction=False) as pipe:
        pipe.get(key)
        with pytest.raises(StoreUnavailable, match="ASK"):
            pipe.execute()
    set_slot(cluster, slot, (0, "STABLE", 0), (1, "STABLE", 0))
    with ledger.pipeline() as pipe:
        pipe.watch(key)
        pipe.multi()
        pipe.set(key, "settled")
        assert pipe.execute() == [True]
    ledger.close()
