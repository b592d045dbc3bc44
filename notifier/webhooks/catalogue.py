"""The event types of delivery webhooks, and the payload of each (pure).

Payloads follow Standard Webhooks' recommended shape: `{"type", "timestamp", "data"}`
(https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md,
"Payload structure"). `data` holds ids, kinds, channels, states, reasons, codes and times,
never a name, a contact detail or a medication: HIPAA's minimum necessary standard
(45 CFR 164.502(b)); the receiver looks the rest up by id in its own records.
"""

from __future__ import annotations

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
    "client.opted_in": "a number started SMS again, by a reply (START)",
    "appointment.confirmed": "a client confirmed an appointment by replying C",
    "appointment.reschedule_requested": "a client asked to reschedule by replying R",
    "event.rejected": "an accepted event could not be applied (invalid, or planning "
                      "kept failing)",
}

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
