"""The chaos suite's webhook receiver: real HTTP from the product's own signing, verified
with `standardwebhooks`, each request kept with its id, type and subject."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import httpx

from chaos.tally import Received
from chaos.webhooks import ENDPOINT, Receiver, subject_of
from notifier.webhooks.dispatcher import signed_headers
from notifier.webhooks.endpoints import load_endpoints


def post(receiver: Receiver, message_id: str, body: str, *, tamper: bool = False) -> int:
    (endpoint,) = load_endpoints(receiver.env(), Path("/nonexistent"))
    assert endpoint.name == ENDPOINT and endpoint.url == receiver.url
    headers = signed_headers(endpoint, message_id, body, datetime.now(UTC))
    if tamper:
        body = body.replace("sent", "failed")
    return httpx.post(receiver.url, content=body.encode(), headers=headers).status_code


def body(event_type: str, data: dict[str, object]) -> str:
    return json.dumps({"type": event_type, "timestamp": "2026-11-30T17:00:00Z",
                       "data": {"sequence": 7, **data}})


def test_signed_messages_are_kept_verified_and_a_resend_is_kept_again() -> None:
    with Receiver() as receiver:
        sent = body("notification.sent", {"notification_id": "r:1:w:sms"})
        assert post(receiver, "msg_7_1", sent) == 204
        assert post(receiver, "msg_7_1", sent) == 204
        assert post(receiver, "msg_8_1", body("client.opted_out", {"to": "c1"})) == 204
        assert receiver.received() == [
            Received("msg_7_1", "notification.sent", "r:1:w:sms"),
            Received("msg_7_1", "notification.sent", "r:1:w:sms"),
            Received("msg_8_1", "client.opted_out", '{"to": "c1"}')]


def test_a_message_that_does_not_verify_is_kept_unverified() -> None:
    with Receiver() as receiver:
        post(receiver, "msg_7_1", body("notification.sent", {"notification_id": "n"}),
             tamper=True)
        httpx.post(receiver.url, content=b"{}", headers={"webhook-id": "msg_9_1"})
        assert [(r.webhook_id, r.verified) for r in receiver.received()] == [
            ("msg_7_1", False), ("msg_9_1", False)]


def test_a_change_is_named_by_its_notification_or_its_data_but_the_sequence() -> None:
    assert subject_of("notification.failed", {"sequence": 3, "notification_id": "n"}) == "n"
    assert subject_of("event.rejected", {"sequence": 3, "event_id": "e"}) == '{"event_id": "e"}'
    assert subject_of("notification.sent", None) == ""
