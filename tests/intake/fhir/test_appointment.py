"""Appointment -> appointment.scheduled / cancelled / completed / no_show."""

from __future__ import annotations

import copy

import pytest

from notifier.errors import InvalidEvent
from notifier.intake.fhir import Defaults
from tests.intake.fhir.build import events, ignored, of, resource

APPT = "appt-1.pat-ana"


def appointment(**changes) -> dict:
    return resource("Appointment", **changes)


def test_a_booked_appointment_is_scheduled_for_its_patient():
    (event,) = events(appointment())
    assert event == {
        "id": "fhir.Appointment.appt-1.1.pat-ana", "type": "appointment.scheduled",
        "occurred_at": "2026-11-03T10:00:00Z",
        "data": {"appointment": {
            "id": APPT, "client_id": "pat-ana", "provider_id": "prac-rivera",
            "start": "2026-11-20T15:00:00Z", "end": "2026-11-20T15:30:00Z",
            "kind": "medication_management",
            "join_url": "https://video.example.com/r/appt-1"}}}


@pytest.mark.parametrize(("status", "changes", "kind", "data"), [
    ("cancelled", {"cancelationReason": {"coding": [{"code": "pat-crs"}]}},
     "appointment.cancelled", {"appointment_id": APPT, "cancelled_by": "client"}),
    ("cancelled", {"cancelationReason": {"coding": [{"code": "prov-dch"}]}},
     "appointment.cancelled", {"appointment_id": APPT, "cancelled_by": "provider"}),
    ("cancelled", {"cancelationReason": {"coding": [{"code": "maint"}]}},
     "appointment.cancelled", {"appointment_id": APPT, "cancelled_by": "support"}),
    ("cancelled", {}, "appointment.cancelled",
     {"appointment_id": APPT, "cancelled_by": "support"}),
    ("entered-in-error", {}, "appointment.cancelled",
     {"appointment_id": APPT, "cancelled_by": "support"}),
    ("fulfilled", {}, "appointment.completed", {"appointment_id": APPT}),
    ("noshow", {}, "appointment.no_show", {"appointment_id": APPT, "party": "client"}),
])
def test_each_closing_status(status, changes, kind, data):
    (event,) = events(appointment(status=status, **changes))
    assert (event["type"], event["data"]) == (kind, data)


def test_a_no_show_by_the_provider_is_the_declined_practitioner():
    body = appointment(status="noshow")
    body["participant"][1]["status"] = "declined"
    (event,) = events(body)
    assert event["data"] == {"appointment_id": APPT, "party": "provider"}


@pytest.mark.parametrize(("status", "why"), [
    ("proposed", "an Appointment proposed, not booked yet"),
    ("pending", "an Appointment pending, not booked yet"),
    ("waitlist", "an Appointment on the waitlist, not booked"),
    ("arrived", "an Appointment under way (arrived)"),
    ("checked-in", "an Appointment under way (checked in)"),
])
def test_statuses_with_nothing_to_tell_are_ignored(status, why):
    assert ignored(appointment(status=status)) == why


def test_a_reschedule_is_another_scheduled_event_under_the_same_appointment():
    first, second = events(of(resource("Appointment", "1"), resource("Appointment", "2")))
    assert first["data"]["appointment"]["id"] == second["data"]["appointment"]["id"] == APPT
    assert (first["type"], second["type"]) == ("appointment.scheduled",) * 2
    assert second["data"]["appointment"]["start"] == "2026-11-21T16:00:00Z"
    assert first["id"] != second["id"]


def test_two_patients_get_an_appointment_each():
    body = appointment()
    body["participant"].append({"actor": {"reference": "Patient/pat-ben"},
                                "status": "accepted"})
    ana, ben = events(body)
    assert (ana["data"]["appointment"]["id"], ben["data"]["appointment"]["id"]) == (
        APPT, "appt-1.pat-ben")
    assert ben["data"]["appointment"]["client_id"] == "pat-ben"
    assert ben["id"] == "fhir.Appointment.appt-1.1.pat-ben"
    cancelled = appointment(status="cancelled")
    cancelled["participant"].append({"actor": {"reference": "Patient/pat-ben"},
                                     "status": "accepted"})
    assert [e["data"]["appointment_id"] for e in events(cancelled)] == [APPT, "appt-1.pat-ben"]


def test_end_from_minutes_duration():
    (event,) = events(appointment(end=None, minutesDuration=45))
    assert event["data"]["appointment"]["end"] == "2026-11-20T15:45:00Z"


