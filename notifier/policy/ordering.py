"""Event order: which entity an event is about, and whether a close must wait for its open.

Events about one entity (its *subject*: an appointment, prescription, refill request,
message, client or provider) are applied one at a time, in `occurred_at` order; the store
keeps a queue per subject and gives one worker at a time the subject's *turn*. Events
about different subjects run in parallel.

A closing event for a subject never seen (a `refill.sent` before its `refill.requested`,
a completion before its booking) is *held* instead of applied: when the opening arrives,
the held events go back into the subject's queue and are applied after it, in order, so
the pair plans everything it implies. If no opening comes within `Policy.opening_wait`
(24 h by default, `[events] opening_wait_h`), the close is applied as it is: recorded as
closed, so a later opening is stale.

Pure: no Redis, no clock.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from notifier.intake.events import Event
from notifier.ledger.records import State
from notifier.policy import requests
from notifier.policy.plan import Plan, entity_ref

#: Events that close a subject; each waits for the subject's opening if it was never seen.
CLOSING = frozenset({
    "appointment.cancelled", "appointment.completed", "appointment.no_show",
    "prescription.discontinued", "refill.sent", "refill.denied", "message.answered",
})


def subject_ref(event: Event) -> str:
    """The entity `event` is about, named as records are (`appointment:apt-1`): the unit
    of ordering."""
    data, kind = event.data, event.type
    if kind == "client.upserted":
        return entity_ref("client", data.client.id)
    if kind == "provider.upserted":
        return entity_ref("provider", data.provider.id)
    if kind in ("appointment.scheduled", "appointment.rescheduled"):
        return entity_ref("appointment", data.appointment.id)
    if kind.startswith("appointment."):
        return entity_ref("appointment", data.appointment_id)
    if kind == "prescription.filled":
        return entity_ref("prescription", data.prescription.id)
    if kind == "prescription.discontinued":
        return entity_ref("prescription", data.prescription_id)
    return requests.item_ref(event)


def _seen(event: Event, state: State) -> bool:
    """Whether anything about the event's subject was applied before (a tombstone counts)."""
    if event.type.startswith("appointment."):
        return state.appointment is not None or state.appointment_closed is not None
    if event.type.startswith("prescription."):
        return state.prescription is not None or state.prescription_closed is not None
    return state.item is not None


def wait_for_opening(event: Event, state: State, arrived_at: datetime, now: datetime,
                     wait: timedelta) -> Plan | None:
    """A `held` plan while a close for an unseen subject may still see its opening arrive
    (until `arrived_at + wait`); None when the event is to be planned as usual."""
    if event.type not in CLOSING or _seen(event, state):
        return None
    until = arrived_at + wait
    if now >= until:
        return None
    return Plan(outcome="held", held_until=until,
                reason=f"waiting for the opening event of {subject_ref(event)}")
