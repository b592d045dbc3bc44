"""End to end over HTTP with a live worker and clock: events in, outbox out.

Events carry times seconds away, and the client lives in a zone where it is midday, so
quiet hours never interfere with what is being tested.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from icalendar import Calendar
from prometheus_client.parser import text_string_to_metric_families

from notifier.delivery.decide import NEVER_TOLD
from notifier.worker.actors import build_broker, enqueue_apply
from tests.kit import (
    appointment,
    client_upserted,
    daytime_zone,
    event_dict,
    provider_upserted,
    zone_at_hour,
)
from tests.service import Service, wait_for

#: The whole service (web on a port, worker, clock) or its processes.
pytestmark = pytest.mark.e2e


@pytest.fixture
def service(redis_client, redis_url, tmp_path):
    svc = Service(redis_url, tmp_path)
    yield svc
    svc.close()


def kinds_sent(service: Service) -> Counter[tuple[str, str]]:
    return Counter((m["kind"], m["channel"]) for m in service.sent())


def invite(service: Service, kind: str) -> Calendar:
    [email] = [m for m in service.sent() if m["kind"] == kind and m["channel"] == "email"]
    [name] = email["attachments"]
    return Calendar.from_ical((service.outbox.directory / name).read_bytes())


def onboard(service: Service, now: datetime) -> None:
    for evt in (client_upserted("c1", daytime_zone(now), now), provider_upserted("prov-1", now)):
        assert service.post(evt).status_code == 202


def test_booking_sends_confirmation_at_once_and_the_72h_reminder_on_time(service):
    now = datetime.now(UTC)
    onboard(service, now)
    start = now + timedelta(hours=72, seconds=4)
    booked = appointment("appointment.scheduled", "a1", "c1", start, now)
    assert service.post(booked).json() == {"id": booked["id"], "status": "accepted"}

    wait_for(lambda: kinds_sent(service)[("appointment_confirmation", "sms")] == 1
             and kinds_sent(service)[("appointment_confirmation", "email")] == 1,
             what="the confirmation")
    cal = invite(service, "appointment_confirmation")
    [vevent] = cal.walk("VEVENT")
    assert str(cal["METHOD"]) == "REQUEST" and int(vevent["SEQUENCE"]) == 0
    assert vevent.decoded("DTSTART") == start.replace(microsecond=0)

    reminders = wait_for(lambda: [m for m in service.sent()
                                  if m["kind"] == "appointment_reminder"]
                         if len([m for m in service.sent()
                                 if m["kind"] == "appointment_reminder"]) == 2 else None,
                         what="the 72 h reminder")
    for reminder in reminders:
        due = datetime.fromisoformat(reminder["due_at"])
        sent = datetime.fromisoformat(reminder["sent_at"])
        assert due == start - timedelta(hours=72)
        assert sent >= due, "sent before it was due"
        lateness_s = (sent - due).total_seconds()
        print(f"72 h reminder ({reminder['channel']}) lateness: {lateness_s:.3f} s")
    planned = service.notifications("c1")
    assert planned[f"appointment_reminder:a1:24h.{start:%Y%m%dT%H%M%SZ}:sms"]["state"] == (
        "scheduled")


def test_reschedule_then_cancel_updates_the_invite_and_cancels_reminders(service):
    now = datetime.now(UTC)
    onboard(service, now)
    first = now + timedelta(days=10)
    second = now + timedelta(days=12)
    service.post(appointment("appointment.scheduled", "a1", "c1", first, now))
    wait_for(lambda: kinds_sent(service)[("appointment_confirmation", "email")] == 1,
             what="the confirmation")
    moved = appointment("appointment.rescheduled", "a1", "c1", second,
                        now + timedelta(seconds=1))
    assert service.post(moved).status_code == 202
    wait_for(lambda: kinds_sent(service)[("appointment_updated", "email")] == 1,
             what="the update")
    cal = invite(service, "appointment_updated")
    [vevent] = cal.walk("VEVENT")
    [original] = invite(service, "appointment_confirmation").walk("VEVENT")
    assert int(vevent["SEQUENCE"]) == 1 and str(cal["METHOD"]) == "REQUEST"
    assert str(vevent["UID"]) == str(original["UID"])
    states = {k: v["state"] for k, v in service.notifications("c1").items()
              if v["kind"] == "appointment_reminder"}
    old, new = f"{first:%Y%m%dT%H%M%SZ}", f"{second:%Y%m%dT%H%M%SZ}"
    assert {s for k, s in states.items() if old in k} == {"cancelled"}
    assert {s for k, s in states.items() if new in k} == {"scheduled"}
    assert len(states) == 8

    cancel = {"id": "evt-cancel", "type": "appointment.cancelled",
              "occurred_at": (now + timedelta(seconds=2)).isoformat(),
              "data": {"appointment_id": "a1", "cancelled_by": "client"}}
    assert service.post(cancel).status_code == 202
    wait_for(lambda: kinds_sent(service)[("appointment_cancelled", "email")] == 1
             and kinds_sent(service)[("appointment_cancelled", "sms")] == 1,
             what="the cancellation")
    cal = invite(service, "appointment_cancelled")
    [vevent] = cal.walk("VEVENT")
    assert str(cal["METHOD"]) == "CANCEL" and int(vevent["SEQUENCE"]) == 2
    reminders = [v for v in service.notifications("c1").values()
                 if v["kind"] == "appointment_reminder"]
    assert {r["state"] for r in reminders} == {"cancelled"}


def test_replaying_every_event_changes_nothing(service):
    now = datetime.now(UTC)
    events = [client_upserted("c1", daytime_zone(now), now), provider_upserted("prov-1", now),
              appointment("appointment.scheduled", "a1", "c1", now + timedelta(days=5), now),
              appointment("appointment.rescheduled", "a1", "c1", now + timedelta(days=6),
                          now + timedelta(seconds=1))]
    for evt in events[:3]:
        assert service.post(evt).status_code == 202
    wait_for(lambda: kinds_sent(service)[("appointment_confirmation", "sms")] == 1,
             what="the confirmation")
    assert service.post(events[3]).status_code == 202
    wait_for(lambda: kinds_sent(service)[("appointment_updated", "sms")] == 1, what="update")
    wait_for(service.quiet, what="the service to go idle")
    before = service.sent()
    before_plan = service.notifications("c1")
    broker = build_broker(service.runtime.redis_url)
    for evt in events * 2:
        answer = service.post(evt)
        assert (answer.status_code, answer.json()["status"]) == (200, "duplicate")
        enqueue_apply(broker, evt["id"])  # a redelivered queue message
    wait_for(service.drained, what="every replayed message to be processed")
    assert service.sent() == before
    assert service.notifications("c1") == before_plan
    assert len({m["dedupe_key"] for m in before}) == len(before) == 4


def test_an_event_stored_but_never_enqueued_is_applied_by_the_sweep(service):
    now = datetime.now(UTC)
    evt = client_upserted("c1", daytime_zone(now), now)
    service.runtime.store.store_event(evt["id"], json.dumps(evt).encode(), now)
    wait_for(lambda: service.runtime.store.event_status(evt["id"]).get("status") == "applied",
             what="the sweep to apply the stored event")


def planned_with(service: Service, keys: tuple[str, ...]) -> dict[str, dict] | None:
    """The client's notifications once all of `keys` are planned."""
    planned = service.notifications("c1")
    return planned if all(k in planned for k in keys) else None


