"""The HTTP side against a real Redis: the signed webhook, the read API, health, metrics.

Every rejection is checked twice: the status and body, and that nothing reached Redis (no
stored event, nothing pending, nothing in the dramatiq queue).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from redis.backoff import NoBackoff
from redis.retry import Retry
from standardwebhooks.webhooks import Webhook

from notifier.cli.send_event import sign_event
from notifier.config import PROJECT_ROOT, Settings
from notifier.delivery.channels import Message, Receipt
from notifier.delivery.channels.outbox import Outbox
from notifier.delivery.deliverer import Deliverer
from notifier.delivery.render import Renderer
from notifier.errors import PermanentError, SignatureError
from notifier.intake.apply import apply_stored_event
from notifier.intake.events import EVENT_MODELS
from notifier.ledger.daily import REFUSED_DAILY
from notifier.ledger.embedded_redis import free_port
from notifier.ledger.notifications import FINAL_STATES
from notifier.ledger.reading import READ_LIMIT
from notifier.ledger.shard_marks import ensure_marks, mark_key, write_marks
from notifier.ledger.store import Store
from notifier.policy.plan import Plan, PlannedNotification
from notifier.web.app import create_app
from notifier.web.events import MAX_BODY_BYTES, UNAVAILABLE
from notifier.web.signatures import sign_webhook, verify_signature
from notifier.worker.actors import APPLY_EVENT, EVENTS_QUEUE, build_broker
from tests.ledger_keys import event_key, event_keys, pending_events, record_key
from tests.web.conftest import new_secret

NAMESPACE = "notifier-dq"
QUEUE_KEY = f"{NAMESPACE}:{EVENTS_QUEUE}"
QUEUE_MESSAGES_KEY = f"{NAMESPACE}:{EVENTS_QUEUE}.msgs"
NOW = datetime(2030, 3, 4, 12, 0, tzinfo=UTC)
TOKEN = "read-api-token-" + "x" * 20


@pytest.fixture
def settings(secret: str) -> Settings:
    return Settings.from_env({"NOTIFIER_WEBHOOK_SECRET": secret, "NOTIFIER_API_TOKEN": TOKEN},
                             dotenv=Path("/nonexistent"))


def down_redis() -> redis.Redis:
    """A client of a port nothing listens on, failing at once rather than retrying."""
    return redis.Redis(host="127.0.0.1", port=free_port(), retry=Retry(NoBackoff(), 0),
                       socket_connect_timeout=1)


def down_app(settings: Settings) -> Any:
    """The app with its Redis down: the store's and the broker's, which are one."""
    down = down_redis()
    return create_app(settings, Store(down), RedisBroker(namespace=NAMESPACE, client=down))


def event(event_id: str = "evt-1", type_: str = "appointment.completed",
          data: dict[str, Any] | None = None, occurred_at: str = "2026-03-04T12:00:00Z"
          ) -> dict[str, Any]:
    return {"id": event_id, "type": type_, "occurred_at": occurred_at,
            "data": {"appointment_id": "a1"} if data is None else data}


def encode(evt: Any) -> bytes:
    return json.dumps(evt).encode()


def signed(secret: str, body: bytes, event_id: str, at: datetime | None = None
           ) -> dict[str, str]:
    return sign_event(secret, body, event_id, at or datetime.now(UTC))


def post(client: TestClient, secret: str, evt: dict[str, Any]) -> Any:
    body = encode(evt)
    return client.post("/v1/events", content=body, headers=signed(secret, body, evt["id"]))


def queued(r: redis.Redis) -> list[dict[str, Any]]:
    """The dramatiq messages waiting in the events queue, in order."""
    ids = r.lrange(QUEUE_KEY, 0, -1)
    bodies = r.hmget(QUEUE_MESSAGES_KEY, ids) if ids else []
    assert None not in bodies, "a queued id without its message"
    return [json.loads(b) for b in bodies]


def assert_nothing_written(r: redis.Redis) -> None:
    assert r.keys("n:*") == [], "an event was stored"
    assert r.keys(f"{NAMESPACE}*") == [], "something was enqueued"


def assert_refused_at_the_door(r: redis.Redis, refused: int = 1) -> None:
    """Nothing stored nor enqueued but the day's count of events refused at the door
    (422), which the console's Today page shows: `refused` of them."""
    assert [k for k in r.keys("n:*") if not k.startswith(REFUSED_DAILY.encode())] == [], \
        "an event was stored"
    assert r.keys(f"{NAMESPACE}*") == [], "something was enqueued"
    counted = sum(int(v) for k in r.keys(REFUSED_DAILY + "*") for v in r.hvals(k))
    assert counted == refused, f"{counted} refusals counted"


def problem_fields(answer: Any) -> list[str]:
    return [p["field"] for p in answer.json()["problems"]]


def read(client: TestClient, client_id: str, token: str = TOKEN) -> Any:
    return client.get(f"/v1/clients/{client_id}/notifications",
                      headers={"Authorization": f"Bearer {token}"})


# Accepting -----------------------------------------------------------------------------------

def test_valid_event_is_stored_queued_and_accepted(client, secret, redis_client, store):
    body = b'{"id": "evt-1", "type": "appointment.completed",\n "occurred_at": ' \
           b'"2026-03-04T12:00:00Z", "data": {"appointment_id": "a1"}}'
    answer = client.post("/v1/events", content=body, headers=signed(secret, body, "evt-1"))
    assert answer.status_code == 202
    assert answer.json() == {"id": "evt-1", "status": "accepted"}

    stored = store.event_status("evt-1")
    assert stored["status"] == "accepted"
    assert stored["raw"].encode() == body, "the raw body is kept byte for byte"
    assert event_keys(redis_client) == [event_key("evt-1", "appointment:a1")]
    assert pending_events(redis_client) == ["evt-1"]
    [message] = queued(redis_client)
    assert (message["queue_name"], message["actor_name"], message["args"]) == (
        EVENTS_QUEUE, APPLY_EVENT, ["evt-1"])


def test_a_queue_redis_of_its_own_gets_the_message_after_the_event_is_stored(
        settings, store, secret, redis_client, other_redis_url):
    """NOTIFIER_BROKER_URL naming another Redis: the event is stored in the ledger and its
    `apply_event` enqueued on the broker's Redis (`worker.queueing`), nothing in the
    ledger's namespace."""
    broker = build_broker(other_redis_url)
    with TestClient(create_app(settings, store, broker)) as client:
        assert post(client, secret, event()).status_code == 202
    broker.close()
    assert store.event_status("evt-1")["status"] == "accepted"
    assert redis_client.keys(f"{NAMESPACE}*") == []
    [message] = queued(redis.Redis.from_url(other_redis_url))
    assert (message["actor_name"], message["args"]) == (APPLY_EVENT, ["evt-1"])


def test_an_event_stored_when_its_broker_is_down_is_accepted_for_the_sweep(
        settings, store, secret, redis_client, caplog):
    """Stored, then the broker (its own Redis, down) refuses the message: the answer is
    still 202, for the event is stored, pending, and the clock's sweep of unapplied
    events enqueues it (tests/end_to_end: `..._applied_by_the_sweep`)."""
    elsewhere = RedisBroker(namespace=NAMESPACE, client=down_redis())
    with TestClient(create_app(settings, store, elsewhere)) as client:
        answer = post(client, secret, event())
    assert (answer.status_code, answer.json()["status"]) == (202, "accepted")
    assert pending_events(redis_client) == ["evt-1"]
    assert redis_client.keys(f"{NAMESPACE}*") == []
    assert "event evt-1 stored but not queued (the clock's sweep queues it)" in caplog.text


