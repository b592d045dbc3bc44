"""The clock against a real Redis: cron fires claimed once across clocks, per provider zone;
claims fed in chunks; stuck events re-enqueued."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from notifier.ledger.store import Store
from notifier.worker.actors import JOBS_QUEUE, RUN_JOB, build_broker, declare_actors
from notifier.worker.clock import FIRED_MARGIN, Clock
from notifier.worker.cron import CATCH_UP, Job
from notifier.worker.digests import provider_zones
from tests.kit import event_dict, message_received, store_and_apply

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
    assert store.redis.smembers("n:providers") == {b"p-ny", b"p-ber"}
    scans = count_scans(store, monkeypatch)
    ticking = Clock(store, build_broker(redis_url), jobs=[DIGEST], zones_every_s=0)
    for minutes in range(5):
        ticking.fire_jobs(NY_FIRE + timedelta(minutes=minutes))
    assert ticking._job_zones(DIGEST, NY_FIRE) == {"America/New_York", "Europe/Berlin"}
    # One SCAN at most, the first time (to index data older than the set), then none.
    assert len(scans) <= 1
    scans.clear()
    store_and_apply(store, policy, provider("p-tyo", "Asia/Tokyo", before), before)
    assert ticking._job_zones(DIGEST, NY_FIRE + timedelta(minutes=9)) == {
        "America/New_York", "Europe/Berlin", "Asia/Tokyo"}
    assert scans == []


def test_providers_stored_before_the_set_existed_are_indexed_by_one_scan(store, policy,
                                                                        monkeypatch):
    before = NY_FIRE - timedelta(days=1)
    store_and_apply(store, policy, provider("p-ny", "America/New_York", before), before)
    store_and_apply(store, policy, provider("p-ber", "Europe/Berlin", before), before)
    store.redis.delete("n:providers")  # as an older version left the data: records only
    store.redis.set("n:rec:provider_queue:p-ny", b"{}")  # not a provider record
    scans = count_scans(store, monkeypatch)
    assert provider_zones(store) == {"America/New_York", "Europe/Berlin"}
    assert provider_zones(store) == {"America/New_York", "Europe/Berlin"}
    assert store.redis.smembers("n:providers") == {b"p-ny", b"p-ber"}
    assert len(scans) >= 1
    first = len(scans)
    assert provider_zones(store) == {"America/New_York", "Europe/Berlin"}
    assert len(scans) == first, "scanned once, then the set is read"


def test_with_no_providers_the_keyspace_is_scanned_once_not_every_time(store, monkeypatch):
    scans = count_scans(store, monkeypatch)
    assert provider_zones(store) == set()
    first = len(scans)
    for _ in range(3):
        assert provider_zones(store) == set()
    assert len(scans) == first


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
