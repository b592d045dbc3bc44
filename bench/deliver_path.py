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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from redis.connection import Connection

from bench import common
from notifier.config import Settings
from notifier.ledger.records import ClientRecord
from notifier.policy.plan import Plan, PlannedNotification
from notifier.runtime import Runtime

#: The ids of one `deliver` message, as the clock chunks them.
CHUNK = 25


class CountingConnection(Connection):
    """A connection that counts what it sends: one packet per command or pipeline."""

    sent = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        super().send_packed_command(command, check_health)


def plan_burst(runtime: Runtime, count: int, due: datetime, zone: str) -> None:
    """`count` SMS reminders for one client in `zone`, due at `due`, written through the
    store 500 per transaction (as an applied event writes its plan)."""
    client = ClientRecord.model_validate({
        "updated_at": due, "client": {
            "id": "c1", "first_name": "Ana", "phone": "+14155550123",
            "email": "ana@example.com", "timezone": zone, "channels": {"sms": True,
                                                                        "email": True}}})
    runtime.redis.set(runtime.store.keys.record("client:c1"), client.model_dump_json())
    batch = 500
    for start in range(0, count, batch):
        adds = tuple(PlannedNotification(
            id=f"appointment_reminder:appt-{i:06d}:72h.20270315T150000Z:sms",
            kind="appointment_reminder", channel="sms", recipient="client", recipient_id="c1",
            entity=f"appointment:appt-{i:06d}", due_at=due, expires_at=due + timedelta(hours=72),
            params={"appointment_id": f"appt-{i:06d}", "provider_id": "prov-1",
                    "start": (due + timedelta(hours=72)).isoformat(),
                    "end": (due + timedelta(hours=72, minutes=30)).isoformat(),
                    "kind": "medication_management", "join_url": None, "sequence": 0},
        ) for i in range(start, min(count, start + batch)))
        runtime.store.write_plan(Plan(outcome="applied", add=adds), due)


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
    print(f"{common.utc_stamp()}; {common.machine(url).describe()}")
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
    with common.redis_server() as server:
        run(server.url, server.dir, args.count, args.chunk)


if __name__ == "__main__":
    main()
