"""The whole payload: the visit cycle of `examples/fhir/visit-bundle.json`, repeated and
out-of-order versions, mixed bundles, and `notifier fhir map`."""

from __future__ import annotations

import json

import pytest
from fhir.resources.R4B.subscription import Subscription

from notifier.cli import main
from notifier.errors import InvalidEvent
from notifier.intake.events import parse_event
from tests.intake.fhir.build import VISIT_BUNDLE, bundle, events, mapped, of, resource

#: (event id, type) the example's visit cycle becomes, in the bundle's order.
CYCLE = [
    ("fhir.Patient.pat-ana.1", "client.upserted"),
    ("fhir.Practitioner.prac-rivera.1", "provider.upserted"),
    ("fhir.Appointment.appt-1.1.pat-ana", "appointment.scheduled"),
    ("fhir.Appointment.appt-1.2.pat-ana", "appointment.scheduled"),  # rescheduled
    ("fhir.Appointment.appt-1.3.pat-ana", "appointment.completed"),
    ("fhir.MedicationDispense.disp-1.1", "prescription.filled"),
    ("fhir.Task.refill-1.1", "refill.requested"),
    ("fhir.Task.refill-1.2", "refill.sent"),
    ("fhir.Communication.msg-1.1", "message.received"),
    ("fhir.Communication.msg-2.1.msg-1", "message.answered"),
]


def test_the_visit_cycle_becomes_the_events_of_the_same_story():
    found = events(bundle())
    assert [(e["id"], e["type"]) for e in found] == CYCLE
    for event in found:
        parse_event(json.dumps(event))  # each is an event POST /v1/events takes
    rescheduled = found[3]["data"]["appointment"]
    assert (rescheduled["id"], rescheduled["start"]) == ("appt-1.pat-ana",
                                                         "2026-11-21T16:00:00Z")
    assert found[5]["data"]["prescription"]["refills_remaining"] == 2
    times = [e["occurred_at"] for e in found]
    assert times == sorted(times)


def test_the_active_prescription_is_reported_ignored_in_the_cycle():
    ignored = [(m.label, m.ignored) for m in mapped(bundle()) if m.ignored]
    assert ignored == [("MedicationRequest/rx-1",
                        "no event for a MedicationRequest active: reminders start with "
                        "its dispense")]


def test_a_resent_version_is_the_same_event_and_a_new_version_another():
    once = events(resource("Appointment", "2"))
    again = events(resource("Appointment", "2"))
    later = resource("Appointment", "2", meta={"versionId": "7",
                                                "lastUpdated": "2026-11-11T09:00:00Z"})
    assert once == again
    (newer,) = events(later)
    assert newer["id"] != once[0]["id"]


def test_versions_out_of_order_keep_their_own_times():
    # A history lists the newest first: each event carries its version's time, and our
    # ordering applies them oldest first (and the older, arriving later, as stale).
    history = of(resource("Appointment", "3"), resource("Appointment", "1"), kind="history")
    completed, scheduled = events(history)
    assert (completed["type"], completed["occurred_at"]) == (
        "appointment.completed", "2026-11-21T16:45:00Z")
    assert (scheduled["type"], scheduled["occurred_at"]) == (
        "appointment.scheduled", "2026-11-03T10:00:00Z")


def test_a_bundle_mixing_supported_and_unsupported_resources():
    observation = {"resourceType": "Observation", "id": "phq9", "status": "final",
                   "code": {"coding": [{"system": "http://loinc.org", "code": "44261-6"}]},
                   "valueInteger": 7}
    items = mapped(of(observation, resource("Patient"), resource("Task", status="on-hold")))
    assert [(m.label, m.ignored) for m in items] == [
        ("Observation/phq9", "Observation is not a resource type we map"),
        ("Patient/pat-ana", None),
        ("Task/refill-1", "a refill request on-hold")]
    assert [e["type"] for e in items[1].events] == ["client.upserted"]


def test_every_problem_of_a_payload_is_named_at_once():
    patient = resource("Patient")
    del patient["meta"]["lastUpdated"]
    task = resource("Task", id=None)
    with pytest.raises(InvalidEvent) as caught:
        mapped(of(patient, task))
    assert [p.field for p in caught.value.problems] == [
        "Bundle.entry[0].resource.meta.lastUpdated", "Bundle.entry[1].resource.id"]


def test_fhir_map_prints_the_events_as_json_lines(capsys):
    main(["fhir", "map", str(VISIT_BUNDLE)])
    out, err = capsys.readouterr()
    assert [tuple(json.loads(line)[k] for k in ("id", "type"))
            for line in out.splitlines()] == CYCLE
    assert err == ("# MedicationRequest/rx-1: ignored: no event for a MedicationRequest "
                   "active: reminders start with its dispense\n")


def test_fhir_map_names_each_bad_element_and_exits_1(tmp_path, capsys):
    appointment = resource("Appointment")
    appointment["participant"][0]["actor"] = {"reference": 42}
    path = tmp_path / "appointment.json"
    path.write_text(json.dumps(appointment))
    with pytest.raises(SystemExit) as exited:
        main(["fhir", "map", str(path)])
    out, err = capsys.readouterr()
    assert (exited.value.code, out) == (1, "")
    assert err == f"{path}: Appointment.participant[0].actor.reference: Input should be a " \
                  "valid string\n"


def test_fhir_map_under_a_source_prefixes_its_ids(tmp_path, capsys, monkeypatch):
    path = tmp_path / "patient.json"
    path.write_text(json.dumps(resource("Patient")))
    monkeypatch.setenv("NOTIFIER_FHIR_SOURCES", "ehr-b")
    main(["fhir", "map", "--source", "ehr-b", str(path)])
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["data"]["client"]["id"] == "ehr-b~pat-ana"
    with pytest.raises(SystemExit) as exited:
        main(["fhir", "map", "--source", "ehr-c", str(path)])
    assert exited.value.code == 2
    assert "not one of NOTIFIER_FHIR_SOURCES (ehr-b)" in capsys.readouterr().err


def test_fhir_map_names_a_file_it_cannot_read(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["fhir", "map", str(tmp_path / "missing.json")])
    assert exited.value.code == 2
    assert "missing.json: cannot read it" in capsys.readouterr().err


def test_the_example_subscription_is_a_valid_r4_subscription_to_our_endpoint():
    path = VISIT_BUNDLE.parent / "subscription-appointment.json"
    subscription = Subscription.model_validate_json(path.read_text())
    assert subscription.channel.endpoint.endswith("/fhir/r4/notify")
    assert subscription.channel.header == ["Authorization: Bearer <NOTIFIER_FHIR_TOKEN>"]
