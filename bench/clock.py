"""Benchmark: the clock's tick with many notifications pending but not yet due: 10k against
1M, and the ratio.

How to run:

    python -m bench.clock                  # 10,000 and 1,000,000 pending, 300 idle ticks
    python -m bench.clock --quick          # the same sizes, 100 idle ticks, --fill zadd
    python -m bench.clock --sizes 10000,100000,1000000 --fill store

How it works: a private redis-server (no persistence) and, in this process, the real
`Clock` (`notifier/worker/clock.py`) on the real store and broker, no cron jobs. For each
size the database is emptied and filled with that many notifications due tomorrow and
later, one way or the other:

- `--fill store` (the full run): planned through the store as an applied event plans
  them (`Store.write_plan`, 1,000 per transaction): hashes, schedule and indexes, as the
  product lays them out, whatever that layout is. About 9,000/s here (2 minutes and
  2 GB of Redis for 1M).
- `--fill zadd` (quick): only the schedules (`n:{shard}:schedule`), with pipelined ZADDs of
  10,000 ids, in seconds. The claim reads only what is due, so the notifications behind
  those ids are not needed, as long as each id is on its own shard's schedule.

Then:

- idle tick: `Clock.tick(now)` with nothing due (the lease sweep, the claim finding
  nothing, the turn and event sweeps): what every clock pays 4 times a second.
- claim tick: 1,000 notifications planned due now through the store (`write_plan`, not
  timed), then one timed `Clock.tick(now)` that claims them and enqueues 40 `deliver`
  messages; in-flight leases and the queue are cleared between repetitions (30; quick 10).

Each size lives in its own database of the one server, and the sizes are ticked in turn,
so a change in the machine's load (other processes on the 2 cores) meets them alike.

How to read it: wall milliseconds per tick (mean and p99 of the repetitions), and the
ratio of the largest size to the smallest; the goal (issue 12) is the tick at 1M within
1.2x of 10k. Ticks are short, so a busy machine (other processes on the 2 cores) shows in
the p99 more than in the mean. Results also go to var/bench/clock.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import common
from notifier.config import Settings
from notifier.ledger.shards import ledger_keys
from notifier.policy.plan import Plan, PlannedNotification
from notifier.runtime import Runtime
from notifier.worker.actors import build_broker
from notifier.worker.clock import Clock

FILL_CHUNK = 10_000
CLAIMED = 1_000


@dataclass
class Ticks:
    pending: int
    fill_s: float
    idle_mean_ms: float
    idle_p99_ms: float
    claim_mean_ms: float
    claim_p99_ms: float


def fill(r: Any, count: int, now: datetime) -> float:
    """`count` ids on the schedule, due from tomorrow on; seconds it took."""
    started = time.perf_counter()
    first = (now + timedelta(days=1)).timestamp()
    keys = ledger_keys(r)
    with r.pipeline(transaction=False) as pipe:
        for start in range(0, count, FILL_CHUNK):
            ids = {f"appointment_reminder:appt-{i:07d}:24h.20270315T150000Z:sms": first + i * 0.01
                   for i in range(start, min(count, start + FILL_CHUNK))}
            for shard, group in keys.by_shard(ids).items():
                pipe.zadd(keys.schedule(shard), {i: ids[i] for i in group})
            if len(pipe) >= 20:
                pipe.execute()
        pipe.execute()
    return time.perf_counter() - started


def fill_store(runtime: Runtime, count: int, now: datetime) -> float:
    """`count` notifications planned through the store, due from tomorrow on; seconds."""
    started = time.perf_counter()
    first = now + timedelta(days=1)
    for start in range(0, count, 1000):
        runtime.store.write_plan(Plan(outcome="applied", add=tuple(PlannedNotification(
            id=f"appointment_reminder:appt-{i:07d}:24h.20270315T150000Z:sms",
            kind="appointment_reminder", channel="sms", recipient="client",
            recipient_id=f"c{i % 1000:04d}", entity=f"appointment:appt-{i:07d}",
            due_at=first + timedelta(seconds=i * 0.01), expires_at=first + timedelta(days=1),
            params={"appointment_id": f"appt-{i:07d}", "provider_id": "prov-1",
                    "start": first.isoformat(), "end": first.isoformat(),
                    "kind": "medication_management", "join_url": None, "sequence": 0})
            for i in range(start, min(count, start + 1000)))), now)
    return time.perf_counter() - started


def due_now(runtime: Runtime, now: datetime, round_: int) -> None:
    adds = tuple(PlannedNotification(
        id=f"appointment_reminder:clock-{round_}-{i:05d}:24h.20270315T150000Z:sms",
        kind="appointment_reminder", channel="sms", recipient="client", recipient_id="c1",
        entity=f"appointment:clock-{round_}-{i:05d}", due_at=now - timedelta(seconds=1),
        expires_at=now + timedelta(hours=1), params={"appointment_id": f"clock-{i}"})
        for i in range(CLAIMED))
    runtime.store.write_plan(Plan(outcome="applied", add=adds), now)


def clear_claimed(r: Any) -> None:
    keys = ledger_keys(r)
    r.delete(*(keys.inflight(shard) for shard in keys.all()))
    for key in r.scan_iter(match="notifier-dq:*"):
        r.delete(key)


@dataclass
class Setup:
    """One size: its own database, runtime, broker and clock."""

    pending: int
    runtime: Runtime
    broker: Any
    clock: Clock
    fill_s: float
    idle: list[float] = field(default_factory=list)
    claims: list[float] = field(default_factory=list)

    def ticks(self) -> Ticks:
        idle, claims = sorted(self.idle), sorted(self.claims)
        return Ticks(pending=self.pending, fill_s=self.fill_s,
                     idle_mean_ms=statistics.fmean(idle) * 1000,
                     idle_p99_ms=common.percentile(idle, 0.99) * 1000,
                     claim_mean_ms=statistics.fmean(claims) * 1000,
                     claim_p99_ms=common.percentile(claims, 0.99) * 1000)


def prepare(server: common.RedisServer, db: int, pending: int, fill_with: str) -> Setup:
    settings = Settings.from_env({"NOTIFIER_OUTBOX_DIR": str(server.dir / "outbox")},
                                 dotenv=Path("/nonexistent"))
    runtime = Runtime.build(settings, server.url_for(db))
    runtime.redis.flushdb()
    broker = build_broker(server.url_for(db))
    now = datetime.now(UTC)
    fill_s = (fill(runtime.redis, pending, now) if fill_with == "zadd"
              else fill_store(runtime, pending, now))
    return Setup(pending=pending, runtime=runtime, broker=broker, fill_s=fill_s,
                 clock=Clock(runtime.store, broker, lease_s=settings.lease_s, jobs=[]))


def measure(setups: list[Setup], idle_ticks: int, claim_ticks: int) -> None:
    """Tick every size in turn, so a change in the machine's load meets them all alike."""
    for _ in range(idle_ticks):
        for setup in setups:
            started = time.perf_counter()
            setup.clock.tick(datetime.now(UTC))
            setup.idle.append(time.perf_counter() - started)
    for round_ in range(claim_ticks):
        for setup in setups:
            now = datetime.now(UTC)
            due_now(setup.runtime, now, round_)
            started = time.perf_counter()
            handed = setup.clock.tick(now)
            setup.claims.append(time.perf_counter() - started)
            if handed != CLAIMED:
                raise RuntimeError(f"the tick claimed {handed}, not {CLAIMED}")
            clear_claimed(setup.runtime.redis)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="10000,1000000",
                        help="pending counts, comma-separated; the ratio is last / first")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--fill", choices=("store", "zadd"), default=None,
                        help="how the pending are made (default store; --quick zadd)")
    parser.add_argument("--idle-ticks", type=int, default=None,
                        help="idle ticks per size (default 300; --quick 100)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    idle_ticks = args.idle_ticks or (100 if args.quick else 300)
    fill_with = args.fill or ("zadd" if args.quick else "store")
    claim_ticks = 10 if args.quick else 30
    with common.redis_server() as server:
        setups = [prepare(server, db, size, fill_with) for db, size in enumerate(sizes)]
        measure(setups, idle_ticks, claim_ticks)
        results = [setup.ticks() for setup in setups]
        for setup in setups:
            setup.broker.close()
        box = common.machine(server.url)
    first, last = results[0], results[-1]
    rows: list[list[Any]] = [
        [f"{t.pending:,}", t.idle_mean_ms, t.idle_p99_ms, t.claim_mean_ms, t.claim_p99_ms]
        for t in results]
    rows.append([f"ratio {last.pending:,} / {first.pending:,}",
                 common.ratio(last.idle_mean_ms, first.idle_mean_ms),
                 common.ratio(last.idle_p99_ms, first.idle_p99_ms),
                 common.ratio(last.claim_mean_ms, first.claim_mean_ms),
                 common.ratio(last.claim_p99_ms, first.claim_p99_ms)])
    common.report(
        "clock", "clock: the tick with many pending, not yet due", box,
        common.table(["pending", "idle tick mean ms", "idle tick p99 ms",
                      f"claim {CLAIMED:,} mean ms", f"claim {CLAIMED:,} p99 ms"], rows),
        {"idle_ticks": idle_ticks, "claim_ticks": claim_ticks, "claimed_per_tick": CLAIMED,
         "fill": fill_with,
         "sizes": [asdict(t) for t in results]},
        ["Goal (issue 12): the tick at 1M pending within 1.2x of 10k.",
         f"Pending made by `--fill {fill_with}` ("
         + ("planned through the store: hashes, schedule, indexes" if fill_with == "store"
            else "ids on the schedule only") + ").",
         f"{idle_ticks} idle ticks and {claim_ticks} claim ticks per size, the sizes in "
         "turn (each in its own database); the machine is shared, which shows in the p99."])


if __name__ == "__main__":
    main()
