"""The webhook receiver itself, driven by httpx over real HTTP with messages signed by the
reference `standardwebhooks` implementation."""

from __future__ import annotations

import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from tests.webhooks.receiver import Answer, Drop, Hang, WebhookReceiver

OLD = "whsec_" + base64.b64encode(b"the-old-secret-of-endpoint-a!!").decode()
NEW = "whsec_" + base64.b64encode(b"the-new-secret-of-endpoint-a!!").decode()
OTHER = "whsec_" + base64.b64encode(b"a-secret-of-some-other-sender").decode()


def signed(body: bytes, *secrets: str, msg_id: str = "msg_1") -> dict[str, str]:
    """Standard Webhooks headers for `body`, one signature per secret, space-separated."""
    now = datetime.now(UTC)
    signatures = " ".join(Webhook(s).sign(msg_id, now, body.decode()) for s in secrets)
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signatures, "content-type": "application/json"}


def post(receiver: WebhookReceiver, path: str, payload: Any, *secrets: str,
         timeout_s: float = 10.0) -> httpx.Response:
    body = json.dumps(payload).encode()
    return httpx.post(receiver.url(path), content=body, headers=signed(body, *secrets),
                      timeout=timeout_s)


def test_a_well_signed_message_is_verified_and_its_payload_kept(
        receiver: WebhookReceiver) -> None:
    receiver.endpoint("/a", secrets=[OLD])
    before = time.time()
    assert post(receiver, "/a", {"type": "notification.sent"}, OLD).status_code == 200
    [request] = receiver.received("/a")
    assert request.verified and request.matched_secrets == (OLD,)
    assert request.payload == {"type": "notification.sent"}
    assert request.headers["webhook-id"] == "msg_1"
    assert request.method == "POST" and json.loads(request.body) == request.payload
    assert before <= request.received_at_s <= time.time()
    assert receiver.verified_payloads("/a") == [{"type": "notification.sent"}]


def test_a_tampered_body_or_a_wrong_secret_is_not_verified(
        receiver: WebhookReceiver) -> None:
    receiver.endpoint("/a", secrets=[OLD])
    body = b'{"amount": 1}'
    httpx.post(receiver.url("/a"), content=b'{"amount": 2}', headers=signed(body, OLD))
    post(receiver, "/a", {"amount": 1}, OTHER)
    httpx.post(receiver.url("/a"), content=body)  # no signature headers at all
    requests = receiver.received("/a")
    assert [r.verified for r in requests] == [False, False, False]
    assert [r.payload for r in requests] == [None, None, None]
    assert receiver.verified_payloads("/a") == []


def test_the_script_is_followed_in_order_then_its_last_answer_repeated(
        receiver: WebhookReceiver) -> None:
    receiver.endpoint("/a", secrets=[OLD], script=[Answer(500)] * 3 + [Answer(200)])
    statuses = [post(receiver, "/a", {"n": n}, OLD).status_code for n in range(5)]
    assert statuses == [500, 500, 500, 200, 200]
    assert receiver.verified_payloads("/a") == [{"n": n} for n in range(5)]


def test_429_carries_retry_after(receiver: WebhookReceiver) -> None:
    receiver.endpoint("/a", secrets=[OLD], script=[Answer(429, retry_after="7")])
    response = post(receiver, "/a", {}, OLD)
    assert (response.status_code, response.headers["retry-after"]) == (429, "7")


def test_a_script_replaced_at_runtime_brings_a_dead_endpoint_back(
        receiver: WebhookReceiver) -> None:
    receiver.endpoint("/a", secrets=[OLD], script=[Answer(410)])
    assert post(receiver, "/a", {}, OLD).status_code == 410
    receiver.set_script("/a", [Answer(200)])
    assert post(receiver, "/a", {}, OLD).status_code == 200


def test_paths_are_independent_and_an_unknown_path_is_recorded_and_404(
        receiver: WebhookReceiver) -> None:
    receiver.endpoint("/a", secrets=[OLD], script=[Answer(500)])
    receiver.endpoint("/b", secrets=[NEW])
    assert post(receiver, "/a", {}, OLD).status_code == 500
    assert post(receiver, "/b", {}, NEW).status_code == 200
    assert post(receiver, "/c", {}, NEW).status_code == 404
    assert [r.path for r in receiver.received()] == ["/a", "/b", "/c"]
    assert not receiver.received("/c")[0].verified


def test_a_hang_is_cut_by_the_clients_read_timeout(receiver: WebhookReceiver) -> None:
    receiver.endpoint("/a", secrets=[OLD], script=[Hang(seconds=60)])
    with pytest.raises(httpx.ReadTimeout):
        post(receiver, "/a", {"n": 1}, OLD, timeout_s=0.5)
    assert receiver.verified_payloads("/a") == [{"n": 1}]


def test_closing_wakes_a_hanging_handler(receiver: WebhookReceiver) -> None:
    receiver.endpoint("/a", secrets=[OLD], script=[Hang(seconds=600)])
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(post, receiver, "/a", {}, OLD, timeout_s=300)
        receiver.wait_for(lambda: receiver.received("/a"), what="the request")
        receiver.close()
        # Far below both the hang and the client's timeout: only a woken handler ends it.
        with pytest.raises(httpx.RemoteProtocolError):
            answer.result(timeout=10)


def test_a_drop_closes_the_connection_unanswered(receiver: WebhookReceiver) -> None:
    receiver.endpoint("/a", secrets=[OLD], script=[Drop(), Answer(200)])
    with pytest.raises(httpx.RemoteProtocolError):
        post(receiver, "/a", {}, OLD)
    assert post(receiver, "/a", {}, OLD).status_code == 200
    assert len(receiver.received("/a")) == 2


@pytest.mark.parametrize(("endpoint_secrets", "signed_with", "matched"), [
    ([OLD, NEW], [OLD, NEW], (OLD, NEW)),  # mid-rotation: both verify
    ([OLD], [OLD, NEW], (OLD,)),  # an integrator not yet given the new secret
    ([NEW], [OLD, NEW], (NEW,)),  # one that already dropped the old one
    ([OLD, NEW], [NEW], (NEW,)),  # rotation over, old signature no longer sent
    ([OTHER], [OLD, NEW], ()),
])
def test_rotation_signatures_verify_against_either_secret(
        receiver: WebhookReceiver, endpoint_secrets: list[str], signed_with: list[str],
        matched: tuple[str, ...]) -> None:
    receiver.endpoint("/a", secrets=endpoint_secrets)
    post(receiver, "/a", {}, *signed_with)
    [request] = receiver.received("/a")
    assert len(request.headers["webhook-signature"].split(" ")) == len(signed_with)
    assert request.matched_secrets == matched


def test_wait_for_returns_the_value_or_fails_saying_what_it_saw(
        receiver: WebhookReceiver) -> None:
    receiver.endpoint("/a", secrets=[OLD], script=[Answer(503)])
    with ThreadPoolExecutor(1) as pool:
        pool.submit(post, receiver, "/a", {}, OLD)
        got = receiver.wait_for(lambda: receiver.received("/a"))
    assert len(got) == 1
    with pytest.raises(AssertionError, match=r"two requests.*POST /a -> Answer\(status=503"):
        receiver.wait_for(lambda: len(receiver.received("/a")) == 2,
                                  timeout_s=0.2, what="two requests")


def test_bad_endpoint_definitions_are_refused(receiver: WebhookReceiver) -> None:
    with pytest.raises(ValueError):
        receiver.endpoint("a")
    with pytest.raises(ValueError):
        receiver.endpoint("/a", script=[])
