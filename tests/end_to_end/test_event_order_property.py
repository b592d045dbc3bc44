"""Property: however a burst of events arrives (any order, some posted twice, some queue
messages delivered twice) and however many worker threads take it, the final plan equals
the plan of applying the events one at a time in `occurred_at` order.

Real Redis, a real dramatiq worker (8 threads) running the real `apply_event` actor; only
the time is pinned (`declare_actors(..., clock=...)`), so both runs plan at the same `now`.
The subjects are independent of each other (appointments of different clients, a refill
request with no fill, a message): order is promised per subject, and what one subject's
events do to another's is ordered by arrival (README, "Event order").
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.redis import RedisBroker
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notifier.config import Settings
from notifier.intake.apply import apply_in_turn
from notifier.intake.events import parse_event
from notifier.ledger.events import find_event
from notifier.policy.ordering import subject_ref
from notifier.runtime import Runtime
from notifier.worker.actors import build_broker, declare_actors, enqueue_apply
from tests.kit import appointment, client_upserted, event_dict, provider_upserted
from tests.ledger_keys import event_field, pending_events
from tests.service import service_env, wait_for

#: The whole service (web on a port, worker, clock) or its processes.
pytestmark = pytest.mark.e2e

NOW = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
LEASE_S = 30.0


def _appointment_events(appt_id: str, client_id: str) -> list[tuple[str, Any]]:
    start = NOW + timedelta(days=5)
    return [
        ("book", lambda at: appointment("appointment.scheduled", appt_id, client_id, start, at,
                                        join_url="https://video.example/room")),
        ("move", lambda at: appointment("appointment.rescheduled", appt_id, client_id,
                                        start + timedelta(days=2), at)),
        ("move-back", lambda at: appointment("appointment.rescheduled", appt_id, client_id,
                                             start, at)),
        ("cancel", lambda at: event_dict("appointment.cancelled", {
            "appointment_id": appt_id, "cancelled_by": "client"}, at)),
        ("complete", lambda at: event_dict("appointment.completed", {"appointment_id": appt_id},
                                           at)),
        ("no-show", lambda at: event_dict("appointment.no_show", {
            "appointment_id": appt_id, "party": "provider"}, at)),
    ]


CHOICES: list[tuple[str, Any]] = [
    *_appointment_events("a1", "c1"),
    *_appointment_events("a2", "c2"),
    ("request", lambda at: event_dict("refill.requested", {"request": {
        "id": "r1", "prescription_id": "rx-9", "client_id": "c1", "provider_id": "prov-1"}},
        at)),
    ("sent", lambda at: event_dict("refill.sent", {"request_id": "r1"}, at)),
    ("denied", lambda at: event_dict("refill.denied", {"request_id": "r1",
                                                       "reason": "visit_required"}, at)),
    ("received", lambda at: event_dict("message.received", {"message": {
        "id": "m1", "client_id": "c2", "provider_id": "prov-1"}}, at)),
    ("answered", lambda at: event_dict("message.answered", {"message_id": "m1"}, at)),
]


@st.composite
def bursts(draw: st.DrawFn) -> dict[str, Any]:
    """Events (each at a distinct minute of the last four days), an arrival order, events
    posted twice and events whose queue message is delivered twice."""
    picks = draw(st.lists(st.integers(0, len(CHOICES) - 1), min_size=1, max_size=12))
    minutes = draw(st.lists(st.integers(1, 4 * 24 * 60), min_size=len(picks),
                            max_size=len(picks), unique=True))
    events = [CHOICES[p][1](NOW - timedelta(minutes=m)) for p, m in zip(picks, minutes,
                                                                         strict=True)]
    arrival = draw(st.permutations(range(len(events))))
    twice = draw(st.sets(st.sampled_from(range(len(events)))))
    redelivered = draw(st.sets(st.sampled_from(range(len(events)))))
    return {"events": events, "arrival": arrival, "twice": twice, "redelivered": redelivered}


def _raw(evt: dict[str, Any]) -> bytes:
    return json.dumps(evt).encode()


def _store(runtime: Runtime, evt: dict[str, Any]) -> bool:
    """What the web does with a verified event."""
    parsed = parse_event(_raw(evt))
    return runtime.store.store_event(evt["id"], _raw(evt), NOW, subject=subject_ref(parsed),
                                     occurred_at=parsed.occurred_at)


def _forget(runtime: Runtime) -> None:
    """Drop Notifier's keys, leaving the broker's (the worker keeps running)."""
    keys = list(runtime.redis.scan_iter(match="n:*", count=1000))
    if keys:
        runtime.redis.delete(*keys)


def _known_people(runtime: Runtime) -> None:
    for evt in (client_upserted("c1", "America/New_York", NOW - timedelta(days=30)),
                client_upserted("c2", "Europe/Madrid", NOW - timedelta(days=30)),
                provider_upserted("prov-1", NOW - timedelta(days=30))):
        _store(runtime, evt)
        apply_in_turn(runtime.store, evt["id"], runtime.policy, lambda: NOW, LEASE_S)


#: A notification's history fields (`notifier.console.history`).
HISTORY_FIELD = re.compile(r"h[0-9]+|hn")


def _outcome(runtime: Runtime, events: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything a plan leaves: notifications, records, and each event's status. Not a
    notification's history (`h1`.., `hn`): it tells the path taken, at Redis's own times,
    and the end is what must not depend on the arrival order."""
    r = runtime.redis
    notes = {k.decode(): {f.decode(): v.decode() for f, v in r.hgetall(k).items()
                          if not HISTORY_FIELD.fullmatch(f.decode())}
             for k in r.scan_iter(match="n:{*}:notif:*", count=1000)}
    # Records as readers see them: a record kept in parts (a client's visits, a provider's
    # queue) merged, since each part's stamp depends on what other subjects' events wrote
    # before it, which the arrival order may change (`record_store.PARTED_KINDS`).
    refs = sorted({k.decode().split(":rec:", 1)[1]
                   for k in r.scan_iter(match="n:{*}:rec:*", count=1000)})
    records = {ref: record.model_dump_json()
               for ref, record in runtime.store.load_records(refs).items()}
    statuses = {e["id"]: tuple(v.decode() if v else None for v in find_event(
        r, runtime.store.keys, e["id"], "status", "reason")[1]) for e in events}
    return {"notifications": notes, "records": records, "events": statuses}


