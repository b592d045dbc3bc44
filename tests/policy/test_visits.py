"""Visits (notifier/policy/visits.py): the client's visits record, "book your follow-up"
after a completed visit, and the no-show notices.

Pure: events are parsed from JSON as the web does, state is loaded from records the way the
store loads it (`refs_for`, then `derived_refs`), and `now` is passed in.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notifier.intake.events import Event
from notifier.ledger.records import AppointmentRecord, ClientRecord, VisitsRecord
from notifier.policy.figures import Policy
from notifier.policy.plan import Plan
from notifier.policy.visits import unwanted_because
from tests import kit
from tests.kit import iso, parsed_event, utc

CLIENT = "cl-1"
PROVIDER = "prov-1"
APPT = "apt-1"
LATER_APPT = "apt-2"
REF = f"appointment:{APPT}"
VISITS_REF = f"visits:{CLIENT}"
FOLLOWUP = f"followup:{APPT}"
CLIENT_SET_AT = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)



def scheduled(start: datetime, occurred_at: datetime, appt_id: str = APPT) -> Event:
    return parsed_event("appointment.scheduled", {"appointment": {
        "id": appt_id, "client_id": CLIENT, "provider_id": PROVIDER, "start": iso(start),
        "end": iso(start + timedelta(minutes=30)), "kind": "medication_management"}},
        occurred_at)


def completed(occurred_at: datetime, appt_id: str = APPT) -> Event:
    return parsed_event("appointment.completed", {"appointment_id": appt_id}, occurred_at)


def no_show(party: str, occurred_at: datetime) -> Event:
    return parsed_event("appointment.no_show", {"appointment_id": APPT, "party": party},
                        occurred_at)


def client_record(zone: str) -> ClientRecord:
    return kit.client_record(CLIENT, zone, CLIENT_SET_AT)


class Ledger(kit.Ledger):
    """The records this module's cases start from."""

    def __init__(self, zone: str | None = "America/New_York") -> None:
        super().__init__()
        if zone is not None:
            self.records[f"client:{CLIENT}"] = client_record(zone)

    @property
    def visits(self) -> VisitsRecord:
        record = self.records[VISITS_REF]
        assert isinstance(record, VisitsRecord)
        return record


Row = tuple[str, str, str, datetime, datetime, str]


def rows(result: Plan) -> dict[str, Row]:
    """id -> (recipient, recipient_id, entity, due_at, expires_at, state)."""
    assert len({n.id for n in result.add}) == len(result.add), "duplicate ids in one plan"
    return {n.id: (n.recipient, n.recipient_id, n.entity, n.due_at, n.expires_at, n.state)
            for n in result.add}


#: Thursday 2026-06-11 10:00 EDT, booked ten days ahead.
BOOKED = utc(2026, 6, 1, 14, 0)
START = utc(2026, 6, 11, 14, 0)
DONE_AT = START + timedelta(minutes=35)


def booked(policy: Policy, zone: str | None = "America/New_York",
           start: datetime = START) -> Ledger:
    ledger = Ledger(zone)
    at = min(BOOKED, start - timedelta(days=10))
    ledger.apply(scheduled(start, at), at, policy)
    return ledger


def follow_up(due: datetime, expires: datetime, occasion: str = APPT,
              state: str = "scheduled") -> dict[str, Row]:
    """The follow-up nudge after appointment `occasion`'s completion: named after the
    appointment, in its shard (docs/cluster.md)."""
    return {f"follow_up:{occasion}:completed:{channel}": (
        "client", CLIENT, f"followup:{occasion}", due, expires, state)
        for channel in ("sms", "email")}


# --- booking ------------------------------------------------------------------------------

def test_a_booking_records_the_upcoming_visit(policy: Policy) -> None:
    result = Ledger().plan(scheduled(START, BOOKED), BOOKED, policy)
    assert result.outcome == "applied"
    assert result.records[VISITS_REF] == VisitsRecord(updated_at=BOOKED, upcoming={APPT: START})
    # Pending nudges are checked when sent, not cancelled here (see unwanted_because).
    assert result.cancel == ()
    assert {n.kind for n in result.add} == {"appointment_confirmation", "appointment_reminder"}


