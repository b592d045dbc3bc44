"""The HTTP side: the signed event webhook, the read API, health and metrics.

The web process stores an accepted event in Redis before it answers 202, then enqueues
`apply_event`; if the enqueue is lost, the clock's sweep finds the stored event later.
The read API shows health information, so it wants `Authorization: Bearer
<NOTIFIER_API_TOKEN>`; health, metrics and the OpenAPI document stay open.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import re
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from dramatiq.brokers.redis import RedisBroker
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.concurrency import run_in_threadpool

from notifier import __version__
from notifier.config import Settings
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
from notifier.ledger.notifications import FINAL_STATES
from notifier.ledger.records import AppointmentRecord
from notifier.ledger.store import NotificationView, Store
from notifier.policy.figures import CHANNELS
from notifier.policy.ordering import subject_ref
from notifier.timeutil import utcnow
from notifier.web.provider_hooks import provider_routes
from notifier.worker.actors import enqueue_apply

log = logging.getLogger(__name__)

#: Events larger than this are refused with 413 before anything else is looked at.
MAX_BODY_BYTES = 64 * 1024
SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
#: The read API lists notifications due from this long ago onwards, so a long-time client's
#: history never crowds out what is coming.
READ_WINDOW = timedelta(days=30)
#: Standard Webhooks' replay window: a timestamp further than this from now is refused.
TIMESTAMP_TOLERANCE_S = 5 * 60
#: An event may say it happened at most this far ahead of our clock (the same tolerance as
#: the signature's timestamp): clocks disagree a little, never by hours.
MAX_FUTURE_SKEW = timedelta(seconds=TIMESTAMP_TOLERANCE_S)
#: Unix seconds, ASCII digits only: no sign, fraction, exponent, blanks or other scripts.
TIMESTAMP = re.compile(r"[0-9]{1,12}")
#: The read API's security scheme; the route itself answers 401, so OpenAPI documents it.
API_TOKEN = HTTPBearer(auto_error=False, scheme_name="ApiToken",
                       description="`Authorization: Bearer <NOTIFIER_API_TOKEN>`")


class EventAnswer(BaseModel):
    id: str
    status: Literal["accepted", "duplicate"]


class ProblemOut(BaseModel):
    field: str
    message: str


class ErrorAnswer(BaseModel):
    error: str
    problems: list[ProblemOut] = []


class HealthAnswer(BaseModel):
    status: Literal["ok", "unhealthy"]
    #: "ok", or why Redis could not be reached
    redis: str


class AppointmentOut(BaseModel):
    id: str
    start: datetime
    #: listed until it ends, even when no completion ever arrives
    end: datetime
    status: str
    confirmed_at: datetime | None


class EventStatusAnswer(BaseModel):
    id: str
    #: accepted (waiting for its subject's turn), held (a close waiting for its opening),
    #: applied, stale, ignored, rejected (no longer valid) or failed (planning kept failing)
    status: Literal["accepted", "held", "applied", "stale", "ignored", "rejected", "failed"]
    reason: str = ""


class LinkNotFound(BaseModel):
    error: str


class NotificationsAnswer(BaseModel):
    client_id: str
    notifications: list[NotificationView]
    #: the client's upcoming appointments, with their confirmation by SMS reply (C)
    appointments: list[AppointmentOut] = []


def webhook_signature(secret: str, webhook_id: str, timestamp: str, body: bytes) -> bytes:
    """HMAC-SHA256 of `{id}.{timestamp}.{body}` with the key after `whsec_`, over bytes
    (a body need not be UTF-8 to be signed)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    return hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()


