"""Benchmark: the deliver path alone, one thread, no dramatiq: microseconds and Redis
round trips per notification for `deliver` messages of 25 reminders (the clock's chunk).

Starts a private Redis, plans N reminders due now through the real store, claims them, and
hands them to the real deliverer 25 at a time, to the outbox; prints the time, this
process's CPU time (less sensitive to a busy machine than the wall time; Redis's own time
not included) and the round trips (packets sent on the connection) per notification.

    python -m bench.deliver_path [--count 5000] [--chunk 25]

`--chunk 1` is the same code one id at a time: what batching saves. On a checkout from
before `Deliverer.deliver_batch`, it times the loop the `deliver` actor ran then (one
`deliver` per id).
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from redis.connection import Connection

from bench.claim_burst import machine, plan_burst, private_redis
from notifier.config import Settings
from notifier.runtime import Runtime

#: The ids of one `deliver` message, as the clock chunks them.
CHUNK = 25


class CountingConnection(Connection):
    """A connection that counts what it sends: one packet per command or pipeline."""

    sent = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        super().send_packed_command(command, check_health)


def run(url: str, tmp: Path, count: int, chunk: int) -> None:
    settings = Settings.from_env({"NOTIFIER_OUTBOX_DIR": str(tmp / "outbox")},
                                 dotenv=Path("/nonexistent"))
    runtime = Runtime.build(settings, url)
    client: redis.Redis = runtime.redis
    client.connection_pool.disconnect()
    client.connection_pool.connection_class = CountingConnection
    now = datetime.now(UTC)
    zone = "Etc/GMT" + (f"{now.hour - 12:+d}" if now.hour != 12 else "")  # midday there
    plan_burst(runtime, count, now, zone)
    ids = runtime.store.schedule.claim(now, count, 600, count + 1)
    deliverer = runtime.deliverer
    deliver = getattr(deliverer, "deliver_batch", None) or (
        lambda batch, at: [deliverer.deliver(i, at) for i in batch])
    sent, started, cpu = CountingConnection.sent, time.perf_counter(), time.process_time()
    for start in range(0, len(ids), chunk):
        outcomes = deliver(ids[start:start + chunk], now)
        if any(o != "sent" for o in outcomes):
            raise SystemExit(f"not all sent: {outcomes}")
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    trips = CountingConnection.sent - sent
    print(f"machine: {machine()}; Redis {client.info('server')['redis_version']}")
    print(f"| figure | value |\n|---|---|\n"
          f"| reminders delivered, {chunk} per message, one thread | {len(ids):,} |\n"
          f"| time per notification | {elapsed / len(ids) * 1e6:,.0f} µs |\n"
          f"| CPU time of this process per notification | {cpu / len(ids) * 1e6:,.0f} µs |\n"
          f"| Redis round trips per notification | {trips / len(ids):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--chunk", type=int, default=CHUNK)
    args = parser.parse_args()
    with private_redis() as (url, tmp):
        run(url, tmp, args.count, args.chunk)


if __name__ == "__main__":
    main()