def test_a_booking_keeps_what_is_known_of_earlier_visits(policy: Policy) -> None:
    ledger = Ledger()
    ledger.records[VISITS_REF] = VisitsRecord(updated_at=CLIENT_SET_AT,
                                              last_completed_on=date(2026, 5, 1),
                                              upcoming={"apt-0": utc(2026, 6, 5, 14, 0)})
    result = ledger.plan(scheduled(START, BOOKED), BOOKED, policy)
    assert result.records[VISITS_REF] == VisitsRecord(
        updated_at=BOOKED, last_completed_on=date(2026, 5, 1),
        upcoming={"apt-0": utc(2026, 6, 5, 14, 0), APPT: START})


def test_a_reschedule_moves_the_upcoming_visit(policy: Policy) -> None:
    ledger = booked(policy)
    moved_at, new_start = utc(2026, 6, 2, 14, 0), utc(2026, 6, 12, 15, 0)
    result = ledger.plan(parsed_event("appointment.rescheduled", {"appointment": {
        "id": APPT, "client_id": CLIENT, "provider_id": PROVIDER, "start": iso(new_start),
        "end": iso(new_start + timedelta(minutes=30)), "kind": "medication_management"}},
        moved_at), moved_at, policy)
    assert result.records[VISITS_REF] == VisitsRecord(updated_at=moved_at,
                                                      upcoming={APPT: new_start})
    assert result.cancel == (REF,)


def test_a_cancelled_appointment_leaves_the_upcoming_visits(policy: Policy) -> None:
    ledger = booked(policy)
    at = utc(2026, 6, 2, 14, 0)
    result = ledger.plan(parsed_event("appointment.cancelled", {
        "appointment_id": APPT, "cancelled_by": "client"}, at), at, policy)
    assert result.records[VISITS_REF] == VisitsRecord(updated_at=at, upcoming={})


# --- completed: "book your follow-up" -----------------------------------------------------

COMPLETED_CASES = {
    "10:00 EDT visit: 07-09 10:00 EDT, expiring 14 days later": (
        "America/New_York", START, DONE_AT,
        follow_up(utc(2026, 7, 9, 14, 0), utc(2026, 7, 23, 14, 0)), date(2026, 6, 11)),
    "22:00 EDT visit is still 06-11 locally (06-12 in UTC)": (
        "America/New_York", utc(2026, 6, 12, 2, 0), utc(2026, 6, 12, 2, 40),
        follow_up(utc(2026, 7, 9, 14, 0), utc(2026, 7, 23, 14, 0)), date(2026, 6, 11)),
    "the same instant in Kolkata is 06-12 07:30 IST": (
        "Asia/Kolkata", utc(2026, 6, 12, 2, 0), utc(2026, 6, 12, 2, 40),
        follow_up(utc(2026, 7, 10, 4, 30), utc(2026, 7, 24, 4, 30)), date(2026, 6, 12)),
    "visit in EDT, follow-up after the fall-back: 10:00 EST": (
        "America/New_York", utc(2026, 10, 15, 14, 0), utc(2026, 10, 15, 14, 40),
        follow_up(utc(2026, 11, 12, 15, 0), utc(2026, 11, 26, 15, 0)), date(2026, 10, 15)),
    "visit in EST, follow-up after the spring-forward: 10:00 EDT": (
        "America/New_York", utc(2026, 2, 20, 15, 0), utc(2026, 2, 20, 15, 40),
        follow_up(utc(2026, 3, 20, 14, 0), utc(2026, 4, 3, 14, 0)), date(2026, 2, 20)),
    "unknown client: the practice zone (New York)": (
        None, START, DONE_AT,
        follow_up(utc(2026, 7, 9, 14, 0), utc(2026, 7, 23, 14, 0)), date(2026, 6, 11)),
}


@pytest.mark.parametrize(("zone", "start", "done_at", "expected", "visit_day"),
                         list(COMPLETED_CASES.values()), ids=list(COMPLETED_CASES))
def test_completed_plans_the_follow_up(policy: Policy, zone: str | None, start: datetime,
                                       done_at: datetime, expected: dict[str, Row],
                                       visit_day: date) -> None:
    ledger = booked(policy, zone, start)
    result = ledger.plan(completed(done_at), done_at, policy)
    assert result.outcome == "applied"
    assert rows(result) == expected
    assert {tuple(n.params.items()) for n in result.add} == {(("provider_id", PROVIDER),)}
    assert result.cancel == (REF,)
    assert result.records[VISITS_REF] == VisitsRecord(updated_at=done_at,
                                                      last_completed_on=visit_day, upcoming={})
    record = result.records[REF]
    assert isinstance(record, AppointmentRecord)
    assert (record.status, record.updated_at) == ("completed", done_at)


