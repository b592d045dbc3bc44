"""`POST /fhir/r4/notify`: a FHIR server's Subscription notifications (`rest-hook`), mapped
to our events (`notifier.intake.fhir`) and stored exactly as `POST /v1/events` stores an
event (`notifier.web.events.store_accepted`), so the same policies run on them.

Authentication, either of:
- `Authorization: Bearer <NOTIFIER_FHIR_TOKEN>`, the header a FHIR server is configured to
  send (`Subscription.channel.header`), compared in constant time;
- a Standard Webhooks signature over the body, as on `/v1/events` (its `webhook-id` names
  the notification, not an event: one notification may carry many).
Anything else is 401.

Answers: 413 over `MAX_FHIR_BODY_BYTES`; 422 naming each bad element by its FHIRPath (a
malformed resource, one without `id` or `meta.lastUpdated`, one that makes an event our
rules refuse, a `meta.lastUpdated` ahead of our clock by more than NOTIFIER_FUTURE_SKEW_S),
and then nothing of the notification is stored (but its completed dispenses are counted as
fills, which a resend does not count again); 503 when Redis cannot take the events
(those stored before are answered `duplicate` on the server's retry); otherwise 200 with
what became of each resource: its events, each `accepted` or `duplicate`, or `ignored`
and why. An ignored resource (a type or status we do not map) is answered 200 so the
server does not retry it for ever; it is logged and counted
(`notifier_fhir_resources_total{outcome="ignored"}`), not stored.
"""

from __future__ import annotations

import hmac
import json
import logging
from datetime import datetime, timedelta
from typing import Literal

from dramatiq.brokers.redis import RedisBroker
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel, SecretStr
from starlette.concurrency import run_in_threadpool

from notifier.errors import FieldProblem, InvalidEvent, PayloadTooLarge, SignatureError, StoreError
from notifier.intake.events import Event, parse_event
from notifier.intake.fhir import Defaults, MappedResource, map_payload
from notifier.ledger.fhir_fills import FhirFills
from notifier.ledger.store import Store
from notifier.timeutil import utcnow
from notifier.web.answers import ErrorAnswer, error_answer, unavailable_answer
from notifier.web.bodies import MAX_FHIR_BODY_BYTES, read_limited
from notifier.web.events import UNAVAILABLE, EventStores, store_accepted
from notifier.web.signatures import verify_signature

log = logging.getLogger(__name__)

NOTIFY_PATH = "/fhir/r4/notify"


class FhirEventAnswer(BaseModel):
    id: str
    type: str
    status: Literal["accepted", "duplicate"]


class FhirResourceAnswer(BaseModel):
    #: `Type/id` (just `Type` for a resource without an id)
    resource: str
    status: Literal["mapped", "ignored"]
    #: why an ignored resource became no event
    reason: str | None
    events: list[FhirEventAnswer]


class FhirAnswer(BaseModel):
    """What became of each resource of a notification, in its order."""

    resources: list[FhirResourceAnswer]


#: What the route reads by hand, for the OpenAPI document.
NOTIFY_BODY = {"requestBody": {"required": True, "description": "A FHIR R4 resource or Bundle "
                               "(history, transaction, collection, searchset; the "
                               "Subscriptions Backport IG's notification bundle)",
                               "content": {media: {"schema": {"type": "object"}} for media in
                                           ("application/fhir+json", "application/json")}}}


def fhir_counter(registry: CollectorRegistry) -> Counter:
    """`notifier_fhir_resources_total{outcome}`: resources posted to `/fhir/r4/notify`
    and what became of them (`mapped`, `ignored`), and refused notifications (`invalid`,
    `unauthorized`, `too_large`, `unavailable`)."""
    return Counter("notifier_fhir_resources_total", "FHIR resources received, by outcome",
                   ["outcome"], registry=registry)


def authenticate(headers: dict[str, str], body: bytes, secret: str,
                 token: SecretStr | None, now: datetime) -> None:
    """Accept the bearer token or a Standard Webhooks signature (see the module docstring);
    raises `SignatureError` saying what is wrong. `headers` are keyed in lower case."""
    authorization = headers.get("authorization")
    if authorization is None:
        verify_signature(secret, body, headers, now)
        return
    if token is None:
        raise SignatureError("no bearer token is configured here (NOTIFIER_FHIR_TOKEN): "
                             "sign the notification instead")
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.get_secret_value().encode()):
        raise SignatureError("wrong bearer token")


