"""The console when Redis fails under it (QA of issue 17's session): every route a signed-in
operator can reach answers the 503 page, a 404 or 405 too; and an action whose change Redis
made but whose reply was lost (a real TCP cut in front of a real Redis) is audited once and
not answered "Nothing was changed"."""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any
from urllib.parse import quote

import pytest
import redis
from fastapi.testclient import TestClient

from notifier.config import Settings
from notifier.console.audit import AuditLog
from notifier.delivery.channels.outbox import Outbox
from notifier.ledger.notifications import CANCEL_ONE_LUA
from notifier.ledger.optouts import OPTOUT_SET_LUA
from notifier.ledger.store import Store
from notifier.timeutil import utcnow
from notifier.web.app import create_app
from notifier.worker.actors import build_broker
from tests.console.test_actions import PHONE, fail
from tests.console.test_notifications import CONFIRM_SMS, book
from tests.console.test_routes import csrf_in, sign_in
from tests.ledger_keys import KEYS
from tests.web.test_app import down_app


@pytest.fixture
def signed_in_down(client: Any, settings: Settings) -> Any:
    """The app with Redis down, holding the session cookie of a sign-in on the live app."""
    assert sign_in(client).status_code == 303
    with TestClient(down_app(settings), base_url="https://testserver",
                    raise_server_exceptions=False) as down:
        for name, value in client.cookies.items():
            down.cookies.set(name, value)
        yield down


def assert_503_page(answer: Any) -> None:
    assert answer.status_code == 503, (answer.status_code, answer.text[:200])
    assert answer.headers["content-type"].startswith("text/html")
    assert answer.headers["retry-after"] == "5"
    assert answer.headers["content-security-policy"].startswith("default-src 'self'")
    assert "Try again in a moment" in answer.text
    # Neither the signed-in navigation nor a sign-in link (which would answer 503 too).
    assert "Sign out" not in answer.text and ">Sign in</a>" not in answer.text


@pytest.mark.parametrize("method,path", [
    ("GET", "/console/"), ("GET", "/console/today"), ("GET", "/console/clients?q=ana"),
    ("GET", "/console/clients/c1"), ("GET", "/console/notifications/x/cancel"),
    ("POST", "/console/notifications/x/cancel"), ("POST", "/console/logout"),
    # A 404 and 405: the error handler checks the session in Redis too (QA: was a 500).
    ("GET", "/console/nosuch"), ("GET", "/console/logout"), ("POST", "/console/today"),
    ("PUT", "/console/today"), ("DELETE", "/console/clients"),
])
def test_every_signed_in_route_answers_the_503_page(signed_in_down, method, path):
    assert_503_page(signed_in_down.request(method, path, data={"csrf_token": "x"},
                                           follow_redirects=False))


def test_the_503_page_says_nothing_changed_only_where_nothing_could(signed_in_down):
    page = signed_in_down.get("/console/today")
    form = signed_in_down.post("/console/notifications/x/cancel", data={"csrf_token": "x"})
    assert "Nothing was changed" in page.text
    assert "Nothing was changed" not in form.text and "may or may not" in form.text


class ReplyDropper:
    """A TCP proxy in front of a real Redis that, when armed, forwards the next request
    holding `marker` and then closes the connection before Redis's reply reaches the
    client: the command ran, its answer was lost (a network cut, Redis killed right after
    its append-only write)."""

    def __init__(self, upstream_port: int, marker: bytes) -> None:
        self.marker, self.upstream_port = marker, upstream_port
        self.armed = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.upstream_port))
            cut = threading.Event()
            threading.Thread(target=self.pump, args=(down, up, cut, True), daemon=True).start()
            threading.Thread(target=self.pump, args=(up, down, cut, False),
                             daemon=True).start()

    def pump(self, source: Any, sink: Any, cut: threading.Event, requests: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if not requests and cut.is_set():
                    break  # Redis's reply to the marked request: dropped
                if requests and self.armed.is_set() and self.marker in chunk:
                    self.armed.clear()
                    cut.set()
                sink.sendall(chunk)
        except OSError:
            pass
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.close()


# One command each (an EVALSHA of a cached script), so the cut always falls after Redis
# ran it. (A send-again is a MULTI whose EXEC may be cut off before Redis gets it: then
# nothing was done, which the page's words allow too.)
@pytest.mark.parametrize("action", ["cancel", "sms-enable"])
def test_an_action_whose_reply_is_lost_is_audited_once_and_not_called_undone(
        settings, redis_client, redis_url, policy, tmp_path, action):
    store = Store(redis_client)
    book(store, policy, utcnow())
    fail(store, policy, Outbox(tmp_path / "outbox"))
    store.set_sms_opt_out(PHONE, True)
    redis_client.script_load(CANCEL_ONE_LUA)
    redis_client.script_load(OPTOUT_SET_LUA)
    path, marker, subject = {
        "cancel": (f"/console/notifications/{quote(CONFIRM_SMS, safe='')}/cancel",
                   b"cancel-notification", f"notification:{CONFIRM_SMS}"),
        "sms-enable": ("/console/clients/c1/sms-enable", b"sms-enable", "client:c1")}[action]
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    proxy = ReplyDropper(port, marker)
    proxied = f"redis://127.0.0.1:{proxy.port}/0"
    broker = build_broker(proxied)
    try:
        app = create_app(settings, Store(redis.Redis.from_url(proxied)), broker)
        with TestClient(app, base_url="https://testserver") as ana:
            assert sign_in(ana).status_code == 303
            form = ana.get(path)
            assert form.status_code == 200, form.text
            proxy.armed.set()
            answer = ana.post(path, data={"csrf_token": csrf_in(form.text),
                                          "reason": "asked"}, follow_redirects=False)
    finally:
        broker.close()
        proxy.listener.close()
    assert not proxy.armed.is_set()  # the cut happened
    entries = [(e.operator, e.action.split(":")[0])
               for e in AuditLog(redis_client, 1, keys=KEYS).recent()
               if e.subject == subject and e.action != "view"]
    assert entries == [("ana", marker.decode())], entries  # done, and audited once
    assert answer.status_code == 503
    assert "Nothing was changed" not in answer.text and "may or may not" in answer.text