def test_completed_reported_late_sends_the_follow_up_at_once(policy: Policy) -> None:
    now = utc(2026, 7, 10, 15, 0)
    result = booked(policy).plan(completed(DONE_AT), now, policy)
    assert rows(result) == follow_up(now, utc(2026, 7, 23, 14, 0))


def test_completed_reported_after_the_follow_up_expired_plans_it_expired(
    policy: Policy,
) -> None:
    now = utc(2026, 7, 24, 15, 0)
    result = booked(policy).plan(completed(DONE_AT), now, policy)
    assert rows(result) == follow_up(now, utc(2026, 7, 23, 14, 0), state="expired")


def test_no_follow_up_when_a_later_appointment_is_booked(policy: Policy) -> None:
    ledger = booked(policy)
    later = utc(2026, 7, 16, 14, 0)
    ledger.apply(scheduled(later, utc(2026, 6, 5, 14, 0), LATER_APPT), utc(2026, 6, 5, 14, 0),
                 policy)
    result = ledger.plan(completed(DONE_AT), DONE_AT, policy)
    assert result.outcome == "applied"
    assert result.add == ()
    assert result.records[VISITS_REF] == VisitsRecord(
        updated_at=DONE_AT, last_completed_on=date(2026, 6, 11), upcoming={LATER_APPT: later})


def test_an_earlier_appointment_still_listed_does_not_stop_the_follow_up(
    policy: Policy,
) -> None:
    ledger = booked(policy)
    earlier = utc(2026, 5, 20, 14, 0)
    ledger.records[VISITS_REF] = ledger.visits.model_copy(
        update={"upcoming": {**ledger.visits.upcoming, "apt-0": earlier}})
    result = ledger.plan(completed(DONE_AT), DONE_AT, policy)
    assert {n.kind for n in result.add} == {"follow_up"}
    # ... and, having started, it leaves the record with this write (issue 13).
    assert result.records[VISITS_REF].upcoming == {}  # type: ignore[attr-defined]


# --- past bookings leave `upcoming` (issue 13) --------------------------------------------

#: (visit start, now, kept): a visit stays upcoming while it starts strictly after `now`.
#: New York's fall-back, 2026-11-01: 01:30 local happens twice, 05:30 then 06:30 UTC. As
#: stored (from JSON with an offset) and compared (with `now` in UTC), in UTC: Python
#: compares two datetimes of one zone by wall clock, fold ignored.
NY = ZoneInfo("America/New_York")
STARTED_CASES = {
    "a second before its start: kept": (utc(2026, 6, 11, 14, 0), utc(2026, 6, 11, 13, 59, 59),
                                       True),
    "at its start: gone": (utc(2026, 6, 11, 14, 0), utc(2026, 6, 11, 14, 0), False),
    "a month after, its completion never came: gone": (utc(2026, 6, 11, 14, 0),
                                                       utc(2026, 7, 11, 14, 0), False),
    "the second 01:30 EST, at the first 01:30 EDT: kept": (
        datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=NY).astimezone(UTC),
        datetime(2026, 11, 1, 1, 30, fold=0, tzinfo=NY).astimezone(UTC), True),
    "the first 01:30 EDT, at the second 01:30 EST: gone": (
        datetime(2026, 11, 1, 1, 30, fold=0, tzinfo=NY).astimezone(UTC),
        datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=NY).astimezone(UTC), False),
}


@pytest.mark.parametrize(("start", "now", "kept"), list(STARTED_CASES.values()),
                         ids=list(STARTED_CASES))
def test_a_started_visit_leaves_upcoming_when_the_record_is_next_written(
        policy: Policy, start: datetime, now: datetime, kept: bool) -> None:
    ledger = Ledger()
    ledger.records[VISITS_REF] = VisitsRecord(updated_at=CLIENT_SET_AT,
                                              upcoming={"apt-0": start})
    # Any write of the record will do: here a booking of another visit, far ahead.
    far = utc(2027, 3, 1, 15, 0)
    result = ledger.plan(scheduled(far, CLIENT_SET_AT), now, policy)
    expected = {"apt-0": start, APPT: far} if kept else {APPT: far}
    assert result.records[VISITS_REF].upcoming == expected  # type: ignore[attr-defined]
    # Read before any write: a started visit never counts as upcoming.
    visits = VisitsRecord(updated_at=CLIENT_SET_AT, upcoming={"apt-0": start})
    assert visits.has_visit_after(now) is kept
    assert visits.has_visit_between(now, now + timedelta(days=400)) is kept
    assert ("apt-0" in visits.without_started(now)) is kept


