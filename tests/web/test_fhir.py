"""`POST /fhir/r4/notify` through the real app on a real Redis: authentication, the answers,
what is stored (each event exactly as `/v1/events` stores one), and the visit cycle
planning what the same story sent through `/v1/events` plans."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from fastapi.testclient import TestClient

from notifier.cli.send_event import sign_event
from notifier.config import PROJECT_ROOT, Settings
from notifier.intake.apply import apply_stored_event
from notifier.intake.events import parse_event
from notifier.ledger.daily import FHIR_REFUSED, REFUSED_DAILY
from notifier.ledger.store import Store
from notifier.web.app import create_app
from notifier.web.bodies import MAX_FHIR_BODY_BYTES
from notifier.web.events import UNAVAILABLE
from notifier.worker.actors import APPLY_EVENT, EVENTS_QUEUE
from tests.ledger_keys import pending_events
from tests.web.test_app import (
    assert_nothing_written,
    assert_refused_at_the_door,
    down_app,
    problem_fields,
    queued,
)

TOKEN = "fhir-token-" + "y" * 24
BUNDLE = (PROJECT_ROOT / "examples" / "fhir" / "visit-bundle.json").read_bytes()
BEARER = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/fhir+json"}


@pytest.fixture
def settings(secret: str) -> Settings:
    return Settings.from_env({"NOTIFIER_WEBHOOK_SECRET": secret, "NOTIFIER_FHIR_TOKEN": TOKEN},
                             dotenv=Path("/nonexistent"))


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
    assert resources[5]["reason"] == ("no event for a MedicationRequest active: reminders "
                                      "start with its dispense")
    ids = [e["id"] for r in resources for e in r["events"]]
    assert len(ids) == 10
    assert {e["status"] for r in resources for e in r["events"]} == {"accepted"}
    for event_id in ids:
        stored = store.event_status(event_id)
        assert stored["status"] == "accepted"
        assert parse_event(stored["raw"]).id == event_id
    assert pending_events(redis_client) == sorted(ids)
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
    # it is not counted twice); and the two refusals are counted for the Today page.
    assert redis_client.exists("n:fhir-fills:rx-1")
    redis_client.delete("n:fhir-fills:rx-1")
    assert_refused_at_the_door(redis_client, 2)
    [day] = redis_client.keys(REFUSED_DAILY + "*")
    assert redis_client.hgetall(day) == {FHIR_REFUSED.encode(): b"2"}


def test_a_last_update_ahead_of_our_clock_is_refused(client, redis_client):
    patient = example("Patient")
    ahead = datetime.now(UTC) + timedelta(hours=1)
    patient["meta"]["lastUpdated"] = ahead.isoformat().replace("+00:00", "Z")
    answer = notify(client, patient)
    assert answer.status_code == 422
    assert problem_fields(answer) == ["Patient.meta.lastUpdated"]
    assert_refused_at_the_door(redis_client)


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


def test_an_older_version_posted_after_a_newer_is_stale_and_the_same_again_a_duplicate(
        client, store, policy):
    newer = example("Patient")
    newer["meta"] = {"versionId": "3", "lastUpdated": "2026-11-29T10:00:00Z"}
    newer["telecom"] = [t for t in newer["telecom"] if t.get("system") != "phone"]
    older = example("Patient")
    older["meta"] = {"versionId": "2", "lastUpdated": "2026-11-28T10:00:00Z"}
    posted = [notify(client, r).json()["resources"][0]["events"][0] for r in (newer, older)]
    assert [e["status"] for e in posted] == ["accepted", "accepted"]
    for event in posted:  # applied as the worker does, the newer first, as they arrived
        apply_stored_event(store, event["id"], policy, datetime.now(UTC))
    assert store.event_status(posted[0]["id"])["status"] == "applied"
    assert store.event_status(posted[1]["id"])["status"] == "stale"
    kept = store.load_record("client:pat-ana")
    assert kept is not None and kept.client.phone is None  # the newer version's
    again = notify(client, older).json()["resources"][0]["events"][0]
    assert (again["id"], again["status"]) == (posted[1]["id"], "duplicate")


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
    assert redis_client.zrange("n:fhir-fills:rx-1", 0, -1) == [b"disp-1", b"disp-2", b"disp-3"]
    assert 0 < redis_client.ttl("n:fhir-fills:rx-1") <= 400 * 86400


def _with_request(dispense: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "history", "entry": [
        {"fullUrl": "https://ehr.example.org/fhir/MedicationDispense/" + str(dispense.get("id")),
         "resource": dispense},
        {"fullUrl": "https://ehr.example.org/fhir/MedicationRequest/rx-1",
         "resource": example("MedicationRequest"), "search": {"mode": "include"}}]}


def _refills_left(client: TestClient, redis_client: redis.Redis,
                  dispense: dict[str, Any]) -> int:
    answer = notify(client, _with_request(dispense))
    assert answer.status_code == 200, answer.text
    (event,) = answer.json()["resources"][0]["events"]
    stored = Store(redis_client).event_status(event["id"])["raw"]
    return int(json.loads(stored)["data"]["prescription"]["refills_remaining"])


def test_hapi_fhir_rest_hook_delivery_as_an_update_is_taken(client, store):
    """HAPI FHIR delivers a full-resource rest-hook as a FHIR update on the endpoint used
    as a base URL: `PUT {endpoint}/Patient/pat-ana` with the resource."""
    answer = client.put("/fhir/r4/notify/Patient/pat-ana",
                        content=json.dumps(example("Patient")), headers=BEARER)
    assert answer.status_code == 200, answer.text
    # Answered in FHIR: HAPI parses a 2xx answer as a resource.
    assert answer.headers["content-type"] == "application/fhir+json"
    assert answer.json() == {"resourceType": "OperationOutcome", "issue": [
        {"severity": "information", "code": "informational",
         "diagnostics": "Patient/pat-ana: mapped: client.upserted fhir.Patient.pat-ana.1 "
                        "accepted"}]}
    assert store.event_status("fhir.Patient.pat-ana.1")["status"] == "accepted"


@pytest.mark.parametrize(("path", "field"), [
    ("/fhir/r4/notify/Patient/pat-ben", "Patient.id"),
    ("/fhir/r4/notify/Practitioner/pat-ana", "resourceType"),
])
def test_an_update_whose_body_is_not_the_resource_of_its_url_is_422(client, redis_client,
                                                                     path, field):
    answer = client.put(path, content=json.dumps(example("Patient")), headers=BEARER)
    assert answer.status_code == 422
    # Answered in FHIR, as HAPI reads it: the error, then the element named by FHIRPath.
    assert answer.headers["content-type"] == "application/fhir+json"
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert [(i["severity"], i["code"]) for i in outcome["issue"]] == [("error", "invalid")] * 2
    assert outcome["issue"][1]["expression"] == [field]
    assert_refused_at_the_door(redis_client)


def test_a_fhir_clients_errors_are_operation_outcomes(client, settings):
    """A FHIR interaction (HAPI's update) or a POST asking for FHIR JSON only gets its
    errors as an OperationOutcome of severity `error` with FHIR's issue code, the status
    and `Retry-After` kept; a plain POST keeps our JSON error."""
    patient = json.dumps(example("Patient"))
    unsigned = client.put("/fhir/r4/notify/Patient/pat-ana", content=patient,
                          headers={"Content-Type": "application/fhir+json"})
    assert unsigned.status_code == 401
    assert unsigned.json()["issue"][0]["code"] == "security"
    xml = client.post("/fhir/r4/notify", content=b"<Patient/>",
                      headers={**BEARER, "Content-Type": "application/fhir+xml",
                               "Accept": HAPI_ACCEPT})
    assert (xml.status_code, xml.json()["issue"][0]["code"]) == (415, "not-supported")
    with TestClient(down_app(settings)) as down:
        put = down.put("/fhir/r4/notify/Patient/pat-ana", content=patient, headers=BEARER)
        plain = notify(down, BUNDLE)
    assert put.status_code == 503 and put.headers["Retry-After"]
    assert put.headers["content-type"] == "application/fhir+json"
    assert put.json() == {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "transient", "diagnostics": UNAVAILABLE}]}
    assert plain.status_code == 503 and plain.json()["error"] == UNAVAILABLE


def test_a_hapi_deletion_is_accepted_and_ignored(client, redis_client):
    answer = client.delete("/fhir/r4/notify/Appointment/appt-1", headers=BEARER)
    assert answer.status_code == 200
    (issue,) = answer.json()["issue"]
    assert issue["diagnostics"].startswith("Appointment/appt-1: ignored: a deletion")
    assert_nothing_written(redis_client)
    assert client.delete("/fhir/r4/notify/Appointment/appt-1").status_code == 401


@pytest.fixture
def sourced(secret: str, store: Store, broker: RedisBroker) -> Iterator[TestClient]:
    settings = Settings.from_env({"NOTIFIER_WEBHOOK_SECRET": secret,
                                  "NOTIFIER_FHIR_TOKEN": TOKEN,
                                  "NOTIFIER_FHIR_SOURCES": "ehr-b, clinic2"},
                                 dotenv=Path("/nonexistent"))
    with TestClient(create_app(settings, store, broker)) as test_client:
        yield test_client


def test_a_second_ehr_posts_under_its_own_path_and_its_ids_do_not_collide(sourced, store):
    """Two EHRs' `Patient/pat-ana` are two clients, and two events."""
    assert notify(sourced, example("Patient")).status_code == 200
    answer = sourced.post("/fhir/r4/ehr-b/notify", content=json.dumps(example("Patient")),
                          headers=BEARER)
    assert answer.status_code == 200, answer.text
    (event,) = answer.json()["resources"][0]["events"]
    assert (event["id"], event["status"]) == ("fhir~ehr-b.Patient.pat-ana.1", "accepted")
    raw = json.loads(store.event_status(event["id"])["raw"])
    assert raw["data"]["client"]["id"] == "ehr-b~pat-ana"
    updated = sourced.put("/fhir/r4/clinic2/notify/Patient/pat-ana",
                          content=json.dumps(example("Patient")), headers=BEARER)
    assert updated.status_code == 200, updated.text
    assert store.event_status("fhir~clinic2.Patient.pat-ana.1")["status"] == "accepted"


def test_a_source_not_configured_is_404(sourced, redis_client):
    answer = sourced.post("/fhir/r4/ehr-c/notify", content=json.dumps(example("Patient")),
                          headers=BEARER)
    assert answer.status_code == 404
    assert "NOTIFIER_FHIR_SOURCES" in answer.json()["error"]
    assert_nothing_written(redis_client)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_an_unknown_source_is_401_before_404_to_a_caller_without_the_token(sourced, method):
    """Which EHRs are connected is not told to whoever asks: no token, no 404."""
    path = "/fhir/r4/ehr-c/notify" + ("" if method == "POST" else "/Patient/pat-ana")
    answer = sourced.request(method, path, content=json.dumps(example("Patient")),
                             headers={"Content-Type": "application/fhir+json"})
    assert answer.status_code == 401, answer.text
    assert "ehr-c" not in answer.text


def test_a_dispense_posted_alone_after_its_request_is_a_fill(client, store, redis_client):
    """A plain R4 rest-hook Subscription posts each resource alone: the MedicationRequest
    (ignored, but remembered), then its MedicationDispense: a fill."""
    assert notify(client, example("MedicationRequest")).status_code == 200
    assert 0 < redis_client.ttl("n:fhir-rx:rx-1") <= 400 * 86400
    answer = notify(client, example("MedicationDispense"))
    assert answer.status_code == 200, answer.text
    (resource,) = answer.json()["resources"]
    assert resource["status"] == "mapped", resource["reason"]
    (event,) = resource["events"]
    raw = json.loads(store.event_status(event["id"])["raw"])
    assert raw["data"]["prescription"] == {
        "id": "rx-1", "client_id": "pat-ana", "provider_id": "prac-rivera",
        "medication": "Sertraline 50 mg tablet", "filled_on": "2026-11-21",
        "days_supply": 30, "refills_remaining": 2}


def test_an_older_request_does_not_replace_the_one_remembered(client, store):
    newer = {**example("MedicationRequest"),
             "meta": {"versionId": "2", "lastUpdated": "2026-11-22T10:00:00Z"}}
    newer["dispenseRequest"] = {**newer["dispenseRequest"], "numberOfRepeatsAllowed": 5}
    assert notify(client, newer).status_code == 200
    assert notify(client, example("MedicationRequest")).status_code == 200
    answer = notify(client, example("MedicationDispense"))
    (event,) = answer.json()["resources"][0]["events"]
    raw = json.loads(store.event_status(event["id"])["raw"])
    assert raw["data"]["prescription"]["refills_remaining"] == 5


def test_a_refill_task_owned_by_the_clinic_finds_the_prescriber_remembered(client, store):
    assert notify(client, example("MedicationRequest")).status_code == 200
    task = {**example("Task"), "owner": {"reference": "Organization/clinic"}}
    answer = notify(client, task)
    (event,) = answer.json()["resources"][0]["events"]
    raw = json.loads(store.event_status(event["id"])["raw"])
    assert raw["data"]["request"]["provider_id"] == "prac-rivera"


def test_a_new_version_of_an_earlier_dispense_keeps_its_own_refill_count(client, redis_client):
    """disp-1 (2 refills left), disp-2 (1 left), then disp-1 corrected (a new version):
    still the first fill, 2 left."""
    first = example("MedicationDispense")
    second = {**example("MedicationDispense"), "id": "disp-2",
              "meta": {"versionId": "1", "lastUpdated": "2026-11-29T18:00:00Z"},
              "whenHandedOver": "2026-11-29T12:00:00-06:00"}
    assert _refills_left(client, redis_client, first) == 2
    assert _refills_left(client, redis_client, second) == 1
    corrected = {**first, "meta": {"versionId": "2", "lastUpdated": "2026-11-30T09:00:00Z"},
                 "note": [{"text": "Lot number corrected"}]}
    assert _refills_left(client, redis_client, corrected) == 2


def test_a_dispense_refused_for_having_no_id_is_not_counted_as_a_fill(client, redis_client):
    nameless = example("MedicationDispense")
    del nameless["id"]
    refused = notify(client, _with_request(nameless))
    assert refused.status_code == 422
    assert problem_fields(refused) == ["Bundle.entry[0].resource.id"]
    assert _refills_left(client, redis_client, example("MedicationDispense")) == 2


def test_a_dispense_entered_in_error_no_longer_counts_as_a_fill(client, redis_client):
    first = example("MedicationDispense")
    second = {**first, "id": "disp-2", "whenHandedOver": "2026-11-29T12:00:00-06:00",
              "meta": {"versionId": "1", "lastUpdated": "2026-11-29T18:00:00Z"}}
    assert _refills_left(client, redis_client, first) == 2
    assert _refills_left(client, redis_client, second) == 1
    voided = {**second, "status": "entered-in-error",
              "meta": {"versionId": "2", "lastUpdated": "2026-11-29T19:00:00Z"}}
    assert notify(client, voided).status_code == 200  # alone: its request is not needed
    assert redis_client.zrange("n:fhir-fills:rx-1", 0, -1) == [b"disp-1"]
    third = {**second, "id": "disp-3", "whenHandedOver": "2026-11-29T13:00:00-06:00",
             "meta": {"versionId": "1", "lastUpdated": "2026-11-29T20:00:00Z"}}
    assert _refills_left(client, redis_client, third) == 1


def test_a_patient_with_a_photo_is_taken(client):
    """A US Core Patient carrying its photo (base64, ~1.6 MB) is under the FHIR limit."""
    patient = example("Patient")
    patient["photo"] = [{"contentType": "image/jpeg",
                         "data": base64.b64encode(b"\xff\xd8" * 600_000).decode()}]
    answer = notify(client, patient)
    assert answer.status_code == 200, answer.text


def test_a_bad_email_in_one_patient_does_not_lose_the_whole_notification(client, store):
    patient = example("Patient")
    patient["telecom"] = [{"system": "phone", "value": "(415) 555-0123", "use": "mobile"},
                          {"system": "email", "value": "ana.reyes@example"}]
    bundle = {"resourceType": "Bundle", "type": "history", "entry": [
        {"fullUrl": "https://ehr.example.org/fhir/Patient/pat-ana", "resource": patient},
        {"fullUrl": "https://ehr.example.org/fhir/Appointment/appt-1",
         "resource": example("Appointment")}]}
    answer = notify(client, bundle)
    assert answer.status_code == 200, answer.text
    assert store.event_status("fhir.Appointment.appt-1.1.pat-ana")["status"] == "accepted"


def test_a_signed_notification_is_taken_beside_another_authorization_header(client, secret,
                                                                            store):
    """A gateway's own `Authorization: Basic …` does not shadow a valid signature."""
    body = json.dumps(example("Patient")).encode()
    headers = {**sign_event(secret, body, "notification-7", datetime.now(UTC)),
               "Authorization": "Basic ZWhyOmdhdGV3YXk="}
    answer = notify(client, body, headers)
    assert answer.status_code == 200, answer.text
    bad = {**headers, "webhook-signature": "v1,AAAA"}
    assert notify(client, body, bad).status_code == 401


def test_a_configured_video_extension_gives_the_join_link(secret, store, broker):
    url = "http://open.epic.com/FHIR/StructureDefinition/extension/telehealth-url"
    settings = Settings.from_env({"NOTIFIER_WEBHOOK_SECRET": secret,
                                  "NOTIFIER_FHIR_TOKEN": TOKEN,
                                  "NOTIFIER_FHIR_VIDEO_EXTENSIONS": url},
                                 dotenv=Path("/nonexistent"))
    appointment = example("Appointment")
    appointment["extension"] = [{"url": url, "valueUrl": "https://video.example.com/r/9"}]
    with TestClient(create_app(settings, store, broker)) as app_client:
        answer = notify(app_client, appointment)
    assert answer.status_code == 200, answer.text
    event_id = answer.json()["resources"][0]["events"][0]["id"]
    raw = json.loads(store.event_status(event_id)["raw"])
    assert raw["data"]["appointment"]["join_url"] == "https://video.example.com/r/9"


def test_deeply_nested_extensions_are_a_422_not_a_server_error(client, redis_client):
    depth = 250
    nested = ('{"url":"http://ehr.example.org/x","extension":[' * depth
              + '{"url":"http://ehr.example.org/y","valueString":"x"}' + ']}' * depth)
    patient = example("Patient")
    patient.pop("extension")
    body = (json.dumps(patient)[:-1] + ', "extension": [' + nested + ']}').encode()
    answer = notify(client, body)
    assert answer.status_code == 422, answer.text
    assert problem_fields(answer) == ["body"]
    assert_refused_at_the_door(redis_client)


def test_a_resource_twice_in_one_notification_is_answered_accepted_then_duplicate(client):
    patient = example("Patient")
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [
        {"fullUrl": "https://ehr.example.org/fhir/Patient/pat-ana", "resource": patient,
         "search": {"mode": "match"}},
        {"fullUrl": "https://ehr.example.org/fhir/Patient/pat-ana", "resource": patient,
         "search": {"mode": "include"}}]}
    answer = notify(client, bundle)
    assert answer.status_code == 200, answer.text
    statuses = [e["status"] for r in answer.json()["resources"] for e in r["events"]]
    assert statuses == ["accepted", "duplicate"]


