"""Pure planning: `plan(event, state, now, policy) -> Plan`.

No Redis, no clock, no provider in here. `refs_for(event)` names the records a policy
needs, so the store can load them before planning.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from notifier.events import ClientUpsertedData, Event, ProviderUpsertedData
from notifier.policy import appointments
from notifier.policy.figures import Policy
from notifier.policy.plan import Plan, entity_ref, ignored, stale
from notifier.records import ClientRecord, ProviderRecord, State

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
    "appointment.scheduled": appointments.plan_scheduled,
    "appointment.rescheduled": appointments.plan_rescheduled,
    "appointment.cancelled": appointments.plan_cancelled,
    "appointment.completed": appointments.plan_closed,
    "appointment.no_show": appointments.plan_closed,
}


def refs_for(event: Event) -> list[str]:
    """The records to load before planning `event`, named directly by it."""
    data = event.data
    if event.type == "client.upserted":
        return [entity_ref("client", data.client.id)]
    if event.type == "provider.upserted":
        return [entity_ref("provider", data.provider.id)]
    if event.type in ("appointment.scheduled", "appointment.rescheduled"):
        appt = data.appointment
        return [entity_ref("appointment", appt.id), entity_ref("client", appt.client_id)]
    if event.type.startswith("appointment."):
        return [entity_ref("appointment", data.appointment_id)]
    return []


def plan(event: Event, state: State, now: datetime, policy: Policy) -> Plan:
    """What `event` means, given what is known and the time: notifications to add or cancel."""
    planner = PLANNERS.get(event.type)
    if planner is None:
        return ignored(f"{event.type} is accepted but not acted on yet")
    return planner(event, state, now, policy)


__all__ = ["Plan", "plan", "refs_for", "stale", "ignored"]
