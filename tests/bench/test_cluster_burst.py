"""The cluster burst benchmark's harness (`bench/cluster_burst.py`), end to end with a tiny
burst so it cannot rot unseen: the Procfile processes on the 3-master cluster with the
queue on a Redis of their own send each notification exactly once, every master serves
its share, and the table has the cluster's column and each master's rows. Speed itself
is measured by `python -m bench.cluster_burst`, never asserted here."""

from __future__ import annotations

import pytest

from bench import layouts
from bench.cluster_burst import (
    CLAIMED,
    ids_in_shard,
    master_of_shards,
    measure_claims,
    rows,
    run_all,
)
from notifier.ledger.shards import ShardKeys


@pytest.mark.slow
def test_a_tiny_burst_on_the_cluster_reaches_the_outbox_once_with_a_row_per_master() -> None:
    results, box = run_all(["cluster"], 60, 1, 4, claim_rounds=1)

    (done,) = results
    run = done.run
    assert (run.sent, run.lost, run.duplicates) == (run.count, 0, 0) and run.count >= 60
    masters = [f"master{i}" for i in range(layouts.CLUSTER_MASTERS)]
    assert sorted(run.server_cpu_s_per_1k) == sorted([*masters, "broker"])
    # Every master held some of the sends' shards and served commands for them.
    assert sorted(done.sends_by_server) == masters
    assert sum(done.sends_by_server.values()) == run.count
    assert all(run.server_commands_per_send[m] > 0 for m in masters)
    assert done.claim.rounds == 1 and done.claim.per_s > 0
    headers, table = rows(results)
    assert headers[1].startswith("3-master cluster + broker Redis")
    names = [row[0] for row in table]
    assert all(f"  {m}: CPU s per 1,000 sends" in names for m in masters)
    assert "  broker: commands per send" in names
    assert box.redis


def test_an_unknown_layout_is_refused_before_anything_starts() -> None:
    with pytest.raises(ValueError, match="no layout nowhere"):
        run_all(["one", "nowhere"], 60, 1, 4, claim_rounds=1)


def test_the_claimed_ids_are_all_in_the_measured_shard() -> None:
    keys = ShardKeys(16)

    ids = ids_in_shard(keys, 5, CLAIMED, "t")

    assert len(set(ids)) == CLAIMED and {keys.of_notification(i) for i in ids} == {5}


def test_every_master_holds_some_of_the_default_shards() -> None:
    where = master_of_shards(ShardKeys(16), layouts.CLUSTER_MASTERS)

    assert len(where) == 16 and set(where) == set(range(layouts.CLUSTER_MASTERS))


def test_a_shard_claim_on_one_redis_hands_over_the_whole_batch() -> None:
    with layouts.start("one+broker") as servers:
        claim = measure_claims(servers, 2)

    assert claim.rounds == 2 and 0 < claim.median_ms <= claim.p99_ms