def test_an_xml_notification_is_415_saying_what_to_change(client, redis_client):
    """A Subscription with `channel.payload: application/fhir+xml` posts XML: 415 says
    what to change (the payload type), where 422 `not valid JSON` would not."""
    xml = (b'<Patient xmlns="http://hl7.org/fhir"><id value="pat-ana"/>'
           b'<meta><versionId value="1"/><lastUpdated value="2026-11-02T14:00:00Z"/></meta>'
           b'<name><given value="Ana"/></name></Patient>')
    answer = client.post("/fhir/r4/notify", content=xml, headers={
        "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/fhir+xml"})
    assert answer.status_code == 415, answer.text
    assert "application/fhir+json" in answer.json()["error"]
    assert_nothing_written(redis_client)
    unauthenticated = client.post("/fhir/r4/notify", content=xml,
                                  headers={"Content-Type": "application/fhir+xml"})
    assert unauthenticated.status_code == 401


HAPI_ACCEPT = "application/fhir+json;q=1.0, application/json+fhir;q=0.9"


def test_a_fhir_client_posting_a_bundle_is_answered_with_a_transaction_response(client):
    """HAPI FHIR posts a topic-based notification (or a payload search) as a transaction
    and parses the answer as a Bundle: asked for FHIR JSON only, it gets one."""
    answer = notify(client, BUNDLE, {**BEARER, "Accept": HAPI_ACCEPT})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/fhir+json"
    bundle = answer.json()
    assert (bundle["resourceType"], bundle["type"]) == ("Bundle", "transaction-response")
    assert len(bundle["entry"]) == 11
    first = bundle["entry"][0]["response"]
    assert first["status"] == "200 OK"
    assert first["outcome"]["issue"][0]["diagnostics"] == (
        "Patient/pat-ana: mapped: client.upserted fhir.Patient.pat-ana.1 accepted")
    single = notify(client, example("Practitioner"), {**BEARER, "Accept": HAPI_ACCEPT})
    assert single.json()["resourceType"] == "OperationOutcome"
    plain = notify(client, example("Practitioner"),
                   {**BEARER, "Accept": "application/fhir+json, application/json"})
    assert plain.json()["resources"][0]["events"][0]["status"] == "duplicate"


