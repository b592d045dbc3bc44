"""The provider digest, planned: one email per provider with something open, per fire."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from notifier.ledger.records import ProviderQueueRecord, ProviderRecord
from notifier.policy.plan import Plan, PlannedNotification, entity_ref

#: A digest not sent within this long of being planned is stale news.
DIGEST_VALID = timedelta(hours=12)


def fire_occasion(fire: datetime) -> str:
    """The digest's occasion: the job's fire instant in UTC, `20261130T130000Z`.

    A cron fire is an instant, and its UTC stamp names it without ambiguity: two fires on
    one day (`0 8,16 * * 1-5`) get two occasions, the same fire claimed or run twice gets
    one. Local wall time would need the zone and the offset as well to stay unique across a
    fall-back hour, and a zone name (`America/New_York`) puts a slash in an id the read API
    shows and provider callbacks echo; the UTC stamp is also what the clock's claim key
    (`n:job:{job}:{zone}:{epoch}`) already counts in.
    """
    return fire.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def digest_id(provider_id: str, fire: datetime) -> str:
    return f"provider_digest:{provider_id}:{fire_occasion(fire)}:email"


def plan_digests(providers: list[tuple[ProviderRecord, ProviderQueueRecord | None]],
                 fire: datetime, now: datetime) -> Plan:
    """Digests due now for each provider with open items; nothing for the others.

    Each digest's id names the job's `fire` (not the day, not `now`), so a fire claimed or
    run twice still plans one digest per provider, and each fire of a cron that fires twice
    a day plans its own.
    """
    add = [
        PlannedNotification(
            id=digest_id(record.provider.id, fire), kind="provider_digest",
            channel="email", recipient="provider", recipient_id=record.provider.id,
            entity=entity_ref("provider", record.provider.id), due_at=now,
            expires_at=now + DIGEST_VALID, params={"open": len(queue.items)})
        for record, queue in providers if queue is not None and queue.items
    ]
    reason = f"{len(add)} digest" if len(add) == 1 else f"{len(add)} digests"
    return Plan(outcome="applied", reason=reason, add=tuple(add))
