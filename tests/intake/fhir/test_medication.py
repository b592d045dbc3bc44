"""MedicationRequest -> prescription.discontinued; MedicationDispense -> prescription.filled,
with the refills left counted from the request and the payload's dispenses."""

from __future__ import annotations

import json

import pytest

from notifier.intake.fhir import map_payload
from tests.intake.fhir.build import DEFAULTS, events, ignored, mapped, of, resource

FILLED = {"id": "rx-1", "client_id": "pat-ana", "provider_id": "prac-rivera",
          "medication": "Sertraline 50 mg tablet", "filled_on": "2026-11-21",
          "days_supply": 30, "refills_remaining": 2}


def request(**changes) -> dict:
    return resource("MedicationRequest", **changes)


def dispense(**changes) -> dict:
    return resource("MedicationDispense", **changes)


@pytest.mark.parametrize("status", ["stopped", "cancelled", "completed"])
def test_an_ended_request_discontinues_the_prescription(status):
    (event,) = events(request(status=status))
    assert event == {"id": "fhir.MedicationRequest.rx-1.1",
                     "type": "prescription.discontinued",
                     "occurred_at": "2026-11-21T16:40:00Z",
                     "data": {"prescription_id": "rx-1"}}


@pytest.mark.parametrize("status", ["active", "on-hold", "draft", "unknown"])
def test_a_request_still_going_is_ignored_until_its_fill(status):
    assert ignored(request(status=status)) == (
        f"a MedicationRequest {status}: reminders start with a dispense")


def test_a_dispense_with_its_request_in_the_payload_is_a_fill():
    (event,) = events(of(request(), dispense()))  # the active request itself: nothing
    assert event == {"id": "fhir.MedicationDispense.disp-1.1", "type": "prescription.filled",
                     "occurred_at": "2026-11-21T18:05:00Z",
                     "data": {"prescription": FILLED}}


def test_a_dispense_with_its_request_contained_is_a_fill():
    contained = request()
    contained["id"] = "rx-1"
    del contained["meta"]
    body = dispense(contained=[contained],
                    authorizingPrescription=[{"reference": "#rx-1"}])
    (event,) = events(body)
    assert event["data"]["prescription"] == FILLED


def test_a_dispense_without_its_request_is_ignored_saying_what_to_include():
    why = ignored(dispense())
    assert why is not None and "_include=MedicationDispense:prescription" in why


@pytest.mark.parametrize(("allowed", "dispenses", "left"), [
    (2, 1, [2]),
    (2, 2, [2, 1]),
    (2, 3, [2, 1, 0]),
    (2, 4, [2, 1, 0, 0]),
    (None, 1, [0]),  # no repeats given: none
])
def test_refills_left_count_the_payloads_dispenses_in_hand_over_order(allowed, dispenses, left):
    rx = request()
    if allowed is None:
        del rx["dispenseRequest"]["numberOfRepeatsAllowed"]
    fills = []
    for number in range(dispenses):
        fill = dispense(id=f"disp-{number + 1}",
                        whenHandedOver=f"2026-{11 - number:02d}-21T12:55:00-06:00")
        fills.append(fill)
    found = events(of(rx, *fills))
    # Handed over latest first in the payload: the earliest is the first fill.
    by_day = sorted(e["data"]["prescription"]["filled_on"] for e in found)
    counted = {e["data"]["prescription"]["filled_on"]: e["data"]["prescription"]
               ["refills_remaining"] for e in found}
    assert [counted[day] for day in by_day] == left


def test_two_versions_of_one_dispense_are_one_fill():
    first = dispense()
    second = dispense(meta={"versionId": "2", "lastUpdated": "2026-11-21T18:30:00Z"})
    events_ = events(of(request(), first, second, kind="history"))
    assert [e["data"]["prescription"]["refills_remaining"] for e in events_] == [2, 2]
    assert events_[0]["id"] != events_[1]["id"]


@pytest.mark.parametrize(("changes", "field", "value"), [
    ({"daysSupply": None}, "days_supply", 30),  # the request's expectedSupplyDuration
    ({"daysSupply": {"value": 89.6, "unit": "Day"}}, "days_supply", 90),
    ({"whenHandedOver": "2026-11-21T23:30:00-06:00"}, "filled_on", "2026-11-21"),
    ({"whenHandedOver": "2026-11-20"}, "filled_on", "2026-11-20"),
    ({"medicationCodeableConcept": None,
      "medicationReference": {"reference": "#med"},
      "contained": [{"resourceType": "Medication", "id": "med",
                     "code": {"coding": [{"code": "312938",
                                          "display": "sertraline 50 MG Oral Tablet"}]}}]},
     "medication", "sertraline 50 MG Oral Tablet"),
    ({"medicationCodeableConcept": None,
      "medicationReference": {"reference": "Medication/m9", "display": "Sertraline 50 mg"}},
     "medication", "Sertraline 50 mg"),
])
def test_what_a_fill_reads(changes, field, value):
    (event,) = events(of(request(), dispense(**changes)))
    assert event["data"]["prescription"][field] == value


@pytest.mark.parametrize(("changes", "why"), [
    ({"status": "in-progress"}, "a MedicationDispense in-progress: only a completed one is a "
                                "fill"),
    ({"whenHandedOver": None},
     "not handed over on a known day (MedicationDispense.whenHandedOver)"),
    ({"whenHandedOver": "2026-11"},
     "not handed over on a known day (MedicationDispense.whenHandedOver)"),
])
def test_a_dispense_that_is_no_fill_is_ignored(changes, why):
    _, item = mapped(of(request(), dispense(**changes)))
    assert item.ignored == why


def test_a_dispense_without_any_supply_duration_is_ignored():
    rx = request()
    del rx["dispenseRequest"]["expectedSupplyDuration"]
    _, item = mapped(of(rx, dispense(daysSupply=None)))
    assert item.ignored == "no daysSupply, nor the request's expectedSupplyDuration"


def test_the_fill_count_is_the_callers():
    seen: list[tuple[str, str]] = []

    def third_fill(request_key: str, dispense_id: str) -> int:
        seen.append((request_key, dispense_id))
        return 3

    _, item = map_payload(json.dumps(of(request(), dispense())).encode(), DEFAULTS, third_fill)
    assert item.events[0]["data"]["prescription"]["refills_remaining"] == 0
    assert seen == [("MedicationRequest/rx-1", "disp-1")]
