"""`GET /j/{token}`: the short links in our SMS, to a video visit's join URL as it is now.

`HEAD` is answered the same, without a body: phones and messaging apps ask with it
before showing a link's preview, and a 405 there shows the patient a broken link."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel

from notifier.ledger.records import AppointmentRecord
from notifier.ledger.store import Store


class LinkNotFound(BaseModel):
    error: str


def link_routes(store: Store) -> APIRouter:
    router = APIRouter()

    @router.get("/j/{token}", response_class=RedirectResponse, status_code=307,
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

    # HEAD: the same function (the server drops the body); one operation in the document.
    router.add_api_route("/j/{token}", follow_short_link, methods=["HEAD"],
                         include_in_schema=False)
    return router
