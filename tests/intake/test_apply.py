"""Applying accepted events when something goes wrong (notifier/intake/apply.py and the
WATCH/MULTI apply of notifier/ledger/plans.py), on a real Redis: an event that no longer
validates when its turn comes, Redis failing between the apply's reads and its write, and a
concurrent write to what a plan read (the replan).

Each drives the real path: the web's `POST /v1/events` and a real `dramatiq.Worker`
consuming the events queue where the path is the actor's, a Redis made to fail for real
(out of memory, or its process killed) where it is the store's. The moment "between the
reads and the write" is the planner (`decide_for`'s closure): it runs after every record
the plan needs is read and WATCHed, and before the MULTI."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis

from notifier.cli.send_event import sign_event
from notifier.config import Settings
from notifier.delivery.channels.outbox import Outbox
from notifier.errors import StoreUnavailable
from notifier.intake import apply
from notifier.intake.apply import apply_in_turn
from notifier.intake.events import parse_event
from notifier.ledger.store import Store
from notifier.policy.figures import Policy
from notifier.policy.ordering import subject_ref
from notifier.runtime import Runtime
from notifier.web.app import create_app
from notifier.worker.actors import EVENTS_QUEUE, build_broker, declare_actors
from notifier.worker.clock import Clock
from tests.delivery.test_deliverer import deliverer
from tests.end_to_end.test_redis_restart import DurableRedis
from tests.kit import appointment, client_upserted, daytime_zone, zone_at_hour
from tests.ledger_keys import (
    event_field,
    pending_events,
    queue_key,
    stored_event_key,
    taken_turns,
    turn_key,
)
from tests.service import wait_for

with warnings.catch_warnings():
    # Starlette asks for the httpx2 package and warns at import when only httpx is there.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

TOKEN = "read-api-token-" + "x" * 20
SECRET = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"
NOW = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)


def all_keys(r: redis.Redis) -> dict[bytes, Any]:
    """Every key of the database with its value, to compare before and after."""
    dump: dict[bytes, Any] = {}
    for key in sorted(r.keys("*")):
        kind = r.type(key)
        dump[key] = {b"string": r.get, b"hash": r.hgetall, b"set": r.smembers,
                     b"list": lambda k: r.lrange(k, 0, -1),
                     b"zset": lambda k: r.zrange(k, 0, -1, withscores=True)}[kind](key)
    return dump


def post_stored(store: Store, evt: dict[str, Any], at: datetime = NOW) -> None:
    """What the web does, without HTTP: store the event with its subject."""
    parsed = parse_event(json.dumps(evt).encode())
    assert store.store_event(evt["id"], json.dumps(evt).encode(), at,
                             subject=subject_ref(parsed), occurred_at=parsed.occurred_at)


def between_read_and_write(monkeypatch: pytest.MonkeyPatch,
                           act: Callable[[str], None]) -> list[str]:
    """Run `act(event id)` in every try of every apply, after the plan's records are read
    and WATCHed and the plan is made, before its MULTI; returns the ids planned, a try
    each, in order."""
    planned: list[str] = []
    real = apply.decide_for

    def hooked(policy: Policy, now: datetime) -> Callable[..., Any]:
        decide = real(policy, now)

        def decide_then_act(raw: bytes, load: Any, arrived_at: datetime) -> Any:
            plan = decide(raw, load, arrived_at)
            planned.append(json.loads(raw)["id"])
            act(planned[-1])
            return plan
        return decide_then_act

    monkeypatch.setattr(apply, "decide_for", hooked)
    return planned


# An event that no longer validates at apply time -------------------------------------------

@pytest.fixture
def runtime(redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> Runtime:
    settings = Settings.from_env({"NOTIFIER_REDIS_URL": redis_url,
                                  "NOTIFIER_WEBHOOK_SECRET": SECRET,
                                  "NOTIFIER_API_TOKEN": TOKEN,
                                  "NOTIFIER_OUTBOX_DIR": str(tmp_path / "outbox"),
                                  "NOTIFIER_VAR_DIR": str(tmp_path / "var")},
                                 dotenv=Path("/nonexistent"))
    return Runtime.build(settings, redis_url)


@pytest.fixture
def web(runtime: Runtime) -> Iterator[TestClient]:
    broker = build_broker(runtime.redis_url)
    with TestClient(create_app(runtime.settings, runtime.store, broker)) as client:
        yield client
    broker.close()


def start_worker(runtime: Runtime) -> dramatiq.Worker:
    broker = build_broker(runtime.redis_url)
    declare_actors(broker, runtime)
    worker = dramatiq.Worker(broker, queues={EVENTS_QUEUE}, worker_threads=2,
                             worker_timeout=50)
    worker.start()
    return worker


def post(web: TestClient, evt: dict[str, Any]) -> int:
    body = json.dumps(evt).encode()
    answer = web.post("/v1/events", content=body,
                      headers=sign_event(SECRET, body, evt["id"], datetime.now(UTC)))
    return answer.status_code


def event_status(web: TestClient, event_id: str) -> dict[str, Any]:
    answer = web.get(f"/v1/events/{event_id}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200
    return answer.json()


def test_an_event_that_no_longer_validates_is_rejected_and_its_subject_goes_on(
        runtime, web, redis_client, caplog):
    """Three updates of one client accepted (202); the middle one was stored by an older
    version under rules it no longer meets (here a zone the tz database has since dropped,
    US/Pacific-New, removed in 2020b). A real worker applies the three in order: the middle
    one is `rejected` with the field named (GET /v1/events/{id}), logged once at ERROR, its
    body kept for inspection; its message is acknowledged, not retried; the events after it
    are applied, and nothing is left queued, pending or holding the subject's turn."""
    caplog.set_level(logging.ERROR, logger="notifier.intake.apply")
    now = datetime.now(UTC)
    zone = daytime_zone(now)
    first, middle, last = (
        client_upserted("c1", zone, now - timedelta(hours=h), phone=f"+1415555010{h}")
        for h in (3, 2, 1))
    for evt in (first, middle, last):
        assert post(web, evt) == 202
    middle["data"]["client"]["timezone"] = "US/Pacific-New"
    redis_client.hset(stored_event_key(redis_client, middle["id"]), "raw", json.dumps(middle))

    worker = start_worker(runtime)
    try:
        wait_for(lambda: event_status(web, last["id"])["status"] == "applied",
                 what="the last event to be applied")
        wait_for(lambda: redis_client.hlen(f"notifier-dq:{EVENTS_QUEUE}.msgs") == 0,
                 what="every apply message's ack")
    finally:
        worker.stop()
    rejected = event_status(web, middle["id"])
    assert rejected["status"] == "rejected"
    assert rejected["reason"].startswith("data.client.timezone: ")
    assert event_status(web, first["id"])["status"] == "applied"
    assert runtime.store.load_record("client:c1").client.phone == "+14155550101"
    assert json.loads(event_field(redis_client, middle["id"], "raw")) == middle
    assert [r.getMessage() for r in caplog.records] == [
        f"event {middle['id']} no longer validates: {rejected['reason']}"]
    # Nothing circles: no retry waiting in dramatiq's delay queue, nothing left to apply.
    assert redis_client.hlen(f"notifier-dq:{EVENTS_QUEUE}.DQ.msgs") == 0
    assert not redis_client.exists(queue_key("client:c1"), turn_key("client:c1"))
    assert pending_events(redis_client) == taken_turns(redis_client) == []
    # Counted, for an alert: an accepted event that will never apply.
    scrape = web.get("/metrics").text
    assert 'notifier_events_set_aside_total{status="rejected"} 1.0' in scrape
    assert 'notifier_events_set_aside_total{status="failed"} 0.0' in scrape


