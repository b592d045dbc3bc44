"""What the issue asks of the service on the real 3-master cluster, besides the ledger's
own flows: the read API, `/metrics` and `/healthz` through the FastAPI app on a cluster
store (its queue on a Redis of its own), cron fires claimed once across clocks, and one
sender's rate limit shared by workers (one key, so one slot)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from notifier.cli.send_event import sign_event
from notifier.config import Settings
from notifier.intake.apply import apply_stored_event
from notifier.ledger.batch import Batch
from notifier.ledger.cluster.server import LocalCluster
from notifier.ledger.ratelimit import RateLimiter
from notifier.ledger.store import Store
from notifier.runtime import connect_ledger
from notifier.web.app import create_app
from notifier.worker.actors import (
    EVENTS_QUEUE,
    JOBS_QUEUE,
    RUN_JOB,
    build_broker,
    declare_actors,
)
from notifier.worker.clock import Clock
from notifier.worker.cron import Job
from tests.kit import (
    appointment,
    client_upserted,
    daytime_zone,
    event_dict,
    message_received,
    store_and_apply,
)
from tests.web.conftest import new_secret

TOKEN = "read-api-token-" + "x" * 20
SHARDS = 6


@pytest.fixture
def store(cluster: LocalCluster) -> Iterator[Store]:
    for node in cluster.nodes:
        with redis.Redis.from_url(node.url) as client:
            client.flushall()
    client = connect_ledger(cluster.url)
    yield Store(client, shards=SHARDS)
    client.close()


@pytest.fixture
def queue(redis_url: str, redis_client: redis.Redis) -> Iterator[Any]:
    """The broker, on the session's one Redis (a queue of its own: never on a cluster)."""
    broker = build_broker(redis_url)
    yield broker
    broker.close()


# The read API, /metrics and /healthz ------------------------------------------------------

@pytest.fixture
def web(store: Store, queue: Any) -> Iterator[tuple[TestClient, str]]:
    secret = new_secret()
    settings = Settings.from_env({"NOTIFIER_WEBHOOK_SECRET": secret,
                                  "NOTIFIER_API_TOKEN": TOKEN}, dotenv=Path("/nonexistent"))
    with TestClient(create_app(settings, store, queue)) as client:
        yield client, secret


def post(client: TestClient, secret: str, evt: dict[str, Any]) -> Any:
    body = json.dumps(evt).encode()
    return client.post("/v1/events", content=body,
                       headers=sign_event(secret, body, evt["id"], datetime.now(UTC)))


def metric(text: str, name: str) -> float:
    [line] = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.split()[1])


def test_events_posted_and_applied_are_read_back_through_the_api_and_metrics(
        web, store, policy, redis_client):
    client, secret = web
    now = datetime.now(UTC).replace(microsecond=0)
    events = [client_upserted("c1", daytime_zone(now), now)] + [
        appointment("appointment.scheduled", f"apt{i}", "c1", now + timedelta(days=5 + i), now)
        for i in range(4)]  # appointments of several shards, one client
    for evt in events:
        assert post(client, secret, evt).status_code == 202
    # Stored on the cluster, then queued on the queue's own Redis (worker.queueing).
    assert redis_client.hlen(f"notifier-dq:{EVENTS_QUEUE}.msgs") == len(events)
    status = client.get(f"/v1/events/{events[1]['id']}",
                        headers={"Authorization": f"Bearer {TOKEN}"})
    assert status.status_code == 200 and status.json()["status"] == "accepted"
    scrape = client.get("/metrics").text
    assert metric(scrape, "notifier_events_pending") == len(events)
    for evt in events:
        apply_stored_event(store, evt["id"], policy, now)
    listed = client.get("/v1/clients/c1/notifications",
                        headers={"Authorization": f"Bearer {TOKEN}"})
    assert listed.status_code == 200
    ids = {n["id"] for n in listed.json()["notifications"]}
    assert {f"apt{i}" for i in range(4)} <= {i.split(":")[1] for i in ids}
    shards = {store.keys.of_ref(f"appointment:apt{i}") for i in range(4)}
    assert len(shards) > 1  # the listing merged shards
    scrape = client.get("/metrics").text
    assert metric(scrape, "notifier_events_pending") == 0
    assert metric(scrape, "notifier_scheduled") == len(ids)
    health = client.get("/healthz")
    assert (health.status_code, health.json()) == (
        200, {"status": "ok", "redis": "ok", "redis_masters": 3, "redis_masters_down": 0,
              "redis_fsync": "always", "ledger_shards_lost": 0})


# Cron: a fire claimed once across clocks ------------------------------------------------

