"""The console's routes under `/console`: `GET /console/login` (the form), `POST
/console/login`, `POST /console/logout`, `GET /console/static/{console.css,favicon.svg}`
(the one stylesheet and the icon, served without a session: they hold no data) and
`GET /console/` (the start page); the pages of each concern come from their own modules
(`notifier.console.pages.PAGE_ROUTERS`).

Every answer is server-rendered HTML (templates/console/, Jinja2 with autoescape) with a
Content-Security-Policy of `default-src 'self'` (no inline script or style), `no-store`
caching, and no framing. Every route but the login form's answers 401 without a valid
session, and every POST without the right CSRF token 403. Sign-ins (good or not),
sign-outs and page views are audited (`notifier.console.audit`).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import jinja2
from fastapi import APIRouter, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from notifier.config import Settings, project_dir
from notifier.console.audit import AuditLog
from notifier.console.operators import NAME_RE, Operator, load_operators, verify_password
from notifier.console.sessions import (
    CSRF_FIELD,
    LOGIN_CSRF_COOKIE,
    LOGIN_FORM_S,
    SESSION_COOKIE,
    Session,
    SessionCodec,
    credential_key,
    csrf_ok,
    end_session,
    session_ended,
)
from notifier.console.throttle import VERIFY_SLOTS, SignInThrottle
from notifier.errors import ConfigError, StoreError
from notifier.ledger.store import Store
from notifier.timeutil import utcnow
from notifier.web.failures import store_failed

log = logging.getLogger(__name__)

#: Headers on every console answer: scripts, styles and everything else from this origin
#: only (none inline), never framed, never cached (pages show health information).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; "
                               "form-action 'self'; base-uri 'none'",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
#: The console's static files, by name, and their types: the one stylesheet (no inline
#: styles: the CSP forbids them) and the icon (else browsers ask for `/favicon.ico`).
STATIC = Path(project_dir("templates")) / "console" / "static"
STATIC_TYPES = {"console.css": "text/css", "favicon.svg": "image/svg+xml"}
#: A console form is a few fields; a larger body is refused unread past this.
MAX_FORM_BYTES = 8192


def console_templates() -> jinja2.Environment:
    """The console's templates, from the project's `templates/console/` (not
    NOTIFIER_TEMPLATES_DIR, which holds the messages' templates)."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(project_dir("templates")) / "console"),
        autoescape=True, undefined=jinja2.StrictUndefined)


