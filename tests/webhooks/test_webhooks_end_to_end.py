"""Delivery webhooks through the whole service (web, worker, clock, the senders) to a real
HTTP receiver that verifies every message with the reference `standardwebhooks` package."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.end_to_end.test_provider_end_to_end import (  # the Twilio/SendGrid stand-ins
    SMS,
    fakes,  # noqa: F401  (a fixture)
    onboard_and_book,
    provider_env,
    signed_twilio,
    state,
)
from tests.service import Service, wait_for
from tests.webhooks.kit import about, endpoints_env
from tests.webhooks.receiver import WebhookReceiver

pytestmark = pytest.mark.e2e


@pytest.fixture
def service(redis_client, redis_url, tmp_path, fakes, receiver  # noqa: F811
            ) -> Iterator[Service]:
    env = {**provider_env(*fakes), **endpoints_env(receiver, {"name": "ehr", "path": "/ehr"})}
    svc = Service(redis_url, tmp_path, env=env)
    yield svc
    svc.close()


def test_a_notifications_lifecycle_arrives_signed_and_in_order_of_sequence(
        service: Service, receiver: WebhookReceiver) -> None:
    onboard_and_book(service)
    wait_for(lambda: state(service, SMS).get("state") == "sent", what="the confirmation SMS")
    signed_twilio(service, f"/twilio/status?n={SMS}",
                  {"MessageSid": state(service, SMS)["receipt"], "MessageStatus": "delivered"})
    receiver.wait_for(lambda: len(about(receiver, "/ehr", SMS)) >= 3,
                      what="scheduled, sent and delivered")
    # Sent by parallel senders, they may arrive in any order: `sequence` orders them.
    messages = sorted(about(receiver, "/ehr", SMS), key=lambda m: m["data"]["sequence"])
    assert [m["type"] for m in messages] == ["notification.scheduled", "notification.sent",
                                             "notification.delivered"]
    assert len({m["data"]["sequence"] for m in messages}) == 3
    assert messages[-1]["data"]["delivery"] == "delivered"
    assert messages[0]["data"]["recipient"] == {"type": "client", "id": "c1"}
    assert messages[0]["data"]["entity"] == {"type": "appointment", "id": "a1"}
    requests = receiver.received("/ehr")
    assert all(r.verified for r in requests)
    # One webhook-id per message, the same across endpoints and attempts.
    ids = [r.headers["webhook-id"] for r in requests]
    assert len(ids) == len(set(ids))


def test_no_message_carries_a_name_a_contact_detail_or_a_medication(
        service: Service, receiver: WebhookReceiver) -> None:
    onboard_and_book(service)
    wait_for(lambda: state(service, SMS).get("state") == "sent", what="the confirmation SMS")
    receiver.wait_for(lambda: len(about(receiver, "/ehr", SMS)) >= 2, what="sent")
    for request in receiver.received("/ehr"):
        body = request.body.decode()
        for secret_ish in ("+14155550123", "c1@example.com", "Ana", "prov-1@"):
            assert secret_ish not in body, (secret_ish, body)


def test_a_stop_reply_is_announced_with_the_client_not_the_number(
        service: Service, receiver: WebhookReceiver) -> None:
    from tests.kit import client_upserted, daytime_zone

    now = datetime.now(UTC)
    assert service.post(client_upserted("c1", daytime_zone(now),
                                        now - timedelta(minutes=1))).status_code == 202
    wait_for(lambda: service.runtime.store.load_record("client:c1"), what="the client")
    for body, sid in (("STOP", "SMin1"), ("stop", "SMin2"), ("START", "SMin3")):
        signed_twilio(service, "/twilio/inbound",
                      {"From": "+14155550123", "Body": body, "MessageSid": sid})
    receiver.wait_for(lambda: len([p for p in receiver.verified_payloads("/ehr")
                                   if p["type"].startswith("client.")]) >= 2,
                      what="opted out, then in")
    changes = sorted((p for p in receiver.verified_payloads("/ehr")
                      if p["type"].startswith("client.")), key=lambda p: p["data"]["sequence"])
    # The second STOP changed nothing, and announces nothing.
    assert [p["type"] for p in changes] == ["client.opted_out", "client.opted_in"]
    assert changes[0]["data"]["client_ids"] == ["c1"]
    assert changes[0]["data"]["source"] == "reply"
    assert "+1415" not in json.dumps(changes)
