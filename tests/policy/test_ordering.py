"""Pure event-order policy: each event's subject, and when a close waits for its opening."""

from __future__ import annotations

from datetime import timedelta

import pytest

from notifier.ledger.records import (
    AppointmentRecord,
    ClosedAppointmentRecord,
    ClosedPrescriptionRecord,
    OpenItemRecord,
    PrescriptionRecord,
    State,
)
from notifier.policy.ordering import CLOSING, subject_ref, wait_for_opening
from tests.kit import parsed_event, utc

AT = utc(2026, 12, 1, 15)
APPT = {"id": "a1", "client_id": "c1", "provider_id": "p1", "start": "2026-12-09T15:00:00Z",
        "end": "2026-12-09T15:30:00Z", "kind": "therapy"}
RX = {"id": "rx1", "client_id": "c1", "provider_id": "p1", "medication": "M",
      "filled_on": "2026-11-01", "days_supply": 30, "refills_remaining": 1}
CLIENT = {"id": "c1", "first_name": "Ana", "phone": "+14155550123", "email": "a@example.com",
          "timezone": "UTC", "locale": "en", "channels": {"sms": True, "email": True}}

EVENTS = {
    "client.upserted": ({"client": CLIENT}, "client:c1"),
    "provider.upserted": ({"provider": {"id": "p1", "name": "Dr. R", "email": "r@example.com",
                                        "timezone": "UTC"}}, "provider:p1"),
    "appointment.scheduled": ({"appointment": APPT}, "appointment:a1"),
    "appointment.rescheduled": ({"appointment": APPT}, "appointment:a1"),
    "appointment.cancelled": ({"appointment_id": "a1", "cancelled_by": "client"},
                              "appointment:a1"),
    "appointment.completed": ({"appointment_id": "a1"}, "appointment:a1"),
    "appointment.no_show": ({"appointment_id": "a1", "party": "client"}, "appointment:a1"),
    "prescription.filled": ({"prescription": RX}, "prescription:rx1"),
    "prescription.discontinued": ({"prescription_id": "rx1"}, "prescription:rx1"),
    "refill.requested": ({"request": {"id": "r1", "prescription_id": "rx1", "client_id": "c1",
                                      "provider_id": "p1"}}, "refill_request:r1"),
    "refill.sent": ({"request_id": "r1"}, "refill_request:r1"),
    "refill.denied": ({"request_id": "r1", "reason": "visit_required"}, "refill_request:r1"),
    "message.received": ({"message": {"id": "r1", "client_id": "c1", "provider_id": "p1"}},
                         "message:r1"),
    "message.answered": ({"message_id": "r1"}, "message:r1"),
}


@pytest.mark.parametrize("type_", sorted(EVENTS))
def test_every_event_type_has_its_subject(type_):
    data, expected = EVENTS[type_]
    assert subject_ref(parsed_event(type_, data, AT)) == expected


SEEN = {
    "appointment": State(appointment=AppointmentRecord.model_validate(
        {"appointment": APPT, "updated_at": AT})),
    "appointment_closed": State(appointment_closed=ClosedAppointmentRecord(
        status="cancelled", updated_at=AT)),
    "prescription": State(prescription=PrescriptionRecord.model_validate(
        {"prescription": RX, "updated_at": AT})),
    "prescription_closed": State(prescription_closed=ClosedPrescriptionRecord(updated_at=AT)),
    "item": State(item=OpenItemRecord(id="r1", kind="refill_request", updated_at=AT)),
}


@pytest.mark.parametrize("type_", sorted(CLOSING))
def test_a_close_for_an_unseen_subject_waits_until_the_wait_is_over(type_, policy):
    evt = parsed_event(type_, EVENTS[type_][0], AT)
    arrived = AT + timedelta(minutes=1)
    held = wait_for_opening(evt, State(), arrived, arrived, policy.opening_wait)
    assert held is not None
    assert (held.outcome, held.held_until, held.add, held.records) == (
        "held", arrived + timedelta(hours=24), (), {})
    assert held.reason == f"waiting for the opening event of {EVENTS[type_][1]}"
    last_moment = arrived + policy.opening_wait - timedelta(microseconds=1)
    assert wait_for_opening(evt, State(), arrived, last_moment, policy.opening_wait)
    assert wait_for_opening(evt, State(), arrived, arrived + policy.opening_wait,
                            policy.opening_wait) is None


@pytest.mark.parametrize(("type_", "seen"), [
    ("appointment.cancelled", "appointment"), ("appointment.completed", "appointment_closed"),
    ("appointment.no_show", "appointment"), ("prescription.discontinued", "prescription"),
    ("prescription.discontinued", "prescription_closed"),
    ("refill.sent", "item"), ("refill.denied", "item"), ("message.answered", "item"),
])
def test_a_close_for_a_seen_subject_is_planned_at_once(type_, seen, policy):
    evt = parsed_event(type_, EVENTS[type_][0], AT)
    assert wait_for_opening(evt, SEEN[seen], AT, AT, policy.opening_wait) is None


@pytest.mark.parametrize("type_", sorted(set(EVENTS) - CLOSING))
def test_openings_and_upserts_never_wait(type_, policy):
    evt = parsed_event(type_, EVENTS[type_][0], AT)
    assert wait_for_opening(evt, State(), AT, AT, policy.opening_wait) is None


def test_the_wait_comes_from_the_policy_file(project_root):
    from notifier.config import read_schedule_file
    from notifier.policy.figures import policy_from_mapping

    data = read_schedule_file(project_root / "schedules", "policy.toml", "policy")
    assert policy_from_mapping(data).opening_wait == timedelta(hours=24)
    data["events"]["opening_wait_h"] = 2
    assert policy_from_mapping(data).opening_wait == timedelta(hours=2)
    data["events"]["opening_wait_h"] = -1
    from notifier.errors import ConfigError
    with pytest.raises(ConfigError, match="events.opening_wait_h"):
        policy_from_mapping(data)
    del data["events"]
    assert policy_from_mapping(data).opening_wait == timedelta(hours=24)
