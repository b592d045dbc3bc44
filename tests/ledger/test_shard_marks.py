"""Each shard's mark (`notifier.ledger.shard_marks`): a shard that lost its data is told
from one not used yet, on one Redis here (keys deleted as a master restarted without its
append-only file would lose them) and on the 3-master cluster in
tests/end_to_end/test_cluster_end_to_end.py. What start-up and `notifier shards status|mark`
say of it; `/healthz` and `/metrics`: tests/web/test_app.py."""

from __future__ import annotations

import logging

import pytest
import redis

from notifier.ledger.shard_marks import ensure_marks, lost_shards, mark_key, mark_states
from notifier.ledger.store import Store
from tests.test_cli import notifier, one_line


@pytest.fixture
def store(redis_client: redis.Redis) -> Store:
    return Store(redis_client)


def test_a_ledger_not_marked_yet_is_marked_whole_at_start_and_none_is_lost(store: Store):
    assert lost_shards(store.redis, store.keys) == []  # nothing to compare with yet
    assert ensure_marks(store.redis, store.keys) == []
    assert mark_states(store.redis, store.keys) == [True] * store.keys.count


def test_a_shard_whose_mark_went_is_lost_and_logged_critical_at_start(store: Store, caplog):
    ensure_marks(store.redis, store.keys)
    store.redis.delete(mark_key(store.keys, 2), mark_key(store.keys, 5))
    assert lost_shards(store.redis, store.keys) == [2, 5]
    with caplog.at_level(logging.CRITICAL, logger="notifier.ledger.shard_marks"):
        assert ensure_marks(store.redis, store.keys) == [2, 5]
    assert "ledger shards 2, 5 lost their data" in caplog.text
    # Not marked again by start-up: the loss stays said until an operator marks them.
    assert lost_shards(store.redis, store.keys) == [2, 5]


def test_shards_status_names_the_lost_and_mark_clears_them(store: Store, tmp_path, redis_url):
    env = {"NOTIFIER_REDIS_URL": redis_url}
    ensure_marks(store.redis, store.keys)
    ok = notifier("shards", "status", cwd=tmp_path, env=env)
    assert (ok.returncode, ok.stdout.strip()) == (0, "16 shards, none lost")
    store.redis.delete(mark_key(store.keys, 3), mark_key(store.keys, 11))
    lost = notifier("shards", "status", cwd=tmp_path, env=env)
    assert lost.returncode == 1
    assert "lost (their data is gone): 3, 11" in lost.stdout
    marked = notifier("shards", "mark", cwd=tmp_path, env=env)
    assert marked.returncode == 0, one_line(marked)
    assert marked.stdout.strip() == ("marked shards 3, 11: their loss is no longer "
                                     "reported")
    assert "ledger shards 3, 11 lost their data" in marked.stderr  # start-up said it
    assert lost_shards(store.redis, store.keys) == []
    again = notifier("shards", "mark", cwd=tmp_path, env=env)
    assert again.stdout.strip() == "no shard was lost: nothing to mark"
