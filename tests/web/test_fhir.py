"""`POST /fhir/r4/notify` through the real app on a real Redis: authentication, the answers,
what is stored (each event exactly as `/v1/events` stores one), and the visit cycle
planning what the same story sent through `/v1/events` plans."""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from dramatiq.brokers.redis import RedisBroker

from notifier.cli.send_event import sign_event
from notifier.config import PROJECT_ROOT, Settings
from notifier.intake.apply import apply_stored_event
from notifier.intake.events import parse_event
from notifier.ledger.events import PENDING_EVENTS
from notifier.ledger.store import Store
from notifier.web.app import create_app
from notifier.web.bodies import MAX_FHIR_BODY_BYTES
from notifier.web.events import UNAVAILABLE
from notifier.worker.actors import APPLY_EVENT, EVENTS_QUEUE, build_broker
from tests.web.test_app import (
    assert_nothing_written,
    down_app,
    new_secret,
    problem_fields,
    queued,
)

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

TOKEN = "fhir-token-" + "y" * 24
BUNDLE = (PROJECT_ROOT / "examples" / "fhir" / "visit-bundle.json").read_bytes()
BEARER = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/fhir+json"}


@pytest.fixture
def secret() -> str:
    return new_secret()


@pytest.fixture
def settings(secret: str) -> Settings:
    return Settings.from_env({"NOTIFIER_WEBHOOK_SECRET": secret, "NOTIFIER_FHIR_TOKEN": TOKEN},
                             dotenv=Path("/nonexistent"))


@pytest.fixture
def broker(redis_url: str) -> Iterator[RedisBroker]:
    broker = build_broker(redis_url)
    yield broker
    broker.close()


@pytest.fixture
def store(redis_client: redis.Redis) -> Store:
    return Store(redis_client)


@pytest.fixture
def client(settings: Settings, store: Store, broker: RedisBroker) -> Iterator[TestClient]:
    with TestClient(create_app(settings, store, broker)) as test_client:
        yield test_client


def notify(client: TestClient, body: bytes | dict[str, Any],
           headers: dict[str, str] | None = None) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post("/fhir/r4/notify", content=raw,
                       headers=BEARER if headers is None else headers)


def example(kind: str, version: str = "1") -> dict[str, Any]:
    for entry in json.loads(BUNDLE)["entry"]:
        if (entry["resource"]["resourceType"], entry["resource"]["meta"]["versionId"]) == (
                kind, version):
            return copy.deepcopy(entry["resource"])
    raise LookupError(kind)


def test_the_visit_bundle_is_stored_event_by_event_as_v1_events_stores_them(
        client, store, redis_client):
    answer = notify(client, BUNDLE)
    assert answer.status_code == 200
    resources = answer.json()["resources"]
    assert [(r["resource"], r["status"]) for r in resources] == [
        ("Patient/pat-ana", "mapped"), ("Practitioner/prac-rivera", "mapped"),
        ("Appointment/appt-1", "mapped"), ("Appointment/appt-1", "mapped"),
        ("Appointment/appt-1", "mapped"), ("MedicationRequest/rx-1", "ignored"),
        ("MedicationDispense/disp-1", "mapped"), ("Task/refill-1", "mapped"),
        ("Task/refill-1", "mapped"), ("Communication/msg-1", "mapped"),
        ("Communication/msg-2", "mapped")]
    assert resources[5]["reason"] == "a MedicationRequest active: reminders start with a " \
                                     "dispense"
    ids = [e["id"] for r in resources for e in r["events"]]
    assert len(ids) == 10
    assert {e["status"] for r in resources for e in r["events"]} == {"accepted"}
    for event_id in ids:
        stored = store.event_status(event_id)
        assert stored["status"] == "accepted"
        assert parse_event(stored["raw"]).id == event_id
    assert sorted(m.decode() for m in redis_client.zrange(PENDING_EVENTS, 0, -1)) == sorted(ids)
    messages = queued(redis_client)
    assert {(m["actor_name"], m["queue_name"], m["args"][0]) for m in messages} == {
        (APPLY_EVENT, EVENTS_QUEUE, event_id) for event_id in ids}

    again = notify(client, BUNDLE)
    assert again.status_code == 200
    assert {e["status"] for r in again.json()["resources"] for e in r["events"]} == {
        "duplicate"}
    assert len(queued(redis_client)) == 10


def test_a_standard_webhooks_signature_is_taken_too(client, secret, store):
    body = json.dumps(example("Patient")).encode()
    headers = sign_event(secret, body, "notification-1", datetime.now(UTC))
    answer = notify(client, body, headers)
    assert answer.status_code == 200
    assert store.event_status("fhir.Patient.pat-ana.1")["status"] == "accepted"


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer " + "z" * 35},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": f"Bearer {TOKEN[:-1]}"},
    {"webhook-id": "n1", "webhook-timestamp": "1", "webhook-signature": "v1,AAAA"},
])
def test_without_the_token_or_a_signature_nothing_is_taken(client, redis_client, headers):
    answer = notify(client, BUNDLE, headers)
    assert answer.status_code == 401
    assert answer.json()["error"].startswith("authentication: ")
    assert_nothing_written(redis_client)


