"""The visit cycle through `POST /fhir/r4/notify`, with a live worker and clock, sends
what the same story hand-written for `POST /v1/events` sends: the outboxes compared message
by message (issue 16).

The story is told in steps, each posted and left to settle before the next (a confirmation
sent before its appointment is rescheduled, as in life), with times seconds or minutes from
now so that what is due goes out during the test: an appointment booked a few minutes
ahead (its confirmation and the reschedule's notice go at once; its reminders' times have
passed before it was booked), a dispense 25 days ago (the refill reminder is late: at
once), a refill request sent (its notice at once), a message answered (nothing sent).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from notifier.config import PROJECT_ROOT
from tests.kit import daytime_zone, iso
from tests.service import Service, wait_for

#: The whole service (web on a port, worker, clock) or its processes.
pytestmark = pytest.mark.e2e

TOKEN = "fhir-e2e-token-" + "q" * 24
VISIT = json.loads((PROJECT_ROOT / "examples" / "fhir" / "visit-bundle.json").read_text())
MEDICATION = "Sertraline 50 mg tablet"


class Story:
    """The visit cycle's times, fixed once, so both tellings carry the same ones."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.zone = daytime_zone(now)  # about noon there: no quiet hours
        self.start = (now + timedelta(minutes=5)).replace(microsecond=0)
        self.moved = self.start + timedelta(minutes=1)
        self.filled_on: date = (now.astimezone(ZoneInfo(self.zone)).date()
                                - timedelta(days=25))

    def at(self, seconds_ago: int) -> str:
        """An `occurred_at` / `meta.lastUpdated` in the recent past."""
        return iso(self.now.replace(microsecond=0) - timedelta(seconds=seconds_ago))


# The story as FHIR resources: the example bundle's, re-timed ----------------------------
def _resource(kind: str, rid: str, version: str, last_updated: str) -> dict[str, Any]:
    """The example bundle's `kind/rid` at `version`, last updated at `last_updated`."""
    for entry in VISIT["entry"]:
        resource = entry["resource"]
        if (resource["resourceType"], resource["id"], resource["meta"]["versionId"]) == (
                kind, rid, version):
            found = copy.deepcopy(resource)
            found["meta"]["lastUpdated"] = last_updated
            return found
    raise LookupError(f"{kind}/{rid}/_history/{version}")


def fhir_steps(story: Story) -> list[list[dict[str, Any]]]:
    """Each step a list of resources, posted one by one (as a plain R4 Subscription does)."""
    patient = _resource("Patient", "pat-ana", "1", story.at(3 * 86400))
    patient["extension"][0]["valueCode"] = story.zone
    prac = _resource("Practitioner", "prac-rivera", "1", story.at(3 * 86400))
    booked = _resource("Appointment", "appt-1", "1", story.at(60))
    booked["start"], booked["end"] = iso(story.start), iso(story.start + timedelta(minutes=30))
    moved = _resource("Appointment", "appt-1", "2", story.at(50))
    moved["start"], moved["end"] = iso(story.moved), iso(story.moved + timedelta(minutes=30))
    done = _resource("Appointment", "appt-1", "3", story.at(40))
    done["start"], done["end"] = moved["start"], moved["end"]
    request = _resource("MedicationRequest", "rx-1", "1", story.at(35))
    dispense = _resource("MedicationDispense", "disp-1", "1", story.at(30))
    dispense["whenHandedOver"] = f"{story.filled_on.isoformat()}T12:55:00-06:00"
    return [[patient, prac], [booked], [moved], [done], [request, dispense],
            [_resource("Task", "refill-1", "1", story.at(20))],
            [_resource("Task", "refill-1", "2", story.at(15))],
            [_resource("Communication", "msg-1", "1", story.at(10)),
             _resource("Communication", "msg-2", "1", story.at(5))]]


