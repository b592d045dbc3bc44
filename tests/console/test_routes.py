"""The console's access: sign-in, the session cookie and its flags, 401 without a session,
the idle timeout, CSRF on every POST, the security headers, and the audit of each."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient

from notifier.config import Settings
from notifier.console.audit import AuditLog
from notifier.console.operators import Operator, hash_password, write_operators
from notifier.console.routes import Console, console_routes
from notifier.console.sessions import LOGIN_CSRF_COOKIE, SESSION_COOKIE, SessionCodec
from notifier.errors import ConfigError
from notifier.ledger.store import Store
from notifier.timeutil import utcnow
from notifier.web.app import create_app
from notifier.worker.actors import build_broker
from tests.console.conftest import CONSOLE_SECRET, NAME, PASSWORD, console_env
from tests.ledger_keys import KEYS

FORM = {"content-type": "application/x-www-form-urlencoded"}


def csrf_in(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def sign_in(client: Any, name: str = NAME, password: str = PASSWORD) -> Any:
    """The login form fetched, then sent back with `name` and `password`."""
    form = client.get("/console/login")
    assert form.status_code == 200
    return client.post("/console/login", follow_redirects=False, data={
        "csrf_token": csrf_in(form.text), "name": name, "password": password})


def audited(redis_client: redis.Redis) -> list[tuple[str, str, str]]:
    """(operator, action, subject) of each audit entry, oldest first."""
    return [(e.operator, e.action, e.subject)
            for e in reversed(AuditLog(redis_client, 1, keys=KEYS).recent())]


def test_a_good_sign_in_sets_a_secure_session_cookie_and_the_page_names_the_operator(
        client, redis_client):
    answer = sign_in(client)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/"
    cookie = next(c for c in answer.headers.get_list("set-cookie")
                  if c.startswith(SESSION_COOKIE + "="))
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"secure", "httponly", "samesite=strict", "path=/", "max-age=1800"} <= flags
    page = client.get("/console/")
    assert page.status_code == 200
    assert "Signed in as <strong>ana</strong>" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert page.headers["cache-control"] == "no-store"
    assert "<script" not in page.text and "style=" not in page.text
    assert audited(redis_client) == [(NAME, "login", ""), (NAME, "view", "home")]


def test_a_wrong_password_or_unknown_name_is_refused_and_audited(client, redis_client):
    for name, password in ((NAME, "wrong password!"), ("bob", PASSWORD)):
        answer = sign_in(client, name, password)
        assert answer.status_code == 401
        assert "Wrong name or password." in answer.text
        assert SESSION_COOKIE not in client.cookies
    assert client.get("/console/").status_code == 401
    # A name no operator has is not recorded: it may be a password typed in the wrong field.
    assert audited(redis_client) == [("", "login-failed", NAME),
                                     ("", "login-failed", "(unknown name)")]


def test_without_a_session_every_route_but_the_login_form_is_401_html(client):
    for method, path in (("GET", "/console/"), ("POST", "/console/logout")):
        answer = client.request(method, path, headers=FORM, content=b"csrf_token=x")
        assert answer.status_code == 401, path
        assert answer.headers["content-type"].startswith("text/html")
        assert answer.headers["content-security-policy"].startswith("default-src 'self'")
        assert 'href="/console/login' in answer.text
    login = client.get("/console/login")
    assert login.status_code == 200
    assert login.headers["content-security-policy"].startswith("default-src 'self'")
    assert LOGIN_CSRF_COOKIE in client.cookies


def test_a_page_that_does_not_exist_is_401_without_a_session_and_html_with_one(client):
    for method, path in (("GET", "/console/clients/c-1"), ("GET", "/console/logout")):
        answer = client.request(method, path)
        assert answer.status_code == 401, path
        assert answer.headers["content-security-policy"].startswith("default-src 'self'")
    assert sign_in(client).status_code == 303
    for method, path, status in (("GET", "/console/clients/c-1", 404),
                                 ("GET", "/console/logout", 405)):
        answer = client.request(method, path)
        assert answer.status_code == status, path
        assert answer.headers["content-type"].startswith("text/html")
        assert answer.headers["content-security-policy"].startswith("default-src 'self'")
    # Outside the console, FastAPI's own answer.
    outside = client.get("/nowhere")
    assert outside.status_code == 404
    assert outside.json() == {"detail": "Not Found"}


def test_a_forged_session_cookie_is_401(client):
    client.cookies.set(SESSION_COOKIE, "eyJvcCI6ImFuYSJ9.forged.signature")
    assert client.get("/console/").status_code == 401


def test_a_post_without_the_csrf_token_is_403(client, redis_client):
    form = client.get("/console/login")
    # The login form without its token, and with another form's token.
    no_token = client.post("/console/login", data={"name": NAME, "password": PASSWORD})
    assert no_token.status_code == 403
    client.cookies.delete(LOGIN_CSRF_COOKIE)
    no_cookie = client.post("/console/login", data={
        "csrf_token": csrf_in(form.text), "name": NAME, "password": PASSWORD})
    assert no_cookie.status_code == 403
    assert sign_in(client).status_code == 303
    for data in ({}, {"csrf_token": "not-the-token"}):
        refused = client.post("/console/logout", data=data)
        assert refused.status_code == 403
        assert refused.headers["content-security-policy"].startswith("default-src 'self'")
    assert client.get("/console/").status_code == 200  # still signed in
    assert ("", "login-failed", NAME) not in audited(redis_client)


def test_signing_out_ends_the_session_and_is_audited(client, redis_client):
    assert sign_in(client).status_code == 303
    token = csrf_in(client.get("/console/").text)
    kept = client.cookies[SESSION_COOKIE]
    out = client.post("/console/logout", data={"csrf_token": token}, follow_redirects=False)
    assert out.status_code == 303
    assert out.headers["location"] == "/console/login"
    assert client.get("/console/").status_code == 401
    assert audited(redis_client)[-1] == (NAME, "logout", "")
    # A copy of the cookie kept from before is refused too, and the mark expires.
    client.cookies.set(SESSION_COOKIE, kept)
    assert client.get("/console/").status_code == 401
    [mark] = redis_client.keys("n:console:signed-out:*")
    assert 0 < redis_client.ttl(mark) <= 12 * 3600
    redis_client.delete(mark)  # what refused it: without the mark, the copy would do
    assert client.get("/console/").status_code == 200


def clocked_console(settings: Settings, redis_client: Any, idle_s: int
                    ) -> tuple[FastAPI, list[datetime]]:
    """The console alone, on a clock the test moves (`now[0]`), sessions idle after
    `idle_s` seconds."""
    now = [utcnow()]

    def clock() -> datetime:
        return now[0]

    console = Console(settings, Store(redis_client),
                      SessionCodec(CONSOLE_SECRET, idle_s, clock),
                      AuditLog(redis_client, 1, keys=KEYS),
                      clock=clock)
    app = FastAPI()
    app.include_router(console_routes(console))
    return app, now


def test_a_session_idle_past_the_timeout_is_refused_and_each_answer_restarts_it(
        settings: Settings, redis_client):
    app, now = clocked_console(settings, redis_client, 60)
    with TestClient(app, base_url="https://testserver") as client:
        assert sign_in(client).status_code == 303
        for _ in range(3):  # each answer sends the cookie again, stamped anew
            now[0] += timedelta(seconds=50)
            assert client.get("/console/").status_code == 200
        now[0] += timedelta(seconds=61)
        expired = client.get("/console/")
        assert expired.status_code == 401
        assert "session has ended" in expired.text


def test_a_busy_session_still_ends_twelve_hours_after_its_sign_in(settings, redis_client):
    app, now = clocked_console(settings, redis_client, 1800)
    with TestClient(app, base_url="https://testserver") as client:
        assert sign_in(client).status_code == 303
        for _ in range(24):  # a page every 29 minutes for 11.6 hours
            now[0] += timedelta(minutes=29)
            assert client.get("/console/").status_code == 200
        now[0] += timedelta(minutes=29)
        assert client.get("/console/").status_code == 401


def test_a_bad_operators_file_stops_start_up_with_one_line(
        tmp_path: Path, redis_client: redis.Redis, redis_url: str):
    bad = tmp_path / "operators.toml"
    bad.write_text('[[operator]]\nname = "ana"\npassword_hash = "plain-text"\n')
    settings = Settings.from_env(console_env(bad), dotenv=Path("/nonexistent"))
    broker = build_broker(redis_url)
    try:
        with pytest.raises(ConfigError) as raised:
            create_app(settings, Store(redis_client), broker)
    finally:
        broker.close()
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{bad}: operator 'ana': password_hash:")


def test_without_a_console_secret_the_console_is_not_served(
        operators_file: Path, redis_client: redis.Redis, redis_url: str):
    env = {k: v for k, v in console_env(operators_file).items()
           if k != "NOTIFIER_CONSOLE_SECRET"}
    settings = Settings.from_env(env, dotenv=Path("/nonexistent"))
    broker = build_broker(redis_url)
    try:
        with TestClient(create_app(settings, Store(redis_client), broker),
                        base_url="https://testserver") as client:
            assert client.get("/console/login").status_code == 404
    finally:
        broker.close()


def test_the_console_is_not_in_the_openapi_document(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/console")]


@pytest.mark.parametrize("wanted", ["/console/clients/c1", "/console/today?x=1"])
def test_a_link_opened_without_a_session_comes_back_to_its_page_after_sign_in(
        client, wanted):
    """A console link in a ticket opens without the session cookie (SameSite=Strict): the
    401 page's sign-in link carries the page, and the sign-in goes on to it."""
    refused = client.get(wanted)
    assert refused.status_code == 401
    login_url = re.search(r'href="(/console/login\?next=[^"]+)"', refused.text).group(1)
    form = client.get(login_url.replace("&amp;", "&"))
    assert f'name="next" value="{wanted}"' in form.text
    answer = client.post("/console/login", follow_redirects=False, data={
        "csrf_token": csrf_in(form.text), "name": NAME, "password": PASSWORD,
        "next": wanted})
    assert answer.status_code == 303 and answer.headers["location"] == wanted
    # Signed in already, the sign-in page goes straight on.
    again = client.get(login_url.replace("&amp;", "&"), follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"] == wanted


@pytest.mark.parametrize("elsewhere", ["https://evil.example/", "//evil.example/x",
                                       "/console/\\evil.example", "/j/abc", "/console/\n",
                                       "javascript:alert(1)"])
def test_a_sign_in_never_goes_on_outside_the_console(client, elsewhere):
    form = client.get("/console/login", params={"next": elsewhere})
    assert 'name="next"' not in form.text
    answer = client.post("/console/login", follow_redirects=False, data={
        "csrf_token": csrf_in(form.text), "name": NAME, "password": PASSWORD,
        "next": elsewhere})
    assert answer.status_code == 303 and answer.headers["location"] == "/console/"


def test_an_operator_removed_or_given_a_new_password_has_their_sessions_ended(
        client, operators_file, ana_hash, redis_client):
    assert sign_in(client).status_code == 303
    assert client.get("/console/").status_code == 200
    write_operators(operators_file, {"bob": Operator("bob", ana_hash)})  # ana removed
    assert client.get("/console/").status_code == 401
    write_operators(operators_file, {NAME: Operator(NAME, ana_hash)})  # back, same hash
    assert client.get("/console/").status_code == 200
    write_operators(operators_file, {NAME: Operator(NAME, hash_password("a new password 2"))})
    assert client.get("/console/").status_code == 401
    client.cookies.clear()
    assert sign_in(client, password="a new password 2").status_code == 303
    assert client.get("/console/").status_code == 200


def test_the_stylesheet_and_icon_are_served_without_a_session_and_nothing_else_is(client):
    for name, kind in (("console.css", "text/css"), ("favicon.svg", "image/svg+xml")):
        answer = client.get(f"/console/static/{name}")
        assert answer.status_code == 200, name
        assert answer.headers["content-type"].startswith(kind)
        assert answer.headers["content-security-policy"].startswith("default-src 'self'")
    for name in ("operators.toml", "..%2Fbase.html", "login.html"):
        assert client.get(f"/console/static/{name}").status_code == 401, name
    assert sign_in(client).status_code == 303
    assert client.get("/console/static/login.html").status_code == 404
    page = client.get("/console/").text
    assert '<link rel="icon" href="/console/static/favicon.svg"' in page
