"""The console's notification page: `GET /console/notifications/{notification_id}` (the id
url-quoted or raw: ids hold `:`), audited as `notification:{id}`.

It shows the notification's facts (kind, channel, recipient, entity, due time in the
client's zone and in UTC, expiry, state as the read API shows it, reason, provider code,
delivery, attempts, SMS sizes), its message rendered now (`console.message`: the ledger
keeps no bodies), its history of state changes and delivery reports
(`console.history`), and the actions it allows (`console.allowed`), each a link to its
confirmation page (`console.actions`). An unknown id answers a 404 page; a path that
cannot be an id at all (`NOTIFICATION_ID_RE`) answers it unaudited: nothing was looked
at, and the audit log (kept six years) is not a place for whatever a path holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from notifier.console.allowed import allowed_actions, appointment_changed
from notifier.console.history import HISTORY_MAX, left_out, parse_history
from notifier.console.message import Rendered, render_message, stored_of
from notifier.console.routes import Console
from notifier.console.sessions import Session
from notifier.console.times import local_text
from notifier.delivery.render import Renderer
from notifier.ledger.console_reads import NotificationRead, read_notification
from notifier.ledger.notif_fields import params_of
from notifier.ledger.notifications import from_epoch
from notifier.ledger.reading import shown_state
from notifier.ledger.records import AppointmentRecord, ClientRecord
from notifier.policy.figures import load_policy
from notifier.policy.plan import entity_ref

#: What `?done=` says after an action came back to the page (only these are shown).
NOTICES = {
    "cancelled": "Cancelled. The notification will not be sent.",
    "resent": "Planned again as a new notification, due now; the worker sends it as any "
              "other (quiet hours and opt-outs still apply).",
}

#: What a notification id can be: `{kind}:{entity id}:{occasion}:{channel}`
#: (`policy.common`, `policy.digest`, the console's `.again{n}` and `invite{n}.seq{s}`
#: copies, `ledger.deliveries`' sibling on the other channel), each part of kind
#: names (`[a-z_]`), intake ids (`intake.events.Id`: `[A-Za-z0-9._~-]`, at most 128),
#: UTC stamps and labels (`20261130T130000Z`, `72h`); an entity id and an occasion may
#: each hold an intake id, so the bound is generous.
NOTIFICATION_ID_RE = re.compile(r"[A-Za-z0-9._~:-]{1,400}")
#: How much of a path that is no id a 404 page shows back, characters.
NOTIFICATION_ID_MAX_SHOWN = 100


def shown_non_id(text: str) -> str:
    """A path that is no id as a 404 page shows it back: cut to
    `NOTIFICATION_ID_MAX_SHOWN` characters (marked with an ellipsis)."""
    cut = text[:NOTIFICATION_ID_MAX_SHOWN]
    return cut if cut == text else f"{cut}…"


async def session_unaudited(console: Console, request: Request) -> Session | Response:
    """The request's session for a path that cannot name anything (nothing is looked
    at, so nothing is audited), or the 401 page."""
    session = await console.session(request)
    return console.unauthorized(request) if session is None else session


def notification_url(notification_id: str, action: str = "") -> str:
    """The console's URL of a notification's page (or of one of its actions' confirmation
    pages, `action` being `resend` or `cancel`), the id url-quoted."""
    path = f"/console/notifications/{quote(notification_id, safe='')}"
    return f"{path}/{action}" if action else path


@dataclass(frozen=True)
class Moment:
    """An instant as the page writes it: in the recipient's zone (when known) and in UTC."""

    local: str
    utc: str


def moment(value: str | None, zone: ZoneInfo | None) -> Moment | None:
    """Epoch seconds (as the hash holds them) as a `Moment`; None for no or a bad value."""
    if not value:
        return None
    try:
        instant = from_epoch(value)
    except (ValueError, OverflowError, OSError):
        return None
    utc = instant.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return Moment(local_text(instant, zone) if zone else "", utc)


def resend_blocked(fields: dict[str, str], records: dict[str, Any], now: datetime) -> str:
    """Why "send again" is not offered for a notification its state would allow: its
    appointment, among the `records` the page read, changed since (`allowed.
    appointment_changed`); "" otherwise. An appointment not read leaves the offer to the
    confirmation page, which reads it and refuses with why."""
    params = params_of(fields)
    found = records.get(entity_ref("appointment", str(params.get("appointment_id") or "")))
    if not isinstance(found, AppointmentRecord):
        return ""
    return appointment_changed(fields.get("kind", ""), params, found, now)


def page_context(notification_id: str, read: NotificationRead, rendered: Rendered,
                 now: datetime) -> dict[str, Any]:
    """The template's context for the notification page at `now` (pure)."""
    f = read.fields
    allowed = allowed_actions(f)
    blocked = resend_blocked(f, read.records, now) if "resend" in allowed else ""
    client = read.records.get(entity_ref("client", f.get("to_id", "")))
    zone = (client.client.zone if isinstance(client, ClientRecord)
            and f.get("to") == "client" else None)
    return {
        "id": notification_id, "f": f, "state": shown_state(f) if "state" in f else "",
        "raw_state": f.get("state", ""), "zone": zone.key if zone else "",
        "due": moment(f.get("due"), zone), "expires": moment(f.get("expires"), zone),
        "sent_at": moment(f.get("sent_at"), zone), "created": moment(f.get("created"), zone),
        "delivery_at": moment(f.get("delivery_at"), zone),
        "retired": moment(f.get("retired"), zone),
        "client_link": (f"/console/clients/{quote(f['to_id'], safe='')}"
                        if f.get("to") == "client" and f.get("to_id") else ""),
        "history": [(e, moment(str(e.at.timestamp()), zone)) for e in parse_history(f)],
        "left_out": left_out(f), "history_first": HISTORY_MAX - 1,
        "allowed": allowed - {"resend"} if blocked else allowed, "resend_blocked": blocked,
        "message": rendered,
        "resend_url": notification_url(notification_id, "resend"),
        "cancel_url": notification_url(notification_id, "cancel"),
    }


def routes(console: Console) -> APIRouter:
    """The notification page's router (mounted under `/console`)."""
    router = APIRouter()
    settings = console.settings
    renderer = Renderer(Path(settings.templates_dir))
    policy = load_policy(settings.schedules_dir)

    def load(notification_id: str, now: datetime) -> tuple[NotificationRead, Rendered]:
        read = read_notification(console.store, notification_id)
        rendered = render_message(stored_of(notification_id, read.fields), read.records,
                                  settings, renderer, policy, now, read.short_token)
        return read, rendered

    @router.get("/notifications/{notification_id}")
    async def notification_page(request: Request, notification_id: str) -> Response:
        if not NOTIFICATION_ID_RE.fullmatch(notification_id):
            unaudited = await session_unaudited(console, request)
            if isinstance(unaudited, Response):
                return unaudited
            return console.signed_in(unaudited, "notification.html", 404, missing=True,
                                     id=shown_non_id(notification_id))
        session = await console.viewer(request, f"notification:{notification_id}")
        if isinstance(session, Response):
            return session
        now = console.clock()
        read, rendered = await run_in_threadpool(load, notification_id, now)
        if not read.fields:
            return console.signed_in(
                session, "notification.html", 404, missing=True, id=notification_id)
        done = request.query_params.get("done", "")
        new_id = request.query_params.get("new", "")
        return console.signed_in(
            session, "notification.html", missing=False,
            notice=NOTICES.get(done, ""),
            new_link=notification_url(new_id) if done == "resent" and new_id else "",
            new_id=new_id if done == "resent" else "",
            **page_context(notification_id, read, rendered, now))

    return router
