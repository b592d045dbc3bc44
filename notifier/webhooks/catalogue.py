"""The event types of delivery webhooks, and the payload of each (pure).

Payloads follow Standard Webhooks' recommended shape: `{"type", "timestamp", "data"}`
(https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md,
"Payload structure"). `data` holds ids, kinds, channels, states, reasons, codes and times,
never a name, a contact detail or a medication: HIPAA's minimum necessary standard
(45 CFR 164.502(b)); the receiver looks the rest up by id in its own records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

#: Every event type an endpoint may subscribe to, with what causes it.
EVENT_TYPES: dict[str, str] = {
    "notification.scheduled": "a notification was planned (once; a retry or a move past "
                              "quiet hours is not announced again)",
    "notification.sent": "the provider accepted the message",
    "notification.delivered": "the provider reported the message delivered",
    "notification.failed": "the message could not be sent, or the provider reported it "
                           "undelivered (`error_code`: the provider's code)",
    "notification.suppressed": "not sent on purpose (opted out, no address, channel off)",
    "notification.expired": "not sent: its time to be useful had passed",
    "notification.cancelled": "not sent: what it was about changed (`reason`)",
    "client.opted_out": "a number stopped SMS, by a reply (STOP) or a carrier's code",
    "client.opted_in": "a number started SMS again, by a reply (START) or an "
                       "operator in the console (`source`: `operator`)",
    "appointment.confirmed": "a client confirmed an appointment by replying C",
    "appointment.reschedule_requested": "a client asked to reschedule by replying R",
    "event.rejected": "an accepted event could not be applied (invalid, or planning "
                      "kept failing)",
}

#: The type of the message `notifier webhooks test NAME` sends to one endpoint, at once and
#: once, to check its URL and secret. Not an event: it is not in `EVENT_TYPES`, so no
#: endpoint subscribes to it (`expand` refuses it, `*` does not match it) and nothing but
#: that command sends it; its `data` is `{"endpoint": NAME}`, with no `sequence`.
TEST_EVENT_TYPE = "webhook.test"

#: The states of a notification that are announced, each by `notification.{state}`.
NOTIFICATION_STATES = frozenset(
    t.removeprefix("notification.") for t in EVENT_TYPES if t.startswith("notification."))


def expand(patterns: list[str]) -> frozenset[str]:
    """The event types named by `patterns`: exact types, `{prefix}.*` (every type of
    that prefix) or `*` (all). Raises ValueError naming the first pattern that names no
    type (a typo must not subscribe to nothing silently)."""
    chosen: set[str] = set()
    for pattern in patterns:
        if pattern == "*":
            matched = set(EVENT_TYPES)
        elif pattern.endswith(".*"):
            matched = {t for t in EVENT_TYPES if t.startswith(pattern[:-1])}
        else:
            matched = {pattern} & set(EVENT_TYPES)
        if not matched:
            raise ValueError(f"unknown event type {pattern!r}")
        chosen |= matched
    return frozenset(chosen)


@dataclass(frozen=True)
class Announcement:
    """A change made by Python code to announce (`notifier.ledger.announcements`): its
    event type, its subject's id, and the payload's data (ids and codes only)."""

    type: str
    subject: str
    data: dict[str, Any] = field(default_factory=dict)
    #: a key naming this change when it may be made again harmlessly (the same inbound
    #: SMS posted twice): then it is announced only once ("": no such key)
    once: str = ""


#: The fields `_webhook_emit.lua` reads from a notification's hash, in its order.
NOTIFICATION_FIELDS = ("kind", "channel", "reason", "code", "to", "to_id", "entity", "due",
                       "delivery", "sent_at")


@dataclass(frozen=True)
class OutboxEntry:
    """One change as the outbox holds it: `[sequence, type, "sec.usec", subject, data]`
    (`_webhook_emit.lua`), where data is a notification's fields (a list, in the order of
    `NOTIFICATION_FIELDS`) or a JSON object's text."""

    sequence: int
    type: str
    at: datetime
    subject: str
    data: dict[str, Any]

    @property
    def message_id(self) -> str:
        """The message's `webhook-id`: the same for every endpoint and every attempt, so
        a receiver dedupes on it; unique across Redis data sets too (a restored or new one
        starts the sequence again, not the clock)."""
        return f"msg_{self.sequence}_{round(self.at.timestamp() * 1e6)}"

    def payload(self) -> dict[str, Any]:
        """The message's JSON body: `{"type", "timestamp", "data"}`, `data.sequence` being
        the entry's (it grows with every change, so it orders a notification's messages)."""
        return {"type": self.type, "timestamp": _rfc3339(self.at),
                "data": {"sequence": self.sequence, **self.data}}


def webhook_test_payload(endpoint: str, now: datetime) -> dict[str, Any]:
    """The body of `notifier webhooks test`'s message to `endpoint`, made at `now`."""
    return {"type": TEST_EVENT_TYPE, "timestamp": _rfc3339(now), "data": {"endpoint": endpoint}}


def parse_entry(raw: bytes | str) -> OutboxEntry:
    """An outbox entry from its JSON. Raises ValueError for one not of that shape."""
    try:
        sequence, event_type, at, subject, data = json.loads(raw)
        instant = datetime.fromtimestamp(float(at), UTC)
        if isinstance(data, list):
            fields = dict(zip(NOTIFICATION_FIELDS, data, strict=True))
            body = notification_data(str(subject), event_type, fields)
        else:
            body = json.loads(data)
            if not isinstance(body, dict):
                raise ValueError("data is not an object")
        return OutboxEntry(int(sequence), str(event_type), instant, str(subject), body)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"outbox entry {raw!r:.200}: {exc}") from exc


def notification_data(notification_id: str, event_type: str,
                      fields: dict[str, str | bool]) -> dict[str, Any]:
    """The `data` of a `notification.*` message from the notification's hash fields (false
    for one not set): ids, kind, channel, the state the event announces, reason, the
    provider's code, and times as RFC 3339 UTC."""
    def text(name: str) -> str:
        value = fields.get(name)
        return value if isinstance(value, str) else ""

    kind, _, rest = notification_id.partition(":")
    channel = text("channel") or rest.rpartition(":")[2]
    entity_kind, _, entity_id = text("entity").partition(":")
    data: dict[str, Any] = {
        "notification_id": notification_id,
        "kind": text("kind") or kind,
        "channel": channel,
        "state": event_type.removeprefix("notification."),
        "reason": text("reason"),
        "recipient": {"type": text("to"), "id": text("to_id")},
        "entity": {"type": entity_kind, "id": entity_id},
        "due_at": _time(text("due")),
    }
    if event_type in ("notification.sent", "notification.delivered", "notification.failed"):
        data["sent_at"] = _time(text("sent_at"))
    if event_type in ("notification.delivered", "notification.failed"):
        data["delivery"] = text("delivery") or None
    if event_type == "notification.failed":
        data["error_code"] = text("code") or None
    return data


def _time(epoch_s: str) -> str | None:
    return _rfc3339(datetime.fromtimestamp(float(epoch_s), UTC)) if epoch_s else None


def _rfc3339(instant: datetime) -> str:
    """`2026-11-30T17:00:00.123456Z`: UTC, microseconds when there are any."""
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")
