"""The console's actions, each a confirmation page (GET) and the form it posts (POST, CSRF
checked by `Console.action`), audited (`{action}: {detail}` as the audit's action, the
notification, client or appointment as its subject: ids and the operator's reason only;
the entry is appended by the script that makes the change, only when it makes it), then
303 back to the page it came from with `?done=` (shown as a notice there):

- `/console/notifications/{id}/resend`: send a failed or expired notification again now,
  as a new notification (`console.operations.resend_notification`);
- `/console/notifications/{id}/cancel`: cancel a scheduled one;
- `/console/clients/{client_id}/sms-enable`: re-enable SMS for the client's number, with
  the reason the form asks for;
- `/console/appointments/{appointment_id}/resend-invite`: send the appointment's latest
  calendar invite again.

What each allows is decided by `console.allowed`; a refused action answers 409 with why
(and a link to the copy still to go out, when that is why). Viewing a confirmation page
is audited like any page (`Console.viewer`); a path whose id cannot be one
(`notifications.NOTIFICATION_ID_RE`, `client_search.ID_RE` as the intake's ids) answers
a 404 page unaudited, GET or POST.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from notifier.console.allowed import MAX_REASON_CHARS, audited_reason, reason_error, refusal
from notifier.console.client_search import ID_RE
from notifier.console.notifications import (
    NOTIFICATION_ID_RE,
    notification_url,
    session_unaudited,
    shown_non_id,
)
from notifier.console.operations import (
    Done,
    InviteCheck,
    cancel_notification,
    enable_sms,
    invite_check,
    resend_check,
    resend_invite,
    resend_notification,
    sms_enable_check,
)
from notifier.console.routes import SECURITY_HEADERS, Console
from notifier.console.sessions import Session
from notifier.ledger.audit_write import AuditWrite
from notifier.policy.figures import load_policy


@dataclass(frozen=True)
class Confirm:
    """What a confirmation page says: its title, what will happen, where Cancel goes back
    to, and whether it asks for a reason."""

    title: str
    explain: list[str]
    back: str
    asks_reason: bool = False


def client_url(client_id: str) -> str:
    """The URL of the client's console page, the id url-quoted."""
    return f"/console/clients/{quote(client_id, safe='')}"


