"""Fixtures of the browser tests: the distribution's headless Chromium driven by Playwright,
one browser for the session and a fresh context (cookies, storage) per test; the whole
service (web on a real port, dramatiq worker, clock) on the session's Redis with the console
served; an operator to sign in as; and `check_page`, which saves a page's screenshots and
checks its width and accessibility.

The browser is `/usr/bin/chromium` (Debian's `chromium` package; `make test` installs it
when missing) or `$NOTIFIER_TEST_CHROMIUM`; Playwright's own browser downloads are never
used. Without it every browser test fails (never skips) with the line saying how to
install it.

The console's cookies are `Secure` and `__Host-`: Chromium keeps them on plain HTTP only
in a secure context, which `http://localhost` is, so the tests browse
`http://localhost:PORT` (the service listens on 127.0.0.1, which Chromium's `localhost`
reaches).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from notifier.config import PROJECT_ROOT
from notifier.console.operators import Operator, hash_password, write_operators
from notifier.console.sessions import SESSION_COOKIE, SessionCodec
from notifier.timeutil import utcnow
from tests.service import Service

#: The Chromium the tests drive, from the distribution's packages.
CHROMIUM = os.environ.get("NOTIFIER_TEST_CHROMIUM") or "/usr/bin/chromium"
#: Headless, and quiet: without the background-networking switches Chromium keeps trying
#: Google's services (updates, sync, field trials), which a closed CI network refuses.
#: Playwright gives each launch a fresh, temporary user-data directory of its own.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
#: Where each page's screenshots go (gitignored with the rest of var/).
ARTIFACTS = PROJECT_ROOT / "var" / "test-artifacts" / "console"
#: The widths every page must fit without horizontal scrolling (pixels): a desktop and a
#: small phone.
WIDTHS = (1280, 390)
#: The viewport's height while checking (pixels); screenshots take the full page.
HEIGHT = 800
#: The axe-core impacts that fail a page.
FAILING_IMPACTS = ("serious", "critical")
#: What Chromium logs for an answer of 4xx or 5xx: not a fault when it is the page's own
#: answer (the tests ask for 401 and 403 pages on purpose) or the icon Chromium asks for
#: by itself, a fault for anything the page loads (its stylesheet, an image).
FAILED_LOAD = "Failed to load resource"

OPERATOR = "ana"
PASSWORD = "correct horse battery"
#: NOTIFIER_CONSOLE_SESSION_S of the service under test (the default).
SESSION_S = 1800

#: The errors each watched page's current document logged (CSP refusals, script errors,
#: failed loads), by page: (message, the address it is about).
_page_errors: dict[Page, list[tuple[str, str]]] = {}
_axe = Axe()


def chromium_missing() -> str | None:
    """Why the browser tests cannot run, or None when the Chromium binary is there."""
    if shutil.which(CHROMIUM) is None:
        return (f"no Chromium at {CHROMIUM}: install the distribution's (`apt-get install "
                "chromium chromium-driver`; `make test` does when it can) or name one in "
                "NOTIFIER_TEST_CHROMIUM")
    return None


# Package-scoped, not session-scoped: while Playwright's sync API runs, the main thread's
# asyncio loop counts as running, and the tests after this package call asyncio.run().
@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    missing = chromium_missing()
    if missing:
        pytest.fail(missing, pytrace=False)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                              headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="session")
def operator_hash() -> str:
    return hash_password(PASSWORD)


class ConsoleService(Service):
    """The whole service with the console served, and what a test needs to use it: the
    `base_url` a browser opens (`http://localhost:PORT`), the API token, the console's
    secret."""

    def __init__(self, redis_url: str, tmp_path: Path, operator_hash: str) -> None:
        operators = tmp_path / "console" / "operators.toml"
        write_operators(operators, {OPERATOR: Operator(OPERATOR, operator_hash)})
        self.console_secret = secrets.token_urlsafe(32)
        super().__init__(redis_url, tmp_path, env={
            "NOTIFIER_CONSOLE_SECRET": self.console_secret,
            "NOTIFIER_CONSOLE_OPERATORS_FILE": str(operators),
            "NOTIFIER_CONSOLE_SESSION_S": str(SESSION_S),
        })
        self.base_url = f"http://localhost:{self.port}"
        self.api_token = self.env["NOTIFIER_API_TOKEN"]

    def stale_cookie(self, cookie: str, idle_s: int) -> str:
        """The session of `cookie` (a genuine session cookie's value), signed again as if
        its browser had last been answered `idle_s` seconds ago: what a browser holds
        after leaving the console idle that long."""
        now = utcnow()
        session = SessionCodec(self.console_secret, SESSION_S).load(cookie, now)
        assert session is not None, "not a live session cookie"
        then = now - timedelta(seconds=idle_s)
        return SessionCodec(self.console_secret, SESSION_S, clock=lambda: then).dump(session)


@pytest.fixture
def service(redis_client: Any, redis_url: str, tmp_path: Path,
            operator_hash: str) -> Iterator[ConsoleService]:
    svc = ConsoleService(redis_url, tmp_path, operator_hash)
    try:
        yield svc
    finally:
        svc.close()


@pytest.fixture
def context(browser: Browser, service: ConsoleService) -> Iterator[BrowserContext]:
    ctx = browser.new_context(base_url=service.base_url,
                              viewport={"width": WIDTHS[0], "height": HEIGHT})
    ctx.set_default_timeout(10_000)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    with watched(context.new_page()) as opened:
        yield opened


@contextmanager
def watched(page: Page) -> Iterator[Page]:
    """`page`, the errors its current document logs (console errors, uncaught
    exceptions) kept for `check_page` while inside."""
    errors: list[tuple[str, str]] = []
    _page_errors[page] = errors
    page.on("framenavigated", lambda frame: errors.clear()
            if frame == page.main_frame else None)
    page.on("console", lambda message: errors.append(
        (message.text, message.location.get("url", ""))) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append((str(error), page.url)))
    try:
        yield page
    finally:
        del _page_errors[page]


def sign_in(page: Page, name: str = OPERATOR, password: str = PASSWORD) -> None:
    """Sign in through the login form, as a person would."""
    page.goto("/console/login")
    fill_sign_in(page, name, password)


def fill_sign_in(page: Page, name: str = OPERATOR, password: str = PASSWORD) -> None:
    """Fill in and send the sign-in form the page shows."""
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()


def session_cookie(context: BrowserContext) -> dict[str, Any] | None:
    """The console's session cookie as the browser keeps it, or None."""
    return next((dict(c) for c in context.cookies() if c["name"] == SESSION_COOKIE), None)


def put_session_cookie(context: BrowserContext, value: str) -> None:
    """Give the browser a session cookie of `value`, with the flags the console sets.
    (Named by domain and path: Playwright marks a cookie named by an http URL not Secure,
    which Chromium refuses for a `__Host-` name.)"""
    context.add_cookies([{"name": SESSION_COOKIE, "value": value, "domain": "localhost",
                          "path": "/", "secure": True, "httpOnly": True,
                          "sameSite": "Strict"}])


def check_page(page: Page, name: str) -> None:
    """Check the page open in `page` at each of `WIDTHS`: saves a full-page screenshot
    (`ARTIFACTS/{name}-{width}.png`), then fails on horizontal scrolling, on an axe-core
    violation of serious or critical impact, or on an error the page logged (a CSP
    refusal, a script error, a stylesheet or image that did not load). Every problem is
    listed before failing."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_load_state()
    problems: list[str] = []
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": HEIGHT})
        page.screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"), full_page=True)
        scroll_width, inner_width = page.evaluate(
            "[document.documentElement.scrollWidth, window.innerWidth]")
        if scroll_width > inner_width:
            problems.append(f"{width} px: scrolls sideways (the page is {scroll_width} px "
                            f"wide){widest_elements(page)}")
        problems += [f"{width} px: {line}" for line in axe_violations(page)]
    page.set_viewport_size({"width": WIDTHS[0], "height": HEIGHT})
    problems += [f"logged: {error} ({url})" for error, url in _page_errors.get(page, [])
                 if not (error.startswith(FAILED_LOAD)
                         and (url == page.url or url.endswith("/favicon.ico")))]
    if problems:
        raise AssertionError(f"page {name!r} ({page.url}):\n" + "\n".join(problems))


def axe_violations(page: Page) -> list[str]:
    """axe-core's violations of serious or critical impact on `page`, one readable line
    per rule and element."""
    results = _axe.run(page)
    lines = []
    for violation in results.response["violations"]:
        if violation.get("impact") not in FAILING_IMPACTS:
            continue
        for node in violation["nodes"]:
            summary = " ".join(node.get("failureSummary", "").split())
            lines.append(f"axe {violation['id']} ({violation['impact']}): {violation['help']}"
                         f" at {', '.join(map(str, node['target']))}: {node['html'][:160]}"
                         f" -- {summary}")
    return lines


def widest_elements(page: Page) -> str:
    """The elements sticking out past the viewport's right edge (at most 5), to say what
    makes a page scroll sideways."""
    found = page.evaluate("""() => {
        const out = [];
        for (const el of document.body.querySelectorAll('*')) {
            const box = el.getBoundingClientRect();
            if (box.right > window.innerWidth + 0.5) {
                out.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
                         (el.className && typeof el.className === 'string'
                          ? '.' + el.className.trim().split(/\\s+/).join('.') : '') +
                         ' (right edge at ' + Math.round(box.right) + ' px)');
            }
            if (out.length >= 5) break;
        }
        return out;
    }""")
    return ": " + "; ".join(found) if found else ""
