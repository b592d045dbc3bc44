"""The service on the real 3-master cluster: `NOTIFIER_REDIS_URL=redis+cluster://...` builds
a runtime whose ledger is a `LedgerCluster` with short timeouts (`runtime.connect_ledger`),
and the start-up every command makes (`cli.common.open_runtime`: ping, the shard count, the
fsync policy) runs on it.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from notifier.cli.common import open_runtime, redacted
from notifier.config import Settings
from notifier.errors import ConfigError, StoreUnavailable, UsageError
from notifier.ledger.cluster.client import LedgerCluster
from notifier.ledger.cluster.server import LocalCluster
from notifier.ledger.shard_marks import open_shards
from notifier.ledger.shards import SHARDS_KEY
from notifier.runtime import Runtime, connect_ledger
from notifier.worker.actors import build_broker
from notifier.worker.queueing import in_ledger

NOW = datetime.now(UTC).replace(microsecond=0)


def flush(cluster: LocalCluster) -> None:
    for node in cluster.nodes:
        with redis.Redis.from_url(node.url) as client:
            client.flushall()


def cluster_settings(url: str, tmp_path: Path, **more: str) -> Settings:
    return Settings.from_env({"NOTIFIER_REDIS_URL": url,
                              "NOTIFIER_BROKER_URL": "redis://127.0.0.1:1/0",
                              "NOTIFIER_OUTBOX_DIR": str(tmp_path / "outbox"),
                              "NOTIFIER_VAR_DIR": str(tmp_path / "var"), **more},
                             dotenv=Path("/nonexistent"))


def test_a_runtime_on_the_cluster_stores_and_reads_an_event(cluster, tmp_path):
    flush(cluster)
    settings = cluster_settings(cluster.url, tmp_path)
    runtime = Runtime.build(settings, cluster.url)
    try:
        assert isinstance(runtime.redis, LedgerCluster)
        assert runtime.broker_url == "redis://127.0.0.1:1/0"
        assert runtime.store.store_event("evt1", b"{}", NOW, subject="appointment:a1",
                                         occurred_at=NOW)
        assert not runtime.store.store_event("evt1", b"{}", NOW, subject="appointment:a1",
                                             occurred_at=NOW)
        assert runtime.store.event_subject("evt1") == ("accepted", "appointment:a1")
        # A broker apart from the ledger: its messages are never written by the ledger.
        assert not in_ledger(build_broker(runtime.broker_url), runtime.redis)
    finally:
        runtime.redis.close()


def test_start_up_on_the_cluster_records_the_shards_and_logs_the_fsync_policy(
        cluster, tmp_path, caplog):
    flush(cluster)
    caplog.set_level(logging.INFO, logger="notifier.ledger.durability")
    settings = cluster_settings(cluster.url, tmp_path, NOTIFIER_LEDGER_SHARDS="8")
    with open_runtime(settings, serving=True) as runtime:
        assert runtime.redis.get(SHARDS_KEY) == b"8"
    assert [r.getMessage() for r in caplog.records] == ["redis fsync policy: always"]
    with pytest.raises(ConfigError, match="written with 8 shards"), \
            open_runtime(cluster_settings(cluster.url, tmp_path)):
        pass


def test_a_cluster_no_node_of_which_answers_stops_start_up_naming_it(tmp_path):
    url = "redis+cluster://user:pw@127.0.0.1:1,127.0.0.1:2/"
    with pytest.raises(StoreUnavailable):
        connect_ledger(url)
    with pytest.raises(UsageError) as caught, open_runtime(cluster_settings(url, tmp_path)):
        pass
    assert "redis+cluster://user:***@127.0.0.1:1,127.0.0.1:2 " in str(caught.value)
    assert "pw" not in str(caught.value)


def test_a_cluster_url_is_shown_without_its_password():
    assert redacted("rediss+cluster://u:secret@h1:7000,h2:7001/") == \
        "rediss+cluster://u:***@h1:7000,h2:7001/"


def test_a_runtime_on_a_cluster_without_a_broker_is_refused(cluster, tmp_path):
    settings = Settings(outbox_dir=tmp_path / "outbox", var_dir=tmp_path / "var")
    with pytest.raises(ConfigError, match="NOTIFIER_BROKER_URL: required"):
        Runtime.build(settings, cluster.url)


def test_a_killed_master_is_reported_unavailable_within_seconds(cluster, tmp_path,
                                                                 master_back):
    """The runtime's timeouts: a command for a dead master's slot fails fast, not after
    redis-py's default minute; the other masters' slots still answer."""
    flush(cluster)
    client = connect_ledger(cluster.url)
    try:
        keys = {cluster.node_of_slot(client.keyslot(f"k{i}")): f"k{i}" for i in range(50)}
        client.set(keys[1], "x")
        master_back.append(1)
        cluster.kill(1)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            client.get(keys[1])
        assert time.monotonic() - started < 3
        client.set(keys[0], "still")
        assert client.get(keys[0]) == b"still"
    finally:
        client.close()


def test_a_hung_master_is_reported_unavailable_within_seconds(cluster, tmp_path,
                                                              master_back):
    flush(cluster)
    client = connect_ledger(cluster.url)
    try:
        keys = {cluster.node_of_slot(client.keyslot(f"k{i}")): f"k{i}" for i in range(50)}
        client.set(keys[2], "x")
        master_back.append(2)
        cluster.pause(2)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            client.get(keys[2])
        assert time.monotonic() - started < 6
    finally:
        client.close()


@pytest.mark.slow
def test_the_cli_refuses_a_cluster_without_a_broker_in_one_line(cluster, tmp_path):
    from tests.test_cli import notifier, one_line

    result = notifier("worker", cwd=tmp_path, env={"NOTIFIER_REDIS_URL": cluster.url})
    assert result.returncode == 2
    assert one_line(result).startswith(
        "notifier: NOTIFIER_BROKER_URL: required with a Redis Cluster ledger")


@pytest.mark.slow
def test_a_one_shot_command_runs_on_the_cluster(cluster, tmp_path, redis_url):
    from tests.test_cli import notifier

    flush(cluster)
    result = notifier("jobs", "list", cwd=tmp_path, env={
        "NOTIFIER_REDIS_URL": cluster.url, "NOTIFIER_BROKER_URL": redis_url})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("provider-digest  cron ")


def _store_in_child(runtime: Runtime, event_id: str) -> None:
    stored = runtime.store.store_event(event_id, b"{}", NOW, subject="appointment:a9",
                                       occurred_at=NOW)
    raise SystemExit(0 if stored else 3)


def test_a_forked_worker_process_uses_the_cluster_client_built_before_the_fork(
        cluster, tmp_path):
    """`notifier worker --processes N` forks after start-up (`worker.processes`): each
    child's cluster client opens connections of its own (redis-py's pools check the pid)."""
    import multiprocessing

    flush(cluster)
    runtime = Runtime.build(cluster_settings(cluster.url, tmp_path), cluster.url)
    try:
        runtime.redis.ping()  # connections made in the parent before the fork
        children = [multiprocessing.get_context("fork").Process(
            target=_store_in_child, args=(runtime, f"evt-child{i}")) for i in range(2)]
        for child in children:
            child.start()
        for child in children:
            child.join(30)
        assert [child.exitcode for child in children] == [0, 0]
        assert runtime.store.event_subject("evt-child1") == ("accepted", "appointment:a9")
        assert runtime.redis.ping()  # the parent's connections still work
    finally:
        runtime.redis.close()


@pytest.mark.slow
@pytest.mark.parametrize("command", ["worker", "clock"])
def test_a_broker_url_naming_a_node_of_the_cluster_stops_start_up_in_one_line(
        cluster, tmp_path, command):
    """An operator who pastes one master's address as the queue (`redis://node:port`):
    dramatiq's Redis broker cannot run there (its scripts' keys are in many slots). Found
    by QA: the worker logged a MovedError traceback many times a second, for ever, and the
    clock ran without a word."""
    import subprocess
    import sys

    from tests.test_cli import one_line, this_checkout

    env = this_checkout({"PATH": "/usr/bin:/bin", "NOTIFIER_REDIS_URL": cluster.url,
                         "NOTIFIER_BROKER_URL": cluster.nodes[0].url,
                         "NOTIFIER_VAR_DIR": str(tmp_path / "var"),
                         "NOTIFIER_OUTBOX_DIR": str(tmp_path / "outbox")})
    try:
        result = subprocess.run([sys.executable, "-m", "notifier", command], cwd=tmp_path,
                                env=env, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"notifier {command} ran on: {str(exc.stderr)[-300:]}") from None
    assert result.returncode == 2
    assert one_line(result).startswith(
        "notifier: NOTIFIER_BROKER_URL: redis://127.0.0.1:")
    assert "is a node of a Redis Cluster" in one_line(result)


@pytest.mark.slow
def test_a_plain_redis_url_naming_a_node_of_the_cluster_says_so(cluster, tmp_path):
    """`NOTIFIER_REDIS_URL=redis://node:port` for a cluster's node: not 'cannot reach Redis
    ... start it' (it answers), but which URL form to use."""
    from tests.test_cli import notifier, one_line

    result = notifier("jobs", "list", cwd=tmp_path,
                      env={"NOTIFIER_REDIS_URL": cluster.nodes[0].url})
    assert result.returncode == 2
    line = one_line(result)
    assert "is a node of a Redis Cluster" in line and "redis+cluster://" in line
    assert "start it" not in line


