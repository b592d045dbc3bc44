"""Event order end to end: bursts over HTTP, live workers (4 threads) and the clock.

Each test is one of the failing inputs reported against per-thread application: events
about one subject posted moments apart, or in the wrong order, still plan everything the
pair implies, and nothing goes out on knowledge already out of date.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.kit import (
    appointment,
    client_upserted,
    daytime_zone,
    event_dict,
    message_received,
    prescription_filled,
    provider_upserted,
    refill_requested,
)
from tests.service import Service, wait_for

#: The whole service (web on a port, worker, clock) or its processes.
pytestmark = pytest.mark.e2e

SUPPORT = {"NOTIFIER_SUPPORT_EMAIL": "support@practice.example"}


@pytest.fixture
def service(redis_client, redis_url, tmp_path):
    svc = Service(redis_url, tmp_path, env=SUPPORT, with_worker=False)
    yield svc
    svc.close()


def onboard(service: Service, now: datetime, **client_kw) -> None:
    for evt in (client_upserted("c1", daytime_zone(now), now - timedelta(days=7), **client_kw),
                provider_upserted("prov-1", now - timedelta(days=7))):
        assert service.post(evt).status_code == 202


def burst(service: Service, *events: dict) -> None:
    """Post back to back, each answered 202, then let the workers at them all at once."""
    for evt in events:
        assert service.post(evt).status_code == 202
    service.start_worker()


def event_statuses(service: Service, *events: dict) -> list[str]:
    return [service.runtime.store.event_status(e["id"])["status"] for e in events]


def settled(service: Service, *events: dict) -> list[str] | None:
    statuses = event_statuses(service, *events)
    return statuses if "accepted" not in statuses else None


@pytest.mark.parametrize("close_first", [False, True], ids=["in-order", "close-first"])
def test_a_refill_sent_moments_after_its_request_tells_the_client(service, close_first):
    now = datetime.now(UTC)
    onboard(service, now, sms=False)
    requested = refill_requested("req-1", "rx-1", "c1", now - timedelta(seconds=2))
    sent = event_dict("refill.sent", {"request_id": "req-1"}, now - timedelta(seconds=1))
    burst(service, *((sent, requested) if close_first else (requested, sent)))
    wait_for(lambda: settled(service, requested, sent), what="both events applied")
    assert event_statuses(service, requested, sent) == ["applied", "applied"]
    # SMS is off for this client: the SMS-only notice goes by email instead.
    [notice] = wait_for(lambda: service.sent("refill_sent"), what="the refill-sent notice")
    assert notice["channel"] == "email"
    wait_for(service.quiet, what="the service to go idle")
    assert service.sent("support_escalation") == []


@pytest.mark.parametrize("close_first", [False, True], ids=["in-order", "close-first"])
def test_a_denial_for_a_visit_moments_after_the_request_asks_for_the_visit(service,
                                                                          close_first):
    now = datetime.now(UTC)
    onboard(service, now)
    filled = prescription_filled("rx-1", "c1", (now - timedelta(days=25)).date(),
                                 now - timedelta(days=25))
    assert service.post(filled).status_code == 202
    requested = refill_requested("req-1", "rx-1", "c1", now - timedelta(seconds=2))
    denied = event_dict("refill.denied", {"request_id": "req-1", "reason": "visit_required"},
                        now - timedelta(seconds=1))
    burst(service, *((denied, requested) if close_first else (requested, denied)))
    wait_for(lambda: settled(service, filled, requested, denied), what="the events applied")
    assert event_statuses(service, requested, denied) == ["applied", "applied"]
    sent = wait_for(lambda: len(service.sent("visit_required")) == 2
                    and service.sent("visit_required"), what="the visit-required notices")
    assert {m["channel"] for m in sent} == {"sms", "email"}


@pytest.mark.parametrize("close_first", [False, True], ids=["in-order", "close-first"])
def test_a_completion_posted_right_after_its_booking_plans_the_follow_up(service, close_first):
    now = datetime.now(UTC)
    onboard(service, now)
    booked = appointment("appointment.scheduled", "a1", "c1", now - timedelta(hours=2),
                         now - timedelta(days=6))
    completed = event_dict("appointment.completed", {"appointment_id": "a1"},
                           now - timedelta(minutes=80))
    burst(service, *((completed, booked) if close_first else (booked, completed)))
    wait_for(lambda: settled(service, booked, completed), what="both events applied")
    assert event_statuses(service, booked, completed) == ["applied", "applied"]
    follow_ups = {k: v for k, v in service.notifications("c1").items()
                  if v["kind"] == "follow_up"}
    assert {v["channel"] for v in follow_ups.values()} == {"sms", "email"}
    assert {v["state"] for v in follow_ups.values()} == {"scheduled"}
    record = service.runtime.store.load_record("appointment:a1")
    assert record is not None and record.status == "completed"


def test_no_alert_goes_out_for_a_message_whose_answer_was_accepted(service):
    """Eight messages that arrived 49 h ago, each answered a moment later in one burst: the
    support alert falls due the moment a message is applied, but its answer is already
    accepted, so the alert waits for it and is cancelled."""
    now = datetime.now(UTC)
    onboard(service, now)
    opened = now - timedelta(hours=49)
    pairs = [(message_received(f"m{i}", "c1", opened),
              event_dict("message.answered", {"message_id": f"m{i}"}, now - timedelta(seconds=1)))
             for i in range(8)]
    burst(service, *(e for pair in pairs for e in pair))
    everything = [e for pair in pairs for e in pair]
    wait_for(lambda: settled(service, *everything), what="every event applied")
    assert set(event_statuses(service, *everything)) == {"applied"}
    wait_for(service.quiet, what="the service to go idle")
    assert service.sent("support_escalation") == []
    assert service.sent("escalation_notice") == []
    alerts = [n for n in service.notifications("c1").values()
              if n["kind"] == "escalation_notice"]
    assert len(alerts) == 8 and {n["state"] for n in alerts} == {"cancelled"}