def test_an_empty_notification_is_answered_200_with_nothing_taken(client, redis_client):
    """A Subscription without a payload: HAPI FHIR posts an empty body to the endpoint."""
    answer = notify(client, b"")
    assert (answer.status_code, answer.json()) == (200, {"resources": []})
    assert_nothing_written(redis_client)
    assert notify(client, b"", {}).status_code == 401


def test_a_transaction_response_has_an_entry_for_each_entry_posted(client):
    """A transaction-response answers every entry of the request, in its order (FHIR R4
    `Bundle`: "one entry in the response Bundle for each entry in the transaction"): the
    Backport IG's notification status, read and not mapped, has its entry too; a heartbeat
    (the status alone) is answered with one entry, not none."""
    status = {"fullUrl": "urn:uuid:1b9f6f4e-8d1a-4c0e-9f3e-2a7b5c6d8e9f",
              "resource": {"resourceType": "Parameters", "parameter": [
                  {"name": "type", "valueCode": "event-notification"}]}}
    notification = {"resourceType": "Bundle", "type": "history", "entry": [
        status, {"fullUrl": "https://ehr.example.org/fhir/Patient/pat-ana",
                 "resource": example("Patient")}]}
    answer = notify(client, notification, {**BEARER, "Accept": HAPI_ACCEPT})
    assert answer.status_code == 200, answer.text
    entries = [e["response"]["outcome"]["issue"][0]["diagnostics"]
               for e in answer.json()["entry"]]
    assert len(entries) == 2
    assert "notification's status" in entries[0]
    assert entries[1].startswith("Patient/pat-ana: mapped")
    heartbeat = {**notification, "entry": [status]}
    answer = notify(client, heartbeat, {**BEARER, "Accept": HAPI_ACCEPT})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["entry"]) == 1


@pytest.mark.parametrize(("method", "path", "status"), [
    ("PATCH", "/fhir/r4/notify/Patient/pat-ana", 405),
    ("GET", "/fhir/r4/notify/Patient/pat-ana", 405),
    ("PUT", "/fhir/r4/notify/Patient", 404),
])
def test_a_method_or_path_no_fhir_route_has_is_an_operation_outcome(client, method, path,
                                                                      status):
    """QA: FastAPI's own 404 and 405 reached a FHIR client as plain JSON."""
    answer = client.request(method, path, headers=BEARER)
    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/fhir+json"
    (issue,) = answer.json()["issue"]
    assert issue["severity"] == "error"
    assert issue["code"] == {404: "not-found", 405: "not-supported"}[status]
    if status == 405:
        assert "PUT" in answer.headers["allow"]