@pytest.mark.parametrize(("concepts", "kind"), [
    ({"serviceType": [{"coding": [{"system": "http://snomed.info/sct", "code": "75516001"}]}]},
     "therapy"),
    ({"serviceType": [{"text": "Individual psychotherapy, 45 min"}]}, "therapy"),
    ({"appointmentType": {"coding": [{"code": "ROUTINE", "display": "Counseling session"}]}},
     "therapy"),
    ({"specialty": [{"text": "Psychiatry"}]}, "medication_management"),
    # A medication practice's own visits whose names say "therap..."
    ({"serviceType": [{"text": "Medication therapy management"}]}, "medication_management"),
    ({"serviceType": [{"text": "Therapeutic drug monitoring (lithium level review)"}]},
     "medication_management"),
    ({"serviceType": [{"text": "Family therapy"}]}, "therapy"),
    ({"serviceType": [{"text": "Grief counselling"}]}, "therapy"),
])
def test_the_kind_of_visit(concepts, kind):
    body = appointment(**{"serviceType": None, **concepts})
    (event,) = events(body)
    assert event["data"]["appointment"]["kind"] == kind


def test_the_video_link_from_a_configured_extension_when_no_virtual_service():
    body = appointment(extension=[{"url": "http://ehr.example.org/fhir/video-link",
                                   "valueUrl": "https://meet.example.org/rivera/42"}])
    (plain,) = events(body)
    assert plain["data"]["appointment"]["join_url"] is None
    (linked,) = events(body, Defaults(video_extensions=("http://ehr.example.org/fhir/"
                                                        "video-link",)))
    assert linked["data"]["appointment"]["join_url"] == "https://meet.example.org/rivera/42"


@pytest.mark.parametrize(("participants", "why"), [
    ([{"actor": {"reference": "Practitioner/prac-rivera"}, "status": "accepted"}],
     "no Patient participant (Appointment.participant.actor)"),
    ([{"actor": {"reference": "Patient/pat-ana"}, "status": "accepted"},
      {"actor": {"reference": "Location/room-3"}, "status": "accepted"}],
     "no Practitioner participant (Appointment.participant.actor)"),
])
def test_without_a_patient_and_a_practitioner_it_is_ignored(participants, why):
    assert ignored(appointment(participant=participants)) == why


def test_a_booking_without_times_is_ignored():
    assert ignored(appointment(start=None, end=None)) == "booked with no start (Appointment.start)"
    assert ignored(appointment(end=None, minutesDuration=None)) == (
        "booked with no end or minutesDuration (Appointment.end)")


def test_a_booking_our_rules_refuse_names_the_fhir_element():
    """4xx answers name the bad element by its FHIRPath: the end before the start is
    `Appointment.end` (under its entry), not the whole resource."""
    with pytest.raises(InvalidEvent) as caught:
        events(of(appointment(end="2026-11-20T14:00:00Z")))
    (found,) = caught.value.problems
    assert found.field == "Bundle.entry[0].resource.end"
    assert "data.appointment.end: Value error, end must be after start" in found.message


def test_a_participant_in_a_transaction_bundle_is_found_through_its_full_url():
    patient = resource("Patient")
    body = appointment()
    body["participant"][0]["actor"] = {"reference": "urn:uuid:0d3c2b8e-5d0b-4d6c-9a53-3c7e5d0a1f11"}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0d3c2b8e-5d0b-4d6c-9a53-3c7e5d0a1f11", "resource": patient,
         "request": {"method": "PUT", "url": "Patient/pat-ana"}},
        {"fullUrl": "urn:uuid:5a4e7c3b-2f1d-4e8a-b6c9-0d1e2f3a4b5c", "resource": body,
         "request": {"method": "PUT", "url": "Appointment/appt-1"}}]}
    _, scheduled = events(bundle)
    assert scheduled["data"]["appointment"]["client_id"] == "pat-ana"


def test_a_patient_who_declined_a_group_appointment_is_not_reminded_of_it():
    """A booked group Appointment with two patients, one of whom declined
    (participant.status `declined`): the other is scheduled, the one who declined has
    their part cancelled (by the client)."""
    body = appointment()
    declined = copy.deepcopy(body["participant"][0])
    declined["actor"] = {"reference": "Patient/pat-ben", "display": "Ben Ortiz"}
    declined["status"] = "declined"
    body["participant"].insert(1, declined)
    assert [(e["type"], e["data"].get("appointment_id")) for e in events(body)] == [
        ("appointment.scheduled", None),
        ("appointment.cancelled", "appt-1.pat-ben")]
    assert events(body)[1]["data"]["cancelled_by"] == "client"
