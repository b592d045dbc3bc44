"""Visits: what appointments mean for the client's care cadence.

Keeps the client's `visits` record (last completed visit, upcoming appointments), plans the
"book your follow-up" nudge after a completed visit, and the no-show notices. A new or moved
booking cancels a pending follow-up nudge and visit-required notice.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from notifier.intake.events import AppointmentNoShowData, Event
from notifier.ledger.records import AppointmentRecord, State, VisitsRecord
from notifier.policy import appointments
from notifier.policy.common import at_client_local, client_zone, for_client, for_support
from notifier.policy.figures import CHANNELS, Policy
from notifier.policy.plan import Plan, PlannedNotification, entity_ref, ignored, stale

#: No-show notices are about rebooking soon; after this they are moot.
NO_SHOW_NOTICE_VALID = timedelta(days=2)


def _visits(state: State, at: datetime, now: datetime) -> VisitsRecord:
    """The client's visits record to write for an event that occurred `at`, applied `now`:
    visits that started by `now` leave `upcoming` (issue 13: past bookings stayed there
    for ever when their completion never came), so the record stays as small as the
    client's future bookings."""
    visits = state.visits or VisitsRecord(updated_at=at)
    return visits.model_copy(update={"upcoming": visits.without_started(now),
                                     "updated_at": max(visits.updated_at, at)})


def plan_booked(event: Event, state: State, now: datetime, policy: Policy) -> Plan:
    """`appointment.scheduled` / `rescheduled`: the appointment plan, plus the visits."""
    planner = (appointments.plan_scheduled if event.type == "appointment.scheduled"
               else appointments.plan_rescheduled)
    plan = planner(event, state, now, policy)
    if plan.outcome != "applied":
        return plan
    appt = event.data.appointment
    visits = _visits(state, event.occurred_at, now)
    # Added even if it has started already (booked late): the read API lists it until it
    # ends, and the next write drops it.
    visits.upcoming[appt.id] = appt.start
    # A pending follow-up nudge or visit-required notice is not cancelled here but checked
    # when it is sent (`unwanted_because`): if this booking is cancelled meanwhile, it goes.
    return Plan(outcome=plan.outcome, reason=plan.reason, add=plan.add, cancel=plan.cancel,
                records={**plan.records, entity_ref("visits", appt.client_id): visits})


def unwanted_because(kind: str, visits: VisitsRecord | None, now: datetime,
                     expires_at: datetime) -> str:
    """Why a visit nudge is no longer wanted when it is due to go out, or "" if it is."""
    if visits is None:
        return ""
    if kind == "follow_up" and visits.has_visit_after(now):
        return "a later visit is booked"
    if kind == "visit_required" and visits.has_visit_between(now, expires_at):
        return "a visit is booked"
    return ""


def plan_cancelled(event: Event, state: State, now: datetime, policy: Policy) -> Plan:
    plan = appointments.plan_cancelled(event, state, now, policy)
    if plan.outcome != "applied" or state.appointment is None:
        return plan
    return _without_upcoming(plan, state.appointment, state, event.occurred_at, now)


def _without_upcoming(plan: Plan, record: AppointmentRecord, state: State,
                      at: datetime, now: datetime, **changes: object) -> Plan:
    visits = _visits(state, at, now)
    visits.upcoming.pop(record.appointment.id, None)
    visits = visits.model_copy(update=changes) if changes else visits
    return Plan(outcome=plan.outcome, reason=plan.reason, add=plan.add, cancel=plan.cancel,
                records={**plan.records,
                         entity_ref("visits", record.appointment.client_id): visits})


def _closing(event: Event, state: State, status: str) -> Plan | AppointmentRecord:
    existing = state.appointment
    if existing is None:
        return appointments.closed_unknown(event, event.data.appointment_id, status)
    if existing.is_newer_than(event.occurred_at):
        return stale()
    if existing.status == status:
        return ignored(f"appointment already {status}")
    return existing


def plan_completed(event: Event, state: State, now: datetime, policy: Policy) -> Plan:
    existing = _closing(event, state, "completed")
    if isinstance(existing, Plan):
        return existing
    appt = existing.appointment
    ref = entity_ref("appointment", appt.id)
    record = existing.model_copy(update={"status": "completed",
                                         "updated_at": event.occurred_at})
    visit_day = appt.start.astimezone(client_zone(state, policy)).date()
    previous = state.visits.last_completed_on if state.visits else None
    add: list[PlannedNotification] = []
    upcoming = {k: v for k, v in (state.visits.upcoming if state.visits else {}).items()
                if k != appt.id}
    if not any(start > appt.start for start in upcoming.values()):
        due = at_client_local(visit_day + policy.follow_up_after, policy.follow_up_local_time,
                              state, policy)
        expires = due + policy.follow_up_valid
        # A completion reported (or processed) so long after the visit that the nudge's
        # window has closed: planned `expired`, saying which of the two it was.
        late = ("the visit was reported completed after the follow-up's window had closed"
                if event.occurred_at >= expires else
                "the visit's completion was processed after the follow-up's window had closed")
        # Named after the visit (`follow_up:{appointment}:completed:{channel}`), not the
        # client: a notification's shard is its entity's (`notifier.ledger.shards`), and
        # this plan's transaction is in the appointment's shard (docs/cluster.md).
        add = [for_client(kind="follow_up", entity=entity_ref("followup", appt.id),
                          occasion="completed", channel=channel, client_id=appt.client_id,
                          due_at=max(due, now), expires_at=expires, state=state,
                          policy=policy, params={"provider_id": appt.provider_id},
                          too_late=late)
               for channel in CHANNELS]
    plan = Plan(outcome="applied", add=tuple(add), cancel=(ref,), records={ref: record})
    return _without_upcoming(plan, existing, state, event.occurred_at, now,
                             last_completed_on=max(filter(None, (previous, visit_day))))


def plan_no_show(event: Event, state: State, now: datetime, policy: Policy) -> Plan:
    data: AppointmentNoShowData = event.data
    existing = _closing(event, state, "no_show")
    if isinstance(existing, Plan):
        return existing
    appt = existing.appointment
    ref = entity_ref("appointment", appt.id)
    record = existing.model_copy(update={"status": "no_show", "updated_at": event.occurred_at})
    params = appointments.appointment_params(existing)
    expires = now + NO_SHOW_NOTICE_VALID
    add: list[PlannedNotification] = []
    if data.party == "provider":
        add += for_support(kind="provider_no_show", entity=ref, occasion="noshow",
                           due_at=now, params={**params, "client_id": appt.client_id})
        kind = "provider_no_show_client"
    else:
        kind = "missed_appointment"
    add += [for_client(kind=kind, entity=ref, occasion="noshow", channel=channel,
                       client_id=appt.client_id, due_at=now, expires_at=expires, state=state,
                       policy=policy, params=params)
            for channel in CHANNELS]
    plan = Plan(outcome="applied", add=tuple(add), cancel=(ref,), records={ref: record})
    return _without_upcoming(plan, existing, state, event.occurred_at, now)
