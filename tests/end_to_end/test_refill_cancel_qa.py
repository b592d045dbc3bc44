"""QA of a refill request cancelling its prescription's reminders in a transaction of their
own shard before the request's own (`ledger.plans._cancel_elsewhere`), through the HTTP
API with a live worker and clock: cancelled once, nothing more on the request re-sent
(same event id, or another id for the same request), a later fill's reminders untouched
by the old request replayed, and the read API and `/metrics` saying so."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from redis.cluster import RedisCluster

from notifier.worker.actors import build_broker, enqueue_apply
from tests.kit import (
    client_upserted,
    daytime_zone,
    prescription_filled,
    provider_upserted,
    refill_requested,
)
from tests.service import Service, wait_for

#: The whole service (web on a port, worker, clock).
pytestmark = pytest.mark.e2e


@pytest.fixture(params=["one-redis", "cluster"])
def service(request, tmp_path):
    """The service on the session Redis, or on the 3-master cluster (emptied) with its
    queue on a Redis of its own."""
    if request.param == "one-redis":
        request.getfixturevalue("redis_client")  # emptied
        svc = Service(request.getfixturevalue("redis_url"), tmp_path)
    else:
        cluster = request.getfixturevalue("cluster")
        for node in cluster.nodes:
            with redis.Redis.from_url(node.url) as client:
                client.flushall()
        svc = Service(cluster.url, tmp_path, env={
            "NOTIFIER_BROKER_URL": request.getfixturevalue("other_redis_url")})
        assert isinstance(svc.redis, RedisCluster)
    yield svc
    svc.close()


def states(service: Service, prefix: str) -> dict[str, str]:
    return {k: v["state"] for k, v in service.notifications("c1").items()
            if k.startswith(prefix)}


def event_status(service: Service, event_id: str) -> dict[str, Any]:
    answer = service.http.get(f"/v1/events/{event_id}", headers={
        "Authorization": f"Bearer {service.env['NOTIFIER_API_TOKEN']}"})
    answer.raise_for_status()
    return dict(answer.json())


def cancelled(service: Service) -> dict[str, int]:
    """`notifier_notifications_total{state="cancelled"}` by channel, from `/metrics`."""
    text = service.http.get("/metrics").text
    return {m.group(1): int(float(m.group(2))) for m in re.finditer(
        r'notifier_notifications_total\{channel="(\w+)",state="cancelled"\} (\S+)', text)}


def test_a_refill_request_cancels_its_fills_reminders_once_and_never_a_later_fills(service):
    now = datetime.now(UTC)
    zone = daytime_zone(now)
    for evt in (client_upserted("c1", zone, now - timedelta(days=3)),
                provider_upserted("prov-1", now - timedelta(days=3))):
        assert service.post(evt).status_code == 202
    today = now.astimezone(ZoneInfo(zone)).date()
    first = today - timedelta(days=10)
    fill = prescription_filled("rx-1", "c1", first, now - timedelta(hours=2))
    assert service.post(fill).status_code == 202
    keys = service.runtime.store.keys
    # The request and the prescription in different shards: the cancel goes first, apart.
    assert keys.of_ref("refill_request:req-1") != keys.of_ref("prescription:rx-1")
    wait_for(lambda: len([k for k in states(service, "refill_") if f"fill{first:%Y%m%d}" in k])
             == 3, what="the first fill's reminders")
    request = refill_requested("req-1", "rx-1", "c1", now - timedelta(hours=1))
    assert service.post(request).status_code == 202
    wait_for(lambda: set(states(service, "refill_").values()) == {"cancelled"},
             what="the reminders cancelled")
    wait_for(service.quiet, what="the service to go idle")
    assert event_status(service, request["id"])["status"] == "applied"
    assert cancelled(service) == {"email": 1, "sms": 2}

    # Re-sent: the same id is a duplicate; another id for the same request is ignored.
    again = service.post(request)
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    assert service.post(dict(request, id="evt-req-1-again")).status_code == 202
    wait_for(lambda: event_status(service, "evt-req-1-again")["status"] != "accepted",
             what="the second id applied")
    assert event_status(service, "evt-req-1-again") == {
        "id": "evt-req-1-again", "status": "ignored", "reason": "already open"}

    # A later fill: its reminders stay scheduled when the old request is replayed.
    later = prescription_filled("rx-1", "c1", today, now - timedelta(minutes=30))
    assert service.post(later).status_code == 202
    new = {f"refill_due:rx-1:fill{today:%Y%m%d}:sms", f"refill_due:rx-1:fill{today:%Y%m%d}:email",
           f"refill_nudge:rx-1:fill{today:%Y%m%d}:sms"}
    wait_for(lambda: {k for k, s in states(service, "refill_").items() if s == "scheduled"}
             == new, what="the later fill's reminders")
    assert service.post(request).status_code == 200
    # The worker's message for the old request delivered again (a redelivery).
    enqueue_apply(build_broker(service.runtime.broker_url), request["id"])
    assert service.post(dict(request, id="evt-req-1-third")).status_code == 202
    wait_for(lambda: event_status(service, "evt-req-1-third")["status"] != "accepted",
             what="the third id applied")
    wait_for(service.drained, what="the redelivered message taken and the service idle")
    assert event_status(service, "evt-req-1-third")["status"] == "ignored"
    assert {k for k, s in states(service, "refill_").items() if s == "scheduled"} == new
    assert cancelled(service) == {"email": 1, "sms": 2}
    history = service.notifications("c1")
    assert history["escalation_notice:req-1:refill_request-window:sms"]["state"] == "scheduled"
    assert all(history[k]["reason"] == "superseded" for k in history
               if k.startswith("refill_") and k not in new)


def test_a_request_posted_right_after_its_fill_cancels_that_fills_reminders(service):
    """The fill accepted (202) before the request: the fill's reminders must not stay
    scheduled, whichever is applied first. Twenty prescriptions, each fill and request
    posted back to back (one in four was applied request-first when QA measured: the
    fill then planned reminders the request should have stopped). Now the request leaves
    `refill_asked` beside the prescription, and a fill that occurred before it plans
    none (`policy.refills.plan_filled`)."""
    now = datetime.now(UTC)
    zone = daytime_zone(now)
    for evt in (client_upserted("c1", zone, now - timedelta(days=3)),
                provider_upserted("prov-1", now - timedelta(days=3))):
        assert service.post(evt).status_code == 202
    wait_for(service.quiet, what="the client stored")
    filled_on = now.astimezone(ZoneInfo(zone)).date() - timedelta(days=10)
    posted = []
    for i in range(20):
        fill = prescription_filled(f"rx-{i}", "c1", filled_on, now - timedelta(hours=2))
        assert service.post(fill).status_code == 202
        request = refill_requested(f"req-{i}", f"rx-{i}", "c1", now - timedelta(hours=1))
        assert service.post(request).status_code == 202
        posted += [fill["id"], request["id"]]
    wait_for(lambda: all(event_status(service, e)["status"] == "applied" for e in posted),
             what="every fill and request applied")
    wait_for(service.quiet, what="the service to go idle")
    survivors = sorted(k for k, s in states(service, "refill_").items() if s != "cancelled")
    assert survivors == []


def test_a_follow_up_and_a_denials_notice_are_named_after_their_events_subject(service):
    """README, "Shards": `follow_up:{appointment}:completed:{channel}` and
    `visit_required:{request}:denied:{channel}`, once each, however often the closing
    event is re-sent (same id: a duplicate; another id: ignored)."""
    from tests.kit import appointment, event_dict

    now = datetime.now(UTC)
    zone = daytime_zone(now)
    for evt in (client_upserted("c1", zone, now - timedelta(days=3)),
                provider_upserted("prov-1", now - timedelta(days=3))):
        assert service.post(evt).status_code == 202
    booked = appointment("appointment.scheduled", "a1", "c1", now - timedelta(hours=2),
                         now - timedelta(days=6))
    completed = event_dict("appointment.completed", {"appointment_id": "a1"},
                           now - timedelta(minutes=80))
    request = refill_requested("req-1", "rx-1", "c1", now - timedelta(hours=1))
    denied = event_dict("refill.denied", {"request_id": "req-1", "reason": "visit_required"},
                        now - timedelta(minutes=30))
    for evt in (booked, completed, request, denied):
        assert service.post(evt).status_code == 202
        wait_for(lambda evt=evt: event_status(service, evt["id"])["status"] != "accepted",
                 what=f"{evt['type']} applied")
    for evt in (completed, denied):
        assert service.post(evt).status_code == 200
        assert service.post(dict(evt, id=evt["id"] + "-again")).status_code == 202
    wait_for(service.quiet, what="the service to go idle")
    listed = service.notifications("c1")
    assert {k for k in listed if k.startswith(("follow_up", "visit_required"))} == {
        "follow_up:a1:completed:sms", "follow_up:a1:completed:email",
        "visit_required:req-1:denied:sms", "visit_required:req-1:denied:email"}
    assert len(service.sent("visit_required")) == 2


@pytest.mark.xfail(strict=True, reason="QA: a denial's visit_required notice held by quiet "
                   "hours stays scheduled after a new fill of its prescription (README, what "
                   "is sent: visit_required is cancelled by 'a new fill'); it is indexed under "
                   "the request (visitreq:{request}), which no fill cancels (so too before, "
                   "under visitreq:{client})")
def test_a_new_fill_cancels_a_denials_visit_required_notice_held_by_quiet_hours(service):
    from tests.kit import event_dict, zone_at_hour

    now = datetime.now(UTC)
    zone = zone_at_hour(now, 2)  # quiet hours: the notice waits for 08:00
    for evt in (client_upserted("c1", zone, now - timedelta(days=3)),
                provider_upserted("prov-1", now - timedelta(days=3))):
        assert service.post(evt).status_code == 202
    today = now.astimezone(ZoneInfo(zone)).date()
    events = [prescription_filled("rx-1", "c1", today - timedelta(days=10),
                                  now - timedelta(hours=3)),
              refill_requested("req-1", "rx-1", "c1", now - timedelta(hours=2)),
              event_dict("refill.denied", {"request_id": "req-1", "reason": "visit_required"},
                         now - timedelta(hours=1))]
    for evt in events:
        assert service.post(evt).status_code == 202
        wait_for(lambda evt=evt: event_status(service, evt["id"])["status"] != "accepted",
                 what=f"{evt['type']} applied")
    notices = {"visit_required:req-1:denied:sms", "visit_required:req-1:denied:email"}
    assert states(service, "visit_required") == dict.fromkeys(
        notices, "scheduled")
    fill = prescription_filled("rx-1", "c1", today, now - timedelta(minutes=10))
    assert service.post(fill).status_code == 202
    wait_for(lambda: event_status(service, fill["id"])["status"] != "accepted",
             what="the new fill applied")
    assert set(states(service, "visit_required").values()) == {"cancelled"}
