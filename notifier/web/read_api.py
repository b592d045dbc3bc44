"""The read API: a client's notifications and appointments, and where an event is.

It shows health information, so it wants `Authorization: Bearer <NOTIFIER_API_TOKEN>`;
without a configured token it refuses every request.
"""

from __future__ import annotations

import hmac
from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, SecretStr

from notifier.ledger.store import Store
from notifier.timeutil import utcnow
from notifier.web.answers import ErrorAnswer, error_answer
from notifier.web.views import NotificationView

#: The read API lists notifications due from this long ago onwards, so a long-time client's
#: history never crowds out what is coming.
READ_WINDOW = timedelta(days=30)
#: The read API's security scheme; the route itself answers 401, so OpenAPI documents it.
API_TOKEN = HTTPBearer(auto_error=False, scheme_name="ApiToken",
                       description="`Authorization: Bearer <NOTIFIER_API_TOKEN>`")


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


class NotificationsAnswer(BaseModel):
    client_id: str
    notifications: list[NotificationView]
    #: the client's upcoming appointments, with their confirmation by SMS reply (C)
    appointments: list[AppointmentOut] = []


def check_api_token(expected: SecretStr | None, credentials: HTTPAuthorizationCredentials | None
                    ) -> str | None:
    """Why a read API request is refused, or None when it carries the configured token."""
    if expected is None:
        return "NOTIFIER_API_TOKEN is not configured: the read API is closed"
    if credentials is None:
        return "missing Authorization: Bearer <NOTIFIER_API_TOKEN>"
    if not hmac.compare_digest(credentials.credentials.encode(),
                               expected.get_secret_value().encode()):
        return "wrong bearer token"
    return None


def _unauthorized(expected: SecretStr | None, credentials: HTTPAuthorizationCredentials | None
                  ) -> JSONResponse | None:
    """The read API's 401 answer (with `WWW-Authenticate: Bearer`), or None when the
    request carries the configured token."""
    refused = check_api_token(expected, credentials)
    if refused is None:
        return None
    answer = error_answer(401, refused)
    answer.headers["WWW-Authenticate"] = "Bearer"
    return answer


def read_api_routes(api_token: SecretStr | None, store: Store) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/clients/{client_id}/notifications", response_model=NotificationsAnswer,
                responses={401: {"model": ErrorAnswer}})
    def client_notifications(
        client_id: str,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(API_TOKEN)],
    ) -> NotificationsAnswer | JSONResponse:
        refused = _unauthorized(api_token, credentials)
        if refused is not None:
            return refused
        now = utcnow()
        views = [NotificationView.model_validate(row) for row in
                 store.notifications_for("client", client_id, since=now - READ_WINDOW)]
        appointments = [
            AppointmentOut(id=r.appointment.id, start=r.appointment.start,
                           end=r.appointment.end, status=r.status,
                           confirmed_at=r.confirmed_at)
            for r in store.upcoming_appointments(client_id, now)
        ]
        return NotificationsAnswer(client_id=client_id, appointments=appointments,
                                   notifications=views)

    @router.get("/v1/events/{event_id}", response_model=EventStatusAnswer,
                responses={401: {"model": ErrorAnswer}, 404: {"model": ErrorAnswer}})
    def event_status(
        event_id: str,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(API_TOKEN)],
    ) -> EventStatusAnswer | JSONResponse:
        """Where an accepted event is: waiting, held for its opening event, or applied."""
        refused = _unauthorized(api_token, credentials)
        if refused is not None:
            return refused
        stored = store.event_status(event_id)
        if not stored.get("status"):
            return error_answer(404, "no event with this id (or it expired after 30 days)")
        return EventStatusAnswer(id=event_id, status=stored["status"],  # type: ignore[arg-type]
                                 reason=stored.get("reason", ""))

    return router
