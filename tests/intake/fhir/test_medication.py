"""MedicationRequest -> prescription.discontinued; MedicationDispense -> prescription.filled,
with the refills left counted from the request and the payload's dispenses."""

from __future__ import annotations

import json

import pytest

from notifier.intake.fhir import map_payload
from notifier.intake.fhir.mapping import PayloadMemory
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
        f"no event for a MedicationRequest {status}: reminders start with its dispense")


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
    # A contained id is local to its container: ours names both.
    assert event["data"]["prescription"] == {**FILLED, "id": "disp-1_rx-1"}


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


class ThirdFill(PayloadMemory):
    """A memory in which every fill is the third."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str, float]] = []

    def count(self, prescription_id: str, dispense_id: str, handed_at: float) -> int:
        self.seen.append((prescription_id, dispense_id, handed_at))
        return 3


def test_the_fill_count_is_the_callers():
    memory = ThirdFill()
    _, item = map_payload(json.dumps(of(request(), dispense())).encode(), DEFAULTS, memory)
    assert item.events[0]["data"]["prescription"]["refills_remaining"] == 0
    # whenHandedOver 2026-11-21T12:55:00-06:00, in Unix seconds
    assert memory.seen == [("rx-1", "disp-1", 1795287300.0)]


def test_contained_requests_of_two_dispenses_are_two_prescriptions():
    """A contained resource's id is local to its container: two pharmacies' dispenses
    each containing their MedicationRequest as `#rx` are two prescriptions, each at its
    first fill."""
    def contained_dispense(dispense_id: str, patient: str) -> dict:
        rx = resource("MedicationRequest", id="rx", meta=None,
                      subject={"reference": f"Patient/{patient}"})
        return dispense(id=dispense_id, contained=[rx],
                        subject={"reference": f"Patient/{patient}"},
                        authorizingPrescription=[{"reference": "#rx"}])
    found = events(of(contained_dispense("disp-a", "pat-ana"),
                      contained_dispense("disp-b", "pat-ben")))
    assert [e["data"]["prescription"]["id"] for e in found] == ["disp-a_rx", "disp-b_rx"]
    assert [e["data"]["prescription"]["refills_remaining"] for e in found] == [2, 2]


_PACK = ("{21 (ethinyl estradiol 0.035 MG / norgestimate 0.25 MG Oral Tablet) / "
         "7 (inert ingredients 1 MG Oral Tablet) } Pack [Sprintec 28 Day]")


@pytest.mark.parametrize(("change", "medication"), [
    # RxNorm's own display of a pack (133 characters): over our 100-character Name
    ({"medicationCodeableConcept": {"coding": [{
        "system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "748962",
        "display": _PACK}]}}, _PACK[:99].rstrip() + "\u2026"),
    # a pharmacy system's free text on two lines
    ({"medicationCodeableConcept": {"text": "Sertraline 50 mg tablet\nTake 1 daily"}},
     "Sertraline 50 mg tablet"),
], ids=["rxnorm-pack-display", "multi-line-text"])
def test_a_fhir_valid_dispense_is_a_fill_whatever_its_medication_text(change, medication):
    """Valid FHIR whose text breaks our event rules is made to fit (first line,
    shortened) rather than refusing the whole notification on every retry."""
    (event,) = events(of(dispense(**change), request()))
    assert event["type"] == "prescription.filled"
    assert event["data"]["prescription"]["medication"] == medication
    assert len(medication) == 100 or "\n" not in medication


def test_a_reference_resolves_to_the_newest_version_in_a_history_bundle():
    """A `_history` bundle lists versions newest first: the dispense reads rx-1 v2 (5
    refills allowed), whichever order the versions come in."""
    v2 = request(meta={"versionId": "2", "lastUpdated": "2026-11-21T17:00:00Z"})
    v2["dispenseRequest"]["numberOfRepeatsAllowed"] = 5
    for body in (of(dispense(), v2, request(), kind="history"),
                 of(dispense(), request(), v2, kind="collection")):
        (filled,) = [e for e in events(body) if e["type"] == "prescription.filled"]
        assert filled["data"]["prescription"]["refills_remaining"] == 5


def test_a_dispense_alone_is_a_fill_of_a_request_remembered():
    """What an active MedicationRequest posted before says is kept (`MappedResource.
    request`, remembered by the caller): its dispense posted alone is a fill."""
    memory = PayloadMemory()
    (item,) = map_payload(json.dumps(request()).encode(), DEFAULTS, memory)
    assert item.ignored is not None and item.request is not None
    memory.remember([item.request])
    (item,) = map_payload(json.dumps(dispense()).encode(), DEFAULTS, memory)
    assert item.events[0]["data"]["prescription"] == FILLED
    (item,) = map_payload(json.dumps(dispense()).encode(), DEFAULTS, memory, source="ehr-b")
    assert item.ignored is not None  # another EHR's rx-1 is another prescription


def test_a_fill_is_counted_by_its_place_among_the_known_fills():
    memory = PayloadMemory()
    later = dispense(id="disp-2", whenHandedOver="2026-12-20T10:00:00-06:00",
                     meta={"versionId": "1", "lastUpdated": "2026-12-20T16:05:00Z"})
    (_, item) = map_payload(json.dumps(of(request(), later)).encode(), DEFAULTS, memory)
    assert item.events[0]["data"]["prescription"]["refills_remaining"] == 2
    # The earlier fill, posted late, is the first; disp-2 sent again is the second.
    (_, item) = map_payload(json.dumps(of(request(), dispense())).encode(), DEFAULTS, memory)
    assert item.events[0]["data"]["prescription"]["refills_remaining"] == 2
    (_, item) = map_payload(json.dumps(of(request(), later)).encode(), DEFAULTS, memory)
    assert item.events[0]["data"]["prescription"]["refills_remaining"] == 1