def test_same_id_again_is_a_duplicate_and_changes_nothing(client, secret, redis_client, store):
    first = event()
    assert post(client, secret, first).status_code == 202
    again = post(client, secret, first)
    assert again.status_code == 200
    assert again.json() == {"id": "evt-1", "status": "duplicate"}

    other_body = event(occurred_at="2026-03-04T13:00:00Z")
    changed = post(client, secret, other_body)
    assert changed.status_code == 200
    assert changed.json() == {"id": "evt-1", "status": "duplicate"}

    assert event_keys(redis_client) == [event_key("evt-1", "appointment:a1")]
    assert json.loads(store.event_status("evt-1")["raw"]) == first
    assert pending_events(redis_client) == ["evt-1"]
    assert [m["args"] for m in queued(redis_client)] == [["evt-1"]]


def test_an_id_sent_again_about_another_subject_is_stored_in_that_subjects_shard(
        client, secret, redis_client, store):
    """Duplicates are known per subject (`notifier.ledger.events`): an id re-used about an
    appointment of another shard is a second event there; a lookup by id finds the first
    one stored."""
    first = event()
    assert post(client, secret, first).status_code == 202
    assert store.keys.of_ref("appointment:a1") != store.keys.of_ref("appointment:a2")
    other = post(client, secret, event(data={"appointment_id": "a2"}))
    assert (other.status_code, other.json()["status"]) == (202, "accepted")
    assert event_keys(redis_client) == sorted([event_key("evt-1", "appointment:a1"),
                                               event_key("evt-1", "appointment:a2")])
    assert json.loads(store.event_status("evt-1")["raw"]) == first


def test_a_duplicate_of_an_applied_event_is_still_a_duplicate(client, secret, store, policy,
                                                              redis_client):
    evt = event()
    assert post(client, secret, evt).status_code == 202
    assert apply_stored_event(store, "evt-1", policy, NOW) is not None
    answer = post(client, secret, evt)
    assert (answer.status_code, answer.json()["status"]) == (200, "duplicate")
    assert pending_events(redis_client) == []
    assert len(queued(redis_client)) == 1


def test_distinct_ids_are_each_accepted(client, secret, redis_client):
    for event_id in ("evt-1", "evt-2"):
        assert post(client, secret, event(event_id)).status_code == 202
    assert pending_events(redis_client) == ["evt-1", "evt-2"]
    assert sorted(m["args"][0] for m in queued(redis_client)) == ["evt-1", "evt-2"]


# Signatures ----------------------------------------------------------------------------------

