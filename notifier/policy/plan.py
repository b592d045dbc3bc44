"""What policy returns: notifications to add, entities whose pending notifications to cancel,
records to write. Pure data; `Store.apply_event` writes it in one transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from notifier.policy.figures import Channel
from notifier.webhooks.catalogue import Announcement

Recipient = Literal["client", "provider", "support"]
PlannedState = Literal["scheduled", "expired", "suppressed"]
#: `held`: a close waiting for its subject's opening event (see `policy.ordering`).
Outcome = Literal["applied", "stale", "ignored", "held"]


def entity_ref(kind: str, entity_id: str) -> str:
    """How an entity is named in dedupe keys and indexes: `appointment:apt_1`."""
    return f"{kind}:{entity_id}"


@dataclass(frozen=True)
class PlannedNotification:
    """One message on one channel, identified by what it is about.

    `id` is the dedupe key (kind, entity, occasion, channel): planning the same thing
    twice yields the same id, and the store keeps the first.
    """

    id: str
    kind: str
    channel: Channel
    recipient: Recipient
    recipient_id: str
    entity: str
    due_at: datetime
    expires_at: datetime
    params: dict[str, Any] = field(default_factory=dict)
    state: PlannedState = "scheduled"
    reason: str = ""


@dataclass(frozen=True)
class Plan:
    outcome: Outcome
    reason: str = ""
    add: tuple[PlannedNotification, ...] = ()
    #: entity refs whose still-scheduled notifications are cancelled (before `add` runs)
    cancel: tuple[str, ...] = ()
    #: entity records to write, by entity ref
    records: dict[str, BaseModel] = field(default_factory=dict)
    #: for a `held` plan: when the wait for the opening event ends (UTC)
    held_until: datetime | None = None
    #: changes to announce to delivery webhooks, written in the plan's transaction
    announce: tuple[Announcement, ...] = ()


def stale(reason: str = "older than the state already applied") -> Plan:
    return Plan(outcome="stale", reason=reason)


def ignored(reason: str) -> Plan:
    return Plan(outcome="ignored", reason=reason)