# The same story as an integrator writes it for /v1/events, by hand -----------------------
def event_steps(story: Story) -> list[list[dict[str, Any]]]:
    numbers = iter(range(1, 100))

    def evt(kind: str, seconds_ago: int, data: dict[str, Any]) -> dict[str, Any]:
        return {"id": f"evt-{next(numbers)}", "type": kind,
                "occurred_at": story.at(seconds_ago), "data": data}

    def appointment(start: datetime) -> dict[str, Any]:
        return {"appointment": {
            "id": "appt-1.pat-ana", "client_id": "pat-ana", "provider_id": "prac-rivera",
            "start": iso(start), "end": iso(start + timedelta(minutes=30)),
            "kind": "medication_management", "join_url": "https://video.example.com/r/appt-1"}}

    return [
        [evt("client.upserted", 3 * 86400, {"client": {
            "id": "pat-ana", "first_name": "Ana", "phone": "+14155550123",
            "email": "ana.reyes@example.com", "timezone": story.zone, "locale": "es",
            "channels": {"sms": True, "email": True}}}),
         evt("provider.upserted", 3 * 86400, {"provider": {
             "id": "prac-rivera", "name": "Dr. Lena Rivera",
             "email": "lena.rivera@example.org", "phone": "+13125550100",
             "timezone": "America/New_York"}})],
        [evt("appointment.scheduled", 60, appointment(story.start))],
        [evt("appointment.rescheduled", 50, appointment(story.moved))],
        [evt("appointment.completed", 40, {"appointment_id": "appt-1.pat-ana"})],
        [evt("prescription.filled", 30, {"prescription": {
            "id": "rx-1", "client_id": "pat-ana", "provider_id": "prac-rivera",
            "medication": MEDICATION, "filled_on": story.filled_on.isoformat(),
            "days_supply": 30, "refills_remaining": 2}})],
        [evt("refill.requested", 20, {"request": {
            "id": "refill-1", "prescription_id": "rx-1", "client_id": "pat-ana",
            "provider_id": "prac-rivera"}})],
        [evt("refill.sent", 15, {"request_id": "refill-1"})],
        [evt("message.received", 10, {"message": {
            "id": "msg-1", "client_id": "pat-ana", "provider_id": "prac-rivera"}}),
         evt("message.answered", 5, {"message_id": "msg-1"})],
    ]


# Running a telling and reading what it sent ---------------------------------------------
#: A calendar line that differs from one sending to the next: when the file was made.
#: (Nothing else needs normalising: the notification ids, and so the invites' UIDs, are
#: the same in both tellings, as the hand-written events use the appointment id the FHIR
#: mapping gives, `{Appointment.id}.{Patient.id}`; but ids, due and sent times are left
#: out all the same, as they name a sending, not what was sent.)
_ICS_VOLATILE = re.compile(r"^(DTSTAMP|LAST-MODIFIED|CREATED)[:;].*$", re.MULTILINE)


def outbox_contents(service: Service) -> list[dict[str, Any]]:
    """The messages sent, without what names or times a sending (ids, due and sent times,
    file names), each attachment as its file type and contents; sorted."""
    found = []
    for message in service.sent():
        attachments = []
        for name in message["attachments"]:
            text = (service.outbox.directory / name).read_text(encoding="utf-8")
            attachments.append((name.rsplit(".", 1)[-1], _ICS_VOLATILE.sub(r"\1:-", text)))
        found.append({"kind": message["kind"], "channel": message["channel"],
                      "to": message["to"], "subject": message["subject"],
                      "body": message["body"],
                      "attachments": sorted(attachments),
                      "encoding": message.get("encoding"),
                      "segments": message.get("segments")})
    return sorted(found, key=lambda m: json.dumps(m, sort_keys=True))


def tell(service: Service, steps: list[list[dict[str, Any]]],
         post: Callable[[Service, dict[str, Any]], int]) -> list[dict[str, Any]]:
    """Post each step, then wait for the service to have done all it had due."""
    for step in steps:
        for item in step:
            assert post(service, item) in (200, 202)
        wait_for(service.quiet, what="the step to settle")
    return outbox_contents(service)


def post_fhir(service: Service, resource: dict[str, Any]) -> int:
    answer = service.http.post("/fhir/r4/notify", content=json.dumps(resource), headers={
        "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/fhir+json"})
    assert answer.status_code == 200, answer.text
    for outcome in answer.json()["resources"]:
        assert outcome["status"] == "mapped" or outcome["resource"] == \
            "MedicationRequest/rx-1", outcome
        assert {e["status"] for e in outcome["events"]} <= {"accepted"}, outcome
    return answer.status_code


def post_event(service: Service, event: dict[str, Any]) -> int:
    answer = service.post(event)
    assert answer.status_code == 202, answer.text
    return answer.status_code


def test_the_visit_cycle_through_fhir_sends_what_the_same_story_through_v1_events_sends(
        redis_client, redis_url, tmp_path: Path):
    story = Story(datetime.now(UTC))
    env = {"NOTIFIER_FHIR_TOKEN": TOKEN}
    service = Service(redis_url, tmp_path / "fhir", env=env)
    try:
        through_fhir = tell(service, fhir_steps(story), post_fhir)
    finally:
        service.close()
    redis_client.flushdb()
    service = Service(redis_url, tmp_path / "events", env=env)
    try:
        through_events = tell(service, event_steps(story), post_event)
    finally:
        service.close()
    kinds = sorted((m["kind"], m["channel"]) for m in through_fhir)
    assert kinds == [("appointment_confirmation", "email"), ("appointment_confirmation", "sms"),
                     ("appointment_updated", "email"), ("appointment_updated", "sms"),
                     ("refill_due", "email"), ("refill_due", "sms"),
                     ("refill_sent", "sms")], kinds
    assert through_fhir == through_events
