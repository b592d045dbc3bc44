"""Applying a stored event: parse, load the state its policy needs, plan, write."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import redis

from notifier.errors import InvalidEvent
from notifier.events import parse_event
from notifier.policy import derived_refs, plan, refs_for
from notifier.policy.figures import Policy
from notifier.policy.plan import Plan
from notifier.records import Record, State
from notifier.store import Store

log = logging.getLogger(__name__)

#: An event whose planning keeps raising (a bug meeting odd data) is set aside as `failed`
#: after this many tries, instead of circling through the queue for ever.
MAX_APPLY_FAILURES = 5


def decide_for(policy: Policy, now: datetime) -> Callable[..., Plan]:
    def decide(raw: bytes, load: Callable[[list[str]], dict[str, Record]]) -> Plan:
        event = parse_event(raw)
        records = load(refs_for(event))
        more = derived_refs(records)
        if more:
            records.update(load(more))
        return plan(event, State.from_records(records), now, policy)

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
    except redis.RedisError:
        raise  # Redis is away: nothing is wrong with the event; try again later
    except Exception as exc:
        failures = store.count_apply_failure(event_id)
        if failures < MAX_APPLY_FAILURES:
            raise
        log.exception("event %s failed %d times; giving up on it", event_id, failures)
        store.reject_event(event_id, f"planning failed: {type(exc).__name__}: {exc}", now,
                           status="failed")
        return None
    if result is not None:
        log.info("event %s %s (%d planned, %d cancelled) %s", event_id, result.outcome,
                 len(result.add), len(result.cancel), result.reason)
    return result
