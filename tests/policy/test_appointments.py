"""Appointment policy through `notifier.policy.plan`: tables of (event, state, now) -> plan.

Pure: events are parsed from JSON as the web does, state is built from records as the store
loads them, and `now` is passed in. DST dates and half-hour zones included.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notifier.intake.events import Event, parse_event
from notifier.ledger.records import (
    AppointmentRecord,
    ClientRecord,
    ClosedAppointmentRecord,
    Record,
    State,
)
from notifier.policy import plan
from notifier.policy.appointments import told_of_booking
from notifier.policy.figures import Policy
from notifier.policy.plan import Plan
from tests.kit import Row, iso, parsed_event, rows, utc

CLIENT = "cl-1"
APPT = "apt-1"
REF = f"appointment:{APPT}"
JOIN_URL = "https://video.example.com/r/abc"
REMINDER_KINDS = ("appointment_confirmation", "appointment_reminder", "appointment_join_link",
                  "appointment_updated", "appointment_cancelled")

#: 2026-06-01 14:00Z is 10:00 EDT (UTC-4) in New York: daytime, no quiet hours.
BOOKED = datetime(2026, 6, 1, 14, 0, tzinfo=UTC)
#: Ten days later, 10:00 EDT.
START = datetime(2026, 6, 11, 14, 0, tzinfo=UTC)
CLIENT_SET_AT = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)

def stamp(instant: datetime) -> str:
    return f"{instant.astimezone(UTC):%Y%m%dT%H%M%SZ}"


def client_upserted(zone: str, occurred_at: datetime = CLIENT_SET_AT) -> Event:
    return parsed_event("client.upserted", {"client": {
        "id": CLIENT, "first_name": "Ana", "phone": "+14155550123", "email": "ana@example.com",
        "timezone": zone, "locale": "en", "channels": {"sms": True, "email": True}}},
        occurred_at)


def client_record(zone: str = "America/New_York") -> ClientRecord:
    upserted = client_upserted(zone)
    return ClientRecord(client=upserted.data.client, updated_at=upserted.occurred_at)


def booking(type_: str, start: datetime, occurred_at: datetime, *,
            join_url: str | None = None, minutes: int = 30) -> Event:
    appt: dict[str, Any] = {"id": APPT, "client_id": CLIENT, "provider_id": "prov-1",
                            "start": iso(start), "end": iso(start + timedelta(minutes=minutes)),
                            "kind": "medication_management"}
    if join_url is not None:
        appt["join_url"] = join_url
    return parsed_event(type_, {"appointment": appt}, occurred_at)


def scheduled(start: datetime, occurred_at: datetime, **kw: Any) -> Event:
    return booking("appointment.scheduled", start, occurred_at, **kw)


def rescheduled(start: datetime, occurred_at: datetime, **kw: Any) -> Event:
    return booking("appointment.rescheduled", start, occurred_at, **kw)


def cancelled(occurred_at: datetime, by: str = "client") -> Event:
    return parsed_event("appointment.cancelled", {"appointment_id": APPT, "cancelled_by": by},
                        occurred_at)


def closed(type_: str, occurred_at: datetime) -> Event:
    data: dict[str, Any] = {"appointment_id": APPT}
    if type_ == "appointment.no_show":
        data["party"] = "client"
    return parsed_event(type_, data, occurred_at)


class Ledger:
    """The records the store would hold, and the State it would load from them."""

    def __init__(self, zone: str | None = "America/New_York") -> None:
        self.records: dict[str, Record] = {}
        if zone is not None:
            self.records[f"client:{CLIENT}"] = client_record(zone)

    @property
    def state(self) -> State:
        return State.from_records(dict(self.records))

    def apply(self, evt: Event, now: datetime, policy: Policy) -> Plan:
        result = plan(evt, self.state, now, policy)
        self.records.update(result.records)  # type: ignore[arg-type]
        return result


def both(kind: str, occasion: str, due: datetime, expires: datetime,
         state: str = "scheduled", channels: tuple[str, ...] = ("email", "sms")
         ) -> dict[str, Row]:
    return {f"{kind}:{APPT}:{occasion}:{ch}": (due, expires, state) for ch in channels}


def confirmation(due: datetime, start: datetime, state: str = "scheduled") -> dict[str, Row]:
    return both("appointment_confirmation", "booked", due, start, state)


def reminder(hours: int, start: datetime, due: datetime, state: str = "scheduled"
             ) -> dict[str, Row]:
    return both("appointment_reminder", f"{hours}h.{stamp(start)}", due, start, state)


def join_link(start: datetime, due: datetime, state: str = "scheduled") -> dict[str, Row]:
    return both("appointment_join_link", stamp(start), due, start + timedelta(minutes=10),
                state, channels=("sms",))


def notice(kind: str, sequence: int, due: datetime, start: datetime) -> dict[str, Row]:
    return both(kind, f"seq{sequence}", due, start)


# --- booking: what is planned, and when ---------------------------------------------------

SCHEDULED_CASES = {
    "ten days ahead: confirmation now, reminders at start-72h and start-24h": (
        "America/New_York", START, BOOKED, BOOKED, None,
        {**confirmation(BOOKED, START),
         **reminder(72, START, utc(2026, 6, 8, 14, 0)),
         **reminder(24, START, utc(2026, 6, 10, 14, 0))}),
    "47 h ahead: the 72 h reminder is skipped": (
        "America/New_York", utc(2026, 6, 3, 13, 0), BOOKED, BOOKED, None,
        {**confirmation(BOOKED, utc(2026, 6, 3, 13, 0)),
         **reminder(24, utc(2026, 6, 3, 13, 0), utc(2026, 6, 2, 13, 0))}),
    "exactly 72 h ahead: that reminder's moment is the booking itself, skipped": (
        "America/New_York", BOOKED + timedelta(hours=72), BOOKED, BOOKED, None,
        {**confirmation(BOOKED, BOOKED + timedelta(hours=72)),
         **reminder(24, BOOKED + timedelta(hours=72), BOOKED + timedelta(hours=48))}),
    "23 h ahead: no reminder at all": (
        "America/New_York", utc(2026, 6, 2, 13, 0), BOOKED, BOOKED, None,
        confirmation(BOOKED, utc(2026, 6, 2, 13, 0))),
    "video visit: join link by SMS at start-15min, expiring start+10min": (
        "America/New_York", START, BOOKED, BOOKED, JOIN_URL,
        {**confirmation(BOOKED, START),
         **reminder(72, START, utc(2026, 6, 8, 14, 0)),
         **reminder(24, START, utc(2026, 6, 10, 14, 0)),
         **join_link(START, utc(2026, 6, 11, 13, 45))}),
    "booking processed at 23:00 EDT: confirmation held to 08:00 EDT": (
        "America/New_York", START, utc(2026, 6, 2, 3, 0), utc(2026, 6, 2, 3, 0), None,
        {**confirmation(utc(2026, 6, 2, 12, 0), START),
         **reminder(72, START, utc(2026, 6, 8, 14, 0)),
         **reminder(24, START, utc(2026, 6, 10, 14, 0))}),
    "booked at 20:00 EDT, processed at 21:30 EDT: held by when it is planned": (
        "America/New_York", START, utc(2026, 6, 2, 0, 0), utc(2026, 6, 2, 1, 30), None,
        {**confirmation(utc(2026, 6, 2, 12, 0), START),
         **reminder(72, START, utc(2026, 6, 8, 14, 0)),
         **reminder(24, START, utc(2026, 6, 10, 14, 0))}),
    "08:00 EDT visit: join link 07:45 held to 08:00, still before start+10min": (
        "America/New_York", utc(2026, 6, 11, 12, 0), BOOKED, BOOKED, JOIN_URL,
        {**confirmation(BOOKED, utc(2026, 6, 11, 12, 0)),
         **reminder(72, utc(2026, 6, 11, 12, 0), utc(2026, 6, 8, 12, 0)),
         **reminder(24, utc(2026, 6, 11, 12, 0), utc(2026, 6, 10, 12, 0)),
         **join_link(utc(2026, 6, 11, 12, 0), utc(2026, 6, 11, 12, 0))}),
    "07:00 EDT visit: reminders held to 08:00, the join link would be late so expires": (
        "America/New_York", utc(2026, 6, 11, 11, 0), BOOKED, BOOKED, JOIN_URL,
        {**confirmation(BOOKED, utc(2026, 6, 11, 11, 0)),
         **reminder(72, utc(2026, 6, 11, 11, 0), utc(2026, 6, 8, 12, 0)),
         **reminder(24, utc(2026, 6, 11, 11, 0), utc(2026, 6, 10, 12, 0)),
         **join_link(utc(2026, 6, 11, 11, 0), utc(2026, 6, 11, 12, 0), "expired")}),
    "22:00 EDT visit: reminders at 22:00 wait for the next 08:00": (
        "America/New_York", utc(2026, 6, 12, 2, 0), BOOKED, BOOKED, None,
        {**confirmation(BOOKED, utc(2026, 6, 12, 2, 0)),
         **reminder(72, utc(2026, 6, 12, 2, 0), utc(2026, 6, 9, 12, 0)),
         **reminder(24, utc(2026, 6, 12, 2, 0), utc(2026, 6, 11, 12, 0))}),
    "across the 2026-11-01 fall-back: 72 h is elapsed time, 10:00 EST -> 11:00 EDT": (
        "America/New_York", utc(2026, 11, 3, 15, 0), utc(2026, 10, 20, 14, 0),
        utc(2026, 10, 20, 14, 0), None,
        {**confirmation(utc(2026, 10, 20, 14, 0), utc(2026, 11, 3, 15, 0)),
         **reminder(72, utc(2026, 11, 3, 15, 0), utc(2026, 10, 31, 15, 0)),
         **reminder(24, utc(2026, 11, 3, 15, 0), utc(2026, 11, 2, 15, 0))}),
    "across the 2026-03-08 spring-forward: 10:00 EDT visit, 72 h reminder at 09:00 EST": (
        "America/New_York", utc(2026, 3, 9, 14, 0), utc(2026, 2, 20, 15, 0),
        utc(2026, 2, 20, 15, 0), None,
        {**confirmation(utc(2026, 2, 20, 15, 0), utc(2026, 3, 9, 14, 0)),
         **reminder(72, utc(2026, 3, 9, 14, 0), utc(2026, 3, 6, 14, 0)),
         **reminder(24, utc(2026, 3, 9, 14, 0), utc(2026, 3, 8, 14, 0))}),
    "half-hour zone: booked 21:30 IST, confirmation at 08:00 IST (02:30Z)": (
        "Asia/Kolkata", utc(2026, 6, 11, 4, 30), utc(2026, 6, 1, 16, 0),
        utc(2026, 6, 1, 16, 0), JOIN_URL,
        {**confirmation(utc(2026, 6, 2, 2, 30), utc(2026, 6, 11, 4, 30)),
         **reminder(72, utc(2026, 6, 11, 4, 30), utc(2026, 6, 8, 4, 30)),
         **reminder(24, utc(2026, 6, 11, 4, 30), utc(2026, 6, 10, 4, 30)),
         **join_link(utc(2026, 6, 11, 4, 30), utc(2026, 6, 11, 4, 15))}),
    "half-hour zone: a 07:30 IST visit's reminders wait until 08:00 IST": (
        "Asia/Kolkata", utc(2026, 6, 11, 2, 0), utc(2026, 6, 1, 6, 0),
        utc(2026, 6, 1, 6, 0), None,
        {**confirmation(utc(2026, 6, 1, 6, 0), utc(2026, 6, 11, 2, 0)),
         **reminder(72, utc(2026, 6, 11, 2, 0), utc(2026, 6, 8, 2, 30)),
         **reminder(24, utc(2026, 6, 11, 2, 0), utc(2026, 6, 10, 2, 30))}),
    "worker down past both moments: only the 24 h reminder, due now": (
        "America/New_York", START, BOOKED, utc(2026, 6, 10, 18, 0), None,
        {**confirmation(utc(2026, 6, 10, 18, 0), START),
         **reminder(24, START, utc(2026, 6, 10, 18, 0))}),
    "worker down past the 72 h moment: it goes now, the 24 h one on time": (
        "America/New_York", START, BOOKED, utc(2026, 6, 9, 16, 0), None,
        {**confirmation(utc(2026, 6, 9, 16, 0), START),
         **reminder(72, START, utc(2026, 6, 9, 16, 0)),
         **reminder(24, START, utc(2026, 6, 10, 14, 0))}),
    "worker down past the start: everything planned expired, nothing sent late": (
        "America/New_York", START, BOOKED, START + timedelta(hours=1), JOIN_URL,
        {**confirmation(START + timedelta(hours=1), START, "expired"),
         **reminder(24, START, START + timedelta(hours=1), "expired"),
         **join_link(START, START + timedelta(hours=1), "expired")}),
    "worker down until just before the start: the join link still goes": (
        "America/New_York", START, BOOKED, START - timedelta(minutes=5), JOIN_URL,
        {**confirmation(START - timedelta(minutes=5), START),
         **reminder(24, START, START - timedelta(minutes=5)),
         **join_link(START, START - timedelta(minutes=5))}),
    "unknown client: no zone to hold by, so raw due times (23:00 EDT confirmation)": (
        None, utc(2026, 6, 11, 11, 0), utc(2026, 6, 2, 3, 0), utc(2026, 6, 2, 3, 0), JOIN_URL,
        {**confirmation(utc(2026, 6, 2, 3, 0), utc(2026, 6, 11, 11, 0)),
         **reminder(72, utc(2026, 6, 11, 11, 0), utc(2026, 6, 8, 11, 0)),
         **reminder(24, utc(2026, 6, 11, 11, 0), utc(2026, 6, 10, 11, 0)),
         **join_link(utc(2026, 6, 11, 11, 0), utc(2026, 6, 11, 10, 45))}),
}


@pytest.mark.parametrize(("zone", "start", "occurred_at", "now", "join_url", "expected"),
                         list(SCHEDULED_CASES.values()), ids=list(SCHEDULED_CASES))
def test_booking_plans(policy: Policy, zone: str | None, start: datetime, occurred_at: datetime,
                       now: datetime, join_url: str | None, expected: dict[str, Row]) -> None:
    ledger = Ledger(zone)
    result = plan(scheduled(start, occurred_at, join_url=join_url), ledger.state, now, policy)
    assert result.outcome == "applied"
    assert rows(result) == expected
    assert REF not in result.cancel
    assert result.records[REF] == AppointmentRecord(
        appointment=scheduled(start, occurred_at, join_url=join_url).data.appointment,
        updated_at=occurred_at, status="scheduled", sequence=0)
    for n in result.add:
        assert (n.recipient, n.recipient_id, n.entity) == ("client", CLIENT, REF)
        assert (n.reason == "") is (n.state == "scheduled"), (n.id, n.reason)


def test_a_join_link_held_past_its_expiry_says_why(policy: Policy) -> None:
    start = utc(2026, 6, 11, 11, 0)   # 07:00 EDT
    result = plan(scheduled(start, BOOKED, join_url=JOIN_URL), Ledger().state, BOOKED, policy)
    expired = [(n.id, n.reason) for n in result.add if n.state != "scheduled"]
    assert expired == [(f"appointment_join_link:{APPT}:20260611T110000Z:sms",
                        "quiet hours last past its expiry")]


@pytest.mark.parametrize(("offsets_h", "labels"), [
    ((72, 24), ["72h", "24h"]),
    ((24, 2, 1.5, 1, 0.5), ["24h", "2h", "90min", "1h", "30min"]),
])
def test_each_reminder_offset_gets_its_own_id(policy: Policy, offsets_h: tuple[float, ...],
                                              labels: list[str]) -> None:
    figures = dataclasses.replace(policy.appointments, reminder_offsets=tuple(
        timedelta(hours=h) for h in offsets_h))
    custom = dataclasses.replace(policy, appointments=figures)
    result = plan(scheduled(START, BOOKED), Ledger().state, BOOKED, custom)
    reminders = [n for n in result.add if n.kind == "appointment_reminder"]
    assert [(n.id, n.due_at) for n in reminders if n.channel == "sms"] == [
        (f"appointment_reminder:{APPT}:{label}.20260611T140000Z:sms", START - timedelta(hours=h))
        for label, h in zip(labels, offsets_h, strict=True)]


def test_booking_params(policy: Policy) -> None:
    result = plan(scheduled(START, BOOKED, join_url=JOIN_URL), Ledger().state, BOOKED, policy)
    by_id = {n.id: n for n in result.add}
    base = {"appointment_id": APPT, "provider_id": "prov-1", "start": "2026-06-11T14:00:00+00:00",
            "end": "2026-06-11T14:30:00+00:00", "kind": "medication_management",
            "join_url": JOIN_URL, "sequence": 0}
    change_by = {"change_by": "2026-06-10T14:00:00+00:00"}
    assert by_id[f"appointment_confirmation:{APPT}:booked:email"].params == {**base, **change_by}
    assert by_id[f"appointment_reminder:{APPT}:72h.20260611T140000Z:sms"].params == {
        **base, **change_by}
    assert by_id[f"appointment_reminder:{APPT}:24h.20260611T140000Z:sms"].params == base
    assert by_id[f"appointment_join_link:{APPT}:20260611T140000Z:sms"].params == base
    assert {n.channel for n in result.add if n.kind == "appointment_join_link"} == {"sms"}


def test_confirmation_inside_the_late_change_window_does_not_offer_a_free_change(
    policy: Policy,
) -> None:
    start = utc(2026, 6, 2, 13, 0)
    result = plan(scheduled(start, BOOKED), Ledger().state, BOOKED, policy)
    assert [n.kind for n in result.add] == ["appointment_confirmation"] * 2
    assert all("change_by" not in n.params for n in result.add)


def test_the_72h_reminder_shifts_its_wall_clock_hour_across_fall_back(policy: Policy) -> None:
    zone = ZoneInfo("America/New_York")
    start = utc(2026, 11, 3, 15, 0)
    result = plan(scheduled(start, utc(2026, 10, 20, 14, 0)), Ledger().state,
                  utc(2026, 10, 20, 14, 0), policy)
    local_hours = {n.id.split(":")[2].split(".")[0]: n.due_at.astimezone(zone).hour
                   for n in result.add if n.kind == "appointment_reminder"}
    assert start.astimezone(zone).hour == 10
    assert local_hours == {"72h": 11, "24h": 10}


# --- reschedule ---------------------------------------------------------------------------

MOVED_AT = utc(2026, 6, 2, 14, 0)
NEW_START = utc(2026, 6, 12, 15, 0)   # 11:00 EDT


def booked_ledger(policy: Policy, **kw: Any) -> tuple[Ledger, Plan]:
    ledger = Ledger()
    return ledger, ledger.apply(scheduled(START, BOOKED, **kw), BOOKED, policy)


def test_reschedule_cancels_the_old_plan_and_announces_the_change(policy: Policy) -> None:
    ledger, first = booked_ledger(policy)
    result = plan(rescheduled(NEW_START, MOVED_AT), ledger.state, MOVED_AT, policy)
    assert result.outcome == "applied"
    assert REF in result.cancel
    assert rows(result) == {
        **notice("appointment_updated", 1, MOVED_AT, NEW_START),
        **reminder(72, NEW_START, utc(2026, 6, 9, 15, 0)),
        **reminder(24, NEW_START, utc(2026, 6, 11, 15, 0)),
    }
    assert not set(rows(result)) & set(rows(first))
    record = result.records[REF]
    assert isinstance(record, AppointmentRecord)
    assert (record.sequence, record.status, record.updated_at, record.appointment.start) == (
        1, "scheduled", MOVED_AT, NEW_START)
    assert {n.params["sequence"] for n in result.add} == {1}


def test_a_second_reschedule_raises_the_sequence_again(policy: Policy) -> None:
    ledger, _ = booked_ledger(policy)
    ledger.apply(rescheduled(NEW_START, MOVED_AT), MOVED_AT, policy)
    later, third_start = utc(2026, 6, 3, 14, 0), utc(2026, 6, 15, 14, 0)
    result = plan(rescheduled(third_start, later), ledger.state, later, policy)
    assert REF in result.cancel
    assert rows(result) == {
        **notice("appointment_updated", 2, later, third_start),
        **reminder(72, third_start, utc(2026, 6, 12, 14, 0)),
        **reminder(24, third_start, utc(2026, 6, 14, 14, 0)),
    }
    assert result.records[REF].sequence == 2  # type: ignore[attr-defined]


def test_reschedule_with_unchanged_times_sends_no_notice_and_cancels_nothing(
    policy: Policy,
) -> None:
    ledger, first = booked_ledger(policy)
    result = plan(rescheduled(START, MOVED_AT, join_url=JOIN_URL), ledger.state, MOVED_AT,
                  policy)
    assert result.outcome == "applied"
    assert REF not in result.cancel
    assert rows(result) == {
        **reminder(72, START, utc(2026, 6, 8, 14, 0)),
        **reminder(24, START, utc(2026, 6, 10, 14, 0)),
        **join_link(START, utc(2026, 6, 11, 13, 45)),
    }
    # The reminders keep their ids (the store keeps the first); only the join link is new.
    assert set(rows(result)) - set(rows(first)) == set(join_link(START, START))
    record = result.records[REF]
    assert isinstance(record, AppointmentRecord)
    assert (record.sequence, str(record.appointment.join_url), record.updated_at) == (
        0, JOIN_URL, MOVED_AT)


def test_a_second_booking_event_with_new_times_is_an_update(policy: Policy) -> None:
    ledger, _ = booked_ledger(policy)
    result = plan(scheduled(NEW_START, MOVED_AT), ledger.state, MOVED_AT, policy)
    assert REF in result.cancel
    assert set(rows(result)) == set(notice("appointment_updated", 1, MOVED_AT, NEW_START)) | set(
        reminder(72, NEW_START, MOVED_AT)) | set(reminder(24, NEW_START, MOVED_AT))


def test_reschedule_of_an_appointment_never_seen_plans_it_as_an_update(policy: Policy) -> None:
    result = plan(rescheduled(NEW_START, MOVED_AT), Ledger().state, MOVED_AT, policy)
    assert result.outcome == "applied"
    assert REF not in result.cancel
    assert rows(result) == {
        **notice("appointment_updated", 1, MOVED_AT, NEW_START),
        **reminder(72, NEW_START, utc(2026, 6, 9, 15, 0)),
        **reminder(24, NEW_START, utc(2026, 6, 11, 15, 0)),
    }
    assert result.records[REF].sequence == 1  # type: ignore[attr-defined]


def test_rebooking_a_cancelled_appointment_raises_the_sequence(policy: Policy) -> None:
    ledger, _ = booked_ledger(policy)
    ledger.apply(cancelled(MOVED_AT), MOVED_AT, policy)
    later = utc(2026, 6, 3, 14, 0)
    result = plan(rescheduled(NEW_START, later), ledger.state, later, policy)
    assert REF in result.cancel
    assert set(rows(result)) >= set(notice("appointment_updated", 2, later, NEW_START))
    record = result.records[REF]
    assert isinstance(record, AppointmentRecord)
    assert (record.status, record.sequence) == ("scheduled", 2)


@pytest.mark.parametrize("closing", ["appointment.completed", "appointment.no_show"])
def test_reschedule_of_a_closed_appointment_is_ignored(policy: Policy, closing: str) -> None:
    ledger, _ = booked_ledger(policy)
    ledger.apply(closed(closing, START + timedelta(hours=1)), START + timedelta(hours=1), policy)
    later = START + timedelta(hours=2)
    result = plan(rescheduled(NEW_START, later), ledger.state, later, policy)
    assert (result.outcome, result.add, result.records) == ("ignored", (), {})


# --- cancel -------------------------------------------------------------------------------

def test_cancel_sends_a_cancel_notice_and_cancels_the_plan(policy: Policy) -> None:
    ledger, _ = booked_ledger(policy)
    result = plan(cancelled(MOVED_AT, by="provider"), ledger.state, MOVED_AT, policy)
    assert result.outcome == "applied"
    assert REF in result.cancel
    assert rows(result) == notice("appointment_cancelled", 1, MOVED_AT, START)
    record = result.records[REF]
    assert isinstance(record, AppointmentRecord)
    assert (record.status, record.sequence, record.cancelled_by, record.updated_at) == (
        "cancelled", 1, "provider", MOVED_AT)
    for n in result.add:
        assert n.params["sequence"] == 1
        assert "change_by" not in n.params


def test_the_cancel_notice_is_the_kind_whose_invite_is_method_cancel(policy: Policy) -> None:
    from notifier.delivery.compose import INVITE_METHODS

    ledger, _ = booked_ledger(policy)
    result = plan(cancelled(MOVED_AT), ledger.state, MOVED_AT, policy)
    assert {INVITE_METHODS[n.kind] for n in result.add} == {"CANCEL"}
    assert INVITE_METHODS["appointment_confirmation"] == "REQUEST"


def test_cancel_after_a_reschedule_uses_the_next_sequence(policy: Policy) -> None:
    ledger, _ = booked_ledger(policy)
    ledger.apply(rescheduled(NEW_START, MOVED_AT), MOVED_AT, policy)
    later = utc(2026, 6, 3, 14, 0)
    result = plan(cancelled(later), ledger.state, later, policy)
    assert rows(result) == notice("appointment_cancelled", 2, later, NEW_START)
    assert result.records[REF].sequence == 2  # type: ignore[attr-defined]


def test_cancel_at_night_is_held_until_morning(policy: Policy) -> None:
    ledger, _ = booked_ledger(policy)
    night = utc(2026, 6, 3, 2, 30)   # 22:30 EDT
    result = plan(cancelled(night), ledger.state, night, policy)
    assert rows(result) == notice("appointment_cancelled", 1, utc(2026, 6, 3, 12, 0), START)


def test_cancel_after_the_start_cancels_without_a_notice(policy: Policy) -> None:
    ledger, _ = booked_ledger(policy)
    late = START + timedelta(minutes=5)
    result = plan(cancelled(late), ledger.state, late, policy)
    assert (result.outcome, rows(result)) == ("applied", {})
    assert REF in result.cancel


#: Issue 10 item 7, the late-change window: (who cancelled, how long before the start,
#: whether the notice says a late-cancellation fee may apply). Measured from the event's
#: occurred_at.
LATE_FEE = [
    ("client", timedelta(hours=23, minutes=59), True),
    ("client", timedelta(hours=2), True),
    ("client", timedelta(minutes=10), True),
    ("client", timedelta(hours=24), False),  # the window is "less than 24 h"
    ("client", timedelta(days=3), False),
    ("provider", timedelta(hours=2), False),
    ("support", timedelta(hours=2), False),
]


@pytest.mark.parametrize(("by", "before_start", "late_fee"), LATE_FEE)
def test_a_late_cancellation_by_the_client_says_a_fee_may_apply(
        policy: Policy, by: str, before_start: timedelta, late_fee: bool) -> None:
    ledger, _ = booked_ledger(policy)
    at = START - before_start
    result = plan(cancelled(at, by=by), ledger.state, at, policy)
    assert result.add
    for n in result.add:
        assert n.kind == "appointment_cancelled"
        assert n.params.get("late_fee", False) is late_fee


def test_the_late_fee_is_judged_when_the_client_cancelled_not_when_it_was_applied(
        policy: Policy) -> None:
    ledger, _ = booked_ledger(policy)
    cancelled_at = START - timedelta(hours=25)
    applied_at = START - timedelta(hours=23)  # a worker was down for two hours
    result = plan(cancelled(cancelled_at), ledger.state, applied_at, policy)
    assert result.add and not any(n.params.get("late_fee") for n in result.add)


def test_cancel_of_an_unknown_appointment_is_recorded_and_changes_nothing(
        policy: Policy) -> None:
    result = plan(cancelled(MOVED_AT), Ledger().state, MOVED_AT, policy)
    assert (result.outcome, result.reason, result.add, result.cancel) == (
        "ignored", "unknown appointment; recorded as cancelled", (), ())
    assert result.records == {f"appointment_closed:{APPT}": ClosedAppointmentRecord(
        status="cancelled", updated_at=MOVED_AT)}


@pytest.mark.parametrize("type_", ["appointment.scheduled", "appointment.rescheduled"])
def test_a_booking_that_arrives_after_its_cancellation_is_stale(policy: Policy,
                                                                type_: str) -> None:
    records = dict(plan(cancelled(MOVED_AT), Ledger().state, MOVED_AT, policy).records)
    booking = parse_event(json.dumps({
        "id": "evt-late", "type": type_, "occurred_at": "2026-01-01T00:00:00Z",
        "data": {"appointment": {"id": APPT, "client_id": "c1", "provider_id": "p1",
                                 "start": "2026-12-01T15:00:00Z",
                                 "end": "2026-12-01T15:30:00Z",
                                 "kind": "therapy"}}}).encode())
    state = State.from_records(records)
    result = plan(booking, state, MOVED_AT, policy)
    assert (result.outcome, result.add) == ("stale", ())


@pytest.mark.parametrize("second_at", [MOVED_AT, MOVED_AT + timedelta(hours=1)])
def test_a_second_cancel_is_ignored(policy: Policy, second_at: datetime) -> None:
    ledger, _ = booked_ledger(policy)
    ledger.apply(cancelled(MOVED_AT), MOVED_AT, policy)
    result = plan(cancelled(second_at), ledger.state, second_at, policy)
    assert (result.outcome, result.add, result.cancel, result.records) == (
        "ignored", (), (), {})


# --- completed / no-show ------------------------------------------------------------------

@pytest.mark.parametrize(("closing", "status"), [
    ("appointment.completed", "completed"), ("appointment.no_show", "no_show")])
def test_a_closed_appointment_cancels_what_is_pending(policy: Policy, closing: str,
                                                      status: str) -> None:
    ledger, _ = booked_ledger(policy, join_url=JOIN_URL)
    at = START + timedelta(minutes=40)
    result = plan(closed(closing, at), ledger.state, at, policy)
    assert result.outcome == "applied"
    assert REF in result.cancel
    assert not [n for n in result.add if n.kind in REMINDER_KINDS]
    record = result.records[REF]
    assert isinstance(record, AppointmentRecord)
    assert (record.status, record.updated_at, record.sequence) == (status, at, 0)


# --- stale events -------------------------------------------------------------------------

LATEST = utc(2026, 6, 5, 12, 0)
EARLIER = LATEST - timedelta(minutes=1)

STALE_EVENTS = {
    "scheduled": lambda: scheduled(NEW_START, EARLIER),
    "rescheduled": lambda: rescheduled(NEW_START, EARLIER),
    "cancelled": lambda: cancelled(EARLIER),
    "completed": lambda: closed("appointment.completed", EARLIER),
    "no_show": lambda: closed("appointment.no_show", EARLIER),
    "client.upserted": lambda: client_upserted("Asia/Kolkata", EARLIER),
}


@pytest.mark.parametrize("make_event", list(STALE_EVENTS.values()), ids=list(STALE_EVENTS))
def test_an_event_older_than_the_record_is_stale(policy: Policy, make_event: Any) -> None:
    ledger = Ledger()
    ledger.records[f"client:{CLIENT}"] = client_record().model_copy(
        update={"updated_at": LATEST})
    ledger.apply(scheduled(START, LATEST), LATEST, policy)
    result = plan(make_event(), ledger.state, LATEST + timedelta(hours=1), policy)
    assert (result.outcome, result.add, result.cancel, result.records) == ("stale", (), (), {})


def test_a_client_upsert_at_the_same_instant_is_applied(policy: Policy) -> None:
    ledger = Ledger()
    result = plan(client_upserted("Asia/Kolkata", CLIENT_SET_AT), ledger.state, BOOKED, policy)
    assert result.outcome == "applied"
    record = result.records[f"client:{CLIENT}"]
    assert isinstance(record, ClientRecord)
    assert record.client.timezone == "Asia/Kolkata"


# --- properties ---------------------------------------------------------------------------

ZONES = ["America/New_York", "America/Los_Angeles", "America/St_Johns", "Europe/London",
         "Asia/Kolkata", "Australia/Adelaide", "Australia/Lord_Howe", "Pacific/Chatham",
         "Pacific/Kiritimati", "Pacific/Pago_Pago", "UTC"]

instants = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2028, 12, 31),
                        timezones=st.just(UTC)).map(lambda d: d.replace(microsecond=0))
leads = st.integers(min_value=60, max_value=6 * 7 * 24 * 60).map(lambda m: timedelta(minutes=m))
delays = st.one_of(st.just(timedelta(0)),
                   st.integers(min_value=1, max_value=4 * 24 * 60).map(
                       lambda m: timedelta(minutes=m)))
PROPERTY_SETTINGS = settings(max_examples=200, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(zone=st.sampled_from(ZONES), booked_at=instants, lead=leads, delay=delays,
       video=st.booleans(), follow_up=st.sampled_from(["none", "rescheduled", "cancelled"]),
       move=st.integers(min_value=-3 * 24 * 60, max_value=3 * 24 * 60), gap=delays)
def test_planned_client_messages_are_never_quiet_and_never_late(
    policy: Policy, zone: str, booked_at: datetime, lead: timedelta, delay: timedelta,
    video: bool, follow_up: str, move: int, gap: timedelta,
) -> None:
    ledger = Ledger(zone)
    start = booked_at + lead
    join_url = JOIN_URL if video else None
    now = booked_at + delay
    plans = [ledger.apply(scheduled(start, booked_at, join_url=join_url), now, policy)]
    if follow_up != "none":
        at = booked_at + gap
        now = at + delay
        if follow_up == "rescheduled":
            new_start = max(start + timedelta(minutes=move), at + timedelta(minutes=5))
            plans.append(ledger.apply(rescheduled(new_start, at, join_url=join_url), now, policy))
        else:
            plans.append(ledger.apply(cancelled(at), now, policy))
    local_zone = ZoneInfo(zone)
    for result in plans:
        assert result.outcome == "applied"
        for n in result.add:
            assert n.recipient == "client"
            if n.state == "scheduled":
                local = n.due_at.astimezone(local_zone).time()
                assert not policy.quiet_hours.contains(local), (n.id, n.due_at, local)
                assert n.due_at < n.expires_at, n.id
            else:
                assert n.state == "expired"
                assert n.due_at >= n.expires_at, n.id


@PROPERTY_SETTINGS
@given(zone=st.sampled_from(ZONES), booked_at=instants, lead=leads, delay=delays,
       replay_delay=delays, video=st.booleans(),
       kind=st.sampled_from(["appointment.scheduled", "appointment.rescheduled"]))
def test_replaying_an_event_plans_the_same_ids(
    policy: Policy, zone: str, booked_at: datetime, lead: timedelta, delay: timedelta,
    replay_delay: timedelta, video: bool, kind: str,
) -> None:
    ledger = Ledger(zone)
    evt = booking(kind, booked_at + lead, booked_at, join_url=JOIN_URL if video else None)
    now = booked_at + delay
    before = ledger.state
    first = plan(evt, before, now, policy)
    again = plan(evt, before, now, policy)
    assert again == first
    assert [n.id for n in again.add] == [n.id for n in first.add]

    # Applied, then the same event redelivered (now or later): nothing new to send.
    ledger.records.update(first.records)  # type: ignore[arg-type]
    replay = plan(evt, ledger.state, now + replay_delay, policy)
    assert replay.outcome == "applied"
    assert REF not in replay.cancel
    assert {n.id for n in replay.add} <= {n.id for n in first.add}
    assert not [n for n in replay.add
                if n.kind in ("appointment_confirmation", "appointment_updated")]
    assert replay.records[REF].sequence == first.records[REF].sequence  # type: ignore[attr-defined]


# Was the client ever told of a booking? The ledger states of the appointment's other client
# notifications (None: an entry expired) -> told, never, or wait for one being sent.
TOLD_TABLE: list[tuple[str, list[str | None], str]] = [
    ("confirmation superseded before it went out", ["cancelled", "cancelled", "cancelled"],
     "never"),
    ("confirmation held, then expired", ["expired", "expired"], "never"),
    ("confirmation failed and suppressed, reminders still planned",
     ["failed", "suppressed", "scheduled", "scheduled"], "never"),
    ("confirmation sent", ["sent", "cancelled"], "told"),
    ("confirmation sent on one channel only", ["suppressed", "sent"], "told"),
    ("a reminder sent, the confirmation not", ["cancelled", "sent", "scheduled"], "told"),
    ("sent wins over one being sent", ["sending", "sent"], "told"),
    ("a confirmation being sent right now", ["sending", "cancelled"], "wait"),
    ("a reminder being sent right now", ["cancelled", "sending"], "wait"),
    ("one entry expired: it may have gone out", [None, "cancelled"], "told"),
    ("one expired, another being sent", [None, "sending"], "told"),
    ("nothing on record (the index expired)", [], "told"),
]


@pytest.mark.parametrize(("states", "expected"), [row[1:] for row in TOLD_TABLE],
                         ids=[row[0] for row in TOLD_TABLE])
def test_whether_the_client_was_told_of_a_booking(states, expected):
    assert told_of_booking(states) == expected
    assert told_of_booking(iter(states)) == expected  # any iterable, read once
