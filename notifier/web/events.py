"""`POST /v1/events`: the signed event webhook.

The web process stores an accepted event in Redis before it answers 202, then enqueues
`apply_event`; if the enqueue is lost, the clock's sweep finds the stored event later.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, Literal

from dramatiq.brokers.redis import RedisBroker
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.concurrency import run_in_threadpool

from notifier.errors import (
    FieldProblem,
    InvalidEvent,
    PayloadTooLarge,
    SignatureError,
    StoreError,
    StoreUnavailable,
)
from notifier.intake.events import EVENT_MODELS, parse_event
from notifier.ledger.async_events import AsyncEventStore, async_twin
from notifier.ledger.store import Store
from notifier.policy.ordering import subject_ref
from notifier.timeutil import utcnow
from notifier.web.answers import ErrorAnswer, error_answer
from notifier.web.signatures import TIMESTAMP, TIMESTAMP_TOLERANCE_S, verify_signature
from notifier.worker.actors import enqueue_apply

log = logging.getLogger(__name__)

#: Events larger than this are refused with 413 before anything else is looked at.
MAX_BODY_BYTES = 64 * 1024
#: An event may say it happened at most this far ahead of our clock (the same tolerance as
#: the signature's timestamp): clocks disagree a little, never by hours.
MAX_FUTURE_SKEW = timedelta(seconds=TIMESTAMP_TOLERANCE_S)


class EventAnswer(BaseModel):
    id: str
    status: Literal["accepted", "duplicate"]


def events_counter(registry: CollectorRegistry) -> Counter:
    """`notifier_events_total{answer}`: what `POST /v1/events` answered."""
    return Counter("notifier_events_total", "Events received, by answer", ["answer"],
                   registry=registry)


async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"body over {limit} bytes")
    return bytes(body)


#: ENQUEUE_CHOICE: how `POST /v1/events` stores and enqueues without blocking its event loop.
#: The event is stored with `redis.asyncio` (`AsyncEventStore`); the `apply_event` message
#: is then enqueued by dramatiq's own synchronous `broker.enqueue`, in the threadpool.
#: The alternative, store and enqueue in one asyncio pipeline, means calling the broker's
#: dispatch script ourselves (its private argument order, `broker_id`, `_max_unpack_size`,
#: `redis_message_id`): coupled to dramatiq's internals, and a pipeline cannot make the
#: enqueue depend on the store's answer, so a duplicate would enqueue again, and the queue
#: could no longer live on another Redis (three tests of tests/web/test_app.py fail with it).
#: Measured with `python -m bench.ingest --events 4000 --concurrency 32` (2 shared cores,
#: load average near 8 from other work, so noisy), four rounds, events/s:
#: blocking (before) 924/713/1728/474, this 852/996/861/720, one pipeline 1325/1498/970/776;
#: p99 ms: 404/150/50/512, 320/157/218/256, 162/136/195/310. The pipeline is faster, by
#: less than the machine's noise between rounds; not worth owning dramatiq's protocol.
#: A lost enqueue is recovered by the clock's sweep either way.


class EventStores:
    """The asyncio event store of the event loop serving the app.

    An asyncio connection belongs to the loop that opened it. The lifespan opens one store
    for the server's loop and closes it at shutdown; a request on a loop without a lifespan
    (a test client used without `with`, which runs each request on a loop of its own) gets
    a store of its own, closed after it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncEventStore] \
            = weakref.WeakKeyDictionary()

    def _new(self) -> AsyncEventStore:
        return AsyncEventStore(async_twin(self.store.redis))

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        """The lifespan: one store for the running loop while the app serves."""
        loop = asyncio.get_running_loop()
        events = self._by_loop[loop] = self._new()
        try:
            yield
        finally:
            del self._by_loop[loop]
            await events.close()

    @asynccontextmanager
    async def current(self) -> AsyncIterator[AsyncEventStore]:
        events = self._by_loop.get(asyncio.get_running_loop())
        if events is not None:
            yield events
            return
        events = self._new()
        try:
            yield events
        finally:
            await events.close()


