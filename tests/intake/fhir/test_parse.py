"""Reading FHIR payloads: single resources, every bundle type, the Subscriptions Backport
notification, and malformed FHIR named by FHIRPath."""

from __future__ import annotations

import json

import pytest

from notifier.errors import InvalidEvent
from notifier.intake.fhir.parse import MAX_DEPTH, fhirpath, parse
from tests.intake.fhir.build import of, resource


def problems(body: object) -> dict[str, str]:
    raw = body if isinstance(body, bytes | str) else json.dumps(body)
    with pytest.raises(InvalidEvent) as caught:
        parse(raw)
    return {p.field: p.message for p in caught.value.problems}


@pytest.mark.parametrize(("loc", "path"), [
    (("participant", 0, "actor"), "Appointment.participant[0].actor"),
    (("meta", "lastUpdated"), "Appointment.meta.lastUpdated"),
    ((), "Appointment"),
    (("telecom", 1, "function-after[validate(), str]", "value"), "Appointment.telecom[1].value"),
])
def test_pydantic_locations_read_as_fhirpath(loc, path):
    assert fhirpath("Appointment", loc) == path


def test_a_single_resource_is_one_entry():
    (entry,) = parse(json.dumps(resource("Patient")))
    assert (entry.where, entry.label, entry.ignored) == ("Patient", "Patient/pat-ana", None)
    assert entry.resource.name[0].given == ["Ana", "Sofía"]


@pytest.mark.parametrize("kind", ["history", "transaction", "collection", "searchset",
                                  "subscription-notification"])
def test_every_bundle_type_a_server_sends_is_read(kind):
    entries = parse(json.dumps(of(resource("Patient"), resource("Practitioner"), kind=kind)))
    assert [e.where for e in entries] == ["Bundle.entry[0].resource", "Bundle.entry[1].resource"]
    assert [e.resource.get_resource_type() for e in entries] == ["Patient", "Practitioner"]


@pytest.mark.parametrize("status", [
    {"resourceType": "Parameters", "parameter": [
        {"name": "subscription", "valueReference": {"reference": "Subscription/s1"}},
        {"name": "type", "valueCode": "event-notification"}]},
    {"resourceType": "SubscriptionStatus", "status": "active", "type": "event-notification",
     "subscription": {"reference": "Subscription/s1"}},
])
@pytest.mark.parametrize("kind", ["history", "subscription-notification"])
def test_the_backport_notifications_status_entry_is_skipped(status, kind):
    """R4's Backport notification is a history bundle; R4B gives it its own
    `subscription-notification` type."""
    body = of(resource("Appointment"), kind=kind)
    body["entry"].insert(0, {"fullUrl": "urn:uuid:9e41ff6d-5be6-4e6a-8b85-abd4e7f58400",
                             "resource": status})
    (entry,) = parse(json.dumps(body))
    assert entry.label == "Appointment/appt-1"
    assert entry.where == "Bundle.entry[1].resource"


def test_an_unsupported_type_is_ignored_without_being_validated():
    observation = {"resourceType": "Observation", "id": "bp", "status": "not-a-status",
                   "valueQuantity": {"value": "high"}}
    entries = parse(json.dumps(of(observation, resource("Patient"))))
    assert entries[0].ignored == "Observation is not a resource type we map"
    assert entries[0].resource is None
    assert entries[1].resource is not None


def test_entries_without_a_resource_are_ignored_saying_why():
    body = {"resourceType": "Bundle", "type": "history", "entry": [
        {"fullUrl": "https://ehr.example.org/fhir/Appointment/a9",
         "request": {"method": "DELETE", "url": "Appointment/a9"},
         "response": {"status": "204"}},
        {"fullUrl": "https://ehr.example.org/fhir/Appointment/a8"}]}
    deleted, id_only = parse(json.dumps(body))
    assert deleted.ignored == "a deletion: nothing is sent for it"
    assert "id-only" in (id_only.ignored or "")


def test_a_malformed_resource_is_named_by_fhirpath():
    appointment = resource("Appointment")
    appointment["participant"][0]["actor"] = {"reference": 42}
    found = problems(appointment)
    assert list(found) == ["Appointment.participant[0].actor.reference"]
    assert "string" in found["Appointment.participant[0].actor.reference"]


def test_a_malformed_resource_in_a_bundle_is_named_under_its_entry():
    patient = resource("Patient", birthDate="20 Feb 1987")
    appointment = resource("Appointment")
    appointment["participant"][1]["actor"] = {"reference": 42}
    found = problems(of(patient, appointment))
    assert set(found) == {"Bundle.entry[0].resource.birthDate",
                          "Bundle.entry[1].resource.participant[1].actor.reference"}


def test_an_element_fhir_does_not_have_is_refused():
    assert list(problems(resource("Patient", nickname="Annie"))) == ["Patient.nickname"]


def test_a_bundle_of_another_type_is_refused():
    found = problems(of(resource("Patient"), kind="document"))
    assert list(found) == ["Bundle.type"]


def test_a_resource_without_a_type_is_refused():
    assert list(problems({"id": "x"})) == ["resourceType"]
    assert list(problems({"resourceType": 5, "id": "x"})) == ["resourceType"]
    assert list(problems(of({"id": "x"}))) == ["Bundle.entry[0].resource.resourceType"]


def test_not_json_and_repeated_keys_are_refused():
    assert list(problems(b"{not json")) == ["body"]
    repeated = '{"resourceType": "Patient", "id": "a", "id": "b"}'
    assert list(problems(repeated)) == ["Patient.id"]
    bundle = json.dumps(of(resource("Patient")))
    in_bundle = bundle.replace('"id": "pat-ana",', '"id": "pat-ana", "id": "pat-ben",', 1)
    assert list(problems(in_bundle)) == ["Bundle.entry[0].resource.id"]


@pytest.mark.parametrize(("levels", "refused"), [(30, False), (31, True), (2500, True)])
def test_json_nested_deeper_than_fhir_is_refused_before_validation(levels, refused):
    """fhir.resources' validation recurses per level: 250 nested extensions overflow
    the stack (a 500); nesting is bounded first. `levels` extensions within each other
    are 3 + 2 x levels deep (the Patient, its array, each object and array, the last)."""
    assert (3 + 2 * levels > MAX_DEPTH) == refused
    nest = ('{"url":"http://e.example/x","extension":[' * levels
            + '{"url":"http://e.example/y","valueString":"x"}' + "]}" * levels)
    text = '{"resourceType": "Patient", "id": "p", "extension": [' + nest + "]}"
    if refused:
        # Deeper than Python's parser goes: "not valid JSON" (maximum recursion depth).
        assert list(problems(text)) == ["body"]
        assert levels > 400 or problems(text)["body"] == (
            f"nested deeper than {MAX_DEPTH} arrays and objects: no FHIR resource is")
    else:
        assert parse(text)[0].label == "Patient/p"
