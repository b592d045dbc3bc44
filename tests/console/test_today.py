"""The console's Today page (`notifier.console.today`), on a ledger seeded through the real
scripts and events: backlog, sends per hour, lateness, failures by provider code, events
set aside, events refused at the door (422), escalations; the empty ledger; access and
audit; the round trips."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from fastapi.testclient import TestClient

from notifier.cli.send_event import sign_event
from notifier.config import Settings
from notifier.console.times import operator_zone, short_time
from notifier.console.today import (
    ProviderEscalations,
    escalations,
    gather,
    lateness_bars,
)
from notifier.ledger.client import LedgerRedis
from notifier.ledger.daily import REFUSED_KEEP_S, refused_key
from notifier.ledger.notifications import LATENESS_BUCKETS_S, Lateness
from notifier.ledger.records import OpenItem, ProviderQueueRecord, ProviderRecord
from notifier.ledger.store import Store
from notifier.policy.plan import Plan, PlannedNotification
from notifier.web.app import create_app
from notifier.worker.actors import build_broker
from tests.console.conftest import console_env
from tests.console.test_routes import audited, clocked_console, sign_in
from tests.kit import (
    CountingConnection,
    client_upserted,
    message_received,
    provider_upserted,
    store_and_apply,
)
from tests.ledger_keys import record_part_key


def planned(i: int, now: datetime, channel: str = "sms") -> PlannedNotification:
    return PlannedNotification(
        id=f"appointment_reminder:a{i}:1:{channel}", kind="appointment_reminder",
        channel=channel, recipient="client", recipient_id="c1", entity=f"appointment:a{i}",
        due_at=now - timedelta(minutes=5), expires_at=now + timedelta(hours=1))


def end(store: Store, i: int, now: datetime, state: str, **fields: Any) -> str:
    """Notification `i`, added, begun and ended in `state` through the real scripts."""
    n = planned(i, now)
    store.write_plan(Plan(outcome="applied", add=(n,)), now)
    begun = store.schedule.begin(n.id, now, lease_s=60)
    assert begun.may_send
    assert store.schedule.finish(n.id, state, lease=begun.lease, **fields)
    return n.id


def seed(store: Store, policy: Any, now: datetime) -> None:
    """Two sends (one 3 s late, one 2 min late, later reported undelivered), a failure
    with a provider code, one still scheduled, a rejected event, and a provider with a
    message opened eight days ago (past its 48 business hours)."""
    end(store, 1, now, "sent", sent_at=(now - timedelta(minutes=5)).timestamp() + 3)
    late = end(store, 2, now, "sent", sent_at=(now - timedelta(minutes=3)).timestamp())
    store.record_delivery(late, "undelivered", "30003", now)
    end(store, 3, now, "failed", reason="invalid number", code="21211",
        sent_at=now.timestamp())
    store.write_plan(Plan(outcome="applied", add=(planned(4, now + timedelta(hours=3)),)),
                     now)
    store.store_event("evt-bad", b'{"id": "evt-bad"}', now)
    store.reject_event("evt-bad", "not an event", now)
    for evt in (provider_upserted("prov-1", now - timedelta(days=9)),
                client_upserted("c1", "America/New_York", now - timedelta(days=9)),
                message_received("msg-1", "c1", now - timedelta(days=8))):
        store_and_apply(store, policy, evt, now)


@pytest.fixture
def console(settings, redis_client):
    app, now = clocked_console(settings, redis_client, 1800)
    with TestClient(app, base_url="https://testserver") as client:
        yield client, now


def test_today_without_a_session_is_401_and_not_audited(client, redis_client):
    answer = client.get("/console/today")
    assert answer.status_code == 401
    assert "Sign in first" in answer.text
    assert audited(redis_client) == []


def test_an_empty_ledger_renders_zero_charts_and_says_there_is_nothing(client, redis_client):
    assert sign_in(client).status_code == 303
    page = client.get("/console/today")
    assert page.status_code == 200, page.text
    text = page.text
    assert "<h1>Today</h1>" in text
    assert len(re.findall(r'<svg class="chart" role="img"', text)) == 2  # SMS and email
    assert "All zero." in text and "SMS: 0 sent" in text and "Email: 0 sent" in text
    assert 'id="late-none"' in text and 'id="failures-none"' in text
    assert 'id="escalations-none"' in text
    assert "style=" not in text and "<script" not in text
    assert audited(redis_client)[-1] == ("ana", "view", "today")


def test_today_shows_what_the_ledger_holds(console, redis_client, policy):
    client, now = console
    store = Store(redis_client)
    seed(store, policy, now[0])
    assert sign_in(client).status_code == 303
    page = client.get("/console/today")
    assert page.status_code == 200, page.text
    text = page.text
    backlog = dict(re.findall(r'<td data-label="State">([^<]+)</td>'
                              r'<td data-label="Count" class="num">(\d+)</td>', text))
    # Notification 4, and what the message opened (its escalation to support...).
    figures = store.figures()
    assert int(backlog["Scheduled"]) == figures.scheduled >= 2
    assert backlog["In flight"] == "0"
    assert backlog["Events pending"] == str(figures.events_pending)
    assert "SMS: 2 sent" in text and "Email: 0 sent" in text
    # Both sends fall in the hour of `now` (or the hour before, just after the hour).
    hours = re.findall(r"<title>(\d\d:00-\d\d:00): (\d+) sends?</title>", text)
    assert sum(int(n) for _, n in hours) == 2
    assert "SMS: 2 sends, 61.5 s late on average" in text
    late = re.search(r'<desc id="late-sms-d">([^<]*)</desc>', text)
    assert late and "1-5 s: 1 send;" in late.group(1) and "1-5 min: 1 send;" in late.group(1)
    failures = re.findall(r'<td data-label="Channel">(\w+)</td><td data-label="Code">([^<]+)'
                          r'</td><td data-label="Failures" class="num">(\d+)</td>', text)
    assert sorted(failures) == [("sms", "21211", "1"), ("sms", "30003", "1")]
    assert re.search(r"<dt>Events rejected</dt><dd>1 ", text)
    assert re.search(r"<dt>Events failed</dt><dd>0 ", text)
    row = re.search(r'<td data-label="Provider">Dr. Rivera <span class="muted">\(prov-1\)'
                    r'</span></td>\s*<td data-label="Past">(\d+) <span class="muted">since '
                    r'([^<]+)</span>', text)
    assert row and row.group(1) == "1", text
    assert row.group(2).endswith("UTC")
    assert audited(redis_client)[-1] == ("ana", "view", "today")


def test_gather_takes_four_round_trips_whatever_the_number_of_providers(
        redis_url, redis_client, policy):
    now = datetime.now(UTC)
    seed(Store(redis_client), policy, now)
    pool = redis.ConnectionPool.from_url(redis_url, connection_class=CountingConnection)
    counted = Store(LedgerRedis(connection_pool=pool))
    gather(counted, now)  # the first read of the providers indexes them once
    trips = []
    for n in range(2, 7):
        store_and_apply(counted, policy, provider_upserted(f"prov-{n}", now), now)
        CountingConnection.sent = 0
        gathered = gather(counted, now)
        trips.append(CountingConnection.sent)
    assert trips == [4] * 5
    assert [e.provider_id for e in gathered.escalations] == ["prov-1"]


T0 = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)


def item(escalates_in_h: float) -> OpenItem:
    return OpenItem(kind="message", client_id="c1", opened_at=T0 - timedelta(hours=60),
                    escalates_at=T0 + timedelta(hours=escalates_in_h))


def test_escalations_count_past_and_coming_per_provider_most_overdue_first():
    provider = ProviderRecord.model_validate({"updated_at": T0, "provider": {
        "id": "p1", "name": "Dr. Li", "email": "li@example.com", "timezone": "UTC"}})
    queues = {
        "p1": ProviderQueueRecord(updated_at=T0, items={
            "message:a": item(-5), "message:b": item(0), "message:c": item(3),
            "message:d": item(24), "message:e": item(24.5)}),
        "p2": ProviderQueueRecord(updated_at=T0, items={"message:f": item(2)}),
        "p3": ProviderQueueRecord(updated_at=T0, items={"message:g": item(30)}),
        "p4": ProviderQueueRecord(updated_at=T0, items={}),
    }
    assert escalations({"p1": provider}, queues, T0) == [
        ProviderEscalations("p1", "Dr. Li", 2, 2, T0 - timedelta(hours=5),
                            T0 + timedelta(hours=3)),
        ProviderEscalations("p2", "p2", 0, 1, None, T0 + timedelta(hours=2)),
    ]


def test_times_are_shown_in_the_operators_zone(settings):
    assert operator_zone(settings) == ZoneInfo("UTC")
    chicago = dataclasses.replace(settings, console_timezone="America/Chicago")
    assert operator_zone(chicago) == ZoneInfo("America/Chicago")
    assert short_time(T0, ZoneInfo("America/New_York")) == "Mon 30 Nov 10:00 EST"
    assert short_time(T0, ZoneInfo("UTC")) == "Mon 30 Nov 15:00 UTC"


def test_lateness_bands_are_the_cumulative_buckets_summed_and_differenced():
    def series(lates: list[float]) -> Lateness:
        return Lateness(buckets=tuple((float(b), sum(late <= b for late in lates))
                                      for b in LATENESS_BUCKETS_S),
                        count=len(lates), total_s=sum(lates))

    bars = lateness_bars([series([0.5, 3, 4000]), series([3, 200])])
    assert [int(b.value) for b in bars] == [1, 2, 0, 0, 1, 0, 0, 1]
    assert [int(b.value) for b in lateness_bars([])] == [0] * 8


def test_a_broken_record_leaves_the_rest_of_the_page(console, redis_client, policy):
    client, now = console
    seed(Store(redis_client), policy, now[0])
    redis_client.set(record_part_key("provider_queue:prov-1", 0),
                     json.dumps({"items": "not a dict"}))
    assert sign_in(client).status_code == 303
    page = client.get("/console/today")
    assert page.status_code == 200
    assert 'id="escalations-none"' in page.text and "SMS: 2 sent" in page.text


def text_of(html: str) -> str:
    """A page's words, tags removed, whitespace collapsed."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def post_signed(client: Any, settings: Any, event: dict[str, Any], body: bytes | None = None,
                secret: str | None = None) -> Any:
    body = json.dumps(event).encode() if body is None else body
    assert settings.webhook_secret is not None
    return client.post("/v1/events", content=body, headers=sign_event(
        secret or settings.webhook_secret.get_secret_value(), body, event["id"],
        datetime.now(UTC)))