def _events(mapped: list[MappedResource], latest: datetime) -> list[tuple[Event, bytes]]:
    """Each mapped event parsed as the door parses one, with its body; raises
    `InvalidEvent` naming `meta.lastUpdated` of resources dated past `latest`."""
    found: list[tuple[Event, bytes]] = []
    problems: list[FieldProblem] = []
    for resource in mapped:
        for raw in resource.events:
            body = json.dumps(raw).encode()
            event = parse_event(body)
            if event.occurred_at > latest:
                problems.append(FieldProblem(f"{resource.where}.meta.lastUpdated",
                                             "is in the future, ahead of this server's clock"))
                break
            found.append((event, body))
    if problems:
        raise InvalidEvent(problems)
    return found


def fhir_routes(secret: str, token: SecretStr | None, defaults: Defaults, store: Store,
                event_stores: EventStores, broker: RedisBroker, counter: Counter,
                future_skew: timedelta) -> APIRouter:
    """The FHIR notification route (see the module docstring); dispenses are counted as
    fills on `store`'s Redis (`notifier.ledger.fhir_fills`)."""
    router = APIRouter()
    fills = FhirFills(store.redis)

    @router.post(NOTIFY_PATH, response_model=FhirAnswer, openapi_extra=NOTIFY_BODY,
                 summary="A FHIR server's Subscription notification (rest-hook)",
                 description="Authenticated by `Authorization: Bearer <NOTIFIER_FHIR_TOKEN>`"
                             " or Standard Webhooks headers (`webhook-id`, "
                             "`webhook-timestamp`, `webhook-signature`) as on /v1/events.",
                 responses={401: {"model": ErrorAnswer,
                                  "description": "No or wrong bearer token or signature"},
                            422: {"model": ErrorAnswer,
                                  "description": "Malformed FHIR, each element named by "
                                                 "its FHIRPath; nothing stored"}})
    async def notify(request: Request) -> Response:
        try:
            body = await read_limited(request, MAX_FHIR_BODY_BYTES)
            authenticate({k.lower(): v for k, v in request.headers.items()}, body, secret,
                         token, utcnow())
            # fhir.resources' validation takes milliseconds per resource, and the fill
            # counts are Redis calls: off the loop, in one thread.
            mapped = await run_in_threadpool(map_payload, body, defaults, fills.count)
            events = _events(mapped, utcnow() + future_skew)
        except PayloadTooLarge as exc:
            counter.labels("too_large").inc()
            return error_answer(413, str(exc), headers={"Connection": "close"})
        except SignatureError as exc:
            counter.labels("unauthorized").inc()
            log.info("FHIR notification refused: 401 %s", exc)
            return error_answer(401, f"authentication: {exc}")
        except InvalidEvent as exc:
            counter.labels("invalid").inc()
            log.info("FHIR notification refused: 422 %s",
                     ", ".join(p.field for p in exc.problems))
            return error_answer(422, "invalid FHIR", exc.problems)
        except StoreError as exc:
            counter.labels("unavailable").inc()
            log.warning("FHIR notification refused: 503, Redis unavailable: %s", exc)
            return unavailable_answer(UNAVAILABLE)
        answers: dict[str, str] = {}
        try:
            for event, raw in events:
                stored = await store_accepted(event_stores, broker, event, raw)
                answers[event.id] = "accepted" if stored else "duplicate"
        except StoreError as exc:
            counter.labels("unavailable").inc()
            log.warning("FHIR notification refused: 503, Redis unavailable: %s", exc)
            return unavailable_answer(UNAVAILABLE)
        resources = []
        for resource in mapped:
            outcome = "ignored" if resource.ignored is not None else "mapped"
            counter.labels(outcome).inc()
            if resource.ignored is not None:
                log.info("FHIR %s ignored: %s", resource.label, resource.ignored)
            resources.append({
                "resource": resource.label, "status": outcome, "reason": resource.ignored,
                "events": [{"id": e["id"], "type": e["type"], "status": answers[e["id"]]}
                           for e in resource.events]})
        log.info("FHIR notification: %d resources, %d events", len(mapped), len(events))
        return JSONResponse({"resources": resources}, status_code=200)

    return router
