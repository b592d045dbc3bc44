"""`POST /v1/events`: the signed event webhook.

The web process stores an accepted event in Redis and enqueues its `apply_event` message
before it answers 202: in one script when the broker is on the ledger's Redis, the
default (see ONE_WRITE below), else stored first and enqueued after (`worker.queueing`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, Literal, NamedTuple

import dramatiq
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from notifier.config import FUTURE_SKEW_S
from notifier.errors import (
    FieldProblem,
    InvalidEvent,
    PayloadTooLarge,
    SignatureError,
    StoreError,
)
from notifier.intake.events import EVENT_MODELS, Event, parse_event
from notifier.ledger.async_events import AsyncEventStore, async_twin
from notifier.ledger.daily import UNREADABLE
from notifier.ledger.store import Store
from notifier.policy.ordering import subject_ref
from notifier.timeutil import utcnow
from notifier.web.answers import ErrorAnswer, error_answer, unavailable_answer
from notifier.web.bodies import MAX_BODY_BYTES, read_limited
from notifier.web.signatures import TIMESTAMP, verify_signature
from notifier.worker.actors import APPLY_EVENT, EVENTS_QUEUE, enqueue_apply
from notifier.worker.queueing import ledger_message

log = logging.getLogger(__name__)

#: An event may say it happened at most this far ahead of our clock, by default
#: (NOTIFIER_FUTURE_SKEW_S): clocks disagree a little, never by hours.
MAX_FUTURE_SKEW = timedelta(seconds=FUTURE_SKEW_S)
#: The 503's words: the event was not accepted. It may have been stored all the same (the
#: answer of a write in flight when Redis went away is lost), and then its retry is
#: answered `duplicate`, which is as good as accepted.
UNAVAILABLE = ("storage unavailable: not accepted; retry (a retry of an event already "
               "stored is answered duplicate)")


def _span(delta: timedelta) -> str:
    """`delta` in words: "5 minutes", "90 seconds"."""
    seconds = int(delta.total_seconds())
    minutes, rest = divmod(seconds, 60)
    if rest or not minutes:
        return f"{seconds} second{'s' * (seconds != 1)}"
    return f"{minutes} minute{'s' * (minutes != 1)}"


class EventAnswer(BaseModel):
    id: str
    status: Literal["accepted", "duplicate"]


def event_answer(event_id: str, status: Literal["accepted", "duplicate"], code: int
                 ) -> JSONResponse:
    """An `EventAnswer` with its status code, written without building the model."""
    return JSONResponse({"id": event_id, "status": status}, status_code=code)


def events_counter(registry: CollectorRegistry) -> Counter:
    """`notifier_events_total{answer}`: what `POST /v1/events` answered."""
    return Counter("notifier_events_total", "Events received, by answer", ["answer"],
                   registry=registry)


#: ONE_WRITE: how `POST /v1/events` stores and enqueues. The event and its `apply_event`
#: message are written by one script (`event_store.lua`, on `redis.asyncio`, so the event
#: loop never waits on a socket), the message exactly as dramatiq's `RedisBroker.enqueue`
#: writes it (`ledger.broker_messages`, which says what is left out and why). So:
#: - an answer 202 means the event is stored *and* queued: there is no window where a web
#:   process dying (or Redis failing) between two writes leaves an event stored but not
#:   queued, waiting for the clock's sweep (30 s or more, and only if a clock runs);
#: - a duplicate writes nothing, its message included (the script decides, not a
#:   pipeline sent before the answer is known);
#: - one round trip and one fsync per event instead of two of each, and with
#:   `appendfsync always` concurrent requests share Redis's fsync (it syncs once per pass
#:   of its event loop, after every client's commands of that pass).
#: The price: this needs the broker on the ledger's Redis (NOTIFIER_BROKER_URL unset), and a
#: dramatiq upgrade is checked against its Redis layout by tests/web/test_ingest.py with a
#: real worker. With RabbitMQ, or a Redis of the queue's own, the event is stored, then its
#: message enqueued (`worker.queueing`, which says what covers a crash between the two).


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
        return AsyncEventStore(async_twin(self.store.redis), self.store.keys)

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        """The lifespan: one store for the running loop while the app serves."""
        loop = asyncio.get_running_loop()
        events = self._by_loop[loop] = self._new()
        try:
            try:
                await events.connect()
            except StoreError as exc:
                # Not fatal: the first request reads the slot map instead.
                log.warning("the event store could not connect at start: %s", exc)
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


async def store_accepted(event_stores: EventStores, broker: dramatiq.Broker, event: Event,
                         body: bytes) -> bool:
    """Store an accepted `event` (`body`, its JSON as sent) and enqueue its `apply_event`
    message through `broker`: in one write on the ledger's Redis (ONE_WRITE), else after
    the store (`worker.queueing`). True when stored, False for a duplicate (nothing
    written or enqueued); raises `StoreError` when Redis cannot store it. A broker that
    cannot take the message once the event is stored is logged, not raised: the event
    is accepted, and the clock's sweep of unapplied events enqueues it again."""
    message = ledger_message(broker, event_stores.store.redis, EVENTS_QUEUE, APPLY_EVENT,
                             event.id)
    async with event_stores.current() as events:
        # See ONE_WRITE: with a message, stored and enqueued together, or neither.
        stored = await events.store_event(event.id, body, utcnow(),
                                          subject=subject_ref(event),
                                          occurred_at=event.occurred_at, message=message)
    if stored and message is None:
        try:
            # In a thread: enqueueing blocks (pika's connections are blocking ones).
            await asyncio.to_thread(enqueue_apply, broker, event.id)
        except StoreError as exc:
            log.warning("event %s stored but not queued (the clock's sweep queues it): %s",
                        event.id, exc)
    return stored


