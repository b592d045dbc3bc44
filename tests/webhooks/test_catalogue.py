"""The event types and the payloads built from outbox entries (pure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from notifier.ledger.deliveries import DELIVERY_FAILURES
from notifier.ledger.lua import lua_source
from notifier.webhooks.catalogue import (
    EVENT_TYPES,
    NOTIFICATION_FIELDS,
    expand,
    parse_entry,
)


def test_patterns_expand_to_the_types_they_name():
    assert expand(["*"]) == frozenset(EVENT_TYPES)
    assert expand(["client.*"]) == {"client.opted_out", "client.opted_in"}
    assert expand(["notification.sent", "event.rejected"]) == {"notification.sent",
                                                               "event.rejected"}
    for bad in ("notification.bounced", "notifications.*", "", "client"):
        with pytest.raises(ValueError, match="unknown event type"):
            expand([bad])


def test_the_issue_s_event_types_are_all_there():
    assert set(EVENT_TYPES) == {
        "notification.scheduled", "notification.sent", "notification.delivered",
        "notification.failed", "notification.suppressed", "notification.expired",
        "notification.cancelled", "client.opted_out", "client.opted_in",
        "appointment.confirmed", "appointment.reschedule_requested", "event.rejected"}


def test_the_script_reads_the_fields_the_payload_expects_in_order():
    source = lua_source("_webhook_emit")
    hmget = source[source.index("'HMGET', notif,") + len("'HMGET', notif,"):]
    read = [f.strip(" '\n") for f in hmget[:hmget.index(")")].split(",")]
    assert tuple(read) == NOTIFICATION_FIELDS


def test_the_script_announces_the_failures_the_ledger_knows():
    source = lua_source("_webhook_emit")
    table = source[source.index("DELIVERY_EVENTS = {"):]
    table = table[:table.index("}")]
    failures = {name for name in DELIVERY_FAILURES if f"{name} = 'failed'" in table}
    assert failures == DELIVERY_FAILURES
    assert "delivered = 'delivered'" in table


def entry(event_type: str, fields: list[object], subject: str = "appointment_reminder_24h:"
          "appt-1:2026-12-03T15:00:00Z:sms") -> bytes:
    return json.dumps([42, event_type, "1796050800.250000", subject, fields]).encode()


def test_a_notification_entry_becomes_ids_kind_channel_state_and_times():
    e = parse_entry(entry("notification.failed", [
        False, False, "twilio refused the number (21211)", "21211", "client", "c1",
        "appointment:appt-1", "1796050000", "undelivered", "1796050790"]))
    assert e.message_id == "msg_42_1796050800250000"
    assert e.at == datetime(2026, 11, 30, 15, 0, 0, 250000, tzinfo=UTC)
    assert e.payload() == {
        "type": "notification.failed", "timestamp": "2026-11-30T15:00:00.250000Z",
        "data": {
            "sequence": 42,
            "notification_id": "appointment_reminder_24h:appt-1:2026-12-03T15:00:00Z:sms",
            "kind": "appointment_reminder_24h", "channel": "sms", "state": "failed",
            "reason": "twilio refused the number (21211)",
            "recipient": {"type": "client", "id": "c1"},
            "entity": {"type": "appointment", "id": "appt-1"},
            "due_at": "2026-11-30T14:46:40Z", "sent_at": "2026-11-30T14:59:50Z",
            "delivery": "undelivered", "error_code": "21211"}}


def test_a_scheduled_one_says_no_send_and_kind_from_the_hash_wins():
    data = parse_entry(entry("notification.scheduled", [
        "refill_due", "email", False, False, "client", "c1", "prescription:rx-1",
        "1796050000", False, False], subject="x")).payload()["data"]
    assert data["kind"] == "refill_due" and data["channel"] == "email"
    assert data["state"] == "scheduled" and data["reason"] == ""
    assert "sent_at" not in data and "error_code" not in data


def test_other_entries_carry_their_data_as_given():
    raw = json.dumps([7, "client.opted_out", "1796050800.000001", "c1",
                      json.dumps({"client_ids": [], "channel": "sms"})])
    e = parse_entry(raw)
    assert e.payload()["data"] == {"sequence": 7, "client_ids": [], "channel": "sms"}
    assert e.payload()["timestamp"] == "2026-11-30T15:00:00.000001Z"


@pytest.mark.parametrize("raw", [
    b"", b"{}", b"[1, 2]", b'[1, "t", "x", "s", "{}"]', b'[1, "t", "1.5", "s", "[1]"]',
    b'["a", "t", "1.5", "s", "{}"]', b'[1, "t", "1.5", "s", [1, 2]]',
])
def test_an_entry_not_of_the_shape_is_a_value_error(raw):
    with pytest.raises(ValueError, match="outbox entry"):
        parse_entry(raw)
