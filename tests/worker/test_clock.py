"""The clock against a real Redis: cron fires claimed once across clocks, per provider zone;
claims fed in chunks; stuck events re-enqueued."""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
import redis

from notifier.errors import StoreError
from notifier.ledger.shards import shard_of_notification
from notifier.ledger.store import Store
from notifier.worker.actors import JOBS_QUEUE, RUN_JOB, build_broker, declare_actors
from notifier.worker.clock import FIRED_MARGIN, Clock
from notifier.worker.cron import CATCH_UP, Job
from notifier.worker.digests import provider_zones
from tests.kit import event_dict, message_received, store_and_apply
from tests.ledger_keys import (
    KEYS,
    inflight_count,
    inflight_ids,
    outbox_waiting,
    providers,
    put_on_schedule,
    take_out_of_flight,
)

DIGEST = Job(name="provider-digest", cron="0 8 * * 1-5", zone="provider")
# Wednesday 2026-11-25: 08:00 in New York is 13:00Z, in Berlin 07:00Z.
NY_FIRE = datetime(2026, 11, 25, 13, 0, tzinfo=UTC)


def provider(provider_id: str, zone: str, at: datetime) -> dict:
    return event_dict("provider.upserted", {"provider": {
        "id": provider_id, "name": f"Dr. {provider_id}", "email": f"{provider_id}@example.com",
        "timezone": zone}}, at)


@pytest.fixture
def store(redis_client) -> Store:
    return Store(redis_client)


def queued_jobs(store: Store) -> list[list]:
    raw = store.redis.hvals(f"notifier-dq:{JOBS_QUEUE}.msgs")
    return sorted(json.loads(m)["args"] for m in raw)


def clock(store: Store, redis_url: str) -> Clock:
    return Clock(store, build_broker(redis_url), jobs=[DIGEST])


def test_a_fire_is_claimed_once_across_two_clocks_per_provider_zone(store, policy, redis_url):
    before = NY_FIRE - timedelta(days=1)
    store_and_apply(store, policy, provider("p-ny", "America/New_York", before), before)
    store_and_apply(store, policy, provider("p-ber", "Europe/Berlin", before), before)
    berlin_fire = NY_FIRE - timedelta(hours=6)
    first, second = clock(store, redis_url), clock(store, redis_url)
    fired = []
    for at in (berlin_fire + timedelta(seconds=1), NY_FIRE + timedelta(seconds=1)):
        fired += first.fire_jobs(at) + second.fire_jobs(at) + first.fire_jobs(at)
    assert fired == [
        f"n:job:provider-digest:Europe/Berlin:{int(berlin_fire.timestamp())}",
        f"n:job:provider-digest:America/New_York:{int(NY_FIRE.timestamp())}",
    ]
    assert queued_jobs(store) == [
        ["provider-digest", "America/New_York", NY_FIRE.isoformat()],
        ["provider-digest", "Europe/Berlin", berlin_fire.isoformat()],
    ]


def test_the_0800_and_1600_fires_of_one_day_each_send_a_digest(store, policy, redis_url):
    """A twice-daily cron: both fires are claimed and both plan a digest, through the
    worker's own `run_job` actor; a redelivered job message plans nothing more."""
    before = NY_FIRE - timedelta(days=1)
    store_and_apply(store, policy, provider("prov-1", "America/New_York", before), before)
    store_and_apply(store, policy, message_received("msg-1", "c1", before), before)
    twice = Clock(store, build_broker(redis_url),
                  jobs=[Job(name="provider-digest", cron="0 8,16 * * 1-5", zone="provider")])
    afternoon = NY_FIRE + timedelta(hours=8)
    fired = twice.fire_jobs(NY_FIRE + timedelta(seconds=1))
    fired += twice.fire_jobs(afternoon + timedelta(seconds=1))
    assert len(fired) == 2
    worker_broker = build_broker(redis_url)
    declare_actors(worker_broker, SimpleNamespace(store=store))
    run_job = worker_broker.get_actor(RUN_JOB).fn
    for args in queued_jobs(store) * 2:
        run_job(*args)
    digests = sorted(n.id for n in store.notifications_for("provider", "prov-1"))
    assert digests == ["provider_digest:prov-1:20261125T130000Z:email",
                       "provider_digest:prov-1:20261125T210000Z:email"]


