"""How a Redis Cluster ledger stands, for `/healthz`: each master the client's slot map
names, asked on its own connection whether it answers and holds the cluster as working
(`CLUSTER INFO`'s `cluster_state:ok`).

A master that answers PING can still refuse every command: with
`cluster-require-full-coverage yes` (Redis's default) a cluster that lost a master with
no replica to take over is `fail` on every node, and a node cut off from the majority is
`fail` too. So a master counts as up only when it says `cluster_state:ok`.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterHealth:
    """Masters in the slot map, and how many of them are down (no answer, or not
    `cluster_state:ok`)."""

    masters: int
    down: int

    @property
    def state(self) -> Literal["ok", "degraded", "unreachable"]:
        """`ok`: every master up; `degraded`: some down (their shards' calls fail, the
        others' work); `unreachable`: none up."""
        if self.masters == 0 or self.down == self.masters:
            return "unreachable"
        return "degraded" if self.down else "ok"


def _answers(cluster: RedisCluster, node: Any) -> bool:
    client = cluster.get_redis_connection(node)
    try:
        info = client.cluster("INFO")
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
        return False
    # redis-py parses the reply into a dict of its `field:value` lines.
    return isinstance(info, dict) and info.get("cluster_state") == "ok"


def _up(cluster: RedisCluster) -> tuple[list[bool], frozenset[str]]:
    """Each master asked at once, one thread each (a hung one costs its read timeout
    once, not once per hung master); with the masters' names, to tell a new slot map."""
    nodes = cluster.get_primaries()  # type: ignore[no-untyped-call]
    if not nodes:
        return [], frozenset()
    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        answers = list(pool.map(lambda node: _answers(cluster, node), nodes))
    return answers, frozenset(node.name for node in nodes)


def cluster_health(cluster: RedisCluster) -> ClusterHealth:
    """Ask every master at once (each within the client's timeouts: a killed one refuses
    at once, a hung one takes the read timeout). When one is down the slot map is read
    again, and the masters asked again only if it names others, so a failover already
    done is seen (the client itself reads it again only when a command fails). Raises
    nothing."""
    up, names = _up(cluster)
    if not all(up):
        try:
            cluster.nodes_manager.initialize()
        except (RedisClusterException, redis.RedisError) as exc:
            log.debug("slot map not read again: %s", exc)
        else:
            primaries = cluster.get_primaries()  # type: ignore[no-untyped-call]
            if frozenset(node.name for node in primaries) != names:
                up, _ = _up(cluster)
    return ClusterHealth(masters=len(up), down=up.count(False))