def test_a_visit_booked_after_its_start_is_recorded_until_the_next_write(
        policy: Policy) -> None:
    # The read API lists a visit until it ends; the next write of the record drops it.
    late = START + timedelta(minutes=5)
    ledger = Ledger()
    result = ledger.apply(scheduled(START, late), late, policy)
    assert result.records[VISITS_REF].upcoming == {APPT: START}  # type: ignore[attr-defined]
    far = utc(2027, 3, 1, 15, 0)
    result = ledger.plan(scheduled(far, late, LATER_APPT), late, policy)
    assert result.records[VISITS_REF].upcoming == {LATER_APPT: far}  # type: ignore[attr-defined]


@given(starts=st.lists(st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2028, 1, 1),
                                    timezones=st.just(UTC)), max_size=8),
       now=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2028, 1, 1),
                        timezones=st.just(UTC)))
def test_a_write_keeps_exactly_the_visits_not_yet_started(starts: list[datetime],
                                                          now: datetime) -> None:
    visits = VisitsRecord(updated_at=CLIENT_SET_AT,
                          upcoming={f"a{i}": s for i, s in enumerate(starts)})
    kept = visits.without_started(now)
    assert all(s > now for s in kept.values())
    assert {k for k, s in visits.upcoming.items() if s > now} == set(kept)
    # What was dropped was never counted as upcoming anyway.
    assert visits.has_visit_after(now) == bool(kept)


def test_a_later_booking_makes_the_pending_follow_up_unwanted_when_it_is_due(
        policy: Policy) -> None:
    ledger = booked(policy)
    done = ledger.apply(completed(DONE_AT), DONE_AT, policy)
    assert {n.entity for n in done.add} == {FOLLOWUP}
    due = done.add[0].due_at
    at = utc(2026, 6, 20, 14, 0)
    later = utc(2026, 7, 16, 14, 0)
    ledger.apply(scheduled(later, at, LATER_APPT), at, policy)
    visits = ledger.records[VISITS_REF]
    assert isinstance(visits, VisitsRecord)
    assert unwanted_because("follow_up", visits, due, due + timedelta(days=14)) == (
        "a later visit is booked")
    # Cancel that booking and the nudge is wanted again.
    ledger.apply(parsed_event("appointment.cancelled", {"appointment_id": LATER_APPT,
                                                        "cancelled_by": "client"},
                              at + timedelta(hours=1)), at, policy)
    visits = ledger.records[VISITS_REF]
    assert isinstance(visits, VisitsRecord)
    assert unwanted_because("follow_up", visits, due, due + timedelta(days=14)) == ""


def test_a_visit_required_notice_is_unwanted_only_while_a_visit_is_booked_in_time() -> None:
    now = utc(2026, 6, 1, 14, 0)
    expires = utc(2026, 6, 10, 4, 0)
    in_time = VisitsRecord(updated_at=now, upcoming={"a": utc(2026, 6, 5, 14, 0)})
    too_late = VisitsRecord(updated_at=now, upcoming={"a": utc(2026, 6, 20, 14, 0)})
    assert unwanted_because("visit_required", in_time, now, expires) == "a visit is booked"
    assert unwanted_because("visit_required", too_late, now, expires) == ""
    assert unwanted_because("visit_required", None, now, expires) == ""
    assert unwanted_because("refill_due", in_time, now, expires) == ""


def test_last_completed_on_never_goes_backwards(policy: Policy) -> None:
    ledger = booked(policy)
    ledger.records[VISITS_REF] = ledger.visits.model_copy(
        update={"last_completed_on": date(2026, 6, 30)})
    result = ledger.plan(completed(DONE_AT), DONE_AT, policy)
    assert result.records[VISITS_REF].last_completed_on == date(  # type: ignore[attr-defined]
        2026, 6, 30)


# --- no-shows -----------------------------------------------------------------------------

NO_SHOW_AT = START + timedelta(minutes=20)


def appointment_params() -> dict[str, Any]:
    return {"appointment_id": APPT, "provider_id": PROVIDER,
            "start": "2026-06-11T14:00:00+00:00", "end": "2026-06-11T14:30:00+00:00",
            "kind": "medication_management", "join_url": None, "sequence": 0}