def test_a_fire_missed_by_more_than_the_catch_up_window_is_skipped(store, policy, redis_url):
    before = NY_FIRE - timedelta(days=1)
    store_and_apply(store, policy, provider("p-ny", "America/New_York", before), before)
    assert clock(store, redis_url).fire_jobs(NY_FIRE + timedelta(hours=2)) == []
    assert clock(store, redis_url).fire_jobs(NY_FIRE - timedelta(seconds=1)) == []
    assert queued_jobs(store) == []


def test_a_fire_missed_by_less_than_an_hour_still_happens(store, policy, redis_url):
    """README, Architecture: "a fire missed by less than an hour (a clock restart) still
    happens"."""
    before = NY_FIRE - timedelta(days=1)
    store_and_apply(store, policy, provider("p-ny", "America/New_York", before), before)
    assert len(clock(store, redis_url).fire_jobs(NY_FIRE + timedelta(minutes=59))) == 1
    assert queued_jobs(store) == [["provider-digest", "America/New_York", NY_FIRE.isoformat()]]


def test_no_providers_no_fires(store, redis_url):
    assert clock(store, redis_url).fire_jobs(NY_FIRE) == []


def test_the_clock_remembers_only_fires_that_can_still_come_up(store, policy, redis_url):
    """A week of ticks every 10 minutes: the clock's memory of claimed fires stays the size
    of one catch-up window, not one entry per fire for ever."""
    before = NY_FIRE - timedelta(days=1)
    store_and_apply(store, policy, provider("p-ny", "America/New_York", before), before)
    store_and_apply(store, policy, provider("p-ber", "Europe/Berlin", before), before)
    hourly = Job(name="provider-digest", cron="0 * * * *", zone="provider")
    ticking = Clock(store, build_broker(redis_url), jobs=[hourly])
    fired = 0
    at = NY_FIRE
    for _ in range(7 * 24 * 6):
        fired += len(ticking.fire_jobs(at))
        assert len(ticking._fired) <= 2 * 3, "two zones, fires of the last 1 h 10 min"
        at += timedelta(minutes=10)
    assert fired == 2 * 7 * 24, "every hourly fire in both zones, each once"
    assert all(at - fire <= CATCH_UP + FIRED_MARGIN for fire in ticking._fired.values())