def test_an_event_set_aside_is_counted_once_by_status(store, policy, monkeypatch):
    """`failed` after MAX_APPLY_FAILURES tries, `rejected` when it no longer validates: each
    counted once in `/metrics`' figures, however often the event is looked at again."""
    broken = client_upserted("c1", "UTC", NOW - timedelta(hours=1))
    invalid = client_upserted("c2", "UTC", NOW - timedelta(hours=1))
    for evt in (broken, invalid):
        post_stored(store, evt)
    store.redis.hset(stored_event_key(store.redis, invalid["id"]), "raw", json.dumps(
        {**invalid, "type": "client.merged"}))  # a type since retired

    def planning_fails(policy: Policy, now: datetime) -> Callable[..., Any]:
        def decide(raw: bytes, load: Any, arrived_at: datetime) -> Any:
            raise OverflowError("date value out of range")
        return decide

    with monkeypatch.context() as patched:
        patched.setattr(apply, "decide_for", planning_fails)
        for _ in range(apply.MAX_APPLY_FAILURES - 1):
            with pytest.raises(OverflowError):
                apply_in_turn(store, broken["id"], policy, lambda: NOW, 30)
        assert apply_in_turn(store, broken["id"], policy, lambda: NOW, 30) == 1
    assert apply_in_turn(store, invalid["id"], policy, lambda: NOW, 30) == 1
    assert [store.event_status(e["id"])["status"] for e in (broken, invalid)] == [
        "failed", "rejected"]
    for evt in (broken, invalid):  # looked at again: applied before, or set aside again
        assert apply_in_turn(store, evt["id"], policy, lambda: NOW, 30) == 0
        store.reject_event(evt["id"], "set aside again", NOW)
    assert store.figures().events_set_aside == {"failed": 1, "rejected": 1}


