"""Running the provider-digest job: find the providers, plan their digests, write them.

The digest's content is rendered when it is sent (the items open then); here we only
decide who gets one, so an empty queue sends nothing.
"""

from __future__ import annotations

import logging
from datetime import datetime

from notifier.policy.digest import plan_digests
from notifier.policy.plan import entity_ref
from notifier.records import ProviderQueueRecord, ProviderRecord
from notifier.store import Store

log = logging.getLogger(__name__)


def all_providers(store: Store) -> list[ProviderRecord]:
    refs = [key.decode().removeprefix("n:rec:")
            for key in store.redis.scan_iter(match="n:rec:provider:*", count=1000)]
    records = store.load_records(refs)
    return [r for r in records.values() if isinstance(r, ProviderRecord)]


def provider_zones(store: Store) -> set[str]:
    return {p.provider.timezone for p in all_providers(store)}


def run_provider_digest(store: Store, now: datetime, zone: str | None,
                        occasion: str) -> int:
    """Plan today's digest for every provider (in `zone`, when given); returns how many."""
    providers = [p for p in all_providers(store) if zone is None or p.provider.timezone == zone]
    queues = store.load_records([entity_ref("provider_queue", p.provider.id)
                                 for p in providers])
    pairs: list[tuple[ProviderRecord, ProviderQueueRecord | None]] = []
    for p in providers:
        queue = queues.get(entity_ref("provider_queue", p.provider.id))
        pairs.append((p, queue if isinstance(queue, ProviderQueueRecord) else None))
    plan = plan_digests(pairs, occasion, now)
    store.write_plan(plan, now)
    log.info("provider-digest %s (%s): %d digests planned", occasion, zone or "all zones",
             len(plan.add))
    return len(plan.add)
