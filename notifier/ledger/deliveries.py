"""Delivery reports from providers, and planning a notification again on another channel
(a fallback). Key (under `n:`): `callbacks:unknown` (reports about ids the ledger does not
know, the last thousand, kept for inspection).

Errors: on the ledger's client (`notifier.ledger.client`, as `Store` builds every part) each
Redis call raises `StoreUnavailable` when Redis cannot be reached or cannot take commands
now, and `StoreError` when it refuses one (a script error, `WRONGTYPE`); the docstrings
below name only the errors of their own.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

import redis

from notifier.ledger.notifications import PREFIX, Schedule, epoch, from_epoch
from notifier.policy.plan import Plan, PlannedNotification

if TYPE_CHECKING:
    from notifier.ledger.plans import PlanWriter
    from notifier.ledger.reading import Reading

UNKNOWN_CALLBACKS = PREFIX + "callbacks:unknown"
#: Delivery reports that mean the message did not arrive.
DELIVERY_FAILURES = frozenset({"undelivered", "failed", "bounce", "dropped"})


class Deliveries:
    """What happens to a notification after it is sent: reports, and other channels."""

    def __init__(self, client: redis.Redis, schedule: Schedule, reading: Reading,
                 plans: PlanWriter) -> None:
        # redis-py types its replies as a sync|async union; the client here is sync.
        self.redis: Any = client
        self.schedule = schedule
        self.reading = reading
        self.plans = plans

    def record_delivery(self, notification_id: str, status: str, code: str,
                        now: datetime, message_id: str = "") -> str | None:
        """Record a provider's delivery report about its message `message_id` ("": not
        said) as `Schedule.record_delivery` does; an unknown id is kept aside and ignored.
        Returns the delivery status on record after it, None for an unknown id."""
        on_record = self.schedule.record_delivery(notification_id, status, code, now,
                                                  message_id)
        if on_record is not None:
            return on_record
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.lpush(UNKNOWN_CALLBACKS, json.dumps(
                {"id": notification_id, "status": status, "code": code, "at": epoch(now)}))
            pipe.ltrim(UNKNOWN_CALLBACKS, 0, 999)
            pipe.execute()
        return None

    def add_on_other_channel(self, notification_id: str, channel: str, now: datetime,
                             reason: str) -> bool:
        """Plan the same notification on `channel`, due now, unless it is planned there
        already (its dedupe key is the sibling's, so this happens at most once). Returns
        whether it was added: False for an unknown, superseded or cancelled notification
        (cancelled while a lost answer waited for its report: a failure reported then is
        about a message no longer wanted; found by QA), or one planned there already, or
        one retired past the retention (its row no longer says to whom:
        `notifier.ledger.trimming`). Raises `StoreContention` as `PlanWriter.write_plan`
        does."""
        f = self.reading.notification(notification_id)
        if (not f or f.get("superseded") or f.get("retired")
                or f.get("state") == "cancelled"):
            return False
        sibling = notification_id.rsplit(":", 1)[0] + ":" + channel
        if self.redis.exists(self.schedule.keys.notif(sibling)):
            return False
        self.plans.write_plan(Plan(outcome="applied", add=(PlannedNotification(
            id=sibling, kind=f["kind"], channel=channel,  # type: ignore[arg-type]
            recipient=f["to"], recipient_id=f["to_id"],  # type: ignore[arg-type]
            entity=f["entity"], due_at=now, expires_at=from_epoch(f["expires"]),
            params=json.loads(f.get("params") or "{}"), reason=reason),)), now)
        return True
