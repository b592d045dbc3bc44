"""Every reason a notification is planned other than `scheduled` names its real cause.

A table over the planning-time reasons, pure: (events, now) -> {(kind, state, reason)}.
Issue 11 §4: appointments booked once they had started showed their notices `expired` with
"quiet hours last past its expiry", for clients whose local time (Madrid 09:18, London
08:18, Tokyo 17:24) was nowhere near quiet hours.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from notifier.intake.events import Event
from notifier.policy.common import QUIET_HOURS_PAST_EXPIRY
from notifier.policy.figures import Policy
from tests.kit import Ledger, client_record, iso, parsed_event, utc

CLIENT = "cl-1"
APPT = "apt-1"
JOIN_URL = "https://video.example.com/r/abc"
BOOKED_LATE = "the appointment had already started when it was booked"
PROCESSED_LATE = "the appointment had started by the time its booking was processed"
RESCHEDULED_LATE = "the appointment had already started when it was rescheduled"
REPORTED_LATE = "the visit was reported completed after the follow-up's window had closed"
COMPLETION_PROCESSED_LATE = ("the visit's completion was processed after the follow-up's "
                             "window had closed")


def appointment(type_: str, start: datetime, occurred_at: datetime,
                join_url: str | None = None) -> Event:
    appt: dict[str, Any] = {"id": APPT, "client_id": CLIENT, "provider_id": "prov-1",
                            "start": iso(start), "end": iso(start + timedelta(minutes=30)),
                            "kind": "medication_management"}
    if join_url is not None:
        appt["join_url"] = join_url
    return parsed_event(type_, {"appointment": appt}, occurred_at)


def booked(start: datetime, at: datetime, join_url: str | None = None) -> Event:
    return appointment("appointment.scheduled", start, at, join_url)


def moved(start: datetime, at: datetime) -> Event:
    return appointment("appointment.rescheduled", start, at)


def cancelled(at: datetime) -> Event:
    return parsed_event("appointment.cancelled", {"appointment_id": APPT, "cancelled_by": "client"},
                        at)


def completed(at: datetime) -> Event:
    return parsed_event("appointment.completed", {"appointment_id": APPT}, at)


def both(kind: str, state: str, reason: str) -> set[tuple[str, str, str]]:
    return {(kind, state, reason)}


#: Madrid in June is UTC+2, London in November UTC+0, Tokyo UTC+9: 09:18, 08:18 and 17:24
#: local, all outside the 21:00-08:00 quiet hours.
MADRID_START, MADRID_NOW = utc(2026, 6, 3, 7, 0), utc(2026, 6, 3, 7, 18)
LONDON_START, LONDON_NOW = utc(2026, 11, 4, 8, 0), utc(2026, 11, 4, 8, 18)
TOKYO_START, TOKYO_NOW = utc(2026, 6, 3, 8, 0), utc(2026, 6, 3, 8, 24)
#: 10:00 EDT; the client's night is 01:00-12:00 UTC.
NY_START = utc(2026, 6, 11, 14, 0)
#: 07:00 EDT the next morning, booked at 23:30 EDT: the confirmation waits for 08:00.
NY_EARLY_START, NY_LATE_EVENING = utc(2026, 6, 12, 11, 0), utc(2026, 6, 12, 3, 30)
#: 30 h before the start: the 24 h reminder still lies ahead when it is booked.
NY_BOOKED = NY_START - timedelta(hours=30)
#: The visit's follow-up is due 2026-07-09 10:00 EDT and valid until 2026-07-23 14:00 UTC.
FOLLOW_UP_EXPIRES = utc(2026, 7, 23, 14, 0)
SCHEDULED = ("scheduled", "")

#: zone, events applied first, the event planned, now -> {(kind, state, reason)} planned.
CASES: dict[str, tuple[str, list[tuple[Event, datetime]], Event, datetime,
                       set[tuple[str, str, str]]]] = {
    "Madrid 09:18: booked after its 09:00 start": (
        "Europe/Madrid", [], booked(MADRID_START, MADRID_NOW), MADRID_NOW,
        both("appointment_confirmation", "expired", BOOKED_LATE)),
    "London 08:18: booked after its 08:00 start": (
        "Europe/London", [], booked(LONDON_START, LONDON_NOW), LONDON_NOW,
        both("appointment_confirmation", "expired", BOOKED_LATE)),
    "Tokyo 17:24: booked after its 17:00 start, video": (
        "Asia/Tokyo", [], booked(TOKYO_START, TOKYO_NOW, JOIN_URL), TOKYO_NOW,
        both("appointment_confirmation", "expired", BOOKED_LATE)),
    "booked 30 h ahead, processed 5 min after the start: the join link still helps": (
        "America/New_York", [],
        booked(NY_START, NY_BOOKED, JOIN_URL), NY_START + timedelta(minutes=5),
        both("appointment_confirmation", "expired", PROCESSED_LATE)
        | both("appointment_reminder", "expired", PROCESSED_LATE)
        | both("appointment_join_link", *SCHEDULED)),
    "booked 30 h ahead, processed after the join link's grace": (
        "America/New_York", [],
        booked(NY_START, NY_BOOKED, JOIN_URL), NY_START + timedelta(minutes=10),
        both("appointment_confirmation", "expired", PROCESSED_LATE)
        | both("appointment_reminder", "expired", PROCESSED_LATE)
        | both("appointment_join_link", "expired", PROCESSED_LATE)),
    "booked at 23:30 for 07:00: quiet hours, the one real case of it": (
        "America/New_York", [], booked(NY_EARLY_START, NY_LATE_EVENING), NY_LATE_EVENING,
        both("appointment_confirmation", "expired", QUIET_HOURS_PAST_EXPIRY)),
    # Issue 13: inside quiet hours too, a visit that had started says so, not quiet hours.
    "New York 23:30, in quiet hours: booked after its 23:00 start": (
        "America/New_York", [], booked(NY_LATE_EVENING - timedelta(minutes=30),
                                       NY_LATE_EVENING), NY_LATE_EVENING,
        both("appointment_confirmation", "expired", BOOKED_LATE)),
    "New York 23:30: booked at 22:00 for 23:00, processed after the start": (
        "America/New_York", [], booked(NY_LATE_EVENING - timedelta(minutes=30),
                                       NY_LATE_EVENING - timedelta(minutes=90)),
        NY_LATE_EVENING, both("appointment_confirmation", "expired", PROCESSED_LATE)),
    "booked at 10:00 for tomorrow 10:00: everything scheduled": (
        "America/New_York", [],
        booked(NY_START, NY_START - timedelta(days=1)), NY_START - timedelta(days=1),
        both("appointment_confirmation", *SCHEDULED)),
    "rescheduled to a start already past": (
        "Europe/Madrid", [(booked(MADRID_START + timedelta(days=5), MADRID_START),
                           MADRID_START)],
        moved(MADRID_START, MADRID_NOW), MADRID_NOW,
        both("appointment_updated", "expired", RESCHEDULED_LATE)),
    "cancelled at 23:30 for 07:00: quiet hours": (
        "America/New_York", [(booked(NY_EARLY_START, NY_START - timedelta(days=3)),
                              NY_START - timedelta(days=3))],
        cancelled(NY_LATE_EVENING), NY_LATE_EVENING,
        both("appointment_cancelled", "expired", QUIET_HOURS_PAST_EXPIRY)),
    "completion reported after the follow-up's window closed": (
        "America/New_York", [(booked(NY_START, NY_START - timedelta(days=10)),
                              NY_START - timedelta(days=10))],
        completed(FOLLOW_UP_EXPIRES), FOLLOW_UP_EXPIRES + timedelta(hours=1),
        both("follow_up", "expired", REPORTED_LATE)),
    "completion reported in time, processed after the window closed": (
        "America/New_York", [(booked(NY_START, NY_START - timedelta(days=10)),
                              NY_START - timedelta(days=10))],
        completed(NY_START + timedelta(minutes=35)), FOLLOW_UP_EXPIRES,
        both("follow_up", "expired", COMPLETION_PROCESSED_LATE)),
}


@pytest.mark.parametrize(("zone", "before", "planned", "now", "expected"),
                         list(CASES.values()), ids=list(CASES))
def test_each_reason_names_the_real_cause(
    policy: Policy, zone: str, before: list[tuple[Event, datetime]], planned: Event,
    now: datetime, expected: set[tuple[str, str, str]],
) -> None:
    ledger = Ledger()
    ledger.records[f"client:{CLIENT}"] = client_record(CLIENT, zone, utc(2026, 1, 2))
    for evt, at in before:
        assert ledger.apply(evt, at, policy).outcome == "applied"
    result = ledger.plan(planned, now, policy)
    assert result.outcome == "applied"
    assert {(n.kind, n.state, n.reason) for n in result.add} == expected
    for n in result.add:
        # A reason only where it is not simply scheduled, and never the words of another.
        assert (n.state == "scheduled") is (n.reason == ""), (n.id, n.reason)


@pytest.mark.parametrize(("zone", "local"), [
    ("Europe/Madrid", "09:18"), ("Europe/London", "08:18"), ("Asia/Tokyo", "17:24"),
])
def test_the_clients_of_the_issue_were_nowhere_near_quiet_hours(
    policy: Policy, zone: str, local: str,
) -> None:
    # The table's premise, checked rather than assumed: its `now`s are those local times.
    now = {"Europe/Madrid": MADRID_NOW, "Europe/London": LONDON_NOW,
           "Asia/Tokyo": TOKYO_NOW}[zone]
    at = now.astimezone(ZoneInfo(zone)).time()
    assert f"{at:%H:%M}" == local
    assert not policy.quiet_hours.contains(at)