def test_a_booking_cancelled_in_the_night_is_never_announced_at_all(service):
    """The client books at night (quiet hours, 21:00-08:00 their time) and cancels twenty
    minutes later: the held confirmation is superseded, and at 08:00 the cancellation of a
    visit they never heard of is suppressed, on both channels, instead of sent."""
    now = datetime.now(UTC)
    zone = zone_at_hour(now, 1)  # it is 01:xx there: quiet hours for seven more hours
    local = now.astimezone(ZoneInfo(zone))
    morning = local.replace(hour=8, minute=0, second=0, microsecond=0).astimezone(UTC)
    client = client_upserted("c1", zone, now - timedelta(hours=1))
    for evt in (client, provider_upserted("prov-1", now - timedelta(hours=1))):
        assert service.post(evt).status_code == 202
    # The booking is held by the client's quiet hours only once their zone is known.
    wait_for(lambda: service.runtime.store.event_status(client["id"]).get("status")
             == "applied", what="the client's details")
    booked = appointment("appointment.scheduled", "a1", "c1", now + timedelta(days=3),
                         now - timedelta(minutes=21))
    assert service.post(booked).status_code == 202
    confirmations = ("appointment_confirmation:a1:booked:email",
                     "appointment_confirmation:a1:booked:sms")
    planned = wait_for(lambda: planned_with(service, confirmations), what="the booking")
    assert {datetime.fromisoformat(planned[c]["due_at"]) for c in confirmations} == {morning}

    assert service.post(event_dict("appointment.cancelled", {
        "appointment_id": "a1", "cancelled_by": "client"}, now)).status_code == 202
    cancellations = ("appointment_cancelled:a1:seq1:email", "appointment_cancelled:a1:seq1:sms")
    wait_for(lambda: planned_with(service, cancellations), what="the cancellation")
    wait_for(service.quiet, what="the service to go idle")
    planned = service.notifications("c1")
    for key in confirmations:
        assert (planned[key]["state"], planned[key]["reason"]) == ("cancelled", "superseded")
    assert {v["state"] for v in planned.values() if v["kind"] == "appointment_reminder"} == {
        "cancelled"}
    for key in cancellations:
        assert planned[key]["state"] == "scheduled"
        assert datetime.fromisoformat(planned[key]["due_at"]) == morning  # held for 08:00

    # 08:00 cannot be waited for: deliver the held notices as the worker would then.
    deliverer = service.runtime.deliverer
    for key in cancellations:
        assert deliverer.deliver(key, morning) == "suppressed"
    shown = service.notifications("c1")
    for key in cancellations:
        assert (shown[key]["state"], shown[key]["reason"]) == ("suppressed", NEVER_TOLD)
    assert service.sent() == []


