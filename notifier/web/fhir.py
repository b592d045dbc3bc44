"""A FHIR server's Subscription notifications (`rest-hook`), mapped to our events
(`notifier.intake.fhir`) and stored exactly as `POST /v1/events` stores an event
(`notifier.web.events.store_accepted`), so the same policies run on them.

Routes, for the default source and for each configured one (NOTIFIER_FHIR_SOURCES, whose
records' ids carry the source's name: `notifier.intake.fhir.common`):
- `POST /fhir/r4/notify`, `POST /fhir/r4/{source}/notify`: a resource or a Bundle (see
  `notifier.intake.fhir.parse`);
- `PUT /fhir/r4/notify/{type}/{id}` (and under a source): the endpoint used as a FHIR
  base, as HAPI FHIR delivers a full-resource rest-hook (a FHIR update); the body must be
  that resource (else 422 naming `{type}.id` or `resourceType`);
- `DELETE /fhir/r4/notify/{type}/{id}` (and under a source): HAPI's deletion, accepted
  and ignored (200): a deletion carries no resource, so which patient's appointment it
  was is unknown here; an EHR cancels an appointment by its status, which we map.
  These two, FHIR interactions, are answered in FHIR (`FhirOutcome`: an
  OperationOutcome, `application/fhir+json`), since HAPI parses the answer as a resource;
  so is a POST whose `Accept` asks for FHIR JSON only (a FHIR client's, such as HAPI's
  posting a topic-based notification as a transaction): a Bundle posted is answered with a
  `transaction-response` Bundle, a resource with an OperationOutcome. Their errors are
  OperationOutcomes too, of severity `error` (`fhir_answers.in_fhir`: the issue code says
  which, `transient` for a 503, and each bad element's FHIRPath is an `expression`).
An unknown source is 404 (to an authenticated caller: 401 first). An empty POST (a
Subscription with no `payload`: HAPI's notification) is answered 200 with no resources:
there is nothing to map, so subscribe with `full-resource` content.

Authentication, either of:
- `Authorization: Bearer <NOTIFIER_FHIR_TOKEN>`, the header a FHIR server is configured to
  send (`Subscription.channel.header`), compared in constant time;
- a Standard Webhooks signature over the body, as on `/v1/events` (its `webhook-id` names
  the notification, not an event: one notification may carry many); when the signature
  headers are present another `Authorization` (a gateway's own) does not shadow them.
Anything else is 401.

Answers: 413 over `MAX_FHIR_BODY_BYTES`; 415 for XML (`Content-Type` naming xml: the
Subscription's `channel.payload` must be `application/fhir+json`); 422 naming each bad
element by its FHIRPath (a malformed resource, one without `id` or `meta.lastUpdated`, one
that makes an event our rules refuse, a `meta.lastUpdated` ahead of our clock by more than
NOTIFIER_FUTURE_SKEW_S), and then nothing of the notification is stored (but its completed
dispenses are counted as fills, which a resend does not count again); 503 when Redis cannot
take the events (those stored before are answered `duplicate` on the server's retry);
otherwise 200 with what became of each resource: its events, each `accepted` or `duplicate`,
or `ignored` and why. An ignored resource (a type or status we do not map) is answered 200
so the server does not retry it for ever; it is logged and counted
(`notifier_fhir_resources_total{outcome="ignored"}`), not stored. The MedicationRequests of
a notification taken are remembered (`notifier.ledger.fhir_fills`) for the dispenses and
refill Tasks posted after them.
"""

from __future__ import annotations

import hmac
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import dramatiq
from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter
from pydantic import SecretStr
from starlette.concurrency import run_in_threadpool

from notifier.errors import FieldProblem, InvalidEvent, PayloadTooLarge, SignatureError, StoreError
from notifier.intake.events import Event, parse_event
from notifier.intake.fhir import Defaults, MappedResource, map_payload
from notifier.intake.fhir.parse import load_fhir
from notifier.ledger.daily import FHIR_REFUSED
from notifier.ledger.fhir_fills import FhirFills
from notifier.ledger.store import Store
from notifier.timeutil import utcnow
from notifier.web.answers import ErrorAnswer, error_answer, unavailable_answer
from notifier.web.bodies import MAX_FHIR_BODY_BYTES, read_limited
from notifier.web.events import UNAVAILABLE, EventStores, count_refusal, store_accepted
from notifier.web.fhir_answers import (
    FhirAnswer,
    FhirJSONResponse,
    FhirOutcome,
    as_bundle,
    as_outcome,
    in_fhir,
    wants_fhir,
)
from notifier.web.signatures import verify_signature

log = logging.getLogger(__name__)

NOTIFY_PATH = "/fhir/r4/notify"
SOURCE_PATH = "/fhir/r4/{source}/notify"


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
    scheme, _, given = (authorization or "").partition(" ")
    if (authorization is not None and token is not None and scheme.lower() == "bearer"
            and hmac.compare_digest(given.strip().encode(),
                                    token.get_secret_value().encode())):
        return
    if authorization is None or "webhook-signature" in headers:
        verify_signature(secret, body, headers, now)
        return
    if token is None:
        raise SignatureError("no bearer token is configured here (NOTIFIER_FHIR_TOKEN): "
                             "sign the notification instead")
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


