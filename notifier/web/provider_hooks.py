"""What Twilio and SendGrid tell us: delivery reports, and replies to our SMS.

Every route reads at most `web.bodies`' limit (413 past it, before anything else) and
verifies its provider's signature, answering 403 otherwise (or when the key to
verify with is not configured). SendGrid signs a timestamp with each batch: one more than 10
minutes from now is refused too, so a captured batch cannot be replayed later.

The routes read and verify the request on the event loop; their Redis work (recording a
report, the other channel after a failure, answering a reply) is synchronous, so it runs
in the threadpool: a slow or stalled Redis holds up these requests, never the others.

Reports name the notification: Twilio's status callback URL carries it (`?n=`), SendGrid
echoes our `custom_args`. A report for an unknown id is kept aside and ignored; one that
arrives before the send is recorded is kept and still counts.
"""

from __future__ import annotations

import binascii
import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sendgrid.helpers.eventwebhook import EventWebhook
from starlette.concurrency import run_in_threadpool
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from notifier.config import Settings, reveal
from notifier.delivery.fallback import after_reported_failure
from notifier.delivery.render import Renderer
from notifier.errors import ConfigError
from notifier.intake.replies import check_reply_templates, reply_to_sms
from notifier.ledger.deliveries import DELIVERY_FAILURES
from notifier.ledger.store import Store
from notifier.timeutil import utcnow
from notifier.web.bodies import MAX_SENDGRID_BODY_BYTES, read_limited

log = logging.getLogger(__name__)

TWIML = "application/xml"
#: How far SendGrid's signed timestamp may be from now (either way, for clock skew).
SENDGRID_TOLERANCE_S = 10 * 60


class Refusal(BaseModel):
    error: str


def _header(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": True, "description": description,
            "schema": {"type": "string"}}


def _form(*fields: str) -> dict[str, Any]:
    """A Twilio callback body: form fields, of which we read `fields` (Twilio sends more)."""
    return {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
        "type": "object", "properties": {f: {"type": "string"} for f in fields},
        "additionalProperties": {"type": "string"}}}}}


# What the routes read by hand, so that the OpenAPI document shows it.
TWILIO_SIGNATURE = _header("x-twilio-signature", "Twilio's signature of the URL and form")
REFUSED: dict[int | str, dict[str, Any]] = {403: {"model": Refusal,
                                                  "description": "Missing or wrong signature"}}
TWILIO_STATUS = {
    "parameters": [TWILIO_SIGNATURE, {
        "name": "n", "in": "query", "required": False, "schema": {"type": "string"},
        "description": "The notification the report is about, from our status callback URL"}],
    "requestBody": _form("MessageStatus", "ErrorCode"),
}
TWILIO_INBOUND = {"parameters": [TWILIO_SIGNATURE],
                  "requestBody": _form("MessageSid", "From", "Body")}
SENDGRID_EVENTS = {
    "parameters": [
        _header("x-twilio-email-event-webhook-signature", "SendGrid's ECDSA signature"),
        _header("x-twilio-email-event-webhook-timestamp", "The signed Unix seconds")],
    "requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "array", "items": {"type": "object"}}}}},
}


def fresh_timestamp(timestamp: str, now: datetime, tolerance_s: int = SENDGRID_TOLERANCE_S
                    ) -> bool:
    """Whether `timestamp` is Unix seconds (ASCII digits only) within `tolerance_s` of now."""
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        return False
    return abs(int(timestamp) - now.timestamp()) <= tolerance_s


def sendgrid_report(event: object) -> tuple[str, str, str] | None:
    """The notification id, event and code of one SendGrid event; None for one that is not
    an object, or whose text cannot be stored (a lone surrogate, from a `\\ud800` escape)."""
    if not isinstance(event, dict):
        return None
    report = (str(event.get("notification_id", "")), str(event.get("event", "")).lower(),
              str(event.get("status") or event.get("type") or ""))
    try:
        for text in report:
            text.encode()
    except UnicodeEncodeError:
        return None
    return report


def sendgrid_key(settings: Settings) -> Any:
    if not settings.sendgrid_webhook_public_key:
        return None
    try:
        return EventWebhook().convert_public_key_to_ecdsa(settings.sendgrid_webhook_public_key)
    except ValueError:
        raise ConfigError("SENDGRID_WEBHOOK_PUBLIC_KEY: not a base64 ECDSA public key") from None


