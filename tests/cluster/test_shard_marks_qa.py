"""QA of the shard marks on the real 3-master cluster (`ledger.shard_marks`): what a fresh
ledger, a lost count and a changed count do at start-up (`open_shards`)."""

from __future__ import annotations

import contextlib

import pytest
import redis

from notifier.errors import ConfigError, StoreError
from notifier.ledger.cluster.server import LocalCluster
from notifier.ledger.shard_marks import lost_shards, open_shards
from notifier.ledger.shards import SHARDS_KEY, ShardKeys
from notifier.runtime import connect_ledger


def flush(cluster: LocalCluster) -> None:
    for node in cluster.nodes:
        with redis.Redis.from_url(node.url) as client:
            client.flushall()


def lose(cluster: LocalCluster, index: int) -> None:
    """Master `index` back without its append-only file: empty."""
    cluster.kill(index)
    (cluster.nodes[index].directory / "appendonly.aof").unlink()
    cluster.restart(index)


def test_a_first_start_with_a_master_down_leaves_no_shard_reported_lost(
        cluster, master_back):
    """A fresh ledger whose first start-up meets a master down (not the count's): once it
    is back, nothing was ever stored, so no shard may be reported lost."""
    flush(cluster)
    client = connect_ledger(cluster.url)
    try:
        counts = cluster.node_of_slot(client.keyslot(SHARDS_KEY))
        down = next(i for i in range(len(cluster.nodes)) if i != counts)
        master_back.append(down)
        cluster.kill(down)
        with contextlib.suppress(StoreError):  # refused or not: what it leaves matters
            open_shards(client, 16)
        cluster.restart(down)
        assert open_shards(client, 16) == []
        assert lost_shards(client, ShardKeys(16)) == []
    finally:
        client.close()


def test_the_count_master_lost_then_another_count_is_still_refused(cluster, master_back):
    """The master holding `n:shards` back empty, and a process started with another
    `NOTIFIER_LEDGER_SHARDS`: the marks hold the count written (16), so it must be
    refused as it is when that master is merely down."""
    flush(cluster)
    client = connect_ledger(cluster.url)
    try:
        assert open_shards(client, 16) == []
        counts = cluster.node_of_slot(client.keyslot(SHARDS_KEY))
        master_back.append(counts)
        lose(cluster, counts)
        with pytest.raises(ConfigError, match="written with 16 shards"):
            open_shards(client, 8)
    finally:
        client.close()


@pytest.mark.slow
def test_shards_status_does_not_say_none_lost_while_a_master_is_down(
        cluster, master_back, tmp_path):
    """A master back without its data, then down again: `notifier shards status` names its
    shards lost (exit 1) while it is up; while it is down it cannot know, so it must not
    answer 'none lost' with exit 0 (an operator's check, or a script's, passes)."""
    from tests.test_cli import notifier

    flush(cluster)
    client = connect_ledger(cluster.url)
    try:
        open_shards(client, 16)
        other = (cluster.node_of_slot(client.keyslot(SHARDS_KEY)) + 1) % len(cluster.nodes)
    finally:
        client.close()
    master_back.append(other)
    lose(cluster, other)
    env = {"NOTIFIER_REDIS_URL": cluster.url, "NOTIFIER_BROKER_URL": "redis://127.0.0.1:1/0"}
    up = notifier("shards", "status", cwd=tmp_path, env=env)
    assert up.returncode == 1 and "lost (their data is gone)" in up.stdout
    cluster.kill(other)
    down = notifier("shards", "status", cwd=tmp_path, env=env)
    assert (down.returncode, down.stdout.strip()) != (0, "16 shards, none lost")


def test_an_upgrade_started_with_a_master_down_reports_no_shard_lost_once_it_is_back(
        cluster, master_back):
    """A ledger written before marks (its count recorded, no mark: the version before),
    whose first start-up with marks meets a master down (not the count's): nothing was
    lost, so once that master is back no shard may be reported lost."""
    flush(cluster)
    client = connect_ledger(cluster.url)
    try:
        client.set(SHARDS_KEY, 16)  # what the version before marks left, and its data
        counts = cluster.node_of_slot(client.keyslot(SHARDS_KEY))
        down = next(i for i in range(len(cluster.nodes)) if i != counts)
        master_back.append(down)
        cluster.kill(down)
        with contextlib.suppress(StoreError):  # refused or not: what it leaves matters
            open_shards(client, 16)
        cluster.restart(down)
        assert open_shards(client, 16) == []
    finally:
        client.close()