def count_scans(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Record every SCAN the store's client sends (`scan_iter` goes through `scan`)."""
    calls: list[object] = []
    real_scan = store.redis.scan

    def scan(*args: object, **kwargs: object) -> object:
        calls.append(kwargs.get("match"))
        return real_scan(*args, **kwargs)

    monkeypatch.setattr(store.redis, "scan", scan)
    return calls


def test_the_clock_finds_provider_zones_without_scanning_the_keyspace(store, policy, redis_url,
                                                                      monkeypatch):
    before = NY_FIRE - timedelta(days=1)
    store_and_apply(store, policy, provider("p-ny", "America/New_York", before), before)
    store_and_apply(store, policy, provider("p-ber", "Europe/Berlin", before), before)
    # Written with each provider's record, in the same transaction.
    assert providers(store.redis) == {b"p-ny", b"p-ber"}
    scans = count_scans(store, monkeypatch)
    ticking = Clock(store, build_broker(redis_url), jobs=[DIGEST], zones_every_s=0)
    for minutes in range(5):
        ticking.fire_jobs(NY_FIRE + timedelta(minutes=minutes))
    assert ticking._job_zones(DIGEST, NY_FIRE) == {"America/New_York", "Europe/Berlin"}
    # No SCAN: the shards' sets are read (what older versions wrote is not read since
    # the records moved to shards, issue 17).
    assert scans == []
    store_and_apply(store, policy, provider("p-tyo", "Asia/Tokyo", before), before)
    assert ticking._job_zones(DIGEST, NY_FIRE + timedelta(minutes=9)) == {
        "America/New_York", "Europe/Berlin", "Asia/Tokyo"}
    assert scans == []


def test_with_no_providers_the_keyspace_is_never_scanned(store, monkeypatch):
    scans = count_scans(store, monkeypatch)
    for _ in range(3):
        assert provider_zones(store) == set()
    assert scans == []


def test_stored_but_unapplied_events_are_enqueued_again(store, redis_url):
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    store.store_event("evt-1", b"{}", now - timedelta(seconds=60))
    store.store_event("evt-2", b"{}", now - timedelta(seconds=5))
    Clock(store, build_broker(redis_url), event_grace_s=30).tick(now)
    queued = [json.loads(m)["args"] for m in store.redis.hvals("notifier-dq:events.msgs")]
    assert queued == [["evt-1"]]


def test_a_re_enqueued_event_waits_a_whole_grace_period_before_the_next_try(store, redis_url):
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    store.store_event("evt-1", b"{}", now - timedelta(seconds=60))
    clock = Clock(store, build_broker(redis_url), event_grace_s=30, events_every_s=0)
    clock.tick(now)
    clock.tick(now + timedelta(seconds=10))
    clock.tick(now + timedelta(seconds=31))
    queued = [json.loads(m)["args"] for m in store.redis.hvals("notifier-dq:events.msgs")]
    assert queued == [["evt-1"], ["evt-1"]]


# Claiming and waking -----------------------------------------------------------------------

def test_a_claim_is_handed_over_in_messages_of_chunk_ids_in_one_round_trip(store, redis_url):
    """60 due ids: three `deliver` messages (25, 25, 10), as dramatiq's own enqueue writes
    them, sent in one pipeline (one request on the broker's connection, not one each;
    the connection's own handshake apart), although the ids are claimed from several
    shards."""
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    ids = [f"n{i:02d}" for i in range(60)]
    put_on_schedule(store.redis, {i: now.timestamp() - 1 for i in ids})
    broker = build_broker(redis_url)
    requests = []
    original = broker.client.connection_pool.connection_class.send_packed_command

    def counting(connection, command, check_health=True):
        requests.append(command)
        return original(connection, command, check_health)

    broker.client.connection_pool.connection_class = type(
        "Counting", (broker.client.connection_pool.connection_class,),
        {"send_packed_command": counting})
    assert Clock(store, broker, chunk=25).tick(now) == 60
    with_messages = [b"".join(r) for r in requests if any(b"RPUSH" in part for part in r)]
    assert len(with_messages) == 1 and with_messages[0].count(b"RPUSH") == 3
    queued = [store.redis.hget("notifier-dq:deliver.msgs", i)
              for i in store.redis.lrange("notifier-dq:deliver", 0, -1)]
    messages = [json.loads(m) for m in queued]
    assert [m["actor_name"] for m in messages] == ["deliver"] * 3
    assert [len(m["args"][0]) for m in messages] == [25, 25, 10]
    assert sorted(i for m in messages for i in m["args"][0]) == ids
    assert len({shard_of_notification(i, store.keys.count) for i in ids}) > 1


def test_the_clock_wakes_when_the_next_notification_falls_due_not_a_poll_later(store,
                                                                              redis_url):
    """README, Architecture: at its defaults the clock polls every 0.25 s (jittered), but
    wakes when the next notification falls due, at most 50 ticks a second."""
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    clock = Clock(store, build_broker(redis_url))
    # Nothing scheduled: the jittered poll, 0.5x to 1.5x.
    assert all(0.125 <= clock.wait_s(now) <= 0.375 for _ in range(50))
    # Due in 60 ms: woken then, not up to 375 ms later.
    put_on_schedule(store.redis, {"soon": now.timestamp() + 0.06})
    assert clock.wait_s(now) == pytest.approx(0.06)
    # Due in 1 ms: the shortest wait, so a stream of due times is claimed in batches.
    assert clock.wait_s(now + timedelta(seconds=0.059)) == 0.02
    # Already due (the in-flight cap holds it back): the poll again, not a busy loop.
    assert 0.125 <= clock.wait_s(now + timedelta(seconds=1)) <= 0.375
    # Due later than a poll: the poll.
    put_on_schedule(store.redis, {"soon": now.timestamp() + 10})
    assert 0.125 <= clock.wait_s(now) <= 0.375


def test_the_clock_polls_when_redis_cannot_say_what_is_due_next(redis_url):
    from notifier.ledger.client import LedgerRedis

    down = Store(LedgerRedis(host="127.0.0.1", port=1, socket_connect_timeout=0.2))
    clock = Clock(down, build_broker(redis_url), poll_s=0.25)
    assert 0.125 <= clock.wait_s(datetime(2026, 11, 25, 12, 0, tzinfo=UTC)) <= 0.375


# Surviving errors --------------------------------------------------------------------------


def run_until_stopped(clock: Clock, stop: threading.Event) -> None:
    """`clock.run` in its own thread, as `notifier clock` runs it, until its ticks set
    `stop` (at most 30 s)."""
    runner = threading.Thread(target=clock.run, args=(stop,), daemon=True)
    runner.start()
    runner.join(timeout=30)
    assert not runner.is_alive(), "the clock did not stop"


class Flaky(Clock):
    """A clock whose ticks raise until the fourth, which stops it: each a different error
    (Redis refusing, a bug), as a long-running clock meets them."""

    def __init__(self, *args, stop: threading.Event, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.stop, self.ticks = stop, 0

    def tick(self, now: datetime) -> int:
        self.ticks += 1
        if self.ticks == 1:
            raise StoreError("Redis is loading the dataset in memory")
        if self.ticks == 2:
            raise redis.ConnectionError("Connection refused")
        if self.ticks == 3:
            raise KeyError("a bug")
        self.stop.set()
        return super().tick(now)


def test_a_tick_that_raises_does_not_end_the_clock(store, redis_url, caplog):
    """The clock thread is the only one claiming due notifications: one failed tick (any
    error, not only Redis') is logged and the next tick runs, a poll later."""
    stop = threading.Event()
    clock = Flaky(store, build_broker(redis_url), poll_s=0.01, min_wait_s=0.001, stop=stop)
    run_until_stopped(clock, stop)
    assert clock.ticks == 4
    failed = [r for r in caplog.records if r.getMessage() == "clock tick failed; trying again"]
    assert [type(r.exc_info[1]) for r in failed] == [StoreError, redis.ConnectionError, KeyError]


# The defaults, as `notifier clock` builds it -----------------------------------------------

def test_by_default_at_most_5000_in_flight_handed_over_25_ids_a_message(store, redis_url):
    """The README's figures, with the clock built as the CLI builds it (no chunk or cap
    given): 6,000 due ids give 5,000 in flight in 200 messages of 25, and nothing more is
    claimed until some finish."""
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    ids = [f"n{i:04d}" for i in range(6000)]
    put_on_schedule(store.redis, {i: now.timestamp() - 1 for i in ids})
    clock = Clock(store, build_broker(redis_url))
    assert clock.tick(now) == 5000
    assert inflight_count(store.redis) == 5000
    queued = [json.loads(m)["args"][0]
              for m in store.redis.hvals("notifier-dq:deliver.msgs")]
    assert len(queued) == 200 and {len(batch) for batch in queued} == {25}
    claimed = {i for batch in queued for i in batch}
    assert len(claimed) == 5000 and claimed <= set(ids)
    assert clock.tick(now + timedelta(seconds=1)) == 0
    take_out_of_flight(store.redis, inflight_ids(store.redis)[:25])
    assert clock.tick(now + timedelta(seconds=2)) == 25


class Down(Clock):
    """A clock whose first 30 ticks find Redis down, then tick; the 32nd stops it."""

    def __init__(self, *args, stop: threading.Event, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.stop, self.ticks = stop, 0

    def tick(self, now: datetime) -> int:
        self.ticks += 1
        if self.ticks <= 30:
            raise StoreError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        if self.ticks == 32:
            self.stop.set()
        return super().tick(now)


def test_a_redis_outage_is_one_traceback_not_one_a_tick(store, redis_url, caplog):
    """Found by QA: four ticks a second, each a 4 KB traceback while Redis was down. The
    same error again is not logged again (one line a minute says it goes on), and the
    recovery is one line."""
    caplog.set_level(logging.INFO, logger="notifier.worker.clock")
    stop = threading.Event()
    clock = Down(store, build_broker(redis_url), poll_s=0.01, min_wait_s=0.001, stop=stop)
    run_until_stopped(clock, stop)
    assert clock.ticks == 32
    lines = [r for r in caplog.records if r.name == "notifier.worker.clock"
             and r.getMessage() != "clock running"]
    assert [(r.levelname, r.exc_info is not None) for r in lines] == [
        ("ERROR", True), ("INFO", False)]
    assert lines[1].getMessage() == "clock ticks again after 30 failed ticks"


def test_an_outage_that_goes_on_is_said_again_now_and_then(store, redis_url, caplog,
                                                           monkeypatch):
    """With the period at 0, every repeat is the one line (no traceback), with its count."""
    from notifier.worker import clock as clock_module

    monkeypatch.setattr(clock_module, "FAILING_SAID_EVERY_S", 0.0)
    stop = threading.Event()
    clock = Down(store, build_broker(redis_url), poll_s=0.01, min_wait_s=0.001, stop=stop)
    run_until_stopped(clock, stop)
    again = [r for r in caplog.records if r.getMessage().startswith("clock tick still failing")]
    assert len(again) == 29 and not any(r.exc_info for r in again)
    assert again[-1].getMessage().startswith("clock tick still failing (30 in a row): ")



def test_the_webhook_outbox_waits_while_a_burst_is_claimed(store, redis_url):
    """A tick that hands notifications out fans out one batch, spread over the clock's
    shards; an idle one up to ten, so a burst of changes never holds up a reminder."""
    from notifier.policy.plan import Plan, PlannedNotification
    from notifier.webhooks.outbox import FAN_OUT_BATCH, WebhookOutbox

    now = datetime.now(UTC)
    nid = "appointment_reminder:a1:72h:sms"
    busy, other = KEYS.of_notification(nid), (KEYS.of_notification(nid) + 1) % KEYS.count

    def fill(shard: int, batches: int) -> None:
        store.redis.rpush(KEYS.webhook_outbox(shard), *[
            json.dumps([n, "client.opted_in", "1796050800.5", "c1", "{}"])
            for n in range(FAN_OUT_BATCH * batches)])

    fill(busy, 12)
    fill(other, 2)
    clock = Clock(store, build_broker(redis_url), webhooks=WebhookOutbox(store.redis, (), KEYS))
    store.write_plan(Plan(outcome="applied", add=(PlannedNotification(
        id=nid, kind="appointment_reminder", channel="sms",
        recipient="client", recipient_id="c1", entity="appointment:a1", due_at=now,
        expires_at=now + timedelta(hours=1)),)), now)
    waiting = FAN_OUT_BATCH * 14 + 1  # the plan's own entry too
    assert outbox_waiting(store.redis) == waiting
    assert clock.tick(now) == 1
    burst = waiting - outbox_waiting(store.redis)
    assert 0 < burst <= FAN_OUT_BATCH
    assert clock.tick(now) == 0
    idle = waiting - burst - outbox_waiting(store.redis)
    assert FAN_OUT_BATCH < idle <= 10 * FAN_OUT_BATCH
    assert store.redis.llen(KEYS.webhook_outbox(other)) == 0  # then the busy shard's alone
    assert store.redis.llen(KEYS.webhook_outbox(busy)) > 0