def test_a_process_starts_while_the_master_holding_the_shard_count_is_down(
        cluster, tmp_path, master_back, caplog):
    """README, "Redis Cluster": with a master down the other shards' events get 202. A
    web restarted then (a deploy, a crash, the supervisor) must come up to take them;
    found by QA: every process stopped with 'cannot reach Redis' when the one master
    holding `n:shards` was down. The count is read from the shards' marks instead."""
    flush(cluster)
    settings = cluster_settings(cluster.url, tmp_path)
    with open_runtime(settings) as runtime:  # the count recorded, the shards marked
        down = cluster.node_of_slot(runtime.redis.keyslot(SHARDS_KEY))
    master_back.append(down)
    cluster.kill(down)
    with caplog.at_level(logging.WARNING), open_runtime(settings) as runtime:
        subject = next(f"appointment:a{i}" for i in range(100)
                       if cluster.node_of_slot(runtime.redis.keyslot(
                           runtime.store.keys.tag(runtime.store.keys.of_ref(
                               f"appointment:a{i}")))) != down)
        assert runtime.store.store_event("evt-up", b"{}", NOW, subject=subject,
                                         occurred_at=NOW)
    assert "read 16 from the shards' marks" in caplog.text
    # Another count is still refused, from the marks.
    with pytest.raises(ConfigError, match="written with 16 shards"), open_runtime(
            cluster_settings(cluster.url, tmp_path, NOTIFIER_LEDGER_SHARDS="8")):
        pass


def test_a_ledger_never_marked_with_the_counts_master_down_is_unavailable(
        cluster, tmp_path, master_back):
    """No count and no mark to read: start-up stops, saying Redis cannot be reached."""
    flush(cluster)
    client = connect_ledger(cluster.url)
    down = cluster.node_of_slot(client.keyslot(SHARDS_KEY))
    master_back.append(down)
    cluster.kill(down)
    with pytest.raises(StoreUnavailable):
        open_shards(client, 16)
