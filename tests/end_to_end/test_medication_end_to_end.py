"""Medication management end to end over HTTP with a live worker and clock.

`occurred_at` in the past brings deadlines seconds away: a request that "arrived" 48 hours
minus a few seconds ago escalates a few seconds from now.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from notifier.config import PROJECT_ROOT
from notifier.delivery.render import format_day
from tests.kit import (
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

SUPPORT = {"NOTIFIER_SUPPORT_EMAIL": "support@practice.example",
           "NOTIFIER_SUPPORT_PHONE": "+14155550100"}


@pytest.fixture
def service(redis_client, redis_url, tmp_path):
    svc = Service(redis_url, tmp_path, env=SUPPORT)
    yield svc
    svc.close()


def onboard(service: Service, now: datetime) -> str:
    zone = daytime_zone(now)
    for evt in (client_upserted("c1", zone, now - timedelta(days=3)),
                provider_upserted("prov-1", now - timedelta(days=3))):
        assert service.post(evt).status_code == 202
    return zone


def test_an_unanswered_request_escalates_exactly_once(service):
    now = datetime.now(UTC)
    onboard(service, now)
    opened = now - timedelta(hours=48) + timedelta(seconds=3)
    assert service.post(refill_requested("req-1", "rx-1", "c1", opened)).status_code == 202
    wait_for(lambda: len(service.sent("support_escalation")) == 2
             and len(service.sent("escalation_notice")) == 1, what="the escalation")
    wait_for(service.quiet, what="the service to go idle")
    alerts = {m["channel"]: m for m in service.sent("support_escalation")}
    assert alerts["email"]["to"] == "support@practice.example"
    assert alerts["sms"]["to"] == "+14155550100"
    assert "client-1" not in alerts["email"]["body"] and "c1" in alerts["email"]["body"]
    assert "Dr. Rivera" in alerts["email"]["body"]
    [notice] = service.sent("escalation_notice")
    assert (notice["channel"], notice["to"]) == ("sms", "+14155550123")
    for alert in alerts.values():
        assert datetime.fromisoformat(alert["sent_at"]) >= opened + timedelta(hours=48)
    # A late answer changes nothing that was sent, and nothing is alerted again.
    closed = event_dict("refill.sent", {"request_id": "req-1"}, datetime.now(UTC))
    assert service.post(closed).status_code == 202
    wait_for(lambda: len(service.sent("refill_sent")) == 1, what="the refill-sent notice")
    wait_for(service.quiet, what="the service to go idle")
    assert len(service.sent("support_escalation")) == 2


def test_an_answered_message_never_escalates(service):
    now = datetime.now(UTC)
    onboard(service, now)
    opened = now - timedelta(hours=48) + timedelta(seconds=2)
    assert service.post(message_received("msg-1", "c1", opened)).status_code == 202
    planned = wait_for(lambda: {k: v for k, v in service.notifications("c1").items()
                                if v["kind"] == "escalation_notice"} or None,
                       what="the planned notice")
    answered = event_dict("message.answered", {"message_id": "msg-1"}, now)
    assert service.post(answered).status_code == 202
    deadline = opened + timedelta(hours=48)
    wait_for(lambda: datetime.now(UTC) > deadline + timedelta(seconds=1) and service.quiet(),
             what="the deadline to pass")
    assert service.sent() == []
    assert {v["state"] for v in service.notifications("c1").values()} == {"cancelled"}
    assert len(planned) == 1
    alert = service.runtime.store.notification("support_escalation:msg-1:message-window:email")
    assert alert["state"] == "cancelled"


def test_a_fill_with_no_refills_left_asks_for_a_visit_with_the_book_by_date(service):
    now = datetime.now(UTC)
    zone = onboard(service, now)
    today = now.astimezone(ZoneInfo(zone)).date()
    filled_on = today - timedelta(days=25)  # run-out in 5 days: the 7-day mark has passed
    fill = prescription_filled("rx-1", "c1", filled_on, now, refills_remaining=0)
    assert service.post(fill).status_code == 202
    wait_for(lambda: len(service.sent("visit_required")) == 2, what="the visit-required notice")
    book_by = format_day(filled_on + timedelta(days=30 - 2), "en")
    for message in service.sent("visit_required"):
        assert book_by in message["body"], message["body"]
        assert "Sertraline" not in message["body"]
    assert service.sent("refill_due") == []


def test_a_fill_with_refills_left_sends_the_refill_reminder_at_once_when_late(service):
    now = datetime.now(UTC)
    zone = onboard(service, now)
    today = now.astimezone(ZoneInfo(zone)).date()
    fill = prescription_filled("rx-1", "c1", today - timedelta(days=25), now)
    assert service.post(fill).status_code == 202
    wait_for(lambda: len(service.sent("refill_due")) == 2, what="the refill reminder")
    filled = f"{today - timedelta(days=25):%Y%m%d}"
    nudge = service.notifications("c1")[f"refill_nudge:rx-1:fill{filled}:sms"]
    assert nudge["state"] == "scheduled"
    # The client asks: the nudge is cancelled.
    assert service.post(refill_requested("req-1", "rx-1", "c1", now)).status_code == 202
    wait_for(lambda: service.notifications("c1")[nudge["id"]]["state"] == "cancelled",
             what="the nudge to be cancelled")


def test_jobs_run_provider_digest_emails_the_open_items(service, tmp_path):
    now = datetime.now(UTC)
    onboard(service, now)
    service.post(refill_requested("req-1", "rx-1", "c1", now - timedelta(hours=50)))
    service.post(message_received("msg-1", "c1", now - timedelta(hours=3)))
    wait_for(lambda: len(service.runtime.store.load_record("provider_queue:prov-1")
                         .items) == 2  # type: ignore[union-attr]
             if service.runtime.store.load_record("provider_queue:prov-1") else False,
             what="both items to be open")
    env = {**os.environ, **service.env}
    result = subprocess.run([sys.executable, "-m", "notifier", "jobs", "run", "provider-digest"],
                            env=env, cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert ": planned 1 digest, due now" in result.stdout
    [digest] = wait_for(lambda: service.sent("provider_digest"), what="the digest")
    assert digest["to"] == "rivera@example.com"
    body = digest["body"]
    assert body.index("refill request from client c1") < body.index("message from client c1")
    assert "OVERDUE" in body and "waiting 50 h" in body
    assert digest["subject"] == "2 open requests waiting for you (1 overdue)"
