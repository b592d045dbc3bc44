"""Appointment policy: confirmations, reminders, join links, updates and cancellations.

Pure: (event, state, now, policy) -> Plan. Reminder offsets are elapsed time before the start;
quiet hours hold client messages until the morning; nothing is planned to go out after it
expires (a reminder expires at the start).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from notifier.intake.events import (
    Appointment,
    AppointmentCancelledData,
    AppointmentData,
    Event,
)
from notifier.ledger.records import AppointmentRecord, ClosedAppointmentRecord, State
from notifier.policy.common import for_client
from notifier.policy.figures import Channel, Policy
from notifier.policy.plan import Plan, PlannedNotification, entity_ref, ignored, stale


def _stamp(instant: datetime) -> str:
    """A compact UTC stamp for dedupe keys: 20261128T150000Z."""
    return instant.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def appointment_params(record: AppointmentRecord) -> dict[str, Any]:
    """What a message about this appointment shows, fixed when it is planned."""
    appt = record.appointment
    return {
        "appointment_id": appt.id,
        "provider_id": appt.provider_id,
        "start": appt.start.isoformat(),
        "end": appt.end.isoformat(),
        "kind": appt.kind,
        "join_url": str(appt.join_url) if appt.join_url else None,
        "sequence": record.sequence,
    }


def client_notification(
    *,
    kind: str,
    occasion: str,
    channel: Channel,
    record: AppointmentRecord,
    due_at: datetime,
    expires_at: datetime,
    state: State,
    policy: Policy,
    params: dict[str, Any] | None = None,
    too_late: str,
) -> PlannedNotification:
    """A notification to the appointment's client, about this appointment as it is now;
    `too_late` says why, if its moment had already passed its expiry when planned."""
    appt = record.appointment
    return for_client(kind=kind, entity=entity_ref("appointment", appt.id), occasion=occasion,
                      channel=channel, client_id=appt.client_id, due_at=due_at,
                      expires_at=expires_at, state=state, policy=policy,
                      params={**appointment_params(record), **(params or {})},
                      too_late=too_late)


#: What each event did to the appointment, as a verb and as a noun, for `why_too_late`.
_DONE = {"appointment.scheduled": ("booked", "booking"),
         "appointment.rescheduled": ("rescheduled", "reschedule"),
         "appointment.cancelled": ("cancelled", "cancellation")}


def why_too_late(appt: Appointment, event: Event) -> str:
    """Why a message about `appt` planned for `event` is already past its expiry (the start,
    or shortly after for the join link): the event itself came after the start (a booking
    entered once the visit was under way), or it came before but was applied only after
    (workers were down, or the integrator sent it late)."""
    verb, noun = _DONE.get(event.type, ("changed", "change"))
    if event.occurred_at >= appt.start:
        return f"the appointment had already started when it was {verb}"
    return f"the appointment had started by the time its {noun} was processed"


def reminders(record: AppointmentRecord, booked_at: datetime, state: State, now: datetime,
              policy: Policy, late: str) -> list[PlannedNotification]:
    """Reminders at start minus each offset, and the join link for video visits.

    A reminder whose moment passed before the booking is skipped. When several moments
    passed after the booking but before planning (a worker was down), only the last of them
    goes out, at once, rather than a burst of reminders for one appointment.
    """
    appt, figures = record.appointment, policy.appointments
    occasion = _stamp(appt.start)
    due_times = [(offset, appt.start - offset) for offset in figures.reminder_offsets]
    upcoming = [(o, due) for o, due in due_times if due > booked_at]
    overdue = [(o, due) for o, due in upcoming if due <= now]
    if overdue:
        upcoming = [(o, due) for o, due in upcoming if due > now] + [overdue[-1]]
    planned = []
    for offset, due in upcoming:
        for channel in figures.reminder_channels:
            planned.append(client_notification(
                kind="appointment_reminder", occasion=f"{_label(offset)}.{occasion}",
                channel=channel,
                record=record, due_at=max(due, now), expires_at=appt.start, state=state,
                policy=policy,
                params=_change_by(record, policy) if offset > figures.late_change_window
                else {}, too_late=late,
            ))
    if appt.join_url is not None:
        due = appt.start - figures.join_link_offset
        if due > booked_at:
            planned.append(client_notification(
                kind="appointment_join_link", occasion=occasion, channel="sms", record=record,
                due_at=max(due, now), expires_at=appt.start + figures.join_link_grace,
                state=state, policy=policy, too_late=late,
            ))
    return planned


def _label(offset: timedelta) -> str:
    """An offset in dedupe keys: `72h`, or `90min` when not whole hours (1.5 h and 1 h differ)."""
    minutes = int(offset.total_seconds() // 60)
    return f"{minutes // 60}h" if minutes % 60 == 0 else f"{minutes}min"


def _change_by(record: AppointmentRecord, policy: Policy) -> dict[str, Any]:
    """Until when a change avoids the late-cancellation fee, for messages that say so."""
    return {"change_by": (record.appointment.start
                          - policy.appointments.late_change_window).isoformat()}


def _notices(kind: str, occasion: str, channels: tuple[Channel, ...], record: AppointmentRecord,
             state: State, now: datetime, policy: Policy, late: str, *,
             late_fee: bool = False) -> list[PlannedNotification]:
    """Messages that go out at once (quiet hours permitting) and expire at the start: one
    planned once the appointment has started is `expired`, saying so (`late`)."""
    change_by = record.appointment.start - policy.appointments.late_change_window
    params: dict[str, Any] = _change_by(record, policy) \
        if change_by > now and kind != "appointment_cancelled" else {}
    if late_fee:
        params["late_fee"] = True
    return [
        client_notification(kind=kind, occasion=occasion, channel=channel, record=record,
                            due_at=now, expires_at=record.appointment.start, state=state,
                            policy=policy, params=params, too_late=late)
        for channel in channels
    ]


def late_cancellation(data: AppointmentCancelledData, existing: AppointmentRecord,
                      cancelled_at: datetime, policy: Policy) -> bool:
    """The practice's rule: a cancellation by the client within the late-change window
    (24 h) before the start may carry the late-cancellation fee, so the message says so.
    Measured from when the client cancelled (the event's occurred_at), not from when we
    applied it."""
    return (data.cancelled_by == "client"
            and existing.appointment.start - cancelled_at < policy.appointments.late_change_window)


def _same_times(a: Appointment, b: Appointment) -> bool:
    return a.start == b.start and a.end == b.end


def closed_before(event: Event, state: State) -> bool:
    """Whether this appointment was cancelled (or completed, missed) before we saw it booked,
    later than this booking event."""
    closed = state.appointment_closed
    return closed is not None and closed.is_newer_than(event.occurred_at)


def closed_unknown(event: Event, appointment_id: str, status: str) -> Plan:
    """A close for an appointment never seen: recorded, so its late booking is stale."""
    tombstone = ClosedAppointmentRecord(status=status,  # type: ignore[arg-type]
                                        updated_at=event.occurred_at)
    return Plan(outcome="ignored", reason=f"unknown appointment; recorded as {status}",
                records={entity_ref("appointment_closed", appointment_id): tombstone})


def plan_scheduled(event: Event, state: State, now: datetime, policy: Policy) -> Plan:
    data: AppointmentData = event.data
    appt, existing = data.appointment, state.appointment
    if existing is None and closed_before(event, state):
        return stale("closed before this booking arrived")
    if existing is not None:
        if existing.is_newer_than(event.occurred_at):
            return stale()
        # A second booking event for a known appointment is an update under another name.
        return plan_rescheduled(event, state, now, policy)
    record = AppointmentRecord(appointment=appt, updated_at=event.occurred_at)
    ref = entity_ref("appointment", appt.id)
    late = why_too_late(appt, event)
    add = _notices("appointment_confirmation", "booked",
                   policy.appointments.confirmation_channels, record, state, now, policy, late)
    add += reminders(record, event.occurred_at, state, now, policy, late)
    return Plan(outcome="applied", add=tuple(add), records={ref: record})


def plan_rescheduled(event: Event, state: State, now: datetime, policy: Policy) -> Plan:
    data: AppointmentData = event.data
    appt, existing = data.appointment, state.appointment
    ref = entity_ref("appointment", appt.id)
    late = why_too_late(appt, event)
    if existing is None and closed_before(event, state):
        return stale("closed before this booking arrived")
    if existing is None:
        # The booking never reached us: plan it as booked, announced as an update.
        record = AppointmentRecord(appointment=appt, updated_at=event.occurred_at, sequence=1)
        add = _notices("appointment_updated", "seq1", policy.appointments.update_channels,
                       record, state, now, policy, late)
        add += reminders(record, event.occurred_at, state, now, policy, late)
        return Plan(outcome="applied", reason="rescheduled before we saw the booking",
                    add=tuple(add), records={ref: record})
    if existing.is_newer_than(event.occurred_at):
        return stale()
    if existing.status != "scheduled" and existing.status != "cancelled":
        return ignored(f"appointment already {existing.status}")
    if existing.status == "scheduled" and _same_times(existing.appointment, appt):
        # Nothing the client sees changed (say, a new join link): keep the plan, refresh data.
        record = existing.model_copy(update={"appointment": appt,
                                             "updated_at": event.occurred_at})
        add = reminders(record, event.occurred_at, state, now, policy, late)
        return Plan(outcome="applied", reason="times unchanged", add=tuple(add),
                    records={ref: record})
    sequence = existing.sequence + 1
    record = AppointmentRecord(appointment=appt, updated_at=event.occurred_at, sequence=sequence,
                               status="scheduled")
    add = _notices("appointment_updated", f"seq{sequence}", policy.appointments.update_channels,
                   record, state, now, policy, late)
    add += reminders(record, event.occurred_at, state, now, policy, late)
    return Plan(outcome="applied", add=tuple(add), cancel=(ref,), records={ref: record})


def plan_cancelled(event: Event, state: State, now: datetime, policy: Policy) -> Plan:
    data: AppointmentCancelledData = event.data
    existing = state.appointment
    if existing is None:
        return closed_unknown(event, data.appointment_id, "cancelled")
    if existing.is_newer_than(event.occurred_at):
        return stale()
    if existing.status == "cancelled":
        return ignored("appointment already cancelled")
    ref = entity_ref("appointment", data.appointment_id)
    record = existing.model_copy(update={
        "status": "cancelled", "sequence": existing.sequence + 1,
        "cancelled_by": data.cancelled_by, "updated_at": event.occurred_at,
    })
    add: list[PlannedNotification] = []
    if existing.status == "scheduled" and existing.appointment.start > now:
        add = _notices("appointment_cancelled", f"seq{record.sequence}",
                       policy.appointments.cancellation_channels, record, state, now, policy,
                       why_too_late(existing.appointment, event),
                       late_fee=late_cancellation(data, existing, event.occurred_at, policy))
    return Plan(outcome="applied", add=tuple(add), cancel=(ref,), records={ref: record})


#: Whether a client was told of a booking: `told`, `never` or `wait` (another message
#: about it is being sent right now, and its outcome decides).
Told = Literal["told", "never", "wait"]


def told_of_booking(states: Iterable[str | None]) -> Told:
    """Whether anything about a booking ever reached its client, from the ledger states of
    every other client notification about the appointment (confirmation, updates,
    reminders, join link, on any channel; not the one deciding, nor its twin on the other
    channel). `None` is one whose ledger entry has expired.

    Told when one reached `sent` (a later delivery report does not matter); `wait` while
    one is `sending`; never told when every one is still on record and none went out.
    Finished entries expire after 90 days and the index after 180 days without a plan:
    a notification no longer on record, or no record at all, may have gone out, so the
    answer is then `told`: a needless notice beats a missing one.
    """
    seen = list(states)
    if not seen or "sent" in seen or None in seen:
        return "told"
    if "sending" in seen:
        return "wait"
    return "never"
