"""The provider digest, planned: one email per provider with something open."""

from __future__ import annotations

from datetime import datetime, timedelta

from notifier.policy.plan import Plan, PlannedNotification, entity_ref
from notifier.records import ProviderQueueRecord, ProviderRecord

#: A digest not sent within this long of its fire time is stale news.
DIGEST_VALID = timedelta(hours=12)


def plan_digests(providers: list[tuple[ProviderRecord, ProviderQueueRecord | None]],
                 occasion: str, now: datetime) -> Plan:
    """Digests due now for each provider with open items; nothing for the others.

    `occasion` names the fire (the provider-local date for a scheduled run), so a fire
    claimed twice still plans one digest per provider.
    """
    add = [
        PlannedNotification(
            id=f"provider_digest:{record.provider.id}:{occasion}:email", kind="provider_digest",
            channel="email", recipient="provider", recipient_id=record.provider.id,
            entity=entity_ref("provider", record.provider.id), due_at=now,
            expires_at=now + DIGEST_VALID, params={"open": len(queue.items)})
        for record, queue in providers if queue is not None and queue.items
    ]
    return Plan(outcome="applied", reason=f"{len(add)} digests", add=tuple(add))