def provider_routes(settings: Settings, store: Store) -> APIRouter:
    router = APIRouter()
    token = reveal(settings.twilio_auth_token)
    validator = RequestValidator(token) if token else None
    event_key = sendgrid_key(settings)
    renderer = Renderer(Path(settings.templates_dir))
    check_reply_templates(renderer, settings, utcnow())

    async def twilio_form(request: Request) -> dict[str, str] | None:
        """The form fields of a request Twilio signed, or None."""
        body = (await read_limited(request)).decode("utf-8", "replace")
        form = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
        url = settings.public_url + request.url.path
        if request.url.query:
            url += "?" + request.url.query
        signature = request.headers.get("x-twilio-signature", "")
        if validator is None or not signature or not validator.validate(url, form, signature):
            return None
        return form

    @router.post("/twilio/status", status_code=204, response_class=Response,
                 responses=REFUSED, openapi_extra=TWILIO_STATUS)
    async def twilio_status(request: Request) -> Response:
        form = await twilio_form(request)
        if form is None:
            return JSONResponse({"error": "signature"}, status_code=403)
        notification_id = request.query_params.get("n", "")
        status = form.get("MessageStatus", "").lower()
        code = form.get("ErrorCode", "")
        now = utcnow()

        def record() -> None:  # synchronous Redis work: in the threadpool
            # About the message Twilio names (MessageSid): a second copy's report does not
            # settle the send recorded. The failure's handling runs while the delivery on
            # record is a failure: again for a repeated report (it is idempotent), never
            # after `delivered`.
            on_record = store.record_delivery(notification_id, status, code, now,
                                              form.get("MessageSid", ""))
            if on_record in DELIVERY_FAILURES:
                after_reported_failure(store, notification_id, code, now,
                                       address=form.get("To", ""))

        await run_in_threadpool(record)
        return Response(status_code=204)

    @router.post("/twilio/inbound", response_class=Response, openapi_extra=TWILIO_INBOUND,
                 responses={**REFUSED, 200: {"description": "TwiML: our reply, if any",
                                             "content": {TWIML: {"schema": {"type": "string"}}}}})
    async def twilio_inbound(request: Request) -> Response:
        form = await twilio_form(request)
        if form is None:
            return JSONResponse({"error": "signature"}, status_code=403)
        reply = await run_in_threadpool(reply_to_sms, store, settings, renderer,
                                        form.get("From", ""), form.get("Body", ""),
                                        form.get("MessageSid", ""), utcnow())
        twiml = MessagingResponse()
        if reply:
            twiml.message(reply)
        return Response(str(twiml), media_type=TWIML)

    @router.post("/sendgrid/events", status_code=204, response_class=Response,
                 openapi_extra=SENDGRID_EVENTS, responses={
                     **REFUSED, 400: {"model": Refusal, "description": "Signed, but not JSON"}})
    async def sendgrid_events(request: Request) -> Response:
        body = await read_limited(request, MAX_SENDGRID_BODY_BYTES)
        signature = request.headers.get("x-twilio-email-event-webhook-signature", "")
        timestamp = request.headers.get("x-twilio-email-event-webhook-timestamp", "")
        now = utcnow()
        try:
            valid = event_key is not None and bool(signature) and EventWebhook().verify_signature(
                body.decode("utf-8"), signature, timestamp, event_key)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            valid = False
        if not valid:
            return JSONResponse({"error": "signature"}, status_code=403)
        if not fresh_timestamp(timestamp, now):
            return JSONResponse({"error": "stale timestamp"}, status_code=403)
        try:
            events = json.loads(body)
        except (ValueError, RecursionError):
            # RecursionError: nesting deeper than the parser allows, e.g. 1,000 "[".
            return JSONResponse({"error": "not JSON"}, status_code=400)

        def record() -> None:  # synchronous Redis work: in the threadpool
            for event in events if isinstance(events, list) else []:
                report = sendgrid_report(event)
                if report is None:
                    continue
                notification_id, status, code = report
                if store.record_delivery(notification_id, status, code, now) in (
                        DELIVERY_FAILURES):
                    after_reported_failure(store, notification_id, code or status, now)

        await run_in_threadpool(record)
        return Response(status_code=204)

    return router