def test_today_counts_an_event_refused_at_the_door(client, settings, redis_client):
    """QA (issue 15): a signed event refused with 422 (here a client in no IANA zone) was
    only logged, and Today said 0. It is counted by type on the day's refusal counter and
    shown; a 401 (bad signature) is not counted."""
    now = datetime.now(UTC)
    event = client_upserted("c-bad", "America/New_York", now)
    event["data"]["client"]["timezone"] = "Mars/Olympus_Mons"  # refused: not an IANA zone
    answer = post_signed(client, settings, event)
    assert answer.status_code == 422, answer.text
    forged = post_signed(client, settings, event,
                         secret="whsec_" + base64.b64encode(b"x" * 32).decode())
    assert forged.status_code == 401
    sign_in(client)
    page = client.get("/console/today")
    assert page.status_code == 200
    text = text_of(page.text)
    section = text[text.index("Events set aside or held"):text.index("Open escalations")]
    assert "Refused at the door (422), last 7 days" in section
    assert re.search(r"\bclient\.upserted 1\b", section), section
    assert "(401) are not counted" in section
    assert 'id="refused-none"' not in page.text


def test_today_counts_a_fhir_notification_refused_with_422(operators_file, redis_client,
                                                           redis_url):
    """QA (issue 15): an EHR's FHIR notification refused with 422 is counted too, as a
    FHIR notification (its resources may be many, of any type)."""
    from tests.web.test_fhir import BEARER, BUNDLE, TOKEN

    fhir_settings = Settings.from_env(console_env(operators_file, NOTIFIER_FHIR_TOKEN=TOKEN),
                                      dotenv=Path("/nonexistent"))
    bundle = json.loads(BUNDLE)
    bundle["entry"][2]["resource"]["participant"][0]["actor"] = {"reference": 42}
    broker = build_broker(redis_url)
    try:
        with TestClient(create_app(fhir_settings, Store(redis_client), broker),
                        base_url="https://testserver") as http:
            answer = http.post("/fhir/r4/notify", content=json.dumps(bundle).encode(),
                               headers=BEARER)
            assert answer.status_code == 422, answer.text
            sign_in(http)
            text = text_of(http.get("/console/today").text)
    finally:
        broker.close()
    section = text[text.index("Events set aside or held"):text.index("Open escalations")]
    assert re.search(r"\bFHIR notification 1\b", section), section


