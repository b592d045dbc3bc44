"""Refill policy: refill-due reminders a week before run-out, the second nudge, and the
visit-required notice in their place when a visit is due first.

Run-out is a date: `filled_on + days_supply`, the first day without medication. Reminders
go out at `local_send_time` client-local and expire at the end of the run-out day.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from notifier.intake.events import (
    Event,
    Prescription,
    PrescriptionDiscontinuedData,
    PrescriptionFilledData,
)
from notifier.ledger.records import (
    ClosedPrescriptionRecord,
    PrescriptionRecord,
    State,
    VisitsRecord,
)
from notifier.policy.common import at_client_local, for_client
from notifier.policy.figures import CHANNELS, Policy
from notifier.policy.plan import Plan, PlannedNotification, entity_ref, ignored, stale


def runout_day(prescription: Prescription) -> date:
    return prescription.filled_on + timedelta(days=prescription.days_supply)


def refill_due_at(prescription: Prescription, state: State, policy: Policy) -> datetime:
    """Run-out minus `due_before_runout`, at the local send time (by default a week before,
    at 10:00 client-local: clients should ask for a refill about a week ahead)."""
    day = runout_day(prescription) - policy.refills.due_before_runout
    return at_client_local(day, policy.refills.local_send_time, state, policy)


def needs_visit(prescription: Prescription, visits: VisitsRecord | None, policy: Policy) -> bool:
    """No refills left, or the last completed visit we know of is too long before run-out.
    With no known visit only `refills_remaining` decides."""
    if prescription.refills_remaining == 0:
        return True
    if visits is None or visits.last_completed_on is None:
        return False
    return visits.last_completed_on < runout_day(prescription) - policy.refills.visit_required_after


def book_by_day(prescription: Prescription, policy: Policy) -> date:
    """Visits need 24-48 h notice, so the client must book a couple of days before run-out."""
    return runout_day(prescription) - policy.refills.book_by_before_runout


def _params(prescription: Prescription, policy: Policy, **more: Any) -> dict[str, Any]:
    return {"prescription_id": prescription.id, "provider_id": prescription.provider_id,
            "runout": runout_day(prescription).isoformat(), **more}


def visit_required_notices(*, entity: str, occasion: str, client_id: str, due_at: datetime,
                           expires_at: datetime, state: State, policy: Policy,
                           params: dict[str, Any]) -> list[PlannedNotification]:
    """The visit-required notice; suppressed when sent if a visit is booked by then."""
    return [
        for_client(kind="visit_required", entity=entity, occasion=occasion, channel=channel,
                   client_id=client_id, due_at=due_at, expires_at=expires_at, state=state,
                   policy=policy, params=params)
        for channel in CHANNELS
    ]


def _refill_reminders(rx: Prescription, occasion: str, due: datetime, expires: datetime,
                      state: State, now: datetime, policy: Policy) -> list[PlannedNotification]:
    """Refill due on both channels, then the SMS nudge if no request comes."""
    ref = entity_ref("prescription", rx.id)
    add = [for_client(kind="refill_due", entity=ref, occasion=occasion, channel=channel,
                      client_id=rx.client_id, due_at=max(due, now), expires_at=expires,
                      state=state, policy=policy, params=_params(rx, policy))
           for channel in CHANNELS]
    nudge = at_client_local(runout_day(rx) - policy.refills.second_nudge_before_runout,
                            policy.refills.local_send_time, state, policy)
    # A fill reported so late that both moments passed gets one reminder, not two.
    if nudge > now:
        add.append(for_client(kind="refill_nudge", entity=ref, occasion=occasion,
                              channel="sms", client_id=rx.client_id, due_at=nudge,
                              expires_at=expires, state=state, policy=policy,
                              params=_params(rx, policy)))
    return add


def plan_filled(event: Event, state: State, now: datetime, policy: Policy) -> Plan:
    data: PrescriptionFilledData = event.data
    rx = data.prescription
    if state.prescription is not None and state.prescription.is_newer_than(event.occurred_at):
        return stale()
    closed = state.prescription_closed
    if state.prescription is None and closed is not None and closed.is_newer_than(
            event.occurred_at):
        return stale("discontinued before this fill arrived")
    if state.prescription is not None and state.prescription.prescription == rx:
        # The same fill again (re-sent under another event id): what it planned stands, and
        # reminders a refill request cancelled must not come back.
        return ignored("this fill is already applied")
    ref = entity_ref("prescription", rx.id)
    record = PrescriptionRecord(prescription=rx, updated_at=event.occurred_at)
    runout = runout_day(rx)
    expires = at_client_local(runout + timedelta(days=1), time(0, 0), state, policy)
    if expires <= now:
        return Plan(outcome="applied", reason="run-out already passed", cancel=(ref,),
                    records={ref: record})
    asked = state.refill_asked
    if asked is not None and asked.updated_at >= event.occurred_at:
        # A refill was requested after this fill occurred, applied first: the reminders
        # it would plan are what the request cancels.
        return Plan(outcome="applied", reason="a refill was requested after this fill",
                    cancel=(ref,), records={ref: record})
    occasion = f"fill{rx.filled_on:%Y%m%d}"
    due = refill_due_at(rx, state, policy)
    visit_booked = state.visits is not None and state.visits.has_visit_between(now, expires)
    if needs_visit(rx, state.visits, policy) and visit_booked and rx.refills_remaining > 0:
        # The visit is booked and refills are left: the usual reminders, not a visit request.
        add = _refill_reminders(rx, occasion, due, expires, state, now, policy)
    elif needs_visit(rx, state.visits, policy):
        # Planned even when a visit is booked: it is checked again when sent (visits.py),
        # so a booking cancelled meanwhile does not leave the client without a warning.
        add = visit_required_notices(
            entity=ref, occasion=occasion, client_id=rx.client_id, due_at=max(due, now),
            expires_at=expires, state=state, policy=policy,
            params=_params(rx, policy, book_by=book_by_day(rx, policy).isoformat()))
    else:
        add = _refill_reminders(rx, occasion, due, expires, state, now, policy)
    # A new fill replaces whatever was pending for the previous one.
    return Plan(outcome="applied", add=tuple(add), cancel=(ref,), records={ref: record})


def plan_discontinued(event: Event, state: State, now: datetime, policy: Policy) -> Plan:
    data: PrescriptionDiscontinuedData = event.data
    existing = state.prescription
    if existing is None:
        # Waited for its fill in vain (`policy.ordering`): recorded, so a late fill is stale.
        tombstone = ClosedPrescriptionRecord(updated_at=event.occurred_at)
        return Plan(outcome="ignored", reason="unknown prescription; recorded as discontinued",
                    records={entity_ref("prescription_closed", data.prescription_id):
                             tombstone})
    if existing.is_newer_than(event.occurred_at):
        return stale()
    ref = entity_ref("prescription", data.prescription_id)
    record = existing.model_copy(update={"status": "discontinued",
                                         "updated_at": event.occurred_at})
    return Plan(outcome="applied", cancel=(ref,), records={ref: record})
