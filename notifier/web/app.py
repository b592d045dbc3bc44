"""The FastAPI app: one router per concern, wired together with what each one needs.

`events` (the signed event webhook), `read_api` (bearer token), `links` (short links),
`ops` (health, metrics, the OpenAPI document), `provider_hooks` (Twilio and SendGrid),
`fhir` (a FHIR server's Subscription notifications, `/fhir/r4/notify`), and the operator
console under `/console` (`notifier.console.routes`) when NOTIFIER_CONSOLE_SECRET is set.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import dramatiq
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import Response
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException

from notifier import __version__
from notifier.config import Settings
from notifier.console.audit import AuditLog
from notifier.console.routes import Console, console_routes
from notifier.console.sessions import SessionCodec
from notifier.errors import StoreError
from notifier.intake.fhir import Defaults
from notifier.ledger.store import Store
from notifier.policy.figures import load_policy
from notifier.web.events import EventStores, document_event_body, event_route, events_counter
from notifier.web.failures import install_failure_handlers
from notifier.web.fhir import FhirDoor, fhir_counter, fhir_routes
from notifier.web.fhir_answers import fhir_http_error
from notifier.web.links import link_routes
from notifier.web.ops import LedgerCollector, WebhookCollector, openapi_document, ops_routes
from notifier.web.provider_hooks import provider_routes
from notifier.web.read_api import read_api_routes
from notifier.webhooks.outbox import WebhookOutbox

log = logging.getLogger(__name__)


def create_app(settings: Settings, store: Store, broker: dramatiq.Broker) -> FastAPI:
    """The app, serving `store`'s Redis and enqueueing through `broker` (on the store's
    Redis, an event and its message are one write: `web.events.ONE_WRITE`). Raises
    `ConfigError` without a webhook secret, or when the console's operators file is not
    valid (`notifier.console.operators.load_operators`)."""
    secret = settings.require_webhook_secret()
    if settings.api_token is None:
        log.warning("NOTIFIER_API_TOKEN is not set: the read API refuses every request")
    console = None
    if settings.console_secret is None:
        log.warning("NOTIFIER_CONSOLE_SECRET is not set: the console (/console) is not served")
    else:
        console = Console(
            settings, store,
            SessionCodec(settings.console_secret.get_secret_value(),
                         settings.console_session_s),
            AuditLog(store.redis, settings.console_audit_days, keys=store.keys))
    event_stores = EventStores(store)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with event_stores.serving():
            yield

    app = FastAPI(title="Notifier", version=__version__, lifespan=lifespan,
                  description="Events in, appointment and medication reminders out.")
    install_failure_handlers(app)
    # `/metrics` shows the events counter first, then the ledger's figures, then each
    # delivery-webhook endpoint's.
    registry = CollectorRegistry()
    counter = events_counter(registry)
    registry.register(LedgerCollector(store))
    registry.register(WebhookCollector(WebhookOutbox(store.redis, settings.webhook_endpoints,
                                                     store.keys)))

    events = event_route(secret, event_stores, broker, counter,
                         future_skew=timedelta(seconds=settings.future_skew_s))
    app.add_route("/v1/events", events.endpoint, methods=["POST"])
    app.include_router(fhir_routes(FhirDoor(
        secret=secret, token=settings.fhir_token, sources=settings.fhir_sources,
        defaults=Defaults.of_policy(load_policy(settings.schedules_dir),
                                    settings.fhir_video_extensions),
        future_skew=timedelta(seconds=settings.future_skew_s)),
        store, event_stores, broker, fhir_counter(registry)))
    app.include_router(read_api_routes(settings.api_token, store))
    app.include_router(ops_routes(store, registry))
    app.include_router(link_routes(store))
    app.include_router(provider_routes(settings, store))
    if console is not None:
        app.include_router(console_routes(console))
        app.add_exception_handler(StoreError, console.store_failed)

    async def http_error(request: Request, exc: Exception) -> Response:
        """An HTTP error (404, 405) in the shape its caller reads: the console's page, a
        FHIR OperationOutcome under /fhir/, FastAPI's JSON elsewhere."""
        if not isinstance(exc, HTTPException):  # registered for HTTPException only
            raise exc
        if request.url.path.startswith("/fhir/"):
            return await fhir_http_error(request, exc)
        if console is not None:
            return await console.http_error(request, exc)
        return await http_exception_handler(request, exc)

    app.add_exception_handler(HTTPException, http_error)
    app.openapi = lambda: openapi_document(  # type: ignore[method-assign]
        app, document_event_body, documented=events.documented.routes)
    return app