def test_a_provider_no_show_alerts_support_and_tells_the_client(policy: Policy) -> None:
    result = booked(policy).plan(no_show("provider", NO_SHOW_AT), NO_SHOW_AT, policy)
    assert result.outcome == "applied"
    support_expires = NO_SHOW_AT + timedelta(days=7)
    client_expires = NO_SHOW_AT + timedelta(days=2)
    assert rows(result) == {
        f"provider_no_show:{APPT}:noshow:email": (
            "support", "support", REF, NO_SHOW_AT, support_expires, "scheduled"),
        f"provider_no_show:{APPT}:noshow:sms": (
            "support", "support", REF, NO_SHOW_AT, support_expires, "scheduled"),
        f"provider_no_show_client:{APPT}:noshow:sms": (
            "client", CLIENT, REF, NO_SHOW_AT, client_expires, "scheduled"),
        f"provider_no_show_client:{APPT}:noshow:email": (
            "client", CLIENT, REF, NO_SHOW_AT, client_expires, "scheduled"),
    }
    for n in result.add:
        expected = {**appointment_params(), "client_id": CLIENT} if n.recipient == "support" \
            else appointment_params()
        assert n.params == expected
    assert result.cancel == (REF,)
    record = result.records[REF]
    assert isinstance(record, AppointmentRecord)
    assert (record.status, record.updated_at) == ("no_show", NO_SHOW_AT)
    assert result.records[VISITS_REF] == VisitsRecord(updated_at=NO_SHOW_AT, upcoming={})


def test_a_client_no_show_tells_the_client_only(policy: Policy) -> None:
    result = booked(policy).plan(no_show("client", NO_SHOW_AT), NO_SHOW_AT, policy)
    expires = NO_SHOW_AT + timedelta(days=2)
    assert rows(result) == {
        f"missed_appointment:{APPT}:noshow:{channel}": (
            "client", CLIENT, REF, NO_SHOW_AT, expires, "scheduled")
        for channel in ("sms", "email")}
    assert {n.params["appointment_id"] for n in result.add} == {APPT}
    assert result.cancel == (REF,)
    assert result.records[REF].status == "no_show"  # type: ignore[attr-defined]


def test_a_no_show_at_night_holds_the_client_notice_but_not_support(policy: Policy) -> None:
    start = utc(2026, 6, 12, 1, 0)      # 21:00 EDT
    at = start + timedelta(minutes=20)
    result = booked(policy, start=start).plan(no_show("provider", at), at, policy)
    assert {n.id: n.due_at for n in result.add} == {
        f"provider_no_show:{APPT}:noshow:email": at,
        f"provider_no_show:{APPT}:noshow:sms": at,
        f"provider_no_show_client:{APPT}:noshow:sms": utc(2026, 6, 12, 12, 0),
        f"provider_no_show_client:{APPT}:noshow:email": utc(2026, 6, 12, 12, 0),
    }


# --- unknown, repeated and stale events ---------------------------------------------------

@pytest.mark.parametrize("make_event", [
    lambda at: completed(at), lambda at: no_show("provider", at),
    lambda at: no_show("client", at)], ids=["completed", "provider no-show", "client no-show"])
def test_an_unknown_appointment_is_recorded_closed(policy: Policy, make_event: Any) -> None:
    evt = make_event(DONE_AT)
    result = Ledger().plan(evt, DONE_AT, policy)
    status = "completed" if evt.type == "appointment.completed" else "no_show"
    assert (result.outcome, result.reason, result.add, result.cancel) == (
        "ignored", f"unknown appointment; recorded as {status}", (), ())
    assert list(result.records) == [f"appointment_closed:{APPT}"]


@pytest.mark.parametrize("make_event", [
    lambda at: completed(at), lambda at: no_show("provider", at),
    lambda at: no_show("client", at)], ids=["completed", "provider no-show", "client no-show"])
def test_an_event_older_than_the_appointment_record_is_stale(policy: Policy,
                                                             make_event: Any) -> None:
    ledger = booked(policy)
    result = ledger.plan(make_event(BOOKED - timedelta(minutes=1)), DONE_AT, policy)
    assert (result.outcome, result.add, result.cancel, result.records) == ("stale", (), (), {})


def test_a_second_completed_is_ignored(policy: Policy) -> None:
    ledger = booked(policy)
    ledger.apply(completed(DONE_AT), DONE_AT, policy)
    later = DONE_AT + timedelta(hours=1)
    result = ledger.plan(completed(later), later, policy)
    assert (result.outcome, result.reason, result.add, result.records) == (
        "ignored", "appointment already completed", (), {})