def event_routes(secret: str, event_stores: EventStores, broker: RedisBroker,
                 events_counter: Counter) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/events", status_code=202, response_model=EventAnswer,
                 responses={200: {"model": EventAnswer}, 401: {"model": ErrorAnswer},
                            413: {"model": ErrorAnswer}, 422: {"model": ErrorAnswer},
                            503: {"model": ErrorAnswer,
                                  "description": "Redis unreachable: nothing was stored; "
                                                 "retry"}})
    async def post_event(request: Request) -> Response:
        try:
            body = await read_limited(request, MAX_BODY_BYTES)
            webhook_id = verify_signature(secret, body, {k.lower(): v for k, v in
                                                         request.headers.items()}, utcnow())
            event = parse_event(body)
            if event.id != webhook_id:
                raise InvalidEvent([FieldProblem("id", "must equal the webhook-id header")])
            if event.occurred_at > utcnow() + MAX_FUTURE_SKEW:
                # Applied, it would make every real later event about its subject stale
                # (a cancellation included) until the clock caught up with it.
                raise InvalidEvent([FieldProblem(
                    "occurred_at", "is in the future: more than 5 minutes ahead of this "
                    "server's clock")])
        except PayloadTooLarge as exc:
            events_counter.labels("too_large").inc()
            return error_answer(413, str(exc))
        except SignatureError as exc:
            events_counter.labels("unauthorized").inc()
            return error_answer(401, f"signature: {exc}")
        except InvalidEvent as exc:
            events_counter.labels("invalid").inc()
            return error_answer(422, "invalid event", exc.problems)
        try:
            async with event_stores.current() as events:
                stored = await events.store_event(event.id, body, utcnow(),
                                                  subject=subject_ref(event),
                                                  occurred_at=event.occurred_at)
        except StoreUnavailable:
            # Not stored, so not accepted: the integrator must send it again (a 5xx is what
            # webhook senders retry), and the answer says when.
            events_counter.labels("unavailable").inc()
            log.warning("event %s refused: Redis unreachable", event.id)
            answer = error_answer(503, "storage unavailable; nothing was stored, retry later")
            answer.headers["Retry-After"] = "5"
            return answer
        if not stored:
            events_counter.labels("duplicate").inc()
            return JSONResponse(EventAnswer(id=event.id, status="duplicate").model_dump(),
                                status_code=200)
        try:
            # Nothing synchronous on the event loop: see ENQUEUE_CHOICE.
            await run_in_threadpool(enqueue_apply, broker, event.id)
        except StoreError:
            # Stored durably already: the clock's sweep will enqueue it.
            log.warning("event %s stored but not enqueued; the sweep will pick it up", event.id)
        events_counter.labels("accepted").inc()
        log.info("event %s accepted (%s)", event.id, event.type)
        return JSONResponse(EventAnswer(id=event.id, status="accepted").model_dump(),
                            status_code=202)

    return router


def document_event_body(schema: dict[str, Any]) -> None:
    """Add to the OpenAPI document what `post_event` reads by hand: the body, a oneOf of
    every event type, and the signature headers."""
    _, defs = models_json_schema([(m, "validation") for m in EVENT_MODELS.values()],
                                 ref_template="#/components/schemas/{model}")
    schema.setdefault("components", {}).setdefault("schemas", {}).update(defs["$defs"])
    one_of = [{"$ref": f"#/components/schemas/{m.__name__}"} for m in EVENT_MODELS.values()]
    operation = schema["paths"]["/v1/events"]["post"]
    operation["requestBody"] = {"required": True, "content": {"application/json": {
        "schema": {"oneOf": one_of}}}}
    operation["parameters"] = [
        {"name": h, "in": "header", "required": True, "description": about,
         "schema": {"type": "string", "minLength": 1, **extra}}
        for h, about, extra in (
            ("webhook-id", "the event's `id`", {}),
            ("webhook-timestamp", "Unix seconds, within 5 minutes of now",
             {"pattern": f"^{TIMESTAMP.pattern}$"}),
            ("webhook-signature", "`v1,<base64 HMAC-SHA256>` entries, space-separated", {}),
        )
    ]