def check_update(body: bytes, kind: str, fhir_id: str) -> None:
    """A FHIR update's body (`PUT .../{kind}/{fhir_id}`) must be that resource; raises
    `InvalidEvent` naming what differs (a malformed body is left to the mapping)."""
    try:
        resource = load_fhir(body)
    except InvalidEvent:
        return
    if resource.get("resourceType") != kind:
        raise InvalidEvent([FieldProblem("resourceType", f"must be {kind}, the type in the "
                                                         "URL (a FHIR update)")])
    if resource.get("id") != fhir_id:
        raise InvalidEvent([FieldProblem(f"{kind}.id", f"must be {fhir_id}, the id in the "
                                                       "URL (a FHIR update)")])


@dataclass(frozen=True)
class FhirDoor:
    """The FHIR routes' settings: the Standard Webhooks `secret`, the bearer `token`
    (None: signatures only), the configured `sources`, the mapping's `defaults`, and how
    far ahead of our clock a `meta.lastUpdated` may be (`future_skew`)."""

    secret: str
    token: SecretStr | None
    sources: tuple[str, ...]
    defaults: Defaults
    future_skew: timedelta


def _deleted(kind: str, fhir_id: str) -> dict[str, Any]:
    return {"resources": [{"resource": f"{kind}/{fhir_id}", "status": "ignored",
                           "reason": "a deletion: nothing is sent for it (an EHR cancels "
                                     "an appointment by its status)", "events": []}]}