def routes(console: Console) -> APIRouter:
    """The actions' router (mounted under `/console`)."""
    router = APIRouter()
    policy = load_policy(console.settings.schedules_dir)
    store = console.store

    def confirm_page(session: Session, confirm: Confirm, action: str, status: int = 200,
                     error: str = "", reason: str = "") -> Response:
        return console.signed_in(session, "confirm.html", status, confirm=confirm,
                                 action=action, error=error, reason=reason,
                                 max_reason=MAX_REASON_CHARS, refused="", pending="",
                                 pending_url="")

    def refused_page(session: Session, title: str, why: str, back: str,
                     status: int = 409, pending: str = "") -> Response:
        return console.signed_in(session, "confirm.html", status,
                                 confirm=Confirm(title, [], back), action="", error="",
                                 reason="", max_reason=MAX_REASON_CHARS, refused=why,
                                 pending=pending,
                                 pending_url=notification_url(pending) if pending else "")

    async def not_an_id(request: Request, what: str, path_id: str) -> Response:
        """The 404 page for a path whose id cannot be one (`what`: "notification",
        "client", "appointment"), unaudited; the 401 page without a session."""
        session = await session_unaudited(console, request)
        if isinstance(session, Response):
            return session
        return refused_page(session, f"No such {what}",
                            f"There is no {what} {shown_non_id(path_id)!r}.", "/console/",
                            404)

    async def viewing(request: Request, what: str, path_id: str,
                      pattern: re.Pattern[str]) -> Session | Response:
        """A confirmation page's session, its view of `{what}:{path_id}` audited; or the
        page to answer instead (`not_an_id` for an id `pattern` refuses, 401)."""
        if not pattern.fullmatch(path_id):
            return await not_an_id(request, what, path_id)
        return await console.viewer(request, f"{what}:{path_id}")

    async def acting(request: Request, what: str, path_id: str, pattern: re.Pattern[str]
                     ) -> tuple[Session, dict[str, str]] | Response:
        """An action's session and form (`Console.action`), or the page to answer
        instead (`not_an_id` for an id `pattern` refuses, 401, 403)."""
        if not pattern.fullmatch(path_id):
            return await not_an_id(request, what, path_id)
        return await console.action(request)

    def back_to(url: str, done: str, **more: str) -> Response:
        query = "&".join(f"{k}={quote(v, safe='')}" for k, v in {"done": done, **more}.items())
        return RedirectResponse(f"{url}?{query}", status_code=303, headers=SECURITY_HEADERS)

    def audit_of(session: Session, action: str, subject: str) -> AuditWrite:
        """The action's audit entry, which the ledger appends in the same script as the
        change, only when it makes it (`notifier.ledger.audit_write`)."""
        return console.audit.entry(session.operator, action, subject, console.clock())

    # Send again now ----------------------------------------------------------------------
    def resend_confirm(notification_id: str) -> Confirm:
        return Confirm(
            "Send this notification again now?",
            [f"A new notification is planned, due now, with the same content as "
             f"{notification_id}; this one is kept as it ended.",
             "The worker sends it like any other: the send-time checks still apply (quiet "
             "hours hold it until the morning, an opted-out number or a channel the "
             "client turned off is not used)."],
            notification_url(notification_id))

    @router.get("/notifications/{notification_id}/resend")
    async def resend_form(request: Request, notification_id: str) -> Response:
        session = await viewing(request, "notification", notification_id, NOTIFICATION_ID_RE)
        if isinstance(session, Response):
            return session
        check = await run_in_threadpool(resend_check, store, notification_id,
                                        console.clock())
        if check.why:
            return refused_page(session, "Cannot send this again", check.why,
                                notification_url(notification_id),
                                404 if not check.fields else 409, check.pending)
        return confirm_page(session, resend_confirm(notification_id),
                            notification_url(notification_id, "resend"))

    @router.post("/notifications/{notification_id}/resend")
    async def resend(request: Request, notification_id: str) -> Response:
        checked = await acting(request, "notification", notification_id, NOTIFICATION_ID_RE)
        if isinstance(checked, Response):
            return checked
        session, _ = checked
        done: Done = await run_in_threadpool(
            resend_notification, store, notification_id, console.clock(),
            lambda new_id: audit_of(session, f"resend-notification: as {new_id}",
                                    f"notification:{notification_id}"))
        if not done.ok:
            return refused_page(session, "Cannot send this again", done.refused,
                                notification_url(notification_id), pending=done.pending)
        return back_to(notification_url(notification_id), "resent", new=done.subject)

    # Cancel ------------------------------------------------------------------------------
    @router.get("/notifications/{notification_id}/cancel")
    async def cancel_form(request: Request, notification_id: str) -> Response:
        session = await viewing(request, "notification", notification_id, NOTIFICATION_ID_RE)
        if isinstance(session, Response):
            return session
        fields = await run_in_threadpool(store.notification, notification_id)
        why = refusal("cancel", fields)
        if why:
            return refused_page(session, "Cannot cancel this", why,
                                notification_url(notification_id), 404 if not fields else 409)
        return confirm_page(session, Confirm(
            "Cancel this notification?",
            [f"{notification_id} will not be sent. Webhooks are told "
             "(notification.cancelled).",
             "If the worker begins sending it before you confirm, it can no longer be "
             "stopped, and the cancel is refused."],
            notification_url(notification_id)), notification_url(notification_id, "cancel"))

    @router.post("/notifications/{notification_id}/cancel")
    async def cancel(request: Request, notification_id: str) -> Response:
        checked = await acting(request, "notification", notification_id, NOTIFICATION_ID_RE)
        if isinstance(checked, Response):
            return checked
        session, _ = checked
        done = await run_in_threadpool(
            cancel_notification, store, notification_id,
            audit_of(session, "cancel-notification", f"notification:{notification_id}"))
        if not done.ok:
            return refused_page(session, "Cannot cancel this", done.refused,
                                notification_url(notification_id))
        return back_to(notification_url(notification_id), "cancelled")

    # Re-enable SMS -----------------------------------------------------------------------
    def sms_confirm(client_id: str) -> Confirm:
        return Confirm(
            "Re-enable SMS for this client's number?",
            ["Do this only when the client asked for text messages again. Their number is "
             "taken off the opt-out list (every client sharing it gets SMS again), and "
             "webhooks are told (client.opted_in).",
             "The reason you give is kept in the audit log."],
            client_url(client_id), asks_reason=True)

    @router.get("/clients/{client_id}/sms-enable")
    async def sms_enable_form(request: Request, client_id: str) -> Response:
        session = await viewing(request, "client", client_id, ID_RE)
        if isinstance(session, Response):
            return session
        why, _ = await run_in_threadpool(sms_enable_check, store, client_id)
        if why:
            return refused_page(session, "Nothing to re-enable", why, client_url(client_id))
        return confirm_page(session, sms_confirm(client_id),
                            f"{client_url(client_id)}/sms-enable")

    @router.post("/clients/{client_id}/sms-enable")
    async def sms_enable(request: Request, client_id: str) -> Response:
        checked = await acting(request, "client", client_id, ID_RE)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        reason = form.get("reason", "")
        bad = reason_error(reason)
        if bad:
            return confirm_page(session, sms_confirm(client_id),
                                f"{client_url(client_id)}/sms-enable", 400, bad,
                                reason[:MAX_REASON_CHARS * 2])
        done = await run_in_threadpool(
            enable_sms, store, client_id,
            audit_of(session, f"sms-enable: {audited_reason(reason)}", f"client:{client_id}"))
        if not done.ok:
            return refused_page(session, "Nothing to re-enable", done.refused,
                                client_url(client_id))
        return back_to(client_url(client_id), "sms-enabled")

    # Resend the latest invite --------------------------------------------------------------
    def invite_state(appointment_id: str, now: datetime) -> tuple[InviteCheck, str]:
        """(whether the invite can be sent again at `now`, `invite_check`; the page to go
        back to: the appointment's client's, or the start page for an unknown one)."""
        check = invite_check(store, appointment_id, now)
        record = check.record
        return check, client_url(record.appointment.client_id) if record else "/console/"

    @router.get("/appointments/{appointment_id}/resend-invite")
    async def invite_form(request: Request, appointment_id: str) -> Response:
        session = await viewing(request, "appointment", appointment_id, ID_RE)
        if isinstance(session, Response):
            return session
        check, back = await run_in_threadpool(invite_state, appointment_id,
                                              console.clock())
        if check.why:
            return refused_page(session, "Cannot resend the invite", check.why, back,
                                pending=check.pending)
        return confirm_page(session, Confirm(
            "Send the latest calendar invite again?",
            ["An email with the appointment's invite as it is now (its latest time and "
             "SEQUENCE, so the client's calendar updates the event it has) is planned, "
             "due now.",
             "The worker sends it like any other: quiet hours and the client's email "
             "preference still apply."], back),
            f"/console/appointments/{quote(appointment_id, safe='')}/resend-invite")

    @router.post("/appointments/{appointment_id}/resend-invite")
    async def invite(request: Request, appointment_id: str) -> Response:
        checked = await acting(request, "appointment", appointment_id, ID_RE)
        if isinstance(checked, Response):
            return checked
        session, _ = checked
        def act() -> tuple[Done, str]:
            now = console.clock()
            check, back = invite_state(appointment_id, now)
            return resend_invite(
                store, appointment_id, now, policy.appointments.late_change_window, check,
                lambda new_id: audit_of(session, f"resend-invite: as {new_id}",
                                        f"appointment:{appointment_id}")), back

        done, back = await run_in_threadpool(act)
        if not done.ok:
            return refused_page(session, "Cannot resend the invite", done.refused, back,
                                pending=done.pending)
        return back_to(back, "invite-resent", new=done.subject)

    return router