# Redis failing in the middle of an apply ---------------------------------------------------

@pytest.fixture
def store(redis_client: redis.Redis) -> Store:
    return Store(redis_client)


def test_redis_out_of_memory_mid_apply_writes_nothing_and_the_event_is_applied_later(
        store, policy, redis_client, redis_url, monkeypatch):
    """Redis refuses writes (out of memory) after the apply read and planned: the MULTI is
    discarded whole (nothing half-written), the apply raises `StoreUnavailable` (dramatiq
    retries the message), the turn is given back, the failure is not held against the
    event; once Redis takes writes again, the event is applied, once."""
    post_stored(store, client_upserted("c1", "UTC", NOW - timedelta(hours=2)))
    booking = appointment("appointment.scheduled", "a1", "c1", NOW + timedelta(days=5),
                          NOW - timedelta(hours=1))
    post_stored(store, booking)
    apply_in_turn(store, store.turns.heads(["client:c1"])[0], policy, lambda: NOW, 30)
    before = all_keys(redis_client)
    admin = redis.Redis.from_url(redis_url)  # an operator's connection
    limit = admin.config_get("maxmemory")["maxmemory"]
    planned = between_read_and_write(monkeypatch, lambda _: admin.config_set("maxmemory", 1))
    try:
        with pytest.raises(StoreUnavailable, match="maxmemory"):
            apply_in_turn(store, booking["id"], policy, lambda: NOW, 30)
    finally:
        admin.config_set("maxmemory", limit)
    assert planned == [booking["id"]]
    assert all_keys(redis_client) == before, "nothing written, the turn given back"
    assert store.event_status(booking["id"])["status"] == "accepted"
    assert "failures" not in store.event_status(booking["id"])

    monkeypatch.undo()
    assert apply_in_turn(store, booking["id"], policy, lambda: NOW, 30) == 1
    assert store.event_status(booking["id"])["status"] == "applied"
    assert store.notification("appointment_confirmation:a1:booked:sms")["state"] == "scheduled"
    assert apply_in_turn(store, booking["id"], policy, lambda: NOW, 30) == 0
    admin.close()


def test_redis_killed_mid_apply_leaves_the_event_queued_and_the_turn_to_expire(
        tmp_path, policy, monkeypatch):
    """Redis dies (SIGKILL; append-only file, fsync always) after the apply read and
    planned: nothing of the plan is written, the turn cannot be given back, so it stays
    until its lease runs out; then the clock's sweep hands the subject on and its queued
    event is applied, once. The worker saw `StoreUnavailable` (dramatiq retries it; the
    retry finds the turn taken until the sweep)."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = DurableRedis(directory)
    server.start()
    client = redis.Redis.from_url(server.url)
    try:
        store = Store(client)
        post_stored(store, client_upserted("c1", "UTC", NOW - timedelta(hours=1)))
        planned = between_read_and_write(monkeypatch, lambda _: server.kill())
        [event_id] = store.turns.heads(["client:c1"])
        with pytest.raises(StoreUnavailable):
            apply_in_turn(store, event_id, policy, lambda: datetime.now(UTC), lease_s=1.0)
        assert planned == [event_id]
        monkeypatch.undo()
        server.start()
        assert store.turns.heads(["client:c1"]) == [event_id]
        assert store.event_status(event_id)["status"] == "accepted"
        assert store.load_record("client:c1") is None
        assert event_id in pending_events(client)
        # The dead apply's turn still holds: a retry now finds it taken and leaves it.
        assert apply_in_turn(store, event_id, policy, lambda: datetime.now(UTC), 30) == 0
        clock = Clock(store, build_broker(server.url))
        resumed = wait_for(lambda: clock.resume_turns(datetime.now(UTC)),
                           what="the dead apply's turn to expire")
        assert resumed == [event_id]
        assert apply_in_turn(store, event_id, policy, lambda: datetime.now(UTC), 30) == 1
        assert store.event_status(event_id)["status"] == "applied"
        assert store.load_record("client:c1") is not None
        clock.broker.close()
    finally:
        client.close()
        server.stop()


def test_a_turn_that_ran_out_mid_apply_writes_nothing_and_leaves_the_subject_to_its_taker(
        store, policy, monkeypatch, caplog):
    """The apply's turn runs out while it plans (a long pause) and another worker takes the
    subject: the write is refused (the turn is WATCHed, and checked again on the replan),
    the worker stops with one warning and does not raise (its message is done: the taker
    applies the queue), and the taker's turn is left alone."""
    caplog.set_level(logging.WARNING, logger="notifier.intake.apply")
    evt = client_upserted("c1", "UTC", NOW - timedelta(hours=1))
    post_stored(store, evt)

    def taken_over(_: str) -> None:
        store.redis.set(turn_key("client:c1"), "the-taker")

    planned = between_read_and_write(monkeypatch, taken_over)
    assert apply_in_turn(store, evt["id"], policy, lambda: NOW, 30) == 0
    assert planned == [evt["id"]], "planned once: the replan found the turn gone"
    assert store.event_status(evt["id"])["status"] == "accepted"
    assert store.load_record("client:c1") is None
    assert store.redis.get(turn_key("client:c1")) == b"the-taker"
    assert [r.getMessage() for r in caplog.records] == [
        "turn on client:c1 ran out while applying; another worker goes on"]