def scraped(service: Service) -> dict[str, Any]:
    answer = service.http.get("/metrics")
    answer.raise_for_status()
    return {f.name: f for f in text_string_to_metric_families(answer.text)}


def test_metrics_cover_what_the_workers_did(service):
    # Issue 11 §4 and §6 through the running service: a booking made after its start shows
    # its notices expired with the real cause, and /metrics (read from Redis, so it covers
    # every worker) counts them and the sends' lateness.
    now = datetime.now(UTC)
    onboard(service, now)
    zero = {s.labels["state"] + ":" + s.labels["channel"]: s.value
            for s in scraped(service)["notifier_notifications"].samples
            if s.name == "notifier_notifications_total"}
    assert set(zero.values()) == {0.0} and len(zero) == 10
    for evt in (appointment("appointment.scheduled", "a0", "c1", now - timedelta(minutes=5),
                            now),
                appointment("appointment.scheduled", "a1", "c1", now + timedelta(days=5),
                            now)):
        assert service.post(evt).status_code == 202

    def ended() -> dict[tuple[str, str], float] | None:
        counts = {(s.labels["state"], s.labels["channel"]): s.value
                  for s in scraped(service)["notifier_notifications"].samples
                  if s.name == "notifier_notifications_total"}
        return counts if counts[("sent", "sms")] + counts[("sent", "email")] == 2 else None

    counts = wait_for(ended, what="both confirmations of a1 to be sent")
    assert counts[("expired", "sms")] == counts[("expired", "email")] == 1
    shown = service.notifications("c1")
    for channel in ("sms", "email"):
        a0 = shown[f"appointment_confirmation:a0:booked:{channel}"]
        assert (a0["state"], a0["reason"]) == (
            "expired", "the appointment had already started when it was booked")
    lateness = scraped(service)["notifier_send_lateness_seconds"]
    assert lateness.type == "histogram"
    for channel in ("sms", "email"):
        samples = [s for s in lateness.samples if s.labels["kind"] == "appointment_confirmation"
                   and s.labels["channel"] == channel]
        [count] = [s.value for s in samples if s.name.endswith("_count")]
        buckets = [s.value for s in samples if s.name.endswith("_bucket")]
        assert count == 1.0
        assert buckets == sorted(buckets) and buckets[-1] == count, "cumulative, +Inf last"