def test_a_bearer_token_is_refused_when_none_is_configured(secret, store, broker,
                                                            redis_client):
    settings = Settings.from_env({"NOTIFIER_WEBHOOK_SECRET": secret},
                                 dotenv=Path("/nonexistent"))
    with TestClient(create_app(settings, store, broker)) as client:
        answer = notify(client, BUNDLE)
    assert answer.status_code == 401
    assert "NOTIFIER_FHIR_TOKEN" in answer.json()["error"]
    assert_nothing_written(redis_client)


def test_malformed_fhir_is_422_naming_the_element_and_stores_nothing(client, redis_client):
    bundle = json.loads(BUNDLE)
    bundle["entry"][2]["resource"]["participant"][0]["actor"] = {"reference": 42}
    del bundle["entry"][0]["resource"]["meta"]["lastUpdated"]
    answer = notify(client, bundle)
    assert answer.status_code == 422
    assert answer.json()["error"] == "invalid FHIR"
    assert problem_fields(answer) == ["Bundle.entry[2].resource.participant[0].actor.reference"]
    bundle["entry"][2]["resource"]["participant"][0]["actor"] = {"reference": "Patient/pat-ana"}
    answer = notify(client, bundle)
    assert problem_fields(answer) == ["Bundle.entry[0].resource.meta.lastUpdated"]
    # No event; the dispense is counted as a fill all the same (a set: sent again, fixed,
    # it is not counted twice).
    assert redis_client.keys("n:*") == [b"n:fhir-fills:rx-1"]
    redis_client.delete("n:fhir-fills:rx-1")
    assert_nothing_written(redis_client)


def test_a_last_update_ahead_of_our_clock_is_refused(client, redis_client):
    patient = example("Patient")
    ahead = datetime.now(UTC) + timedelta(hours=1)
    patient["meta"]["lastUpdated"] = ahead.isoformat().replace("+00:00", "Z")
    answer = notify(client, patient)
    assert answer.status_code == 422
    assert problem_fields(answer) == ["Patient.meta.lastUpdated"]
    assert_nothing_written(redis_client)


def test_a_body_over_the_limit_is_413(client, redis_client):
    answer = notify(client, b" " * (MAX_FHIR_BODY_BYTES + 1))
    assert answer.status_code == 413
    assert_nothing_written(redis_client)


def test_redis_down_is_503_with_retry_after(settings):
    with TestClient(down_app(settings)) as client:
        answer = notify(client, BUNDLE)
    assert answer.status_code == 503
    assert answer.json()["error"] == UNAVAILABLE
    assert answer.headers["Retry-After"]


def test_unsupported_resources_are_answered_200_as_ignored(client, redis_client):
    observation = {"resourceType": "Observation", "id": "phq9", "status": "final",
                   "code": {"text": "PHQ-9 total score"}, "valueInteger": 7}
    notification = {"resourceType": "Bundle", "type": "history", "entry": [
        {"fullUrl": "urn:uuid:1b9f6f4e-8d1a-4c0e-9f3e-2a7b5c6d8e9f",
         "resource": {"resourceType": "Parameters", "parameter": [
             {"name": "type", "valueCode": "event-notification"}]}},
        {"fullUrl": "https://ehr.example.org/fhir/Observation/phq9", "resource": observation},
        {"fullUrl": "https://ehr.example.org/fhir/Task/refill-1",
         "resource": {**example("Task"), "status": "draft"}}]}
    answer = notify(client, notification)
    assert answer.status_code == 200
    assert answer.json() == {"resources": [
        {"resource": "Observation/phq9", "status": "ignored",
         "reason": "Observation is not a resource type we map", "events": []},
        {"resource": "Task/refill-1", "status": "ignored",
         "reason": "a refill request draft", "events": []}]}
    assert_nothing_written(redis_client)


