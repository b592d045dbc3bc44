"""Property-based fuzzing of the HTTP API against its own `/openapi.json`, with schemathesis.

Requests are generated from the document in schemathesis' positive and negative modes and
sent in-process (ASGI) to the app, which runs against the session's real Redis:

1. every operation answers as documented: never 5xx, and a documented status, content type
   and body schema (schemathesis' own checks);
2. nothing unsigned gets in: a fuzzed event without a valid signature is never 2xx and
   leaves Redis empty;
3. a signed fuzzed event is 202, stored byte for byte (and 200 when sent again), or 422
   with nothing stored: never 401, never 5xx.

Generation is derandomized, so CI sends exactly what ran here.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import redis
import schemathesis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from schemathesis import BaseSchema, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core import NOT_SET
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from notifier.cli.send_event import sign_event
from notifier.config import Settings
from notifier.ledger.daily import REFUSED_DAILY
from notifier.ledger.store import Store
from notifier.web.app import create_app
from notifier.web.events import MAX_BODY_BYTES
from notifier.worker.actors import build_broker
from tests.ledger_keys import event_field, event_keys, stored_event_key

SECRET = "whsec_" + base64.b64encode(b"f" * 32).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()
API_TOKEN = "fuzz-read-api-token-0123456789"
EVENTS_PATH = "/v1/events"
BOTH = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
#: Every operation of the document and the modes it is fuzzed in. One with no parameters
#: and no body has nothing to make invalid, so it has no negative mode; nor has the short
#: link, whose one parameter is any string (a malformed token is an unknown one: 404), nor
#: a FHIR deletion (its type and id are any strings, as a FHIR server's are answered).
OPERATIONS: dict[tuple[str, str], tuple[GenerationMode, ...]] = {
    (EVENTS_PATH, "POST"): BOTH,
    ("/v1/clients/{client_id}/notifications", "GET"): BOTH,
    ("/v1/events/{event_id}", "GET"): BOTH,
    ("/healthz", "GET"): (GenerationMode.POSITIVE,),
    ("/metrics", "GET"): (GenerationMode.POSITIVE,),
    ("/twilio/status", "POST"): BOTH,
    ("/twilio/inbound", "POST"): BOTH,
    ("/sendgrid/events", "POST"): BOTH,
    ("/j/{token}", "GET"): (GenerationMode.POSITIVE,),
    ("/fhir/r4/notify", "POST"): BOTH,
    ("/fhir/r4/{source}/notify", "POST"): BOTH,
    ("/fhir/r4/notify/{kind}/{fhir_id}", "PUT"): BOTH,
    ("/fhir/r4/{source}/notify/{kind}/{fhir_id}", "PUT"): BOTH,
    ("/fhir/r4/notify/{kind}/{fhir_id}", "DELETE"): (GenerationMode.POSITIVE,),
    ("/fhir/r4/{source}/notify/{kind}/{fhir_id}", "DELETE"): (GenerationMode.POSITIVE,),
}
#: The checks for answers to requests we sent ourselves (signed): the answer as documented.
CONFORMANCE = [not_a_server_error, status_code_conformance, content_type_conformance,
               response_schema_conformance]


def fuzz(max_examples: int) -> settings:
    """Hypothesis settings for one fuzzed property: derandomized, so CI sends what ran here."""
    return settings(max_examples=max_examples, derandomize=True, database=None, deadline=None)


@pytest.fixture(scope="module")
def sendgrid_public_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


@pytest.fixture
def app(redis_client: redis.Redis, redis_url: str, sendgrid_public_key: str
        ) -> Iterator[FastAPI]:
    """The app with every key configured, so fuzzed requests reach each verification."""
    config = Settings.from_env({
        "NOTIFIER_WEBHOOK_SECRET": SECRET, "NOTIFIER_API_TOKEN": API_TOKEN,
        "TWILIO_AUTH_TOKEN": "fuzz-twilio-token",
        "SENDGRID_WEBHOOK_PUBLIC_KEY": sendgrid_public_key,
        "NOTIFIER_PUBLIC_URL": "https://notifier.example.org",
    }, dotenv=Path("/nonexistent"))
    broker = build_broker(redis_url)
    yield create_app(config, Store(redis_client), broker)
    broker.close()


@pytest.fixture
def api(app: FastAPI) -> Iterator[BaseSchema]:
    """The app's own OpenAPI document, with the read API's token for schemathesis to send
    (its negative mode and `ignored_auth` check send requests without it too)."""
    config = schemathesis.Config.from_dict(
        {"auth": {"openapi": {"ApiToken": {"bearer": API_TOKEN}}}})
    yield schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    # schemathesis keeps each app it started alive for the whole process otherwise.
    shutdown_lifespans()


@pytest.fixture
def http(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


def written(r: redis.Redis) -> list[bytes]:
    """Everything a request may have left behind: our keys and dramatiq's."""
    return sorted(r.keys("n:*") + r.keys("notifier-dq*"))


def stored(r: redis.Redis) -> list[bytes]:
    """What a request left behind but the day's count of events refused at the door
    (422), the one thing a refusal writes."""
    return [k for k in written(r) if not k.startswith(REFUSED_DAILY.encode())]


def refused_count(r: redis.Redis) -> int:
    """Events counted as refused at the door (422), all days and types."""
    return sum(int(v) for k in r.keys(REFUSED_DAILY + "*") for v in r.hvals(k))


def raw_body(case: Case) -> bytes:
    """The bytes to send for a generated body: its JSON, or itself when it is bytes."""
    if case.body is NOT_SET:
        return b""
    if isinstance(case.body, bytes):
        return case.body
    return json.dumps(case.body).encode()


