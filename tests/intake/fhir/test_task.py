"""Task (a refill request) -> refill.requested / refill.sent / refill.denied."""

from __future__ import annotations

import json

import pytest

from notifier.intake.fhir import map_payload
from notifier.intake.fhir.mapping import PayloadMemory
from tests.intake.fhir.build import DEFAULTS, events, ignored, of, resource

OPENED = {"request": {"id": "refill-1", "prescription_id": "rx-1", "client_id": "pat-ana",
                      "provider_id": "prac-rivera"}}


def task(**changes) -> dict:
    return resource("Task", **changes)


@pytest.mark.parametrize(("status", "changes", "kind", "data"), [
    ("requested", {}, "refill.requested", OPENED),
    ("received", {}, "refill.requested", OPENED),
    ("accepted", {}, "refill.requested", OPENED),
    ("in-progress", {}, "refill.requested", OPENED),
    ("completed", {}, "refill.sent", {"request_id": "refill-1"}),
    ("rejected", {"statusReason": {"coding": [{"system": "http://ehr.example.org/reasons",
                                               "code": "visit-required"}]}},
     "refill.denied", {"request_id": "refill-1", "reason": "visit_required"}),
    ("rejected", {"statusReason": {"text": "Needs a visit before more refills"}},
     "refill.denied", {"request_id": "refill-1", "reason": "visit_required"}),
    ("rejected", {"statusReason": {"text": "Duplicate request"}},
     "refill.denied", {"request_id": "refill-1", "reason": "other"}),
    # A visit mentioned is not a visit required.
    ("rejected", {"statusReason": {"text": "Duplicate request, no visit needed"}},
     "refill.denied", {"request_id": "refill-1", "reason": "other"}),
    ("rejected", {"statusReason": {"text": "Already refilled at last visit"}},
     "refill.denied", {"request_id": "refill-1", "reason": "other"}),
    ("rejected", {"statusReason": {"text": "Please schedule an appointment first"}},
     "refill.denied", {"request_id": "refill-1", "reason": "visit_required"}),
    ("rejected", {"statusReason": {"text": "Visit required before renewal"}},
     "refill.denied", {"request_id": "refill-1", "reason": "visit_required"}),
    ("rejected", {}, "refill.denied", {"request_id": "refill-1", "reason": "other"}),
    ("cancelled", {}, "refill.denied", {"request_id": "refill-1", "reason": "other"}),
    # A request that never was: closed, so support is not alerted about it.
    ("entered-in-error", {}, "refill.denied", {"request_id": "refill-1", "reason": "other"}),
])
def test_each_status(status, changes, kind, data):
    (event,) = events(task(status=status, **changes))
    assert (event["id"], event["type"], event["data"]) == ("fhir.Task.refill-1.1", kind, data)


@pytest.mark.parametrize("status", ["draft", "on-hold", "failed"])
def test_other_statuses_are_ignored(status):
    assert ignored(task(status=status)) == f"a refill request {status}"


def test_a_task_about_something_else_is_ignored():
    assert ignored(task(focus={"reference": "ServiceRequest/sr-1"})) == (
        "not a refill request (Task.focus is not a MedicationRequest)")


def test_without_an_owner_the_provider_is_the_prescriber_in_the_payload():
    (event,) = events(of(resource("MedicationRequest"), task(owner=None)))
    assert event["data"] == OPENED
    assert ignored(task(owner=None)) == (
        "no Patient (Task.for) or Practitioner (Task.owner, or the MedicationRequest's "
        "requester, in the payload or posted before)")


def test_a_closing_needs_only_the_task():
    (event,) = events(task(status="completed", owner=None, **{"for": None}))
    assert event["data"] == {"request_id": "refill-1"}


def test_a_refill_task_owned_by_the_clinic_finds_the_prescriber_remembered():
    """A Task owned by the clinic (an Organization), posted alone: the prescriber is the
    focused MedicationRequest's requester, remembered from its own notification."""
    memory = PayloadMemory()
    (item,) = map_payload(json.dumps(resource("MedicationRequest")).encode(), DEFAULTS,
                          memory)
    assert item.request is not None
    memory.remember([item.request])
    clinic = task(owner={"reference": "Organization/clinic"})
    (item,) = map_payload(json.dumps(clinic).encode(), DEFAULTS, memory)
    assert item.events[0]["type"] == "refill.requested"
    assert item.events[0]["data"] == OPENED
