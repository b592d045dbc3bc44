"""Applying a stored event: parse, load the state its policy needs, plan, write."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from notifier.errors import InvalidEvent
from notifier.events import parse_event
from notifier.policy import plan, refs_for
from notifier.policy.figures import Policy
from notifier.policy.plan import Plan, entity_ref
from notifier.records import AppointmentRecord, ClientRecord, ProviderRecord, Record, State
from notifier.store import Store

log = logging.getLogger(__name__)


def _state(records: dict[str, Record]) -> State:
    found: dict[str, Record] = {ref.split(":", 1)[0]: rec for ref, rec in records.items()}
    client, provider, appt = found.get("client"), found.get("provider"), found.get("appointment")
    return State(
        client=client if isinstance(client, ClientRecord) else None,
        provider=provider if isinstance(provider, ProviderRecord) else None,
        appointment=appt if isinstance(appt, AppointmentRecord) else None,
    )


def decide_for(policy: Policy, now: datetime) -> Callable[..., Plan]:
    def decide(raw: bytes, load: Callable[[list[str]], dict[str, Record]]) -> Plan:
        event = parse_event(raw)
        records = load(refs_for(event))
        appt = next((r for r in records.values() if isinstance(r, AppointmentRecord)), None)
        client_ref = entity_ref("client", appt.appointment.client_id) if appt else None
        if client_ref and client_ref not in records:
            records.update(load([client_ref]))
        return plan(event, _state(records), now, policy)

    return decide


def apply_stored_event(store: Store, event_id: str, policy: Policy, now: datetime) -> Plan | None:
    """Apply event `event_id` once; None if it was applied before or is unknown.

    An event that no longer validates (stored by an older version, say) is marked
    `rejected` and kept, never retried forever.
    """
    try:
        result = store.apply_event(event_id, decide_for(policy, now), now)
    except InvalidEvent as exc:
        log.error("event %s no longer validates: %s", event_id, exc)
        store.reject_event(event_id, str(exc), now)
        return None
    if result is not None:
        log.info("event %s %s (%d planned, %d cancelled) %s", event_id, result.outcome,
                 len(result.add), len(result.cancel), result.reason)
    return result