DIGEST = Job(name="provider-digest", cron="0 8 * * 1-5", zone="provider")
# Wednesday 2026-11-25: 08:00 in New York is 13:00Z, in Berlin 07:00Z.
NY_FIRE = datetime(2026, 11, 25, 13, 0, tzinfo=UTC)


def provider(provider_id: str, zone: str, at: datetime) -> dict[str, Any]:
    return event_dict("provider.upserted", {"provider": {
        "id": provider_id, "name": f"Dr. {provider_id}", "email": f"{provider_id}@example.com",
        "timezone": zone}}, at)


def queued_jobs(queue_redis: redis.Redis) -> list[list[Any]]:
    raw = queue_redis.hvals(f"notifier-dq:{JOBS_QUEUE}.msgs")
    return sorted(json.loads(m)["args"] for m in raw)


def test_a_cron_fire_is_claimed_once_across_clocks_and_its_job_plans_once(
        store, policy, queue, redis_url, redis_client):
    before = NY_FIRE - timedelta(days=1)
    store_and_apply(store, policy, provider("prov-1", "America/New_York", before), before)
    store_and_apply(store, policy, provider("p-ber", "Europe/Berlin", before), before)
    store_and_apply(store, policy, message_received("msg-1", "c1", before), before)
    first, second = Clock(store, queue, jobs=[DIGEST]), Clock(store, queue, jobs=[DIGEST])
    berlin_fire = NY_FIRE - timedelta(hours=6)
    fired = []
    for at in (berlin_fire + timedelta(seconds=1), NY_FIRE + timedelta(seconds=1)):
        fired += first.fire_jobs(at) + second.fire_jobs(at) + first.fire_jobs(at)
    assert fired == [
        f"n:job:provider-digest:Europe/Berlin:{int(berlin_fire.timestamp())}",
        f"n:job:provider-digest:America/New_York:{int(NY_FIRE.timestamp())}"]
    jobs = queued_jobs(redis_client)
    assert jobs == [["provider-digest", "America/New_York", NY_FIRE.isoformat()],
                    ["provider-digest", "Europe/Berlin", berlin_fire.isoformat()]]
    worker_broker = build_broker(redis_url)
    declare_actors(worker_broker, SimpleNamespace(store=store))
    run_job = worker_broker.get_actor(RUN_JOB).fn
    for args in jobs * 2:  # a redelivered job message plans nothing more
        run_job(*args)
    digests = sorted(n.id for n in store.notifications_for("provider", "prov-1"))
    assert digests == ["provider_digest:prov-1:20261125T130000Z:email"]


# One sender's rate, shared by workers ----------------------------------------------------

def test_one_senders_rate_is_shared_by_workers_on_the_cluster(store):
    now = datetime.now(UTC)
    first = RateLimiter(store.redis, "sms:+15005550006", per_s=10)
    second = RateLimiter(store.redis, "sms:+15005550006", per_s=10)
    slots = [first.reserve(now), second.reserve(now), first.reserve(now)]
    batch = Batch(store.redis)
    queued = [second.queue_reserve(batch, now), first.queue_reserve(batch, now)]
    batch.run()
    slots += [reply.get() for reply in queued]
    assert slots[0] == now
    gaps = [round((b - a).total_seconds(), 3) for a, b in zip(slots, slots[1:], strict=False)]
    assert gaps == [0.1] * 4
    other = RateLimiter(store.redis, "email:reminders@practice.example", per_s=10)
    assert other.reserve(now) == now  # another sender, another key


def test_a_script_missing_on_its_node_runs_while_another_master_is_down(
        store, cluster, master_back):
    """A restarted master has no scripts: the call sends the source to that node (EVAL),
    not SCRIPT LOAD to every master, which fails, for every shard, while one is down."""
    limiters = {}
    for n in range(100):
        limiter = RateLimiter(store.redis, f"sms:sender{n}", per_s=10)
        limiters.setdefault(cluster.node_of_slot(store.redis.keyslot(limiter.key)), limiter)
    now = datetime.now(UTC)
    with redis.Redis.from_url(cluster.nodes[0].url) as node:
        node.script_flush()
    master_back.append(2)
    cluster.kill(2)
    assert limiters[0].reserve(now) == now
    batch = Batch(store.redis)
    reply = limiters[1].queue_reserve(batch, now)
    with redis.Redis.from_url(cluster.nodes[1].url) as node:
        node.script_flush()
    batch.run()
    assert reply.get() == now


def health(client: TestClient) -> tuple[int, dict[str, Any]]:
    answer = client.get("/healthz")
    return answer.status_code, answer.json()


