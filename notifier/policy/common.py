"""Building blocks every policy shares: client and support notifications with quiet hours
and expiry applied, and wall-clock times in the recipient's zone."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from notifier.ledger.records import State
from notifier.policy.figures import Channel, Policy
from notifier.policy.plan import PlannedNotification
from notifier.policy.timing import hold_for_quiet_hours, local_time

#: Support alerts are acted on by people at work; one still unsent after this is moot.
SUPPORT_ALERT_VALID = timedelta(days=7)
#: Why a client notification is planned `expired`: its moment, held to the end of the
#: client's quiet hours, comes at or after its expiry.
QUIET_HOURS_PAST_EXPIRY = "quiet hours last past its expiry"
#: Why one is planned `expired` whose own moment was already at or past its expiry, when
#: the caller does not name the cause more exactly (policies should, as
#: `appointments.why_too_late` does).
PLANNED_AFTER_EXPIRY = "its expiry had passed when it was planned"


def client_zone(state: State, policy: Policy) -> ZoneInfo:
    """The client's zone, or the practice's while the client's details are unknown."""
    return state.client.client.zone if state.client is not None else policy.practice_zone


def at_client_local(day: date, at: time, state: State, policy: Policy) -> datetime:
    return local_time(day, at, client_zone(state, policy))


def for_client(*, kind: str, entity: str, occasion: str, channel: Channel, client_id: str,
               due_at: datetime, expires_at: datetime, state: State, policy: Policy,
               params: dict[str, Any] | None = None,
               too_late: str = PLANNED_AFTER_EXPIRY) -> PlannedNotification:
    """A client notification, held for quiet hours, planned `expired` if it is late.

    The reason names the cause: `too_late` (the caller's words for why the moment itself
    had passed, e.g. the appointment had started) when `due_at` is already at or past the
    expiry, and quiet hours only when it is they that push it past the expiry.
    """
    reason = too_late if due_at >= expires_at else ""
    if state.client is not None:
        due_at = hold_for_quiet_hours(due_at, state.client.client.zone, policy.quiet_hours)
    if not reason and due_at >= expires_at:
        reason = QUIET_HOURS_PAST_EXPIRY
    entity_id = entity.split(":", 1)[1]
    return PlannedNotification(
        id=f"{kind}:{entity_id}:{occasion}:{channel}", kind=kind, channel=channel,
        recipient="client", recipient_id=client_id, entity=entity, due_at=due_at,
        expires_at=expires_at, params=params or {},
        state="expired" if reason else "scheduled", reason=reason,
    )


def for_support(*, kind: str, entity: str, occasion: str, due_at: datetime,
                params: dict[str, Any]) -> list[PlannedNotification]:
    """Alerts to the support team, not held back by quiet hours: email, and SMS (which the
    delivery step suppresses, with the reason, when no support phone is configured)."""
    entity_id = entity.split(":", 1)[1]
    channels: tuple[Channel, ...] = ("email", "sms")
    return [
        PlannedNotification(
            id=f"{kind}:{entity_id}:{occasion}:{channel}", kind=kind, channel=channel,
            recipient="support", recipient_id="support", entity=entity, due_at=due_at,
            expires_at=due_at + SUPPORT_ALERT_VALID, params=params)
        for channel in channels
    ]