def test_a_refused_event_is_counted_by_type_or_as_unreadable_for_eight_days(
        client, settings, redis_client):
    now = datetime.now(UTC)
    event = client_upserted("c-bad", "America/New_York", now)
    event["data"]["client"]["timezone"] = "Mars/Olympus_Mons"
    assert post_signed(client, settings, event).status_code == 422
    assert post_signed(client, settings, event).status_code == 422
    assert post_signed(client, settings, event, body=b"not json").status_code == 422
    unknown = {**event, "type": "client.exploded"}
    assert post_signed(client, settings, unknown).status_code == 422
    assert post_signed(client, settings, {"id": "evt-x"}, body=b"[1]").status_code == 422
    key = refused_key(datetime.now(UTC).date())
    assert redis_client.hgetall(key) == {b"client.upserted": b"2", b"unreadable": b"3"}
    assert 0 < redis_client.ttl(key) <= REFUSED_KEEP_S == 8 * 86400
    assert redis_client.ttl(key) > REFUSED_KEEP_S - 60
    # Only the counter: no event stored, nothing else written.
    assert [k.decode() for k in redis_client.keys("n:*")] == [key]


def test_the_refusals_of_the_last_seven_days_are_summed(redis_client):
    """Seven UTC days, today's included: the eighth day back is left out."""
    now = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)
    for back, n in ((0, 1), (6, 2), (7, 50)):
        redis_client.hincrby(refused_key(now.date() - timedelta(days=back)),
                             "client.upserted", n)
    redis_client.hincrby(refused_key(now.date()), "unreadable", 4)
    redis_client.hset(refused_key(now.date()), "by hand", "x")
    gathered = gather(Store(redis_client), now)
    assert gathered.daily.refused == {"client.upserted": 3, "unreadable": 4}