def fhir_routes(door: FhirDoor, store: Store, event_stores: EventStores, broker: dramatiq.Broker,
                counter: Counter) -> APIRouter:
    """The FHIR notification routes (see the module docstring); dispenses are counted as
    fills and MedicationRequests remembered on `store`'s Redis
    (`notifier.ledger.fhir_fills`)."""
    router = APIRouter()
    memory = FhirFills(store.redis)

    def mapped_and_remembered(body: bytes, source: str
                              ) -> tuple[list[MappedResource], list[tuple[Event, bytes]]]:
        # fhir.resources' validation takes milliseconds per resource, and the memory is
        # Redis calls: off the loop, in one thread.
        mapped = map_payload(body, door.defaults, memory, source)
        events = _events(mapped, utcnow() + door.future_skew)
        memory.remember(r.request for r in mapped if r.request is not None)
        return mapped, events

    async def receive(request: Request, source: str, update: tuple[str, str] | None = None,
                      delete: bool = False) -> Response:
        """The notification's answer; a FHIR interaction's (`update`), or a POST's whose
        `Accept` asks for FHIR JSON only, in FHIR's shape, its errors too (`in_fhir`)."""
        answer = await answer_notification(request, source, update, delete)
        if update is not None or wants_fhir(request.headers.get("accept", "")):
            return in_fhir(answer)
        return answer

    async def answer_notification(request: Request, source: str,
                                  update: tuple[str, str] | None, delete: bool) -> Response:
        try:
            body = await read_limited(request, MAX_FHIR_BODY_BYTES)
            authenticate({k.lower(): v for k, v in request.headers.items()}, body,
                         door.secret, door.token, utcnow())
            # After authentication: which EHRs are connected is not told to anyone.
            if source and source not in door.sources:
                return error_answer(404, f"no FHIR source {source!r} here "
                                         "(NOTIFIER_FHIR_SOURCES)")
            if "xml" in request.headers.get("content-type", "").lower():
                counter.labels("invalid").inc()
                return error_answer(415, "FHIR XML is not read here: set the Subscription's "
                                         "channel.payload to application/fhir+json")
            if delete and update is not None:
                counter.labels("ignored").inc()
                log.info("FHIR %s/%s deleted: ignored", *update)
                return FhirJSONResponse(as_outcome(_deleted(*update)), status_code=200)
            if update is None and not body.strip():
                # A Subscription with no payload: HAPI posts nothing, and ignores the answer.
                counter.labels("ignored").inc()
                log.info("FHIR notification without payload: ignored")
                return JSONResponse({"resources": []}, status_code=200)
            if update is not None:
                check_update(body, *update)
            mapped, events = await run_in_threadpool(mapped_and_remembered, body, source)
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
            await count_refusal(event_stores, FHIR_REFUSED)
            return error_answer(422, "invalid FHIR", exc.problems)
        except StoreError as exc:
            counter.labels("unavailable").inc()
            log.warning("FHIR notification refused: 503, Redis unavailable: %s", exc)
            return unavailable_answer(UNAVAILABLE)
        # Each event's answer, in payload order: the same version twice in one payload
        # (a searchset's match and include) is stored once, the second a duplicate.
        answers: list[str] = []
        seen: set[str] = set()
        try:
            for event, raw in events:
                stored = event.id not in seen and await store_accepted(
                    event_stores, broker, event, raw)
                seen.add(event.id)
                answers.append("accepted" if stored else "duplicate")
        except StoreError as exc:
            counter.labels("unavailable").inc()
            log.warning("FHIR notification refused: 503, Redis unavailable: %s", exc)
            return unavailable_answer(UNAVAILABLE)
        resources = []
        told = iter(answers)
        for resource in mapped:
            outcome = "ignored" if resource.ignored is not None else "mapped"
            counter.labels(outcome).inc()
            if resource.ignored is not None:
                log.info("FHIR %s ignored: %s", resource.label, resource.ignored)
            resources.append({
                "resource": resource.label, "status": outcome, "reason": resource.ignored,
                "events": [{"id": e["id"], "type": e["type"], "status": next(told)}
                           for e in resource.events]})
        log.info("FHIR notification: %d resources, %d events", len(mapped), len(events))
        if update is not None:
            return FhirJSONResponse(as_outcome({"resources": resources}), status_code=200)
        if wants_fhir(request.headers.get("accept", "")):
            answer = {"resources": resources}
            # A single resource is always one entry, rooted at its type.
            bundled = not mapped or mapped[0].where.startswith("Bundle.")
            if not bundled:
                return FhirJSONResponse(as_outcome(answer), status_code=200)
            # The entries posted, counted again (the mapping skips the status entry):
            # a Bundle, since it validated; an empty body is answered above.
            posted = await run_in_threadpool(load_fhir, body)
            entry_count = len(posted.get("entry") or [])
            return FhirJSONResponse(as_bundle(answer, [r.where for r in mapped],
                                              entry_count), status_code=200)
        return JSONResponse({"resources": resources}, status_code=200)

    common: dict[str, Any] = {
        "response_model": FhirAnswer,
        "description": "Authenticated by `Authorization: Bearer <NOTIFIER_FHIR_TOKEN>` or "
                       "Standard Webhooks headers (`webhook-id`, `webhook-timestamp`, "
                       "`webhook-signature`) as on /v1/events.",
        "responses": {401: {"model": ErrorAnswer,
                            "description": "No or wrong bearer token or signature"},
                      404: {"model": ErrorAnswer, "description": "An unknown source"},
                      415: {"model": ErrorAnswer,
                            "description": "FHIR XML: JSON is read here"},
                      422: {"model": ErrorAnswer,
                            "description": "Malformed FHIR, each element named by its "
                                           "FHIRPath; nothing stored"}}}
    # A FHIR update or deletion is answered in FHIR (`FhirOutcome`), its errors too (an
    # OperationOutcome of severity `error`: `in_fhir`).
    rest = {**common, "response_model": FhirOutcome, "response_class": FhirJSONResponse,
            "responses": {status: {"description": answer["description"],
                                   "content": {"application/fhir+json": {}}}
                          for status, answer in common["responses"].items()}}
    # Path segments are checked by `receive` (an unknown source is 404) and
    # `check_update` (the body must be the resource the URL names).
    source_param, type_param, id_param = Path(), Path(), Path()

    @router.post(NOTIFY_PATH, openapi_extra=NOTIFY_BODY,
                 summary="A FHIR server's Subscription notification (rest-hook)", **common)
    async def notify(request: Request) -> Response:
        return await receive(request, "")

    @router.post(SOURCE_PATH, openapi_extra=NOTIFY_BODY,
                 summary="A notification from a configured source (NOTIFIER_FHIR_SOURCES)",
                 **common)
    async def notify_source(request: Request, source: str = source_param) -> Response:
        return await receive(request, source)

    @router.put(NOTIFY_PATH + "/{kind}/{fhir_id}", openapi_extra=NOTIFY_BODY,
                summary="A rest-hook delivered as a FHIR update (HAPI FHIR)", **rest)
    async def update(request: Request, kind: str = type_param, fhir_id: str = id_param
                     ) -> Response:
        return await receive(request, "", (kind, fhir_id))

    @router.put(SOURCE_PATH + "/{kind}/{fhir_id}", openapi_extra=NOTIFY_BODY,
                summary="A source's rest-hook delivered as a FHIR update", **rest)
    async def update_source(request: Request, source: str = source_param,
                            kind: str = type_param, fhir_id: str = id_param) -> Response:
        return await receive(request, source, (kind, fhir_id))

    @router.delete(NOTIFY_PATH + "/{kind}/{fhir_id}",
                   summary="A deletion delivered by HAPI FHIR: accepted, ignored", **rest)
    async def delete(request: Request, kind: str = type_param, fhir_id: str = id_param
                     ) -> Response:
        return await receive(request, "", (kind, fhir_id), delete=True)

    @router.delete(SOURCE_PATH + "/{kind}/{fhir_id}",
                   summary="A source's deletion: accepted, ignored", **rest)
    async def delete_source(request: Request, source: str = source_param,
                            kind: str = type_param, fhir_id: str = id_param) -> Response:
        return await receive(request, source, (kind, fhir_id), delete=True)

    return router
