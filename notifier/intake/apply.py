"""Applying stored events: in their subject's turn, oldest first; each one parsed, its
state loaded, planned (or held for its opening event) and written in one transaction."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import datetime

from notifier.errors import InvalidEvent, StoreContention, StoreUnavailable, TurnLost
from notifier.intake.events import parse_stored_event
from notifier.ledger.records import Record, State
from notifier.ledger.store import Store
from notifier.policy import derived_refs, plan, refs_for
from notifier.policy.figures import Policy
from notifier.policy.ordering import subject_ref, wait_for_opening
from notifier.policy.plan import Plan

log = logging.getLogger(__name__)

#: An event whose planning keeps raising (a bug meeting odd data) is set aside as `failed`
#: after this many tries, instead of circling through the queue for ever.
MAX_APPLY_FAILURES = 5


def decide_for(policy: Policy, now: datetime) -> Callable[..., Plan]:
    def decide(raw: bytes, load: Callable[[list[str]], dict[str, Record]],
               arrived_at: datetime) -> Plan:
        event = parse_stored_event(raw)
        records = load(refs_for(event))
        more = derived_refs(records)
        if more:
            records.update(load(more))
        state = State.from_records(records)
        held = wait_for_opening(event, state, arrived_at, now, policy.opening_wait)
        return held or plan(event, state, now, policy)

    return decide


def ensure_subject(store: Store, event_id: str, now: datetime) -> str | None:
    """The subject of an accepted event, queueing it first if it was stored without one
    (by an older version); None when it is not waiting to be applied or cannot be read."""
    status, subject = store.event_subject(event_id)
    if status != "accepted" or subject is not None:
        return subject if status == "accepted" else None
    raw = store.events.event_raw(event_id)
    try:
        event = parse_stored_event(raw or b"")
    except InvalidEvent as exc:
        log.error("event %s no longer validates: %s", event_id, exc)
        store.reject_event(event_id, str(exc), now)
        return None
    subject = subject_ref(event)
    store.queue_event(event_id, subject, event.occurred_at)
    return subject


def apply_in_turn(store: Store, event_id: str, policy: Policy, clock: Callable[[], datetime],
                  lease_s: float) -> int:
    """Apply `event_id` and every other queued event of its subject, oldest `occurred_at`
    first, if this worker gets the subject's turn; returns how many it applied.

    When another worker has the turn, this returns at once: that worker applies the event,
    because it gives the turn back only with the queue empty. When the holder died, its
    lease runs out and the clock re-enqueues the subject's queue. A failure gives the turn
    back and raises, so dramatiq retries the message.
    """
    subject = ensure_subject(store, event_id, clock())
    if subject is None:
        return 0
    token = secrets.token_hex(16)
    next_id = store.turns.take_first(subject, token, clock(), lease_s)
    applied = 0
    try:
        while next_id is not None:
            apply_stored_event(store, next_id, policy, clock(), turn=(subject, token))
            applied += 1
            next_id = store.turns.next(subject, token, clock(), lease_s)
    except TurnLost:
        log.warning("turn on %s ran out while applying; another worker goes on", subject)
    except BaseException:
        store.turns.release(subject, token)
        raise
    return applied


def apply_stored_event(store: Store, event_id: str, policy: Policy, now: datetime,
                       turn: tuple[str, str] | None = None) -> Plan | None:
    """Apply event `event_id` once; None if it was applied before or is unknown.

    `turn` is the caller's (subject, token) from `apply_in_turn`; without one (a single
    caller, as in tests) the event is applied directly. An event that no longer validates
    (stored by an older version, say) is marked `rejected` and kept, never retried forever.
    Raises `TurnLost` when the turn ran out, `StoreContention` when concurrent writers kept
    changing its keys (the message is retried; the event is not counted as failing).
    """
    if turn is None and ensure_subject(store, event_id, now) is None:
        return None
    try:
        result = store.apply_event(event_id, decide_for(policy, now), now, turn=turn)
    except InvalidEvent as exc:
        log.error("event %s no longer validates: %s", event_id, exc)
        store.reject_event(event_id, str(exc), now)
        return None
    except (StoreUnavailable, TurnLost, StoreContention):
        raise  # Redis is away or busy, or the turn passed on: nothing is wrong with the event
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
