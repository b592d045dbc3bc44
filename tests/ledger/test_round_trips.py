"""How many times applying an event waits on Redis, counted on a real Redis
(notifier/ledger/plans.py, notifier/ledger/client.py, notifier/intake/apply.py).

Round trips are counted where they happen, as writes to the client's connections (one
write is one request that the client then waits for: a command, or a pipeline sent
whole); Redis's own `INFO commandstats` says which commands they carried. A change that
adds a round trip to every applied event fails here; the benchmark
(`python -m bench.apply_order`) says what it costs.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from notifier.intake.apply import apply_in_turn
from notifier.intake.events import parse_event
from notifier.ledger.client import LedgerRedis, script_body
from notifier.ledger.lua import lua_source
from notifier.ledger.store import Store
from notifier.policy.figures import Policy
from notifier.policy.ordering import subject_ref
from tests.kit import (
    CountingConnection,
    appointment,
    client_upserted,
    provider_upserted,
    store_and_apply,
)
from tests.ledger_keys import event_field

NOW = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
EVENTS = 20
#: Per applied event alone in its turn (10 before issue 12): the subject (1, its event
#: looked up in every shard at once), taking the turn with its first event (1), the event
#: and turn watched and read (1), its records of its own shard watched and read (1), those
#: of other shards read without WATCH (1: the client's record, the other shards' parts of
#: the visits; issue 17, `PlanWriter._read_split`), the transaction (1), the turn given
#: back (1).
ROUND_TRIPS_PER_BOOKING = 7
#: A reschedule also reads the records its appointment leads to (the client, the
#: provider: 1) and the appointment's notification ids, to cancel them (1).
ROUND_TRIPS_PER_RESCHEDULE = 9


@pytest.fixture
def counted(redis_url: str, redis_client: redis.Redis) -> Store:
    pool = redis.ConnectionPool.from_url(redis_url, connection_class=CountingConnection)
    return Store(LedgerRedis(connection_pool=pool))


def commands(client: redis.Redis) -> dict[str, int]:
    """Redis's count of calls of each command since its start."""
    return {name.removeprefix("cmdstat_"): stats["calls"]
            for name, stats in client.info("commandstats").items()}


def post(store: Store, evt: dict[str, Any]) -> str:
    """Store an event with its subject, as the web does; its id."""
    raw = json.dumps(evt).encode()
    parsed = parse_event(raw)
    assert store.store_event(evt["id"], raw, NOW, subject=subject_ref(parsed),
                             occurred_at=parsed.occurred_at)
    return str(evt["id"])


def apply_counted(store: Store, plain: redis.Redis, policy: Policy, ids: list[str]
                  ) -> tuple[float, dict[str, float]]:
    """Apply each event as the worker's actor does; (round trips per event, calls per
    event of each command), the first event left out: it opens the connections."""
    assert apply_in_turn(store, ids[0], policy, lambda: NOW, 60) == 1
    before, writes = commands(plain), CountingConnection.sent
    for event_id in ids[1:]:
        assert apply_in_turn(store, event_id, policy, lambda: NOW, 60) == 1
    after = commands(plain)
    per_event = {name: (calls - before.get(name, 0)) / (len(ids) - 1)
                 for name, calls in after.items() if calls != before.get(name, 0)}
    for event_id in ids:
        assert event_field(plain, event_id, "status") == b"applied"
    return (CountingConnection.sent - writes) / (len(ids) - 1), per_event


def seed(store: Store, policy: Policy) -> None:
    for i in range(EVENTS):
        store_and_apply(store, policy, client_upserted(f"c{i}", "America/Chicago",
                                                       NOW - timedelta(days=1)), NOW)
    store_and_apply(store, policy, provider_upserted("prov-1", NOW - timedelta(days=1)), NOW)


def test_a_booking_costs_a_fixed_number_of_round_trips(counted, redis_client, policy):
    seed(counted, policy)
    start = NOW + timedelta(days=5)
    ids = [post(counted, appointment("appointment.scheduled", f"a{i}", f"c{i}", start,
                                     NOW - timedelta(minutes=1))) for i in range(EVENTS)]
    round_trips, calls = apply_counted(counted, redis_client, policy, ids)
    assert round_trips <= ROUND_TRIPS_PER_BOOKING
    assert calls["exec"] == 1
    assert calls["watch"] == 2, "the event with its turn, then its records"
    assert "script" not in calls, "no SCRIPT EXISTS before the transaction"


def test_a_reschedule_costs_two_more_for_the_records_and_ids_it_reaches(counted, redis_client,
                                                                     policy):
    seed(counted, policy)
    start = NOW + timedelta(days=5)
    booked = [post(counted, appointment("appointment.scheduled", f"a{i}", f"c{i}", start,
                                        NOW - timedelta(minutes=2))) for i in range(EVENTS)]
    apply_counted(counted, redis_client, policy, booked)
    moved = [post(counted, appointment("appointment.rescheduled", f"a{i}", f"c{i}",
                                       start + timedelta(days=1), NOW - timedelta(minutes=1)))
             for i in range(EVENTS)]
    round_trips, calls = apply_counted(counted, redis_client, policy, moved)
    assert round_trips <= ROUND_TRIPS_PER_RESCHEDULE
    assert calls["exec"] == 1
    assert "script" not in calls


def test_a_transaction_sends_its_scripts_source_not_a_script_exists_first(redis_client):
    """A flushed script cache cannot fail one command of a transaction while the others
    commit: the source travels with it."""
    client = LedgerRedis(connection_pool=redis_client.connection_pool)
    script = client.register_script(lua_source("turn_release"))
    redis_client.script_flush()
    with client.pipeline() as pipe:
        pipe.set("n:x", "1")
        script(keys=["n:turn:a", "n:turns"], args=["tok", "a"], client=pipe)
        assert pipe.execute() == [True, 0]
    assert script_body(lua_source("turn_release")).lstrip().startswith("if ")


def test_watch_and_read_watches_before_the_reads_it_carries(redis_client):
    """A change after the one round trip still fails the transaction it guards."""
    client = LedgerRedis(connection_pool=redis_client.connection_pool)
    redis_client.set("n:k", "1")
    with client.pipeline() as pipe:
        with client.pipeline(transaction=False) as reads:
            reads.get("n:k")
            reads.zrange("n:z", 0, -1, withscores=True)
            assert pipe.watch_and_read(["n:k"], reads) == [b"1", []]
        redis_client.set("n:k", "2")
        pipe.multi()
        pipe.set("n:k", "3")
        with pytest.raises(redis.WatchError):
            pipe.execute()
    assert redis_client.get("n:k") == b"2"