def header_safe(value: str) -> bool:
    return bool(value) and value.isascii() and value.isprintable() and value == value.strip()


def webhook_id_for(case: Case) -> str:
    """The event's own id when it can travel as a header, else any id (a 422 then)."""
    event_id = case.body.get("id") if isinstance(case.body, dict) else None
    return event_id if isinstance(event_id, str) and header_safe(event_id) else "evt-fuzz"


def event_bodies(api: BaseSchema) -> st.SearchStrategy[Case]:
    """Generated `POST /v1/events` requests, valid and invalid by the document."""
    operation = api[EVENTS_PATH]["POST"]
    return st.one_of(*(operation.as_strategy(generation_mode=mode) for mode in BOTH))


# 1. Every operation answers as documented ----------------------------------------------------

def test_the_fuzzed_operations_are_all_the_documented_ones(api):
    documented = {(path, method.upper()) for path, methods in api.raw_schema["paths"].items()
                  for method in methods}
    assert documented == set(OPERATIONS)


@pytest.mark.parametrize(("path", "method", "mode"), [
    (path, method, mode) for (path, method), modes in OPERATIONS.items() for mode in modes])
def test_every_operation_answers_as_documented(api, path, method, mode):
    @given(case=api[path][method].as_strategy(generation_mode=mode))
    @fuzz(max_examples=50)
    def answers_as_documented(case: Case) -> None:
        # schemathesis' default checks: no 5xx; documented status, content type, headers
        # and body; valid data accepted, invalid data and missing auth refused.
        case.call_and_validate()

    answers_as_documented()


# 2. Nothing unsigned gets in -----------------------------------------------------------------

def forgeries(body: bytes, webhook_id: str, now: datetime) -> dict[str, dict[str, str]]:
    """Signature headers for `body`, each wrong in one way, by what is wrong."""
    good = sign_event(SECRET, body, webhook_id, now)
    return {
        "other secret": sign_event(OTHER_SECRET, body, webhook_id, now),
        "stale": sign_event(SECRET, body, webhook_id, now - timedelta(minutes=6)),
        "from the future": sign_event(SECRET, body, webhook_id, now + timedelta(minutes=6)),
        "another webhook-id": {**good, "webhook-id": webhook_id + "x"},
        "another timestamp": {**good,
                              "webhook-timestamp": str(int(good["webhook-timestamp"]) - 1)},
        "another body": sign_event(SECRET, body + b" ", webhook_id, now),
        "cut signature": {**good, "webhook-signature": good["webhook-signature"][:-4]},
        "no signature": {k: v for k, v in good.items() if k != "webhook-signature"},
    }


#: "as generated": schemathesis' own headers (missing, empty or garbage), sent its way.
FORGERIES = ["as generated", *forgeries(b"{}", "evt", datetime.now(UTC))]


def test_unsigned_fuzzed_events_are_never_let_in(api, http, redis_client):
    tried: Counter[str] = Counter()

    # Every forgery is tried on every generated body, so none depends on what the
    # generator happens to draw.
    @given(case=event_bodies(api))
    @fuzz(max_examples=40)
    def never_let_in(case: Case) -> None:
        body = raw_body(case)
        for forgery in FORGERIES:
            if forgery == "as generated":
                status = case.call().status_code
            else:
                headers = forgeries(body, webhook_id_for(case), datetime.now(UTC))[forgery]
                status = http.post(EVENTS_PATH, content=body, headers=headers).status_code
            tried[forgery] += 1
            too_large = len(body) > MAX_BODY_BYTES
            assert status == (413 if too_large else 401), f"{forgery}: answered {status}"
            assert written(redis_client) == [], f"{forgery}: something was written"

    never_let_in()
    assert written(redis_client) == []
    assert set(tried) == set(FORGERIES), tried


# 3. Signed fuzzed events: stored exactly, or refused with nothing stored ---------------------

def test_signed_fuzzed_events_are_stored_exactly_or_refused(api, http, redis_client):
    answers: Counter[int] = Counter()

    def send(body: bytes, webhook_id: str) -> httpx.Response:
        headers = sign_event(SECRET, body, webhook_id, datetime.now(UTC))
        return http.post(EVENTS_PATH, content=body, headers=headers)

    @given(case=event_bodies(api))
    @fuzz(max_examples=200)
    def stored_exactly_or_refused(case: Case) -> None:
        redis_client.flushdb()
        body, webhook_id = raw_body(case), webhook_id_for(case)
        first = send(body, webhook_id)
        answers[first.status_code] += 1
        assert first.status_code in (202, 422), first.text
        case.validate_response(first, checks=CONFORMANCE)
        if first.status_code == 202:
            assert first.json() == {"id": webhook_id, "status": "accepted"}
            [key] = event_keys(redis_client)
            assert key == stored_event_key(redis_client, webhook_id)
            assert redis_client.hget(key, "raw") == body
        else:
            assert first.json()["error"] == "invalid event" and first.json()["problems"]
            assert stored(redis_client) == [], "a refused event left something behind"
            assert refused_count(redis_client) == 1

        again = send(body, webhook_id)
        case.validate_response(again, checks=CONFORMANCE)
        if first.status_code == 202:
            assert again.json() == {"id": webhook_id, "status": "duplicate"}
            assert again.status_code == 200
            assert event_field(redis_client, webhook_id, "raw") == body
        else:
            assert again.status_code == 422
            assert stored(redis_client) == []
            assert refused_count(redis_client) == 2

    stored_exactly_or_refused()
    # Not vacuous: the generated events are both accepted and refused.
    assert answers[202] >= 5 and answers[422] >= 5, answers