def refused_type(body: bytes) -> str:
    """The `type` of a refused event's `body` when it names a known event type, else
    `UNREADABLE`: the field of the day's refusal counter (a known name only, so that a
    sender cannot grow the hash with made-up types)."""
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return UNREADABLE
    event_type = parsed.get("type") if isinstance(parsed, dict) else None
    return event_type if isinstance(event_type, str) and event_type in EVENT_MODELS \
        else UNREADABLE


async def count_refused(event_stores: EventStores, body: bytes) -> None:
    """Count a signed event refused with 422 (`body`, as sent) in the day's refusal
    counter the Today page shows (`notifier.ledger.daily`), under its type."""
    await count_refusal(event_stores, refused_type(body))


async def count_refusal(event_stores: EventStores, field: str) -> None:
    """Count one refusal (422) under `field` of the day's refusal counter (an event type,
    `UNREADABLE`, or `FHIR_REFUSED` for a FHIR notification). Redis refusing the count is
    logged, never raised: the 422 is the answer either way."""
    try:
        async with event_stores.current() as events:
            await events.count_refused(field, utcnow())
    except StoreError as exc:
        log.warning("refused event not counted: Redis unavailable: %s", exc)


class EventRoute(NamedTuple):
    """`POST /v1/events` twice: `endpoint`, served as a plain Starlette route, and
    `documented`, the same endpoint as FastAPI describes it in the OpenAPI document, never
    served.

    FastAPI's own route costs about a fifth of the web's CPU per event on this, its
    busiest route (solving the endpoint's parameters, which are none but the request, and
    its wrappers); the endpoint reads its body and writes its answers by hand anyway."""

    endpoint: Callable[[Request], Awaitable[Response]]
    documented: APIRouter


def event_route(secret: str, event_stores: EventStores, broker: dramatiq.Broker,
                events_counter: Counter, future_skew: timedelta = MAX_FUTURE_SKEW
                ) -> EventRoute:
    """The signed event webhook, storing with `event_stores` and enqueueing its messages
    through `broker` (see ONE_WRITE). An event dated more
    than `future_skew` ahead of our clock is refused with 422."""
    too_far_ahead = f"is in the future: more than {_span(future_skew)} ahead of this " \
                    "server's clock"

    async def post_event(request: Request) -> Response:
        # One log line per request to this route, whatever the answer: uvicorn's access log
        # is off by default (see `notifier.cli.common.server_config`), and this line names
        # the event.
        try:
            body = await read_limited(request, MAX_BODY_BYTES)
            webhook_id = verify_signature(secret, body, {k.lower(): v for k, v in
                                                         request.headers.items()}, utcnow())
            event = parse_event(body)
            if event.id != webhook_id:
                raise InvalidEvent([FieldProblem("id", "must equal the webhook-id header")])
            if event.occurred_at > utcnow() + future_skew:
                # Applied, it would make every real later event about its subject stale
                # (a cancellation included) until the clock caught up with it.
                raise InvalidEvent([FieldProblem("occurred_at", too_far_ahead)])
        except PayloadTooLarge as exc:
            events_counter.labels("too_large").inc()
            log.info("event refused: 413 %s", exc)
            # Closed, rather than the rest of the body read and thrown away.
            return error_answer(413, str(exc), headers={"Connection": "close"})
        except SignatureError as exc:
            events_counter.labels("unauthorized").inc()
            log.info("event refused: 401 signature: %s", exc)
            return error_answer(401, f"signature: {exc}")
        except InvalidEvent as exc:
            events_counter.labels("invalid").inc()
            # The fields' names only: their messages may quote what was sent.
            log.info("event refused: 422 invalid %s", ", ".join(p.field for p in exc.problems))
            # Signed, so sent by the integration: what the Today page shows an operator.
            # A 401 is not counted: anyone can send junk.
            await count_refused(event_stores, body)
            return error_answer(422, "invalid event", exc.problems)
        try:
            stored = await store_accepted(event_stores, broker, event, body)
        except StoreError as exc:
            # Unreachable, or refusing the write (out of memory, read-only after a failover).
            # Not accepted: the integrator must send it again (a 5xx is what webhook senders
            # retry). A request in flight when Redis died may have been stored all the same,
            # so the answer does not say "nothing was stored": its retry is a duplicate.
            events_counter.labels("unavailable").inc()
            log.warning("event %s refused: 503, Redis unavailable: %s", event.id, exc)
            return unavailable_answer(UNAVAILABLE)
        if not stored:
            events_counter.labels("duplicate").inc()
            log.info("event %s duplicate", event.id)
            return event_answer(event.id, "duplicate", 200)
        events_counter.labels("accepted").inc()
        log.info("event %s accepted (%s)", event.id, event.type)
        return event_answer(event.id, "accepted", 202)

    documented = APIRouter()
    documented.post("/v1/events", status_code=202, response_model=EventAnswer,
                    responses={200: {"model": EventAnswer}, 401: {"model": ErrorAnswer},
                               413: {"model": ErrorAnswer}, 422: {"model": ErrorAnswer},
                               503: {"model": ErrorAnswer,
                                     "description": "Redis unreachable or refusing writes: "
                                                    + UNAVAILABLE}})(post_event)
    return EventRoute(post_event, documented)


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
