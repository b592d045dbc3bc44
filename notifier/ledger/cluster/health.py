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
from dataclasses import dataclass
from typing import Literal

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


def _up(cluster: RedisCluster) -> list[bool]:
    answers = []
    for node in cluster.get_primaries():  # type: ignore[no-untyped-call]
        client = cluster.get_redis_connection(node)
        try:
            info = client.cluster("INFO")
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            answers.append(False)
            continue
        # redis-py parses the reply into a dict of its `field:value` lines.
        answers.append(isinstance(info, dict) and info.get("cluster_state") == "ok")
    return answers


def cluster_health(cluster: RedisCluster) -> ClusterHealth:
    """Ask each master (one after the other, each within the client's timeouts: a killed
    one refuses at once, a hung one takes the read timeout). When one is down the slot
    map is read again and the masters asked again, so a failover already done is seen
    (the client itself reads it again only when a command fails). Raises nothing."""
    up = _up(cluster)
    if not all(up):
        try:
            cluster.nodes_manager.initialize()
        except (RedisClusterException, redis.RedisError) as exc:
            log.debug("slot map not read again: %s", exc)
        else:
            up = _up(cluster)
    return ClusterHealth(masters=len(up), down=up.count(False))