def _story() -> list[dict[str, Any]]:
    """The visit cycle as an integrator writes it for `/v1/events`, by hand."""
    def evt(number: int, kind: str, at: str, data: dict[str, Any]) -> dict[str, Any]:
        return {"id": f"evt-{number}", "type": kind, "occurred_at": at, "data": data}
    appointment = {"id": "appt-1.pat-ana", "client_id": "pat-ana",
                   "provider_id": "prac-rivera", "start": "2026-11-20T15:00:00Z",
                   "end": "2026-11-20T15:30:00Z", "kind": "medication_management",
                   "join_url": "https://video.example.com/r/appt-1"}
    return [
        evt(1, "client.upserted", "2026-11-02T14:00:00Z", {"client": {
            "id": "pat-ana", "first_name": "Ana", "phone": "+14155550123",
            "email": "ana.reyes@example.com", "timezone": "America/Chicago", "locale": "es",
            "channels": {"sms": True, "email": True}}}),
        evt(2, "provider.upserted", "2026-11-02T14:00:00Z", {"provider": {
            "id": "prac-rivera", "name": "Dr. Lena Rivera", "email": "lena.rivera@example.org",
            "phone": "+13125550100", "timezone": "America/New_York"}}),
        evt(3, "appointment.scheduled", "2026-11-03T10:00:00Z", {"appointment": appointment}),
        evt(4, "appointment.rescheduled", "2026-11-10T09:00:00Z", {"appointment": {
            **appointment, "start": "2026-11-21T16:00:00Z", "end": "2026-11-21T16:30:00Z"}}),
        evt(5, "appointment.completed", "2026-11-21T16:45:00Z",
            {"appointment_id": "appt-1.pat-ana"}),
        evt(6, "prescription.filled", "2026-11-21T18:05:00Z", {"prescription": {
            "id": "rx-1", "client_id": "pat-ana", "provider_id": "prac-rivera",
            "medication": "Sertraline 50 mg tablet", "filled_on": "2026-11-21",
            "days_supply": 30, "refills_remaining": 2}}),
        evt(7, "refill.requested", "2026-11-28T09:00:00Z", {"request": {
            "id": "refill-1", "prescription_id": "rx-1", "client_id": "pat-ana",
            "provider_id": "prac-rivera"}}),
        evt(8, "refill.sent", "2026-11-28T15:00:00Z", {"request_id": "refill-1"}),
        evt(9, "message.received", "2026-11-29T12:00:00Z", {"message": {
            "id": "msg-1", "client_id": "pat-ana", "provider_id": "prac-rivera"}}),
        evt(10, "message.answered", "2026-11-29T17:30:00Z", {"message_id": "msg-1"}),
    ]


def _planned(store: Store, policy: Any, event_ids: list[str]) -> list[tuple[Any, ...]]:
    """Apply the stored events in the order they happened, each when it happened, and
    read what is planned for the client and for support."""
    happened = sorted(event_ids, key=lambda i: (parse_event(store.event_status(i)["raw"])
                                                .occurred_at, i))
    for event_id in happened:
        at = parse_event(store.event_status(event_id)["raw"]).occurred_at
        assert apply_stored_event(store, event_id, policy, at + timedelta(seconds=1)) \
            is not None
    rows = [*store.notifications_for("client", "pat-ana"),
            *store.notifications_for("provider", "prac-rivera")]
    return sorted((r.id, r.kind, r.channel, r.due_at, r.expires_at, r.state) for r in rows)


def test_the_visit_cycle_plans_what_the_same_story_through_v1_events_plans(
        client, secret, store, policy, redis_client):
    answer = notify(client, BUNDLE)
    fhir_ids = [e["id"] for r in answer.json()["resources"] for e in r["events"]]
    through_fhir = _planned(store, policy, fhir_ids)
    assert {row[1] for row in through_fhir} >= {
        "appointment_confirmation", "appointment_updated", "follow_up", "refill_due",
        "refill_sent"}, through_fhir
    redis_client.flushdb()
    for evt in _story():
        body = json.dumps(evt).encode()
        posted = client.post("/v1/events", content=body,
                             headers=sign_event(secret, body, evt["id"], datetime.now(UTC)))
        assert posted.status_code == 202, posted.text
    through_events = _planned(store, policy, [e["id"] for e in _story()])
    assert through_fhir == through_events


def test_a_dispense_sent_alone_counts_the_fills_seen_before(client, redis_client):
    request = example("MedicationRequest")
    first = example("MedicationDispense")
    second = {**example("MedicationDispense"), "id": "disp-2",
              "meta": {"versionId": "1", "lastUpdated": "2026-11-29T18:00:00Z"},
              "whenHandedOver": "2026-11-29T12:00:00-06:00"}

    def refills_left(dispense: dict[str, Any]) -> int:
        bundle = {"resourceType": "Bundle", "type": "history", "entry": [
            {"fullUrl": "https://ehr.example.org/fhir/MedicationDispense/" + dispense["id"],
             "resource": dispense},
            {"fullUrl": "https://ehr.example.org/fhir/MedicationRequest/rx-1",
             "resource": request, "search": {"mode": "include"}}]}
        answer = notify(client, bundle)
        assert answer.status_code == 200, answer.text
        (event,) = answer.json()["resources"][0]["events"]
        stored = Store(redis_client).event_status(event["id"])["raw"]
        return json.loads(stored)["data"]["prescription"]["refills_remaining"]

    assert refills_left(first) == 2
    assert refills_left(second) == 1
    refills_left(first)  # sent again: the same dispense, not a third fill
    third = {**second, "id": "disp-3", "meta": {"versionId": "1",
                                                "lastUpdated": "2026-11-29T19:00:00Z"}}
    assert refills_left(third) == 0
    assert redis_client.smembers("n:fhir-fills:rx-1") == {b"disp-1", b"disp-2", b"disp-3"}
    assert 0 < redis_client.ttl("n:fhir-fills:rx-1") <= 400 * 86400