class Console:
    """What the routes share: the settings, the ledger (`store`), the operators file
    (read again whenever it changed, so `notifier console add-operator` needs no restart
    and a session of an operator taken out ends at once), the cookie codec, the sign-in
    throttle, the audit log, the templates and the clock."""

    def __init__(self, settings: Settings, store: Store, codec: SessionCodec,
                 audit: AuditLog, clock: Callable[[], datetime] = utcnow) -> None:
        self.settings = settings
        self.store = store
        operators_file = settings.console_operators_file
        self.operators_file = operators_file
        # Read now: a bad file stops start-up with one line (ConfigError).
        self.operators: dict[str, Operator] = load_operators(operators_file)
        self._operators_seen: tuple[int, ...] = ()
        if not self.operators:
            log.warning("no console operators in %s: the console refuses every sign-in "
                        "(notifier console add-operator NAME)", operators_file)
        self.codec = codec
        self.audit = audit
        self.throttle = SignInThrottle(audit.redis)
        self.verify_slots = asyncio.Semaphore(VERIFY_SLOTS)
        self.practice_name = settings.practice_name
        self.clock = clock
        self.templates = console_templates()

    def page(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        """`template` rendered with `context` (and `practice_name`), with the console's
        headers. A signed-in page passes `session` too: the layout shows the navigation,
        the search form and the sign-out button (with the CSRF token) only then."""
        context.setdefault("session", None)
        html = self.templates.get_template(template).render(
            practice_name=self.practice_name, **context)
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    async def viewer(self, request: Request, subject: str) -> Session | Response:
        """The session of a request for a page showing `subject` (`client:{id}`,
        `notification:{id}`, `today`, ...), its view audited; or the 401 page to answer
        instead. Raises `StoreUnavailable` when Redis is down: nothing is shown that
        could not be audited."""
        session = await self.session(request)
        if session is None:
            return self.unauthorized(request)
        await run_in_threadpool(self.audit.record, session.operator, "view", subject,
                                self.clock())
        return session

    async def action(self, request: Request) -> tuple[Session, dict[str, str]] | Response:
        """The session and form of a POST, or the page to answer instead: 401 without a
        session, 403 without the session's CSRF token (or when the body is not a form).
        The caller audits the action itself, once it knows what was done."""
        session = await self.session(request)
        if session is None:
            return self.unauthorized(request)
        form = await read_form(request)
        if form is None or not csrf_ok(session, form.get(CSRF_FIELD)):
            return self.refused(403, "Refused", "This form was not sent from the console.",
                                session=session)
        return session, form

    def signed_in(self, session: Session, template: str, status: int = 200,
                  **context: Any) -> Response:
        """A signed-in page: `template` with `session` in its context, the session's
        cookie sent again (its idle time starts over)."""
        return self.keep(self.page(template, status, session=session, **context), session)

    def refused(self, status: int, title: str, message: str,
                session: Session | None = None) -> HTMLResponse:
        return self.page("refused.html", status, title=title, message=message,
                         session=session)

    def unauthorized(self, request: Request) -> HTMLResponse:
        """The 401 page; its sign-in link comes back to the page `request` asked for (a
        GET), so a console link opened from a ticket lands where it pointed."""
        wanted = (request.url.path + (f"?{request.url.query}" if request.url.query else "")
                  if request.method == "GET" else "")
        return self.page("refused.html", 401, title="Sign in first",
                         message="Your session has ended or you have not signed in.",
                         login_url="/console/login" + (f"?next={quote(wanted, safe='/')}"
                                                       if safe_next(wanted) else ""))

    async def session(self, request: Request) -> Session | None:
        """The request's session, unless missing, forged, past its time, signed out, or
        of an operator no longer in the operators file or whose password was set again
        since (`sessions.credential_key`)."""
        session = self.codec.load(request.cookies.get(SESSION_COOKIE), self.clock())
        if session is None:
            return None

        def still_valid() -> bool:
            operator = self.current_operators().get(session.operator)
            return (operator is not None
                    and hmac.compare_digest(credential_key(operator.password_hash),
                                            session.key)
                    and not session_ended(self.audit.redis, session))

        return session if await run_in_threadpool(still_valid) else None

    def keep(self, response: Response, session: Session) -> Response:
        """`response` with the session's cookie sent again: its idle time starts over."""
        response.set_cookie(SESSION_COOKIE, self.codec.dump(session),
                            max_age=int(self.codec.idle.total_seconds()), path="/",
                            secure=True, httponly=True, samesite="strict")
        return response

    def current_operators(self) -> dict[str, Operator]:
        """The operators file as it is now (read again when its size, time or inode
        changed: every request asks); if it went bad since start-up, the operators read
        last (and an error in the log)."""
        try:
            stat = self.operators_file.stat()
            seen: tuple[int, ...] = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        except OSError:
            seen = ()
        if seen and seen == self._operators_seen:
            return self.operators
        try:
            self.operators = load_operators(self.operators_file)
            self._operators_seen = seen
        except ConfigError as exc:
            log.error("console operators file unusable, keeping the last good one: %s", exc)
        return self.operators

    async def http_error(self, request: Request, exc: Exception) -> Response:
        """The app's answer to an HTTP error (404, 405, ...): FastAPI's own outside the
        console; under `/console`, 401 without a session (no telling which pages exist),
        else a page with the console's headers."""
        if not isinstance(exc, HTTPException):  # registered for HTTPException only
            raise exc
        if not request.url.path.startswith("/console"):
            return await http_exception_handler(request, exc)
        try:
            session = await self.session(request)
        except StoreError as failed:  # raised in a handler: not handled by another
            return await self.store_failed(request, failed)
        if session is None:
            return self.unauthorized(request)
        return self.refused(exc.status_code, "Not here", "There is no such page or form.",
                            session=session)

    async def store_failed(self, request: Request, exc: Exception) -> Response:
        """The app's answer when Redis fails under a route (`web.failures.store_failed`):
        under `/console`, a page a browser shows (503, `Retry-After`, the console's
        headers; no navigation, since a session cannot be checked without Redis) instead
        of the API's JSON error."""
        answer = await store_failed(request, exc)
        if not request.url.path.startswith("/console"):
            return answer
        # A POST's change may have been made with only Redis's reply lost (its audit
        # entry with it: they are one script), so the page does not say nothing changed.
        after = ("Nothing was changed." if request.method in ("GET", "HEAD")
                 or request.url.path == "/console/login" else
                 "What you confirmed may or may not have been done: once the console is "
                 "back, open the page again to see before doing it again.")
        page = self.page("refused.html", 503, title="Try again in a moment",
                         message="The console cannot reach its database just now, so it "
                                 f"cannot show or record anything. {after} Try again in a "
                                 "few seconds.", login_url="")
        page.headers["Retry-After"] = answer.headers["Retry-After"]
        return page

    def login_form(self, status: int = 200, error: str = "", name: str = "",
                   next_url: str = "") -> Response:
        token, cookie = self.codec.login_token()
        response = self.page("login.html", status, csrf_token=token, error=error, name=name,
                             next_url=next_url if safe_next(next_url) else "")
        response.set_cookie(LOGIN_CSRF_COOKIE, cookie, max_age=LOGIN_FORM_S, path="/",
                            secure=True, httponly=True, samesite="strict")
        return response


def safe_next(url: str) -> bool:
    """Whether `url` may be where a sign-in goes on to: a console page of this site (a
    path under `/console/`, nothing that a browser could read as another host)."""
    return (url.startswith("/console/") and "\\" not in url and "//" not in url
            and all(" " < ch < "\x7f" for ch in url) and len(url) <= 2000)


async def read_form(request: Request) -> dict[str, str] | None:
    """A url-encoded form's fields (the first value of each), or None when the body is
    too large or not url-encoded."""
    if request.headers.get("content-type", "").split(";")[0].strip() != \
            "application/x-www-form-urlencoded":
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return None
    return {key: values[0] for key, values in fields.items()}


def console_routes(console: Console) -> APIRouter:
    """The router of `console`'s pages, under `/console`; not in the OpenAPI document."""
    router = APIRouter(prefix="/console", include_in_schema=False)

    @router.get("/login")
    async def login_page(request: Request, next: str = "") -> Response:  # noqa: A002
        if await console.session(request) is not None:
            return RedirectResponse(next if safe_next(next) else "/console/",
                                    status_code=303, headers=SECURITY_HEADERS)
        return console.login_form(next_url=next)

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = await read_form(request)
        if form is None:
            return console.refused(400, "Not a form", "The sign-in form was not sent.")
        now = console.clock()
        if not console.codec.login_token_ok(request.cookies.get(LOGIN_CSRF_COOKIE),
                                            form.get(CSRF_FIELD), now):
            return console.refused(403, "Form expired",
                                   "This form is too old or was not sent from the console.")
        name, password = form.get("name", "").strip(), form.get("password", "")
        next_url = form.get("next", "")
        operators = await run_in_threadpool(console.current_operators)
        # The audit names the operator tried only when there is one of that name: what
        # else was typed there may be a password in the wrong field.
        tried = name if name in operators else "(unknown name)"
        address = request.client.host if request.client else "unknown"
        # Counted before the check, so sign-ins sent at once cannot all pass the count.
        refusal = await run_in_threadpool(console.throttle.attempt, name, address)
        if refusal is not None:
            await run_in_threadpool(console.audit.record, "", "login-throttled", tried, now)
            log.warning("console sign-in throttled: too many attempts for %s", refusal.what)
            minutes = math.ceil(refusal.retry_after_s / 60)
            answer = console.login_form(
                429, f"Too many failed sign-ins for {refusal.what}: try again in "
                f"{minutes} minute{'s' if minutes != 1 else ''}.", "", next_url)
            answer.headers["Retry-After"] = str(refusal.retry_after_s)
            return answer
        async with console.verify_slots:
            operator = await run_in_threadpool(verify_password, operators, name, password)
        if operator is None:
            await run_in_threadpool(console.audit.record, "", "login-failed", tried, now)
            log.info("console sign-in refused")
            return console.login_form(401, "Wrong name or password.",
                                      name if NAME_RE.fullmatch(name) else "", next_url)
        await run_in_threadpool(console.throttle.succeeded, operator.name)
        await run_in_threadpool(console.audit.record, operator.name, "login", "", now)
        response = RedirectResponse(next_url if safe_next(next_url) else "/console/",
                                    status_code=303, headers=SECURITY_HEADERS)
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/", secure=True, httponly=True,
                               samesite="strict")
        return console.keep(response, console.codec.new_session(
            operator.name, operator.password_hash, now))

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        checked = await console.action(request)
        if isinstance(checked, Response):
            return checked
        session, _ = checked
        await run_in_threadpool(end_session, console.audit.redis, session)
        await run_in_threadpool(console.audit.record, session.operator, "logout", "",
                                console.clock())
        response = RedirectResponse("/console/login", status_code=303,
                                    headers=SECURITY_HEADERS)
        response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True,
                               samesite="strict")
        return response

    @router.get("/static/{name}")
    async def static(request: Request, name: str) -> Response:
        # No session needed: the login page uses them too, and they hold no data.
        if name not in STATIC_TYPES:
            session = await console.session(request)
            return (console.unauthorized(request) if session is None else console.refused(
                404, "Not here", "There is no such page or form.", session=session))
        return Response((STATIC / name).read_bytes(), media_type=STATIC_TYPES[name],
                        headers={**SECURITY_HEADERS, "Cache-Control": "max-age=300"})

    @router.get("/")
    async def home(request: Request) -> Response:
        session = await console.viewer(request, "home")
        if isinstance(session, Response):
            return session
        return console.signed_in(session, "home.html")

    # Imported here: the page modules import `Console` from this one.
    from notifier.console.pages import PAGE_ROUTERS
    for page_routes in PAGE_ROUTERS:
        router.include_router(page_routes(console))
    return router