# A concurrent write between the reads and the write: the replan ----------------------------

def booking_with_a_move_between_its_reads_and_its_write(
        store: Store, policy: Policy, redis_url: str, monkeypatch: pytest.MonkeyPatch,
        appointment_id: str) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    """A booking of `appointment_id` for client c1 is planned against c1's record; before
    its MULTI, another worker applies c1's move to a zone where it is 22:00 (another
    subject, so in parallel, on its own connection). Returns (the event ids planned, in
    order; the booking; the move)."""
    post_stored(store, client_upserted("c1", daytime_zone(NOW), NOW - timedelta(hours=2)))
    apply_in_turn(store, store.turns.heads(["client:c1"])[0], policy, lambda: NOW, 30)
    night = zone_at_hour(NOW, 22)
    moved = client_upserted("c1", night, NOW - timedelta(minutes=30))
    booking = appointment("appointment.scheduled", appointment_id, "c1",
                          NOW + timedelta(days=5), NOW - timedelta(hours=1))
    post_stored(store, booking)
    post_stored(store, moved)
    other_worker = Store(redis.Redis.from_url(redis_url))

    def other_worker_applies_the_move(event_id: str) -> None:
        if planned.count(booking["id"]) == 1 and event_id == booking["id"]:
            assert apply_in_turn(other_worker, moved["id"], policy, lambda: NOW, 30) == 1

    planned = between_read_and_write(monkeypatch, other_worker_applies_the_move)
    assert apply_in_turn(store, booking["id"], policy, lambda: NOW, 30) == 1
    assert store.event_status(booking["id"])["status"] == "applied"
    other_worker.redis.close()
    return planned, booking, moved


def test_a_client_of_the_same_shard_changed_between_the_reads_and_the_write_is_replanned(
        store, policy, redis_url, monkeypatch):
    """The appointment (a3) is in its client's shard: the client record is WATCHed, the
    first write fails, and the replan reads the new zone and holds the confirmation for
    quiet hours, 08:00 there, exactly as if the move had come first."""
    assert store.keys.of_ref("appointment:a3") == store.keys.of_ref("client:c1")
    planned, booking, moved = booking_with_a_move_between_its_reads_and_its_write(
        store, policy, redis_url, monkeypatch, "a3")
    assert planned == [booking["id"], moved["id"], booking["id"]], \
        "the booking planned twice: its first write lost its WATCH"
    confirmation = store.notification("appointment_confirmation:a3:booked:sms")
    eight = (NOW + timedelta(hours=10)).replace(minute=0, second=0)
    assert float(confirmation["due"]) == eight.timestamp(), confirmation


def test_a_client_of_another_shard_changed_meanwhile_is_caught_when_the_message_is_sent(
        store, policy, redis_url, monkeypatch, tmp_path):
    """The appointment (a1) is in another shard than its client: the client record is
    read without WATCH (`PlanWriter._read_split`: a transaction is on one slot), so the
    booking is planned once, on the zone it read, and its confirmation is due now. The
    send reads the client again: at 22:00 in the new zone it holds the confirmation for
    quiet hours, until 08:00 there."""
    assert store.keys.of_ref("appointment:a1") != store.keys.of_ref("client:c1")
    planned, booking, moved = booking_with_a_move_between_its_reads_and_its_write(
        store, policy, redis_url, monkeypatch, "a1")
    assert planned == [booking["id"], moved["id"]]
    confirmation_id = "appointment_confirmation:a1:booked:sms"
    assert float(store.notification(confirmation_id)["due"]) <= NOW.timestamp()
    sender = deliverer(store, policy, outbox=Outbox(tmp_path))
    assert sender.deliver(confirmation_id, NOW) == "held"
    eight = (NOW + timedelta(hours=10)).replace(minute=0, second=0)
    assert float(store.notification(confirmation_id)["due"]) == eight.timestamp()