def _settled(runtime: Runtime, events: list[dict[str, Any]]) -> bool:
    r = runtime.redis
    statuses = {event_field(r, e["id"], "status", runtime.store.keys) for e in events}
    return (b"accepted" not in statuses and pending_events(r, runtime.store.keys) == []
            and not any(r.scan_iter(match="n:{*}:turn:*", count=1000))
            and all(r.hlen(f"notifier-dq:{q}.msgs") == 0 for q in ("events",)))


@pytest.fixture(scope="module")
def runtime(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    env = service_env(redis_url, tmp_path_factory.mktemp("order"))
    return Runtime.build(Settings.from_env(env, dotenv=Path("/nonexistent")), redis_url)


@contextmanager
def worker(runtime: Runtime, threads: int) -> Iterator[RedisBroker]:
    """A real dramatiq worker with the real actors, applying events at NOW. Started per
    example: dramatiq's threads use the global `random`, which hypothesis forbids while it
    draws an example."""
    broker = build_broker(runtime.redis_url)
    declare_actors(broker, runtime, clock=lambda: NOW)
    running = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=50)
    running.start()
    try:
        yield broker
    finally:
        running.stop()


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(burst=bursts())
def test_any_arrival_order_plans_what_occurred_at_order_plans(runtime: Runtime,
                                                              burst: dict[str, Any]):
    events = burst["events"]

    # One at a time, in occurred_at order, one thread.
    _forget(runtime)
    _known_people(runtime)
    for evt in sorted(events, key=lambda e: e["occurred_at"]):
        assert _store(runtime, evt)
        apply_in_turn(runtime.store, evt["id"], runtime.policy, lambda: NOW, LEASE_S)
    expected = _outcome(runtime, events)

    # The burst: stored in arrival order (duplicates refused), then every queue message,
    # some twice, to eight worker threads at once, in a shuffled order.
    _forget(runtime)
    _known_people(runtime)
    messages = []
    for i in burst["arrival"]:
        assert _store(runtime, events[i])
        messages.append(events[i]["id"])
        if i in burst["twice"]:
            assert not _store(runtime, events[i]), "a duplicate is refused"
        if i in burst["redelivered"]:
            messages.append(events[i]["id"])
    random.Random(len(messages)).shuffle(messages)
    with worker(runtime, threads=8) as broker:
        for event_id in messages:
            enqueue_apply(broker, event_id)
        wait_for(lambda: _settled(runtime, events), timeout_s=30,
                 what="the burst to be applied")
    assert _outcome(runtime, events) == expected