def test_healthz_with_a_hung_master_answers_degraded_within_its_read_timeouts(
        web, cluster, master_back):
    """A hung (SIGSTOPped) master costs `/healthz` its read timeout (2 s) once, the
    masters being asked at once, plus at most one more if reading the slot map again
    meets it: well under a load balancer's usual 5-10 s probe timeout."""
    client, _ = web
    master_back.append(0)
    cluster.pause(0)
    started = time.monotonic()
    code, answer = health(client)
    assert (code, answer["status"], answer["redis_masters_down"]) == (200, "degraded", 1)
    assert time.monotonic() - started < 5


def test_healthz_says_degraded_with_a_master_down_and_unhealthy_without_a_majority(
        web, cluster, master_back):
    """One master down: 200 `degraded` (the other shards take events: a load balancer
    keeps the web). Two of three: the last one, cut off from the majority, holds the
    cluster as failed and refuses commands though it answers PING: 503."""
    client, secret = web
    assert health(client) == (200, {"status": "ok", "redis": "ok", "redis_masters": 3,
                                    "redis_masters_down": 0, "redis_fsync": "always",
                                    "ledger_shards_lost": 0})
    master_back.append(1)
    cluster.kill(1)
    code, answer = health(client)
    assert (code, answer["status"], answer["redis"], answer["redis_masters_down"]) == (
        200, "degraded", "degraded", 1)
    assert "127.0.0.1" not in json.dumps(answer)  # counts, never addresses
    # What reads every shard answers 503 at once; events of the shards up are taken.
    started = time.monotonic()
    metrics = client.get("/metrics")
    assert (metrics.status_code, "retry-after" in metrics.headers) == (503, True)
    assert time.monotonic() - started < 5
    codes = {post(client, secret, client_upserted(f"c{i}", "America/Chicago",
                                                  datetime.now(UTC))).status_code
             for i in range(30)}
    assert codes == {202, 503}
    master_back.append(2)
    cluster.kill(2)
    deadline = time.monotonic() + 15
    while (answer := client.get("/healthz")).status_code != 503 \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (answer.status_code, answer.json()) == (503, {
        "status": "unhealthy", "redis": "unreachable", "redis_masters": 3,
        "redis_masters_down": 3})
    assert answer.headers["retry-after"]


# The clock with a master down ------------------------------------------------------------

def test_the_clock_claims_the_live_masters_notifications_while_one_master_is_down(
        store, policy, queue, cluster, master_back):
    """README, "Redis Cluster": with a master down (no replica), 'the other masters'
    notifications go out on time'. Found by QA with `notifier clock` on a local cluster:
    after a SIGKILL of one master no reminder of any shard went out until it was back."""
    now = datetime.now(UTC).replace(microsecond=0)
    store_and_apply(store, policy, client_upserted("c1", daytime_zone(now), now), now)
    appointments = [f"apt{i}" for i in range(12)]
    for appt in appointments:
        store_and_apply(store, policy, appointment(
            "appointment.scheduled", appt, "c1", now + timedelta(days=5), now), now)
    master = {s: cluster.node_of_slot(store.redis.keyslot(store.keys.schedule(s)))
              for s in store.keys.all()}
    down = master[store.keys.of_ref("appointment:apt0")]
    live = [a for a in appointments if master[store.keys.of_ref(f"appointment:{a}")] != down]
    assert live  # some confirmations are due in shards whose master stays up
    at = now + timedelta(seconds=1)
    due_live = sum(store.redis.zcount(store.keys.schedule(s), "-inf", at.timestamp())
                   for s in store.keys.all() if master[s] != down)
    assert due_live == 2 * len(live)  # each appointment's email and SMS confirmation
    master_back.append(down)
    cluster.kill(down)
    clock = Clock(store, queue)
    assert clock.tick(at) == due_live


def test_an_events_status_is_read_from_the_masters_that_answer_while_one_is_down(
        web, store, cluster, master_back):
    """An event looked up by id alone is read from every shard (docs/cluster.md); with a
    master down, one found on a live master is answered (200), and an id found on no
    live master is 503 with Retry-After: it may be on the dead one (QA, on `notifier web`
    against a local cluster)."""
    client, secret = web
    now = datetime.now(UTC)
    evt = client_upserted("c-status", "America/Chicago", now)
    assert post(client, secret, evt).status_code == 202
    live = cluster.node_of_slot(store.redis.keyslot(
        store.keys.tag(store.keys.of_ref("client:c-status"))))
    down = (live + 1) % len(cluster.nodes)
    master_back.append(down)
    cluster.kill(down)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get(f"/v1/events/{evt['id']}", headers=auth).status_code == 200
    unknown = client.get("/v1/events/evt-nowhere", headers=auth)
    assert (unknown.status_code, "retry-after" in unknown.headers) == (503, True)
