"""Pure planning: `plan(event, state, now, policy) -> Plan`.

No Redis, no clock, no provider in here. `refs_for(event)` names the records a policy
needs; `derived_refs(records)` the ones found through them (an appointment's client), so
the store can load both before planning.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from notifier.intake.events import ClientUpsertedData, Event, ProviderUpsertedData
from notifier.ledger.records import (
    AppointmentRecord,
    ClientRecord,
    OpenItemRecord,
    PrescriptionRecord,
    ProviderRecord,
    Record,
    State,
)
from notifier.policy import refills, requests, visits
from notifier.policy.figures import Policy
from notifier.policy.plan import Plan, entity_ref, ignored, stale

Planner = Callable[[Event, State, datetime, Policy], Plan]


def _client_upserted(event: Event, state: State, now: datetime, policy: Policy) -> Plan:
    data: ClientUpsertedData = event.data
    if state.client is not None and state.client.is_newer_than(event.occurred_at):
        return stale()
    record = ClientRecord(client=data.client, updated_at=event.occurred_at)
    return Plan(outcome="applied", records={entity_ref("client", data.client.id): record})


def _provider_upserted(event: Event, state: State, now: datetime, policy: Policy) -> Plan:
    data: ProviderUpsertedData = event.data
    if state.provider is not None and state.provider.is_newer_than(event.occurred_at):
        return stale()
    record = ProviderRecord(provider=data.provider, updated_at=event.occurred_at)
    return Plan(outcome="applied", records={entity_ref("provider", data.provider.id): record})


PLANNERS: dict[str, Planner] = {
    "client.upserted": _client_upserted,
    "provider.upserted": _provider_upserted,
    "appointment.scheduled": visits.plan_booked,
    "appointment.rescheduled": visits.plan_booked,
    "appointment.cancelled": visits.plan_cancelled,
    "appointment.completed": visits.plan_completed,
    "appointment.no_show": visits.plan_no_show,
    "prescription.filled": refills.plan_filled,
    "prescription.discontinued": refills.plan_discontinued,
    "refill.requested": requests.plan_opened,
    "message.received": requests.plan_opened,
    "refill.sent": requests.plan_closed,
    "refill.denied": requests.plan_closed,
    "message.answered": requests.plan_closed,
}


def _client_refs(client_id: str) -> list[str]:
    return [entity_ref("client", client_id), entity_ref("visits", client_id)]


def refs_for(event: Event) -> list[str]:
    """The records to load before planning `event`, named directly by it."""
    data, kind = event.data, event.type
    if kind == "client.upserted":
        return [entity_ref("client", data.client.id)]
    if kind == "provider.upserted":
        return [entity_ref("provider", data.provider.id)]
    if kind in ("appointment.scheduled", "appointment.rescheduled"):
        appt = data.appointment
        return [entity_ref("appointment", appt.id), entity_ref("appointment_closed", appt.id),
                *_client_refs(appt.client_id)]
    if kind.startswith("appointment."):
        # The tombstone too: a close for an appointment already closed unseen is not held.
        return [entity_ref("appointment", data.appointment_id),
                entity_ref("appointment_closed", data.appointment_id)]
    if kind == "prescription.filled":
        rx = data.prescription
        return [entity_ref("prescription", rx.id), entity_ref("prescription_closed", rx.id),
                entity_ref("refill_asked", rx.id), *_client_refs(rx.client_id)]
    if kind == "prescription.discontinued":
        return [entity_ref("prescription", data.prescription_id),
                entity_ref("prescription_closed", data.prescription_id)]
    ref = requests.item_ref(event)
    if kind in requests.OPENING:
        item = getattr(data, requests.OPENING[kind][1])
        more = [entity_ref("provider", item.provider_id),
                entity_ref("provider_queue", item.provider_id), *_client_refs(item.client_id)]
        if kind == "refill.requested":
            more += [entity_ref("prescription", item.prescription_id),
                     entity_ref("refill_asked", item.prescription_id)]
        return [ref, *more]
    return [ref]


def derived_refs(records: dict[str, Record]) -> list[str]:
    """Records reached through loaded ones: an appointment's client, an item's provider."""
    refs: list[str] = []
    for record in records.values():
        if isinstance(record, AppointmentRecord):
            appt = record.appointment
            refs += [*_client_refs(appt.client_id), entity_ref("provider", appt.provider_id)]
        elif isinstance(record, PrescriptionRecord):
            refs += _client_refs(record.prescription.client_id)
        elif isinstance(record, OpenItemRecord) and record.client_id and record.provider_id:
            refs += [*_client_refs(record.client_id),
                     entity_ref("provider", record.provider_id),
                     entity_ref("provider_queue", record.provider_id)]
            if record.prescription_id:
                refs.append(entity_ref("prescription", record.prescription_id))
    return [ref for ref in dict.fromkeys(refs) if ref not in records]


def plan(event: Event, state: State, now: datetime, policy: Policy) -> Plan:
    """What `event` means, given what is known and the time: notifications to add or cancel."""
    planner = PLANNERS.get(event.type)
    if planner is None:
        return ignored(f"{event.type} is accepted but not acted on")
    return planner(event, state, now, policy)


__all__ = ["Plan", "plan", "refs_for", "derived_refs", "stale", "ignored", "State"]
