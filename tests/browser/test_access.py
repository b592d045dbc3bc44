"""The console's access in a real browser: signing in through the form, a wrong password,
a session left idle past its time, signing out, and POSTs the console refuses (no CSRF
token; from another site)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.conftest import (
    OPERATOR,
    SESSION_S,
    ConsoleService,
    check_page,
    fill_sign_in,
    put_session_cookie,
    session_cookie,
    sign_in,
)

pytestmark = pytest.mark.browser


def signed_in_as_operator(page: Page) -> None:
    expect(page.locator("form.signout")).to_contain_text(f"Signed in as {OPERATOR}")


def test_the_login_page_signs_in_to_the_start_page(page: Page, context: BrowserContext,
                                                   service: ConsoleService) -> None:
    answer = page.goto("/console/")
    assert answer is not None and answer.status == 401
    page.get_by_role("link", name="Sign in").click()
    expect(page).to_have_url(f"{service.base_url}/console/login?next=/console/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in to the console")
    check_page(page, "login")

    sign_in(page)
    expect(page).to_have_url(f"{service.base_url}/console/")
    signed_in_as_operator(page)
    expect(page.locator("#q")).to_be_visible()
    expect(page.get_by_role("button", name="Find")).to_be_visible()
    # The browser kept the session cookie as the console sent it (`__Host-`, Secure,
    # HttpOnly, SameSite=Strict), on http://localhost.
    cookie = session_cookie(context)
    assert cookie is not None
    assert (cookie["secure"], cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == \
        (True, True, "Strict", "/")
    check_page(page, "start")


def test_a_wrong_password_shows_why_and_opens_no_session(page: Page, context: BrowserContext,
                                                         service: ConsoleService) -> None:
    sign_in(page, password="not the password")
    expect(page.get_by_role("alert")).to_have_text("Wrong name or password.")
    expect(page).to_have_url(f"{service.base_url}/console/login")
    # The name stays in the form, the password does not.
    expect(page.get_by_label("Name")).to_have_value(OPERATOR)
    expect(page.get_by_label("Password")).to_have_value("")
    assert session_cookie(context) is None
    check_page(page, "login-refused")
    answer = page.goto("/console/")
    assert answer is not None and answer.status == 401

    sign_in(page)  # the right one still works after a wrong one
    signed_in_as_operator(page)


def test_a_session_left_idle_past_its_time_is_sent_to_sign_in(
        page: Page, context: BrowserContext, service: ConsoleService) -> None:
    sign_in(page)
    cookie = session_cookie(context)
    assert cookie is not None

    def browse_with(value: str) -> int:
        put_session_cookie(context, value)
        answer = page.goto("/console/")
        assert answer is not None
        return answer.status

    # The same session, last answered just within the timeout: still signed in (the
    # re-signing alone changes nothing).
    assert browse_with(service.stale_cookie(cookie["value"], SESSION_S - 30)) == 200
    signed_in_as_operator(page)
    # Last answered just past the timeout: over. (Asked for Today, which signing in again
    # goes on to.)
    put_session_cookie(context, service.stale_cookie(cookie["value"], SESSION_S + 5))
    answer = page.goto("/console/today")
    assert answer is not None and answer.status == 401
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in first")
    expect(page.get_by_text("Your session has ended")).to_be_visible()
    expect(page.locator("form.signout")).to_have_count(0)
    check_page(page, "session-ended")
    page.get_by_role("link", name="Sign in").click()
    expect(page).to_have_url(f"{service.base_url}/console/login?next=/console/today")
    fill_sign_in(page)
    expect(page).to_have_url(f"{service.base_url}/console/today")
    signed_in_as_operator(page)


def test_signing_out_ends_the_session_and_a_kept_copy_of_its_cookie(
        page: Page, context: BrowserContext, service: ConsoleService) -> None:
    sign_in(page)
    kept = session_cookie(context)
    assert kept is not None
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{service.base_url}/console/login")
    assert session_cookie(context) is None
    answer = page.goto("/console/")
    assert answer is not None and answer.status == 401

    put_session_cookie(context, kept["value"])
    answer = page.goto("/console/")
    assert answer is not None and answer.status == 401


def test_a_post_without_the_csrf_token_is_refused_and_the_session_lives_on(
        page: Page, service: ConsoleService) -> None:
    sign_in(page)
    # Sent with the session's cookie (a 403, not the 401 of no session), without a token.
    refused = page.request.post("/console/logout", form={}, max_redirects=0)
    assert refused.status == 403
    assert "This form was not sent from the console." in refused.text()
    wrong = page.request.post("/console/logout", form={"csrf_token": "guessed"},
                              max_redirects=0)
    assert wrong.status == 403
    answer = page.goto("/console/")
    assert answer is not None and answer.status == 200
    signed_in_as_operator(page)


def test_a_post_from_another_site_is_refused_and_the_session_lives_on(
        page: Page, context: BrowserContext, service: ConsoleService) -> None:
    sign_in(page)
    # Even a page elsewhere that somehow holds the session's CSRF token cannot act: the
    # SameSite=Strict cookie is not sent with its form, so the console sees no session.
    token = page.locator("form.signout input[name=csrf_token]").get_attribute("value")
    assert token
    attacker = "http://attacker.example/"
    context.route(attacker, lambda route: route.fulfill(content_type="text/html", body=(
        "<!doctype html><html lang=en><title>Win a prize</title>"
        f"<form method=post action='{service.base_url}/console/logout'>"
        f"<input type=hidden name=csrf_token value='{token}'>"
        "<button>Claim</button></form></html>")))
    page.goto(attacker)
    page.get_by_role("button", name="Claim").click()
    page.wait_for_url(re.compile(r"/console/logout$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in first")

    answer = page.goto("/console/")
    assert answer is not None and answer.status == 200
    signed_in_as_operator(page)
