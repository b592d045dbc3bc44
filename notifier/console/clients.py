"""The console's client pages: `GET /console/clients?q=QUERY` (find a client by id, phone
number or email address, exactly) and `GET /console/clients/{client_id}` (what we know of
a client and what we send them).

Search: one match answers 303 to the client's page; several (a family sharing a number)
a list of just those; none, the form again with the query kept; an empty, overlong or
unreadable query 400. Each search is audited as action `search` with the kinds looked up
and the clients it showed (`phone: client:c1 client:c2`, `id: (none)`), never the query
itself: an access log must say whose records were looked at, and the number or address
typed is itself health information that the log need not hold a second time.

Client page: audited as a view of `client:{id}` (also when there is no such client: the
attempt is an access too); 404 for an unknown client. Times are shown in the client's zone
and in NOTIFIER_CONSOLE_TIMEZONE (the operator's). Its Redis reads run in one threadpool
call (`notifier.console.client_data.load_client_file`).

Selectors the other pages and the browser tests rely on: `svg.timeline`,
`table#notifications`, `table#appointments`, `table#prescriptions`, `table#requests`,
`ul#matches`; links to `/console/notifications/{id}`,
`/console/appointments/{id}/resend-invite` and `/console/clients/{id}/sms-enable`.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from notifier.console.client_data import load_client_file
from notifier.console.client_search import (
    ID_RE,
    MAX_QUERY_CHARS,
    Query,
    find_clients,
    practice_region,
    read_query,
)
from notifier.console.routes import SECURITY_HEADERS, Console
from notifier.console.sessions import Session
from notifier.console.timeline import legend_items, notification_href, timeline_svg
from notifier.console.times import local_text, operator_zone, span_text, time_left
from notifier.ledger.records import ClientRecord

BAD_QUERY = ("Type a client's id, phone number or email address, whole (no part of one, no "
             f"name; at most {MAX_QUERY_CHARS} characters).")


def search_subject(query: Query, found: list[ClientRecord]) -> str:
    """The audit subject of a search: the kinds looked up and the clients shown."""
    shown = " ".join(f"client:{r.client.id}" for r in found) or "(none)"
    return f"{query.kinds()}: {shown}"


#: What `?done=` says after an action came back to the client page (only these are shown).
NOTICES = {
    "sms-enabled": "SMS re-enabled for this number: reminders by SMS go out again.",
    "invite-resent": "The latest calendar invite is planned again, due now, by email.",
}


def client_href(client_id: str) -> str:
    return "/console/clients/" + quote(client_id, safe="")


def routes(console: Console) -> APIRouter:
    """The client pages' router (included under `/console`)."""
    router = APIRouter()
    region = practice_region(console.settings)
    zone = operator_zone(console.settings)

    @router.get("/clients")
    async def search(request: Request, q: str = "") -> Response:
        session = await console.session(request)
        if session is None:
            return console.unauthorized(request)
        shown_query = q[:MAX_QUERY_CHARS]
        query = read_query(q, region)
        if query is None:
            return console.signed_in(session, "client_search.html", 400, query=shown_query,
                                     error=BAD_QUERY, matches=[], client_href=client_href)
        now = console.clock()

        def find() -> list[ClientRecord]:
            found = find_clients(console.store, query)
            console.audit.record(session.operator, "search", search_subject(query, found), now)
            return found

        found = await run_in_threadpool(find)
        if len(found) == 1:
            return console.keep(RedirectResponse(client_href(found[0].client.id), 303,
                                                 headers=SECURITY_HEADERS), session)
        return console.signed_in(session, "client_search.html", query=shown_query, error="",
                                 matches=found, client_href=client_href)

    @router.get("/clients/{client_id}")
    async def client_page(request: Request, client_id: str) -> Response:
        if not ID_RE.fullmatch(client_id):
            # Not an id at all: nothing to look at, so nothing to audit.
            session = await console.session(request)
            if session is None:
                return console.unauthorized(request)
            return missing(session, client_id)
        viewed = await console.viewer(request, f"client:{client_id}")
        if isinstance(viewed, Response):
            return viewed
        now = console.clock()
        file = await run_in_threadpool(load_client_file, console.store, client_id, now)
        if file is None:
            return missing(viewed, client_id)
        client = file.client.client
        done = request.query_params.get("done", "")
        new_id = request.query_params.get("new", "") if done == "invite-resent" else ""
        return console.signed_in(
            viewed, "client.html", file=file, client=client, now=now,
            notice=NOTICES.get(done, ""), new_id=new_id,
            client_zone=client.zone, operator_zone=zone,
            timeline=timeline_svg(file.notifications, now, zone),
            legend=legend_items(), when=local_text, span=span_text, time_left=time_left,
            notification_href=notification_href, quote=lambda v: quote(v, safe=""))

    def missing(session: Session, client_id: str) -> Response:
        return console.signed_in(session, "client_search.html", 404,
                                 query="", matches=[], client_href=client_href,
                                 error=f"There is no client with the id {client_id!r}.")

    return router