@pytest.mark.parametrize("header", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_signature_header_is_401(client, secret, redis_client, header):
    body = encode(event())
    headers = signed(secret, body, "evt-1")
    del headers[header]
    answer = client.post("/v1/events", content=body, headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error"] == f"signature: missing header {header}"
    assert_nothing_written(redis_client)


@pytest.mark.parametrize("header", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_empty_signature_header_is_401(client, secret, redis_client, header):
    body = encode(event())
    headers = {**signed(secret, body, "evt-1"), header: ""}
    assert client.post("/v1/events", content=body, headers=headers).status_code == 401
    assert_nothing_written(redis_client)


def test_no_headers_at_all_is_401(client, redis_client):
    answer = client.post("/v1/events", content=encode(event()))
    assert answer.status_code == 401
    assert answer.json()["error"] == (
        "signature: missing header webhook-id, webhook-timestamp, webhook-signature")
    assert_nothing_written(redis_client)


def test_wrong_secret_is_401(client, redis_client):
    body = encode(event())
    answer = client.post("/v1/events", content=body, headers=signed(new_secret(), body, "evt-1"))
    assert answer.status_code == 401
    assert answer.json() == {"error": "signature: no matching signature", "problems": []}
    assert_nothing_written(redis_client)


@pytest.mark.parametrize("signature", [
    "garbage",
    "v1,not-base64!!",
    "v1,",
    "v1",
    "v1,a,b",
    "",
    " ",
    "v1,Zm9v",  # valid base64, wrong length
    "v1,ünïcode".encode("latin-1"),  # not ASCII
])
def test_malformed_signature_is_401_not_500(client, secret, redis_client, signature):
    body = encode(event())
    headers = {**signed(secret, body, "evt-1"), "webhook-signature": signature}
    answer = client.post("/v1/events", content=body, headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error"].startswith("signature: ")
    assert_nothing_written(redis_client)


def test_signature_of_an_unknown_version_is_401(client, secret, redis_client):
    body = encode(event())
    headers = signed(secret, body, "evt-1")
    headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,")
    assert client.post("/v1/events", content=body, headers=headers).status_code == 401
    assert_nothing_written(redis_client)


@pytest.mark.parametrize("tamper", [
    lambda b: b.replace(b'"a1"', b'"a2"'),
    lambda b: b + b" ",
    lambda b: b[:-1],
])
def test_body_tampered_after_signing_is_401(client, secret, redis_client, tamper):
    body = encode(event())
    answer = client.post("/v1/events", content=tamper(body),
                         headers=signed(secret, body, "evt-1"))
    assert answer.status_code == 401
    assert_nothing_written(redis_client)


def test_signature_for_another_webhook_id_is_401(client, secret, redis_client):
    body = encode(event())
    headers = {**signed(secret, body, "evt-1"), "webhook-id": "evt-2"}
    assert client.post("/v1/events", content=body, headers=headers).status_code == 401
    assert_nothing_written(redis_client)


def test_signature_for_another_timestamp_is_401(client, secret, redis_client):
    body = encode(event())
    headers = signed(secret, body, "evt-1")
    headers["webhook-timestamp"] = str(int(headers["webhook-timestamp"]) - 1)
    assert client.post("/v1/events", content=body, headers=headers).status_code == 401
    assert_nothing_written(redis_client)


@pytest.mark.parametrize(("skew", "error"), [
    (timedelta(minutes=-6), "signature: webhook-timestamp more than 5 minutes old"),
    (timedelta(minutes=6), "signature: webhook-timestamp more than 5 minutes ahead"),
])
def test_timestamp_more_than_5_minutes_off_is_401(client, secret, redis_client, skew, error):
    body = encode(event())
    headers = signed(secret, body, "evt-1", datetime.now(UTC) + skew)
    answer = client.post("/v1/events", content=body, headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error"] == error
    assert_nothing_written(redis_client)


@pytest.mark.parametrize("skew", [timedelta(minutes=-4), timedelta(minutes=4)])
def test_timestamp_within_5_minutes_is_accepted(client, secret, skew):
    body = encode(event())
    headers = signed(secret, body, "evt-1", datetime.now(UTC) + skew)
    assert client.post("/v1/events", content=body, headers=headers).status_code == 202


@pytest.mark.parametrize("timestamp", ["yesterday", "", "nan", "1e30", "-1"])
def test_unreadable_timestamp_is_401(client, secret, redis_client, timestamp):
    body = encode(event())
    headers = {**signed(secret, body, "evt-1"), "webhook-timestamp": timestamp}
    assert client.post("/v1/events", content=body, headers=headers).status_code == 401
    assert_nothing_written(redis_client)


@pytest.mark.parametrize("spelled", ["{}.9", "{}.0", "{}e0", "+{}", "0x{:x}"])
def test_timestamp_other_than_plain_digits_is_401_even_when_its_floor_was_signed(
        client, secret, redis_client, spelled):
    body = encode(event())
    now = datetime.now(UTC)
    headers = signed(secret, body, "evt-1", now)
    headers["webhook-timestamp"] = spelled.format(int(now.timestamp()))
    answer = client.post("/v1/events", content=body, headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error"] == (
        "signature: webhook-timestamp is not Unix seconds (digits only)")
    assert_nothing_written(redis_client)


def test_key_rotation_second_of_two_signatures_valid_is_accepted(client, secret, redis_client):
    body = encode(event())
    now = datetime.now(UTC)
    old = signed(new_secret(), body, "evt-1", now)["webhook-signature"]
    headers = signed(secret, body, "evt-1", now)
    headers["webhook-signature"] = f"{old} {headers['webhook-signature']}"
    answer = client.post("/v1/events", content=body, headers=headers)
    assert answer.status_code == 202
    assert answer.json() == {"id": "evt-1", "status": "accepted"}
    assert len(queued(redis_client)) == 1


@pytest.mark.parametrize("before", [
    "v2", "v2,{valid}", "v1,abc", "v1,not-base64!!", "garbage", "v1,", "v1", "v1,a,b",
    "v1,Zm9v", "v1,{other}",
])
def test_key_rotation_a_malformed_entry_does_not_hide_a_valid_one(client, secret, redis_client,
                                                                   before):
    body = encode(event())
    now = datetime.now(UTC)
    valid = signed(secret, body, "evt-1", now)["webhook-signature"]
    other = signed(new_secret(), body, "evt-1", now)["webhook-signature"]
    headers = signed(secret, body, "evt-1", now)
    entry = before.format(valid=valid.removeprefix("v1,"), other=other.removeprefix("v1,"))
    headers["webhook-signature"] = f"{entry} {valid}"
    answer = client.post("/v1/events", content=body, headers=headers)
    assert answer.status_code == 202, answer.json()
    assert len(queued(redis_client)) == 1


def test_key_rotation_with_no_valid_signature_is_401(client, redis_client):
    body = encode(event())
    now = datetime.now(UTC)
    headers = signed(new_secret(), body, "evt-1", now)
    headers["webhook-signature"] += " " + signed(new_secret(), body, "evt-1", now)[
        "webhook-signature"]
    assert client.post("/v1/events", content=body, headers=headers).status_code == 401
    assert_nothing_written(redis_client)


def test_a_body_that_is_not_utf8_is_verified_then_refused_as_not_json(client, secret,
                                                                      redis_client):
    body = b'{"id": "evt-1", "x": "\xff\xfe"}'
    answer = post_raw(client, secret, body)
    assert answer.status_code == 422
    assert problem_fields(answer) == ["body"]
    assert_refused_at_the_door(redis_client)


# The verification itself, pure: (secret, body, headers, now) -----------------------------------

PURE_SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
PURE_NOW = datetime(2030, 3, 4, 12, 0, 0, 700_000, tzinfo=UTC)
PURE_TS = int(PURE_NOW.timestamp())


def pure_headers(signature: str | None = None, timestamp: str | None = None,
                 body: bytes = b"{}", secret: str = PURE_SECRET) -> dict[str, str]:
    return {"webhook-id": "evt-1", "webhook-timestamp": timestamp or str(PURE_TS),
            "webhook-signature": signature or sign_webhook(secret, "evt-1", PURE_TS, body)}


def test_pure_verification_returns_the_webhook_id():
    assert verify_signature(PURE_SECRET, b"{}", pure_headers(), PURE_NOW) == "evt-1"


@pytest.mark.parametrize("entries", [
    "v2 {valid}", "v1,abc {valid}", "garbage {valid}", "{valid} garbage", "v1,!! {valid}",
    "v1,a,b {valid}", "v2,{valid_b64} {valid}", "{other}  {valid}", "{other}\t{valid}",
])
def test_pure_any_well_formed_matching_entry_is_enough(entries):
    valid = sign_webhook(PURE_SECRET, "evt-1", PURE_TS, b"{}")
    other = sign_webhook("whsec_" + base64.b64encode(b"o" * 32).decode(), "evt-1", PURE_TS,
                         b"{}")
    header = entries.format(valid=valid, valid_b64=valid.removeprefix("v1,"), other=other)
    assert verify_signature(PURE_SECRET, b"{}", pure_headers(header), PURE_NOW) == "evt-1"


@pytest.mark.parametrize("entries", [
    "v2,{valid_b64}", "V1,{valid_b64}", "v1 {valid_b64}", "v1,{valid_b64}x", "{other}",
    "garbage", "v1,", ",", "v1,{valid_b64_unpadded}",
])
def test_pure_no_well_formed_matching_entry_is_refused(entries):
    valid = sign_webhook(PURE_SECRET, "evt-1", PURE_TS, b"{}").removeprefix("v1,")
    other = sign_webhook("whsec_" + base64.b64encode(b"o" * 32).decode(), "evt-1", PURE_TS,
                         b"{}")
    header = entries.format(valid_b64=valid, valid_b64_unpadded=valid.rstrip("="), other=other)
    with pytest.raises(SignatureError, match="^no matching signature$"):
        verify_signature(PURE_SECRET, b"{}", pure_headers(header), PURE_NOW)


@pytest.mark.parametrize("timestamp", [
    f"{PURE_TS}.9", f"{PURE_TS}.0", f"{PURE_TS}e0", f" {PURE_TS}", f"{PURE_TS} ", f"+{PURE_TS}",
    f"{PURE_TS}\n", str(PURE_TS).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")),
    f"{PURE_TS:_}", "9" * 40,
])
def test_pure_timestamp_must_be_plain_digits(timestamp):
    # The signature is over the floored value, which the old check accepted.
    with pytest.raises(SignatureError, match="not Unix seconds"):
        verify_signature(PURE_SECRET, b"{}", pure_headers(timestamp=timestamp), PURE_NOW)


@pytest.mark.parametrize(("skew_s", "accepted"), [
    (-300, True), (300, True), (-301, False), (301, False), (0, True),
])
def test_pure_timestamp_tolerance_is_5_minutes_either_way(skew_s, accepted):
    ts = PURE_TS + skew_s
    headers = pure_headers(sign_webhook(PURE_SECRET, "evt-1", ts, b"{}"), str(ts))
    now = PURE_NOW.replace(microsecond=0)
    if accepted:
        assert verify_signature(PURE_SECRET, b"{}", headers, now) == "evt-1"
    else:
        with pytest.raises(SignatureError, match="more than 5 minutes"):
            verify_signature(PURE_SECRET, b"{}", headers, now)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_pure_each_header_is_required(missing):
    headers = {k: v for k, v in pure_headers().items() if k != missing}
    with pytest.raises(SignatureError, match=f"^missing header {missing}$"):
        verify_signature(PURE_SECRET, b"{}", headers, PURE_NOW)


def test_pure_a_body_that_is_not_utf8_is_signed_and_verified_as_bytes():
    body = b"\xff\xfe\x00 not text"
    headers = pure_headers(sign_webhook(PURE_SECRET, "evt-1", PURE_TS, body))
    assert verify_signature(PURE_SECRET, body, headers, PURE_NOW) == "evt-1"
    with pytest.raises(SignatureError):
        verify_signature(PURE_SECRET, body + b"!", headers, PURE_NOW)


def test_signatures_are_compatible_with_the_standard_webhooks_library():
    body = encode(event())
    now = datetime.now(UTC)
    ours = sign_event(PURE_SECRET, body, "evt-1", now)
    Webhook(PURE_SECRET).verify(body, ours, json_parse=False)  # raises when they differ
    theirs = {**ours, "webhook-signature": Webhook(PURE_SECRET).sign("evt-1", now, body.decode())}
    assert verify_signature(PURE_SECRET, body, theirs, now) == "evt-1"


# Size ----------------------------------------------------------------------------------------

def padded(size: int) -> bytes:
    """A valid event body of exactly `size` bytes (JSON allows trailing whitespace)."""
    body = encode(event())
    return body + b" " * (size - len(body))


def test_body_of_exactly_64_kib_is_accepted(client, secret):
    body = padded(MAX_BODY_BYTES)
    assert MAX_BODY_BYTES == 64 * 1024
    answer = client.post("/v1/events", content=body, headers=signed(secret, body, "evt-1"))
    assert answer.status_code == 202


def test_body_over_64_kib_with_content_length_is_413(client, secret, redis_client):
    body = padded(MAX_BODY_BYTES + 1)
    answer = client.post("/v1/events", content=body, headers=signed(secret, body, "evt-1"))
    assert answer.request.headers["content-length"] == str(MAX_BODY_BYTES + 1)
    assert answer.status_code == 413
    assert answer.json() == {"error": "body over 65536 bytes", "problems": []}
    assert_nothing_written(redis_client)


def test_body_over_64_kib_chunked_without_content_length_is_413(client, secret, redis_client):
    body = padded(MAX_BODY_BYTES + 1)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 4096):
            yield body[start:start + 4096]

    answer = client.post("/v1/events", content=chunks(), headers=signed(secret, body, "evt-1"))
    assert "content-length" not in answer.request.headers
    assert answer.request.headers["transfer-encoding"] == "chunked"
    assert answer.status_code == 413
    assert_nothing_written(redis_client)


def test_chunked_body_within_the_limit_is_accepted(client, secret, redis_client):
    body = padded(MAX_BODY_BYTES)
    answer = client.post("/v1/events", content=iter([body[:1000], body[1000:]]),
                         headers=signed(secret, body, "evt-1"))
    assert "content-length" not in answer.request.headers
    assert answer.status_code == 202
    assert len(queued(redis_client)) == 1


def test_oversized_body_is_413_before_the_signature_is_looked_at(client, redis_client):
    answer = client.post("/v1/events", content=padded(MAX_BODY_BYTES + 1))
    assert answer.status_code == 413
    assert_nothing_written(redis_client)


# Validation ----------------------------------------------------------------------------------

def post_raw(client: TestClient, secret: str, body: bytes, event_id: str = "evt-1") -> Any:
    return client.post("/v1/events", content=body, headers=signed(secret, body, event_id))


@pytest.mark.parametrize("body", [b"not json", b"{", b"", b'{"id": "evt-1",}'])
def test_not_json_is_422(client, secret, redis_client, body):
    answer = post_raw(client, secret, body)
    assert answer.status_code == 422
    assert answer.json()["error"] == "invalid event"
    assert problem_fields(answer) == ["body"]
    assert answer.json()["problems"][0]["message"].startswith("not valid JSON")
    assert_refused_at_the_door(redis_client)


@pytest.mark.parametrize("body", [b"[]", encode([event()]), b"null", b'"evt-1"'])
def test_json_that_is_no_object_is_422(client, secret, redis_client, body):
    answer = post_raw(client, secret, body)
    assert answer.status_code == 422
    assert answer.json() == {"error": "invalid event", "problems": [
        {"field": "body", "message": "must be a JSON object"}]}
    assert_refused_at_the_door(redis_client)


def test_json_nested_too_deep_is_422_not_500(client, secret, redis_client):
    answer = post_raw(client, secret, b"[" * 20_000 + b"]" * 20_000)
    assert answer.status_code == 422
    assert problem_fields(answer) == ["body"]
    assert_refused_at_the_door(redis_client)


def test_unknown_type_is_422_naming_type(client, secret, redis_client):
    answer = post(client, secret, event(type_="appointment.booked"))
    assert answer.status_code == 422
    assert problem_fields(answer) == ["type"]
    assert "unknown event type 'appointment.booked'" in answer.json()["problems"][0]["message"]
    assert_refused_at_the_door(redis_client)


def test_invalid_fields_are_each_named(client, secret, redis_client):
    data = {"client": {"id": "c1", "first_name": "Ana", "phone": "+1 415 555 0123",
                       "email": "ana.example.com", "timezone": "Eastern Time",
                       "locale": "en", "channels": {"sms": True, "email": True},
                       "favourite_colour": "blue"}}
    answer = post(client, secret, event(type_="client.upserted", data=data))
    assert answer.status_code == 422
    assert answer.json()["error"] == "invalid event"
    assert sorted(problem_fields(answer)) == [
        "data.client.email", "data.client.favourite_colour", "data.client.phone",
        "data.client.timezone"]
    assert_refused_at_the_door(redis_client)


def test_timezone_that_is_a_zone_directory_is_422_not_500(client, secret, redis_client):
    data = {"client": {"id": "c1", "first_name": "Ana", "timezone": "America",
                       "channels": {"sms": True, "email": True}}}
    answer = post(client, secret, event(type_="client.upserted", data=data))
    assert answer.status_code == 422
    assert problem_fields(answer) == ["data.client.timezone"]
    assert_refused_at_the_door(redis_client)


def test_appointment_ending_before_it_starts_is_422_naming_end(client, secret, redis_client):
    data = {"appointment": {"id": "a1", "client_id": "c1", "provider_id": "p1",
                            "start": "2030-03-14T15:00:00Z", "end": "2030-03-14T14:00:00Z",
                            "kind": "therapy"}}
    answer = post(client, secret, event(type_="appointment.scheduled", data=data))
    assert answer.status_code == 422
    assert answer.json()["problems"] == [
        {"field": "data.appointment.end", "message": "Value error, end must be after start"}]
    assert_refused_at_the_door(redis_client)


def test_unknown_envelope_field_and_naive_time_are_named(client, secret, redis_client):
    evt = {**event(occurred_at="2030-03-04T12:00:00"), "source": "ehr"}
    answer = post(client, secret, evt)
    assert answer.status_code == 422
    assert sorted(problem_fields(answer)) == ["occurred_at", "source"]
    assert_refused_at_the_door(redis_client)


def test_event_id_other_than_webhook_id_is_422_naming_id(client, secret, redis_client):
    body = encode(event("evt-2"))
    answer = post_raw(client, secret, body, event_id="evt-1")
    assert answer.status_code == 422
    assert answer.json()["problems"] == [
        {"field": "id", "message": "must equal the webhook-id header"}]
    assert_refused_at_the_door(redis_client)


def test_event_id_outside_the_safe_alphabet_is_422_naming_id(client, secret, redis_client):
    body = encode(event("evt 1"))
    answer = post_raw(client, secret, body, event_id="evt 1")
    assert answer.status_code == 422
    assert problem_fields(answer) == ["id"]
    assert_refused_at_the_door(redis_client)


# Reading -------------------------------------------------------------------------------------

def test_notifications_of_an_unknown_client_is_an_empty_list(client):
    answer = read(client, "nobody")
    assert answer.status_code == 200
    assert answer.json() == {"client_id": "nobody", "notifications": [], "appointments": []}


def test_notifications_list_what_a_booking_planned(client, secret, store, policy):
    start = NOW + timedelta(days=10, hours=3)
    upsert = event("evt-client", "client.upserted", {"client": {
        "id": "c1", "first_name": "Ana", "phone": "+14155550123", "email": "ana@example.com",
        "timezone": "UTC", "channels": {"sms": True, "email": True}}})
    booking = event("evt-booking", "appointment.scheduled", {"appointment": {
        "id": "a1", "client_id": "c1", "provider_id": "p1", "start": start.isoformat(),
        "end": (start + timedelta(minutes=30)).isoformat(), "kind": "therapy",
        "join_url": "https://video.example/a1"}})
    for evt in (upsert, booking):
        assert post(client, secret, evt).status_code == 202
        assert apply_stored_event(store, evt["id"], policy, NOW) is not None

    answer = read(client, "c1")
    assert answer.status_code == 200
    body = answer.json()
    assert body["client_id"] == "c1"
    figures = policy.appointments
    stamp = start.strftime("%Y%m%dT%H%M%SZ")
    expected = {f"appointment_confirmation:a1:booked:{channel}": (NOW, start)
                for channel in figures.confirmation_channels}
    for offset in figures.reminder_offsets:
        hours = int(offset.total_seconds() // 3600)
        for channel in figures.reminder_channels:
            expected[f"appointment_reminder:a1:{hours}h.{stamp}:{channel}"] = (start - offset,
                                                                               start)
    expected[f"appointment_join_link:a1:{stamp}:sms"] = (
        start - figures.join_link_offset, start + figures.join_link_grace)
    got = {n["id"]: n for n in body["notifications"]}
    assert set(got) == set(expected)
    for notification_id, (due_at, expires_at) in expected.items():
        n = got[notification_id]
        assert n["kind"] == notification_id.split(":")[0]
        assert n["channel"] == notification_id.rsplit(":", 1)[1]
        assert datetime.fromisoformat(n["due_at"]) == due_at, notification_id
        assert datetime.fromisoformat(n["expires_at"]) == expires_at, notification_id
        assert (n["state"], n["reason"], n["sent_at"], n["code"]) == ("scheduled", "", None, None)
    dues = [datetime.fromisoformat(n["due_at"]) for n in body["notifications"]]
    assert dues == sorted(dues), "listed by due time"
    assert read(client, "c2").json()["notifications"] == []


def planned_for_c1(name: str, due: datetime) -> PlannedNotification:
    return PlannedNotification(
        id=f"appointment_reminder:{name}:sms", kind="appointment_reminder", channel="sms",
        recipient="client", recipient_id="c1", entity=f"appointment:{name}", due_at=due,
        expires_at=due + timedelta(hours=1))


def test_the_read_api_shows_the_last_30_days_and_what_is_coming(client, store):
    now = datetime.now(UTC)
    history = [planned_for_c1(f"old{i}", now - timedelta(days=31, minutes=i))
               for i in range(READ_LIMIT + 10)]
    recent = planned_for_c1("recent", now - timedelta(days=29))
    upcoming = planned_for_c1("upcoming", now + timedelta(days=7))
    store.write_plan(Plan(outcome="applied", add=(*history, recent, upcoming)), now)
    shown = [n["id"] for n in read(client, "c1").json()["notifications"]]
    assert shown == [recent.id, upcoming.id]


def test_the_read_api_lists_at_most_200_soonest_first(client, store):
    """README: "lists notifications due from 30 days ago on, at most 200"."""
    now = datetime.now(UTC)
    coming = [planned_for_c1(f"n{i:03}", now + timedelta(hours=i)) for i in range(201)]
    store.write_plan(Plan(outcome="applied", add=tuple(reversed(coming))), now)
    shown = [n["id"] for n in read(client, "c1").json()["notifications"]]
    assert shown == [n.id for n in coming[:200]]


def redis_contents(r: redis.Redis) -> dict[bytes, bytes | None]:
    """Every key with its serialized value (DUMP): equal snapshots mean nothing changed."""
    return {key: r.dump(key) for key in sorted(r.scan_iter(count=1000))}


def test_a_read_writes_nothing(client, store, redis_client):
    """GET is a read: it leaves Redis exactly as it found it, even when the recipient's index
    holds entries older than the retention (left by a write long ago)."""
    now = datetime.now(UTC)
    long_ago = now - timedelta(days=400)
    store.write_plan(Plan(outcome="applied", add=(planned_for_c1("ancient", long_ago),)),
                     long_ago)
    recent = planned_for_c1("recent", now - timedelta(days=1))
    store.write_plan(Plan(outcome="applied", add=(recent,)), long_ago)
    before = redis_contents(redis_client)
    assert store.keys.recipient_index_of(recent.id, "client", "c1").encode() in before
    assert [n["id"] for n in read(client, "c1").json()["notifications"]] == [recent.id]
    assert [v.id for v in store.notifications_for("client", "c1", now - timedelta(days=30))
            ] == [recent.id]
    assert redis_contents(redis_client) == before


def booking_event(event_id: str, appt_id: str, start: datetime, occurred_at: datetime,
                  minutes: int = 30) -> dict[str, Any]:
    return event(event_id, "appointment.scheduled", {"appointment": {
        "id": appt_id, "client_id": "c1", "provider_id": "p1", "start": start.isoformat(),
        "end": (start + timedelta(minutes=minutes)).isoformat(), "kind": "therapy"}},
        occurred_at=occurred_at.isoformat())


def client_event(zone: str, occurred_at: datetime) -> dict[str, Any]:
    return event("evt-client", "client.upserted", {"client": {
        "id": "c1", "first_name": "Ana", "phone": "+14155550123", "email": "ana@example.com",
        "timezone": zone, "channels": {"sms": True, "email": True}}},
        occurred_at=occurred_at.isoformat())


def test_a_booking_made_after_the_start_shows_why_its_notices_expired(client, secret, store,
                                                                      policy):
    # Issue 11: a client in Madrid at 09:18 (UTC+1 in winter), an appointment from 09:00;
    # yesterday, so the read API's window holds it and no event is dated in the future.
    now = (datetime.now(UTC) - timedelta(days=1)).replace(hour=8, minute=18, second=0,
                                                          microsecond=0)
    start = now - timedelta(minutes=18)
    for evt in (client_event("Europe/Madrid", now - timedelta(days=1)),
                booking_event("evt-late-booking", "a1", start, now)):
        assert post(client, secret, evt).status_code == 202
        assert apply_stored_event(store, evt["id"], policy, now) is not None
    shown = {(n["kind"], n["state"], n["reason"])
             for n in read(client, "c1").json()["notifications"]}
    assert shown == {("appointment_confirmation", "expired",
                      "the appointment had already started when it was booked")}


def book_three(store: Store, policy, now: datetime) -> None:
    """For client c1: `ended` (over 30 min ago, never completed), `running` (started 10 min
    ago, ends in 20) and `ahead` (in two days), each booked three days before `now`."""
    booked_at = now - timedelta(days=3)
    for evt in (client_event("UTC", booked_at),
                booking_event("evt-ended", "ended", now - timedelta(hours=1), booked_at),
                booking_event("evt-running", "running", now - timedelta(minutes=10), booked_at),
                booking_event("evt-ahead", "ahead", now + timedelta(days=2), booked_at)):
        store.store_event(evt["id"], encode(evt), booked_at)
        assert apply_stored_event(store, evt["id"], policy, booked_at) is not None


def test_upcoming_appointments_are_those_not_ended(store, policy):
    book_three(store, policy, NOW)
    upcoming = store.upcoming_appointments("c1", NOW)
    assert [r.appointment.id for r in upcoming] == ["running", "ahead"]
    # An appointment is past from its end on, to the second.
    running_end = upcoming[0].appointment.end
    assert [r.appointment.id for r in store.upcoming_appointments(
        "c1", running_end - timedelta(seconds=1))] == ["running", "ahead"]
    assert [r.appointment.id for r in store.upcoming_appointments(
        "c1", running_end)] == ["ahead"]
    assert store.upcoming_appointments("nobody", NOW) == []


def test_upcoming_appointments_skip_one_whose_record_is_gone(store, policy):
    book_three(store, policy, NOW)
    store.redis.delete(record_key("appointment:ahead"))
    assert [r.appointment.id for r in store.upcoming_appointments("c1", NOW)] == ["running"]


def test_the_read_api_lists_as_upcoming_only_appointments_not_ended(client, store, policy):
    # The read API reads the real clock: times are set around it, not fixed.
    book_three(store, policy, datetime.now(UTC))
    listed = read(client, "c1").json()["appointments"]
    assert [a["id"] for a in listed] == ["running", "ahead"]
    assert all(a["status"] == "scheduled" for a in listed)
    assert all(datetime.fromisoformat(a["end"]) > datetime.fromisoformat(a["start"])
               for a in listed)


@pytest.mark.parametrize("authorization", [
    None, f"Basic {TOKEN}", "Bearer", f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x",
    f"Bearer {TOKEN.upper()}", "Bearer wrong", f"Token {TOKEN}", TOKEN,
])
def test_the_read_api_wants_the_bearer_token(client, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    answer = client.get("/v1/clients/c1/notifications", headers=headers)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.json()["error"] in {"missing Authorization: Bearer <NOTIFIER_API_TOKEN>",
                                      "wrong bearer token"}
    assert "notifications" not in answer.json()


def test_the_read_api_names_what_is_wrong(client):
    missing = client.get("/v1/clients/c1/notifications")
    assert missing.json() == {"error": "missing Authorization: Bearer <NOTIFIER_API_TOKEN>",
                              "problems": []}
    wrong = read(client, "c1", token="x" * len(TOKEN))
    assert wrong.json() == {"error": "wrong bearer token", "problems": []}
    assert read(client, "c1").status_code == 200


def test_without_an_api_token_configured_the_read_api_is_closed(secret, store, broker):
    unset = Settings.from_env({"NOTIFIER_WEBHOOK_SECRET": secret}, dotenv=Path("/nonexistent"))
    with TestClient(create_app(unset, store, broker)) as closed:
        for headers in ({}, {"Authorization": f"Bearer {TOKEN}"},
                        {"Authorization": "Bearer None"}, {"Authorization": "Bearer "}):
            answer = closed.get("/v1/clients/c1/notifications", headers=headers)
            assert answer.status_code == 401
            assert answer.json()["error"] == (
                "NOTIFIER_API_TOKEN is not configured: the read API is closed")
        assert closed.get("/healthz").status_code == 200


def test_health_metrics_and_openapi_need_no_token(client):
    for path in ("/healthz", "/metrics", "/openapi.json"):
        assert client.get(path).status_code == 200, path


# Health, metrics, OpenAPI ---------------------------------------------------------------------

def test_healthz_is_200_with_redis_up(client):
    answer = client.get("/healthz")
    assert answer.status_code == 200
    # The session's Redis runs without an append-only file.
    assert answer.json() == {"status": "ok", "redis": "ok", "redis_fsync": "off",
                             "ledger_shards_lost": 0}


def test_healthz_and_metrics_say_how_many_shards_lost_their_data(client, store):
    """A shard whose mark is gone (`ledger.shard_marks`: a master back without its data)
    makes /healthz `degraded`, still 200 (the other shards work), until it is marked."""
    ensure_marks(store.redis, store.keys)
    assert client.get("/healthz").json()["ledger_shards_lost"] == 0
    store.redis.delete(mark_key(store.keys, 7))
    answer = client.get("/healthz")
    assert answer.status_code == 200
    assert (answer.json()["status"], answer.json()["ledger_shards_lost"]) == ("degraded", 1)
    assert "notifier_ledger_shards_lost 1.0" in client.get("/metrics").text
    write_marks(store.redis, store.keys, [7])
    assert client.get("/healthz").json()["status"] == "ok"


def test_healthz_is_503_with_redis_down(settings):
    with TestClient(down_app(settings)) as down_client:
        answer = down_client.get("/healthz")
    assert answer.status_code == 503
    assert answer.json()["status"] == "unhealthy"
    # "unreachable", not Redis's own words, which name its address (issue 13).
    assert answer.json()["redis"] == "unreachable"
    assert answer.headers["retry-after"] == "5"


def events_counted(client: TestClient) -> dict[str, float]:
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    [family] = [f for f in text_string_to_metric_families(answer.text)
                if f.name == "notifier_events"]
    return {s.labels["answer"]: s.value for s in family.samples
            if s.name == "notifier_events_total"}


def test_metrics_count_events_by_answer(client, secret):
    assert events_counted(client) == {}
    evt = event()
    post(client, secret, evt)
    post(client, secret, evt)
    post(client, secret, event("evt-2"))
    client.post("/v1/events", content=encode(event("evt-3")))
    post(client, secret, event("evt-4", type_="nope"))
    post_raw(client, secret, padded(MAX_BODY_BYTES + 1))
    assert events_counted(client) == {"accepted": 2.0, "duplicate": 1.0, "unauthorized": 1.0,
                                      "invalid": 1.0, "too_large": 1.0}
    assert 'notifier_events_total{answer="accepted"} 2.0' in client.get("/metrics").text


def resolve(document: dict[str, Any], ref: str) -> dict[str, Any]:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def refs_in(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs_in(item)


def test_openapi_documents_every_event_type_and_the_read_side(client):
    answer = client.get("/openapi.json")
    assert answer.status_code == 200
    document = json.loads(answer.text)
    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    assert {"/v1/events", "/v1/clients/{client_id}/notifications", "/healthz",
            "/metrics"} <= set(paths)
    assert "get" in paths["/v1/clients/{client_id}/notifications"]
    assert "get" in paths["/healthz"]

    post_op = paths["/v1/events"]["post"]
    one_of = post_op["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert len(one_of) == 14
    types = [resolve(document, alt["$ref"])["properties"]["type"]["const"] for alt in one_of]
    assert sorted(types) == sorted(EVENT_MODELS)
    assert {p["name"] for p in post_op["parameters"] if p["in"] == "header"} == {
        "webhook-id", "webhook-timestamp", "webhook-signature"}
    assert {"200", "202", "401", "413", "422"} <= set(post_op["responses"])
    for ref in refs_in(document):
        resolve(document, ref)
    assert client.get("/openapi.json").json() == document


def test_openapi_documents_the_read_api_bearer_token_and_nothing_else_needs_it(client):
    document = client.get("/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert [(s["type"], s["scheme"]) for s in schemes.values()] == [("http", "bearer")]
    [name] = schemes
    for path in ("/v1/clients/{client_id}/notifications", "/v1/events/{event_id}"):
        read_op = document["paths"][path]["get"]
        assert read_op["security"] == [{name: []}]
        assert resolve(document, read_op["responses"]["401"]["content"]["application/json"][
            "schema"]["$ref"])["title"] == "ErrorAnswer"
    secured = [(path, method) for path, ops in document["paths"].items()
               for method, op in ops.items() if "security" in op]
    assert sorted(secured) == [("/v1/clients/{client_id}/notifications", "get"),
                               ("/v1/events/{event_id}", "get")]
    assert "security" not in document


def test_openapi_documents_what_health_and_metrics_really_answer(settings, client):
    # Found by fuzzing: /metrics was documented as JSON; /healthz's 503 was not documented.
    document = client.get("/openapi.json").json()
    metrics = document["paths"]["/metrics"]["get"]["responses"]
    assert sorted(metrics) == ["200", "408", "503"]
    assert list(metrics["200"]["content"]) == ["text/plain"]
    assert client.get("/metrics").headers["content-type"].startswith("text/plain;")
    health = document["paths"]["/healthz"]["get"]["responses"]
    assert sorted(health) == ["200", "408", "503"]
    for status in ("200", "503"):
        assert resolve(document, health[status]["content"]["application/json"]["schema"][
            "$ref"])["title"] == "HealthAnswer"
    with TestClient(down_app(settings)) as down_client:
        assert down_client.get("/healthz").status_code == 503


def test_openapi_documents_the_answers_every_route_may_give(settings, client):
    """503 with Retry-After when Redis fails (every route uses it), 408 for a request too
    slow to arrive, 413 for a body over its limit: said for every operation."""
    document = client.get("/openapi.json").json()
    operations = [(path, method, op) for path, ops in document["paths"].items()
                  for method, op in ops.items()]
    assert len(operations) >= 9
    for path, method, op in operations:
        responses = op["responses"]
        assert {"408", "503"} <= set(responses), (path, method)
        assert ("413" in responses) == ("requestBody" in op), (path, method)
        assert "Retry-After" in responses["503"]["headers"], (path, method)
        if path != "/healthz":  # its 503 is its own answer, the health report
            assert resolve(document, responses["503"]["content"]["application/json"][
                "schema"]["$ref"])["title"] == "ErrorAnswer"
    with TestClient(down_app(settings)) as down_client:
        answer = down_client.get("/metrics")
        assert (answer.status_code, answer.headers["retry-after"]) == (503, "5")


def test_openapi_documents_the_provider_callbacks_inputs_and_refusals(client):
    document = client.get("/openapi.json").json()
    paths = document["paths"]
    expected = {
        "/twilio/status": ({"x-twilio-signature", "n"}, "application/x-www-form-urlencoded",
                           {"204", "403"}),
        "/twilio/inbound": ({"x-twilio-signature"}, "application/x-www-form-urlencoded",
                            {"200", "403"}),
        "/sendgrid/events": ({"x-twilio-email-event-webhook-signature",
                              "x-twilio-email-event-webhook-timestamp"}, "application/json",
                             {"204", "400", "403"}),
    }
    for path, (parameters, body_type, statuses) in expected.items():
        operation = paths[path]["post"]
        assert {p["name"] for p in operation["parameters"]} == parameters, path
        assert list(operation["requestBody"]["content"]) == [body_type], path
        assert set(operation["responses"]) == statuses | {"408", "413", "503"}, path
        refusal = operation["responses"]["403"]["content"]["application/json"]["schema"]
        assert resolve(document, refusal["$ref"])["required"] == ["error"], path
    inbound = paths["/twilio/inbound"]["post"]["responses"]["200"]
    assert list(inbound["content"]) == ["application/xml"], "TwiML, not JSON"
    answer = client.post("/twilio/inbound", data={"Body": "C"})
    assert (answer.status_code, answer.json()) == (403, {"error": "signature"})


def test_an_event_that_cannot_be_stored_gets_503_and_may_be_sent_again(settings, secret,
                                                                       client):
    with TestClient(down_app(settings)) as down_client:
        answer = post(down_client, secret, event())
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "5"
    assert answer.json()["error"] == UNAVAILABLE
    # Nothing was accepted, so the same event sent again is accepted, not a duplicate.
    assert post(client, secret, event()).status_code == 202


# Event status -----------------------------------------------------------------------------

@pytest.mark.parametrize(("ahead", "accepted"), [
    (timedelta(minutes=4, seconds=50), True), (timedelta(minutes=6), False),
    (timedelta(hours=6), False), ("2099-01-01T00:00:00Z", False),
    ("2100-12-31T23:59:59-12:00", False)])  # 2101 in UTC
def test_an_event_dated_in_the_future_is_refused(client, secret, redis_client, ahead, accepted):
    """One integrator's skewed clock must not make every real later event about the
    subject stale (a cancellation included) until our clock catches up."""
    at = ahead if isinstance(ahead, str) else (datetime.now(UTC) + ahead).isoformat()
    answer = post(client, secret, event("evt-ahead", occurred_at=at))
    if accepted:
        assert answer.status_code == 202
        return
    assert answer.status_code == 422
    assert answer.json()["problems"] == [{
        "field": "occurred_at",
        "message": "is in the future: more than 5 minutes ahead of this server's clock"}]
    assert_refused_at_the_door(redis_client)


@pytest.mark.parametrize(("skew_s", "ahead", "accepted", "words"), [
    ("30", timedelta(seconds=20), True, ""),
    ("30", timedelta(seconds=40), False, "30 seconds"),
    ("3600", timedelta(minutes=50), True, ""),
    ("3600", timedelta(minutes=61), False, "60 minutes"),
])
def test_how_far_ahead_an_event_may_be_is_a_setting(secret, store, broker, redis_client,
                                                    skew_s, ahead, accepted, words):
    told = Settings.from_env({"NOTIFIER_WEBHOOK_SECRET": secret, "NOTIFIER_FUTURE_SKEW_S": skew_s},
                             dotenv=Path("/nonexistent"))
    at = (datetime.now(UTC) + ahead).isoformat()
    with TestClient(create_app(told, store, broker)) as skewed:
        answer = post(skewed, secret, event("evt-ahead", occurred_at=at))
    if accepted:
        assert answer.status_code == 202
        return
    assert (answer.status_code, answer.json()["problems"]) == (422, [{
        "field": "occurred_at",
        "message": f"is in the future: more than {words} ahead of this server's clock"}])
    assert_refused_at_the_door(redis_client)


#: Failing input 6 of issue 13, at the webhook: (what is sent, the field the 422 names).
STRICT_REFUSALS = [
    ('"days_supply": 30', '"days_supply": true', "data.prescription.days_supply"),
    ('"days_supply": 30', '"days_supply": "30"', "data.prescription.days_supply"),
    ('"refills_remaining": 2', '"refills_remaining": 2.0', "data.prescription.refills_remaining"),
    ('"id": "evt-1"', '"id": "evt-1", "id": "evt-1"', "id"),
    ('"id": "evt-1"', '"id": "evt-0", "id": "evt-1"', "id"),
    ('"medication": "Sertraline"', '"medication": "Sertraline", "medication": "x"',
     "data.prescription.medication"),
    ('"medication": "Sertraline"', '"medication": "Sertraline\\u0000"',
     "data.prescription.medication"),
    ('"medication": "Sertraline"', '"medication": "Sertraline\\r\\n"',
     "data.prescription.medication"),
    ('"medication": "Sertraline"', '"medication": "\\u202eSertraline"',
     "data.prescription.medication"),
]


@pytest.mark.parametrize(("sample", "sent", "field"), STRICT_REFUSALS)
def test_strict_input_is_refused_at_the_webhook_naming_the_field(client, secret, redis_client,
                                                                 sample, sent, field):
    valid = encode(event(type_="prescription.filled", data={"prescription": {
        "id": "rx-1", "client_id": "c1", "provider_id": "p1", "medication": "Sertraline",
        "filled_on": "2026-03-01", "days_supply": 30, "refills_remaining": 2}}))
    assert sample.encode() in valid
    answer = post_raw(client, secret, valid.replace(sample.encode(), sent.encode()))
    assert answer.status_code == 422
    assert answer.json()["error"] == "invalid event"
    assert problem_fields(answer) == [field]
    assert_refused_at_the_door(redis_client)
    assert post_raw(client, secret, valid).status_code == 202, "the same event, strictly sent"


def test_a_client_name_with_invisible_debris_is_accepted_without_it(client, secret, store,
                                                                     policy):
    debris = event(type_="client.upserted", data={"client": {
        "id": "c1", "first_name": "\ufeffAna\u200b", "email": "ana@example.com",
        "timezone": "UTC", "channels": {"sms": False, "email": True}}})
    assert post(client, secret, debris).status_code == 202
    apply_stored_event(store, "evt-1", policy, datetime.now(UTC))
    assert store.load_record("client:c1").client.first_name == "Ana"


def event_read(client: TestClient, event_id: str, token: str | None = TOKEN) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.get(f"/v1/events/{event_id}", headers=headers)


def test_an_events_status_shows_it_held_then_applied(client, secret, store, policy):
    closed = event("evt-close", "refill.sent", data={"request_id": "req-1"})
    assert post(client, secret, closed).status_code == 202
    assert event_read(client, "evt-close").json() == {
        "id": "evt-close", "status": "accepted", "reason": ""}
    apply_stored_event(store, "evt-close", policy, datetime.now(UTC))  # arrived just now
    assert event_read(client, "evt-close").json() == {
        "id": "evt-close", "status": "held",
        "reason": "waiting for the opening event of refill_request:req-1"}
    scrape = client.get("/metrics").text
    assert "notifier_events_held 1.0" in scrape
    assert "notifier_events_pending 0.0" in scrape


def test_an_unknown_event_is_404_and_the_status_wants_the_token(client):
    missing = event_read(client, "evt-nope")
    assert missing.status_code == 404
    assert missing.json()["error"] == "no event with this id (or it expired after 30 days)"
    for token in (None, "wrong"):
        refused = event_read(client, "evt-nope", token=token)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"


# Metrics of the ledger: every state from zero, and send lateness ---------------------------

class RefusingSms:
    """An SMS provider that refuses the number for good."""

    def send(self, message: Message, now: datetime) -> Receipt:
        raise PermanentError("invalid number", code="21211")

    def already_sent(self, message: Message) -> bool | None:
        return None


def scrape(client: TestClient) -> dict[str, Any]:
    """/metrics parsed as Prometheus parses it: the families by name."""
    answer = client.get("/metrics")
    assert answer.status_code == 200
    return {f.name: f for f in text_string_to_metric_families(answer.text)}


def ended_counts(families: dict[str, Any]) -> dict[tuple[str, str], float]:
    return {(s.labels["state"], s.labels["channel"]): s.value
            for s in families["notifier_notifications"].samples
            if s.name == "notifier_notifications_total"}


def lateness_samples(families: dict[str, Any]) -> dict[tuple[str, ...], float]:
    """(sample name suffix, kind, channel[, le]) -> value."""
    return {(s.name.removeprefix("notifier_send_lateness_seconds"), s.labels["kind"],
             s.labels["channel"], *([s.labels["le"]] if "le" in s.labels else [])): s.value
            for s in families["notifier_send_lateness_seconds"].samples}


def test_metrics_count_every_way_a_notification_ends_and_how_late_sends_are(
        client, secret, store, policy, tmp_path):
    # Nothing has happened: every state on both channels is there, at zero.
    before = scrape(client)
    assert ended_counts(before) == {(state, channel): 0.0 for state in FINAL_STATES
                                    for channel in ("email", "sms")}
    assert before["notifier_send_lateness_seconds"].type == "histogram"
    assert lateness_samples(before) == {}

    now = NOW
    settings = Settings.from_env({}, dotenv=Path("/nonexistent"))
    outbox = Outbox(tmp_path / "outbox")

    def deliverer(sms: Any) -> Deliverer:
        # A batch clock that stands still: each send is at exactly the `now` it is given.
        return Deliverer(store=store, channels={"sms": sms, "email": outbox},
                         renderer=Renderer(PROJECT_ROOT / "templates"), settings=settings,
                         policy=policy, monotonic=lambda: 0.0)

    # London at noon: no quiet hours. a1 in ten days; a2 booked ten minutes after its start.
    for evt in (client_event("Europe/London", now - timedelta(days=1)),
                booking_event("evt-a1", "a1", now + timedelta(days=10), now),
                booking_event("evt-a2", "a2", now - timedelta(minutes=10), now)):
        store.store_event(evt["id"], encode(evt), now)
        assert apply_stored_event(store, evt["id"], policy, now) is not None
    # Sent 3 s after its due time; refused by the SMS provider.
    assert deliverer(outbox).deliver("appointment_confirmation:a1:booked:email",
                                     now + timedelta(seconds=3)) == "sent"
    assert deliverer(RefusingSms()).deliver("appointment_confirmation:a1:booked:sms",
                                            now + timedelta(seconds=3)) == "failed"
    # Cancelled: its four reminders are cancelled; the notice by SMS is suppressed (the
    # client replied STOP), the one by email goes out two minutes late.
    cancel = event("evt-cancel", "appointment.cancelled",
                   {"appointment_id": "a1", "cancelled_by": "client"},
                   occurred_at=now.isoformat())
    store.store_event(cancel["id"], encode(cancel), now)
    assert apply_stored_event(store, cancel["id"], policy, now) is not None
    store.set_sms_opt_out("+14155550123", True)
    assert deliverer(outbox).deliver("appointment_cancelled:a1:seq1:sms",
                                     now + timedelta(seconds=1)) == "suppressed"
    assert deliverer(outbox).deliver("appointment_cancelled:a1:seq1:email",
                                     now + timedelta(minutes=2)) == "sent"

    after = scrape(client)
    assert ended_counts(after) == {
        ("sent", "email"): 2.0, ("sent", "sms"): 0.0,
        ("failed", "email"): 0.0, ("failed", "sms"): 1.0,
        # a2's confirmations, planned expired: it had started when it was booked
        ("expired", "email"): 1.0, ("expired", "sms"): 1.0,
        ("suppressed", "email"): 0.0, ("suppressed", "sms"): 1.0,
        ("cancelled", "email"): 2.0, ("cancelled", "sms"): 2.0,
    }
    bounds = ("1.0", "5.0", "15.0", "60.0", "300.0", "900.0", "3600.0", "+Inf")
    expected: dict[tuple[str, ...], float] = {}
    for kind, late_s in (("appointment_confirmation", 3.0), ("appointment_cancelled", 120.0)):
        for le in bounds:
            expected[("_bucket", kind, "email", le)] = float(
                le == "+Inf" or late_s <= float(le))
        expected[("_count", kind, "email")] = 1.0
        expected[("_sum", kind, "email")] = late_s
    assert lateness_samples(after) == expected


# Short links to video visits (GET /j/{token}) -------------------------------------------------

def _booked_video(store: Store, policy, join_url: str | None, when: datetime,
                  type_: str = "appointment.scheduled") -> None:
    from tests.kit import appointment, client_upserted, store_and_apply

    store_and_apply(store, policy, client_upserted("c1", "America/New_York", when), when)
    store_and_apply(store, policy, appointment(type_, "a1", "c1", when + timedelta(days=5),
                                               when, join_url=join_url), when)


def test_a_short_link_redirects_to_the_visit_s_current_link_at_click_time(client, store,
                                                                         policy):
    at = datetime.now(UTC)
    _booked_video(store, policy, "https://video.example.com/r/first", at)
    token = store.short_links.token_for("a1")
    answer = client.get(f"/j/{token}", follow_redirects=False)
    assert answer.status_code == 307
    assert answer.headers["location"] == "https://video.example.com/r/first"
    assert answer.headers["cache-control"] == "no-store"
    # The room changes after the SMS went out: the same link leads to the new room.
    _booked_video(store, policy, "https://video.example.com/r/second", at + timedelta(seconds=1),
                  "appointment.rescheduled")
    answer = client.get(f"/j/{token}", follow_redirects=False)
    assert answer.headers["location"] == "https://video.example.com/r/second"
    # A link preview asks with HEAD: the same answer, no body.
    answer = client.head(f"/j/{token}", follow_redirects=False)
    assert (answer.status_code, answer.content) == (307, b"")
    assert answer.headers["location"] == "https://video.example.com/r/second"
    assert client.head("/j/AAAAAAAAAAAAAAAA").status_code == 404


def test_a_short_link_to_a_visit_with_no_link_any_more_is_404(client, store, policy):
    from tests.kit import event_dict, store_and_apply

    at = datetime.now(UTC)
    _booked_video(store, policy, "https://video.example.com/r/1", at)
    token = store.short_links.token_for("a1")
    _booked_video(store, policy, None, at + timedelta(seconds=1), "appointment.rescheduled")
    assert client.get(f"/j/{token}", follow_redirects=False).status_code == 404
    _booked_video(store, policy, "https://video.example.com/r/1", at + timedelta(seconds=2),
                  "appointment.rescheduled")
    assert client.get(f"/j/{token}", follow_redirects=False).status_code == 307
    store_and_apply(store, policy, event_dict("appointment.cancelled", {
        "appointment_id": "a1", "cancelled_by": "client"}, at + timedelta(seconds=3)),
        at + timedelta(seconds=3))
    answer = client.get(f"/j/{token}", follow_redirects=False)
    assert answer.status_code == 404
    assert answer.json() == {"error": "this visit has no video link any more"}


@pytest.mark.parametrize("token", ["AAAAAAAAAAAAAAAA", "short", "x" * 200, "..etc%3F",
                                   "AbCdEfGhIjKlMnO=", "ÄbCdEfGhIjKlMnOp"])
def test_an_unknown_or_malformed_short_link_is_404(client, token):
    answer = client.get(f"/j/{token}", follow_redirects=False)
    assert (answer.status_code, answer.json()) == (404, {"error": "no such link"})


def test_short_link_tokens_are_random_one_per_appointment_and_stable(store):
    tokens = {store.short_links.token_for(f"appt-{i}") for i in range(50)}
    assert len(tokens) == 50
    assert all(len(t) == 16 and t.replace("-", "").replace("_", "").isalnum() for t in tokens)
    assert store.short_links.token_for("appt-7") == store.short_links.token_for("appt-7")
    assert store.short_links.appointment_for(store.short_links.token_for("appt-7")) == "appt-7"
