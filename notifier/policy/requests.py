"""Items waiting for a provider: refill requests and client messages.

Opening one starts the response window; if it is still open when the window ends, support
gets exactly one alert (its dedupe key is the item) and the client is told support will
follow up. Closing it (refill sent or denied, message answered) cancels both. Events of one
item may arrive in any order: a close seen before its open leaves a closed tombstone, so the
late open is stale and nothing is ever alerted for it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from notifier.intake.events import Event
from notifier.ledger.records import (
    ItemKind,
    OpenItem,
    OpenItemRecord,
    ProviderQueueRecord,
    RefillAskedRecord,
    State,
)
from notifier.policy.common import client_zone, for_client, for_support
from notifier.policy.figures import Policy
from notifier.policy.plan import Plan, PlannedNotification, entity_ref, stale
from notifier.policy.refills import book_by_day, runout_day, visit_required_notices
from notifier.policy.window import escalates_at

#: The client is told of an escalation only while it is fresh.
CLIENT_NOTICE_VALID = timedelta(days=2)
#: "Refill sent" is news for a couple of days.
REFILL_SENT_VALID = timedelta(days=2)

OPENING = {"refill.requested": ("refill_request", "request"),
           "message.received": ("message", "message")}
CLOSING = {"refill.sent": ("refill_request", "request_id"),
           "refill.denied": ("refill_request", "request_id"),
           "message.answered": ("message", "message_id")}


def item_ref(event: Event) -> str:
    if event.type in OPENING:
        kind, field = OPENING[event.type]
        return entity_ref(kind, getattr(event.data, field).id)
    kind, field = CLOSING[event.type]
    return entity_ref(kind, getattr(event.data, field))


def _queue(state: State, at: datetime) -> ProviderQueueRecord:
    queue = state.provider_queue or ProviderQueueRecord(updated_at=at)
    return queue.model_copy(update={"items": dict(queue.items),
                                    "updated_at": max(queue.updated_at, at)})


def plan_opened(event: Event, state: State, now: datetime, policy: Policy) -> Plan:
    kind: ItemKind = OPENING[event.type][0]  # type: ignore[assignment]
    item = getattr(event.data, OPENING[event.type][1])
    ref = item_ref(event)
    existing = state.item
    if existing is not None:
        if existing.status == "closed":
            return stale("closed before this opening arrived")
        if existing.is_newer_than(event.occurred_at):
            return stale()
        return Plan(outcome="ignored", reason="already open")
    zone = state.provider.provider.zone if state.provider else client_zone(state, policy)
    deadline = escalates_at(event.occurred_at, zone, policy.response_window)
    record = OpenItemRecord(
        id=item.id, kind=kind, client_id=item.client_id, provider_id=item.provider_id,
        prescription_id=getattr(item, "prescription_id", None), opened_at=event.occurred_at,
        updated_at=event.occurred_at)
    queue = _queue(state, event.occurred_at)
    queue.items[ref] = OpenItem(kind=kind, client_id=item.client_id,
                                opened_at=event.occurred_at, escalates_at=deadline)
    params: dict[str, Any] = {"item_kind": kind, "item_id": item.id, "client_id": item.client_id,
                              "provider_id": item.provider_id,
                              "opened_at": event.occurred_at.isoformat(),
                              "escalates_at": deadline.isoformat()}
    # The occasion names the item's kind: a refill request and a message may share an id.
    occasion = f"{kind}-window"
    add: list[PlannedNotification] = for_support(
        kind="support_escalation", entity=ref, occasion=occasion, due_at=deadline,
        params=params)
    add.append(for_client(
        kind="escalation_notice", entity=ref, occasion=occasion, channel="sms",
        client_id=item.client_id, due_at=deadline, expires_at=deadline + CLIENT_NOTICE_VALID,
        state=state, policy=policy, params=params))
    cancel: tuple[str, ...] = ()
    records: dict[str, Any] = {ref: record, entity_ref("provider_queue", item.provider_id): queue}
    if kind == "refill_request":
        # The client asked: the refill reminders for this prescription have done their job,
        # and a fill that occurred before the request but is applied after it plans none.
        # Not a fill newer than the request, applied first (posted a moment after it;
        # found by a new user's trial): its reminders are the next refill's.
        fill = state.prescription
        if fill is None or not fill.is_newer_than(event.occurred_at):
            cancel = (entity_ref("prescription", item.prescription_id),)
        asked = state.refill_asked
        records[entity_ref("refill_asked", item.prescription_id)] = RefillAskedRecord(
            updated_at=max(event.occurred_at, asked.updated_at) if asked else event.occurred_at)
    return Plan(outcome="applied", add=tuple(add), cancel=cancel, records=records)


def plan_closed(event: Event, state: State, now: datetime, policy: Policy) -> Plan:
    kind: ItemKind = CLOSING[event.type][0]  # type: ignore[assignment]
    ref = item_ref(event)
    reason = event.type.split(".", 1)[1]
    existing = state.item
    if existing is None:
        tombstone = OpenItemRecord(id=ref.split(":", 1)[1], kind=kind, status="closed",
                                   closed_reason=reason, updated_at=event.occurred_at)
        return Plan(outcome="ignored", reason=f"unknown {kind}; recorded as closed",
                    records={ref: tombstone})
    if existing.is_newer_than(event.occurred_at):
        return stale()
    if existing.status == "closed":
        return Plan(outcome="ignored", reason=f"already closed ({existing.closed_reason})")
    record = existing.model_copy(update={"status": "closed", "closed_reason": reason,
                                         "updated_at": event.occurred_at})
    records: dict[str, Any] = {ref: record}
    if existing.provider_id is not None:
        queue = _queue(state, event.occurred_at)
        queue.items.pop(ref, None)
        records[entity_ref("provider_queue", existing.provider_id)] = queue
    add: list[PlannedNotification] = []
    client_id = existing.client_id or ""
    if event.type == "refill.sent":
        add.append(for_client(kind="refill_sent", entity=ref, occasion="sent", channel="sms",
                              client_id=client_id, due_at=now,
                              expires_at=now + REFILL_SENT_VALID, state=state, policy=policy,
                              params={"provider_id": existing.provider_id}))
    elif event.type == "refill.denied" and event.data.reason == "visit_required":
        rx = state.prescription.prescription if state.prescription else None
        params: dict[str, Any] = {"provider_id": existing.provider_id}
        expires = now + timedelta(days=14)
        if rx is not None:
            params.update(prescription_id=rx.id, runout=runout_day(rx).isoformat(),
                          book_by=book_by_day(rx, policy).isoformat())
        # Named after the request (`visit_required:{request}:denied:{channel}`), in its
        # shard with this plan's transaction (docs/cluster.md), not after the client.
        add += visit_required_notices(
            entity=entity_ref("visitreq", existing.id), occasion="denied",
            client_id=client_id, due_at=now, expires_at=expires, state=state, policy=policy,
            params=params)
    return Plan(outcome="applied", add=tuple(add), cancel=(ref,), records=records)