def sign_webhook(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value (`v1,<base64>`) that `verify_signature` accepts."""
    digest = webhook_signature(secret, webhook_id, str(timestamp), body)
    return "v1," + base64.b64encode(digest).decode()


def _signature_entries(header: str) -> Iterator[bytes]:
    """The well-formed `v1,<base64>` entries of a `webhook-signature`; others are skipped,
    so a malformed or future-version entry cannot hide a valid one during key rotation."""
    for entry in header.split():
        version, comma, encoded = entry.partition(",")
        if version != "v1" or not comma or not encoded:
            continue
        try:
            yield base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue


def verify_signature(secret: str, body: bytes, headers: dict[str, str], now: datetime) -> str:
    """Check a Standard Webhooks signature: any one of several space-separated entries may
    match, and the timestamp must be within 5 minutes of `now`.

    `headers` are keyed in lower case. Returns the `webhook-id`; raises `SignatureError`
    for anything missing, malformed, stale or wrong.
    """
    missing = [h for h in SIGNATURE_HEADERS if not headers.get(h)]
    if missing:
        raise SignatureError(f"missing header {', '.join(missing)}")
    webhook_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    if not TIMESTAMP.fullmatch(timestamp):
        raise SignatureError("webhook-timestamp is not Unix seconds (digits only)")
    skew_s = int(timestamp) - now.timestamp()
    if skew_s < -TIMESTAMP_TOLERANCE_S:
        raise SignatureError("webhook-timestamp more than 5 minutes old")
    if skew_s > TIMESTAMP_TOLERANCE_S:
        raise SignatureError("webhook-timestamp more than 5 minutes ahead")
    expected = webhook_signature(secret, webhook_id, timestamp, body)
    # Every entry is compared, so the time taken does not tell which one matched.
    matched = [hmac.compare_digest(expected, given)
               for given in _signature_entries(headers["webhook-signature"])]
    if not any(matched):
        raise SignatureError("no matching signature")
    return webhook_id


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


def _error(status: int, error: str, problems: list[FieldProblem] | None = None) -> JSONResponse:
    payload = ErrorAnswer(error=error, problems=[ProblemOut(field=p.field, message=p.message)
                                                 for p in problems or []])
    return JSONResponse(payload.model_dump(), status_code=status)


def check_api_token(expected: str | None, credentials: HTTPAuthorizationCredentials | None
                    ) -> str | None:
    """Why a read API request is refused, or None when it carries the configured token."""
    if expected is None:
        return "NOTIFIER_API_TOKEN is not configured: the read API is closed"
    if credentials is None:
        return "missing Authorization: Bearer <NOTIFIER_API_TOKEN>"
    if not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
        return "wrong bearer token"
    return None


def _unauthorized(expected: str | None, credentials: HTTPAuthorizationCredentials | None
                  ) -> JSONResponse | None:
    """The read API's 401 answer (with `WWW-Authenticate: Bearer`), or None when the
    request carries the configured token."""
    refused = check_api_token(expected, credentials)
    if refused is None:
        return None
    answer = _error(401, refused)
    answer.headers["WWW-Authenticate"] = "Bearer"
    return answer


def _event_body_schema(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, with the event body as a oneOf of every event type."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(title=app.title, version=app.version, routes=app.routes,
                         description=app.description)
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
    app.openapi_schema = schema
    return schema


class LedgerCollector(Collector):
    """Figures read from Redis at scrape time, so they cover every worker and clock."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        figures = self.store.figures()
        yield GaugeMetricFamily("notifier_scheduled", "Notifications waiting for their time",
                                value=figures.scheduled)
        yield GaugeMetricFamily("notifier_in_flight", "Notifications claimed, not finished",
                                value=figures.in_flight)
        yield GaugeMetricFamily("notifier_events_pending", "Events accepted, not yet applied",
                                value=figures.events_pending)
        yield GaugeMetricFamily("notifier_events_held",
                                "Closes waiting for their subject's opening event",
                                value=figures.events_held)
        outcomes = CounterMetricFamily(
            "notifier_notifications",
            "Notifications ended (sent, failed, expired, suppressed, cancelled; when sent or "
            "when planned), by state and channel", labels=["state", "channel"])
        # Every state on every channel from the start, so a rate() or an alert on `failed`
        # or `expired` has a series before the first one happens.
        counts: dict[tuple[str, str], int] = {
            (state, channel): 0 for state in FINAL_STATES for channel in CHANNELS}
        counts.update(figures.outcomes)
        for (state, channel), count in sorted(counts.items()):
            outcomes.add_metric([state, channel], count)
        yield outcomes
        lateness = HistogramMetricFamily(
            "notifier_send_lateness_seconds",
            "How long after its due time each notification was sent (sent_at - due_at), by "
            "kind and channel", labels=["kind", "channel"])
        for kind_and_channel, late in figures.lateness.items():
            lateness.add_metric(
                list(kind_and_channel),
                buckets=[(floatToGoString(bound), count) for bound, count in late.buckets]
                + [("+Inf", late.count)],
                sum_value=late.total_s)
        yield lateness


#: ENQUEUE_CHOICE: how `POST /v1/events` stores and enqueues without blocking its event loop.
#: The event is stored with `redis.asyncio` (`AsyncEventStore`); the `apply_event` message
#: is then enqueued by dramatiq's own synchronous `broker.enqueue`, in the threadpool.
#: The alternative, store and enqueue in one asyncio pipeline, means calling the broker's
#: dispatch script ourselves (its private argument order, `broker_id`, `_max_unpack_size`,
#: `redis_message_id`): coupled to dramatiq's internals, and a pipeline cannot make the
#: enqueue depend on the store's answer, so a duplicate would enqueue again, and the queue
#: could no longer live on another Redis (three tests of tests/test_web.py fail with it).
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


def create_app(settings: Settings, store: Store, broker: RedisBroker) -> FastAPI:
    secret = settings.require_webhook_secret()
    if settings.api_token is None:
        log.warning("NOTIFIER_API_TOKEN is not set: the read API refuses every request")
    event_stores = EventStores(store)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with event_stores.serving():
            yield

    app = FastAPI(title="Notifier", version=__version__, lifespan=lifespan,
                  description="Events in, appointment and medication reminders out.")
    registry = CollectorRegistry()
    events_counter = Counter("notifier_events_total", "Events received, by answer",
                             ["answer"], registry=registry)
    registry.register(LedgerCollector(store))

    @app.post("/v1/events", status_code=202, response_model=EventAnswer,
              responses={200: {"model": EventAnswer}, 401: {"model": ErrorAnswer},
                         413: {"model": ErrorAnswer}, 422: {"model": ErrorAnswer},
                         503: {"model": ErrorAnswer,
                               "description": "Redis unreachable: nothing was stored; retry"}})
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
            return _error(413, str(exc))
        except SignatureError as exc:
            events_counter.labels("unauthorized").inc()
            return _error(401, f"signature: {exc}")
        except InvalidEvent as exc:
            events_counter.labels("invalid").inc()
            return _error(422, "invalid event", exc.problems)
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
            answer = _error(503, "storage unavailable; nothing was stored, retry later")
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

    @app.get("/v1/clients/{client_id}/notifications", response_model=NotificationsAnswer,
             responses={401: {"model": ErrorAnswer}})
    def client_notifications(
        client_id: str,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(API_TOKEN)],
    ) -> NotificationsAnswer | JSONResponse:
        refused = _unauthorized(settings.api_token, credentials)
        if refused is not None:
            return refused
        now = utcnow()
        views = store.notifications_for("client", client_id, since=now - READ_WINDOW)
        appointments = [
            AppointmentOut(id=r.appointment.id, start=r.appointment.start,
                           end=r.appointment.end, status=r.status,
                           confirmed_at=r.confirmed_at)
            for r in store.upcoming_appointments(client_id, now)
        ]
        return NotificationsAnswer(client_id=client_id, appointments=appointments,
                                   notifications=views)

    @app.get("/v1/events/{event_id}", response_model=EventStatusAnswer,
             responses={401: {"model": ErrorAnswer}, 404: {"model": ErrorAnswer}})
    def event_status(
        event_id: str,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(API_TOKEN)],
    ) -> EventStatusAnswer | JSONResponse:
        """Where an accepted event is: waiting, held for its opening event, or applied."""
        refused = _unauthorized(settings.api_token, credentials)
        if refused is not None:
            return refused
        stored = store.event_status(event_id)
        if not stored.get("status"):
            return _error(404, "no event with this id (or it expired after 30 days)")
        return EventStatusAnswer(id=event_id, status=stored["status"],  # type: ignore[arg-type]
                                 reason=stored.get("reason", ""))

    @app.get("/healthz", response_model=HealthAnswer,
             responses={503: {"model": HealthAnswer, "description": "Redis unreachable"}})
    def healthz() -> JSONResponse:
        try:
            store.redis.ping()
        except StoreUnavailable as exc:
            return JSONResponse({"status": "unhealthy", "redis": str(exc)}, status_code=503)
        return JSONResponse({"status": "ok", "redis": "ok"})

    @app.get("/metrics", response_class=Response, responses={200: {
        "description": "Prometheus text exposition format",
        "content": {"text/plain": {"schema": {"type": "string"}}}}})
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/j/{token}", response_class=RedirectResponse, status_code=307,
             responses={307: {"description": "To the visit's current video link"},
                        404: {"model": LinkNotFound,
                              "description": "Unknown link, or no video visit behind it"}})
    def follow_short_link(token: str) -> Response:
        """A short link in an SMS (`notifier.ledger.shortlinks`): to the appointment's join URL as
        it is now, so a room changed after the SMS went out still works."""
        appointment_id = store.short_links.appointment_for(token)
        if appointment_id is None:
            return JSONResponse({"error": "no such link"}, status_code=404)
        record = store.load_record(f"appointment:{appointment_id}")
        if (not isinstance(record, AppointmentRecord) or record.status == "cancelled"
                or record.appointment.join_url is None):
            return JSONResponse({"error": "this visit has no video link any more"},
                                status_code=404)
        # Never cached: the link is looked up again on every click.
        return RedirectResponse(str(record.appointment.join_url), status_code=307,
                                headers={"Cache-Control": "no-store"})

    app.include_router(provider_routes(settings, store))
    app.openapi = lambda: _event_body_schema(app)  # type: ignore[method-assign]
    return app
