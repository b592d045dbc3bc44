"""The stand-ins' faults: the shares of issue 13, and the same answers for a seed whatever
order the requests arrive in."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from chaos.providers import ACCOUNT_SID, AUTH_TOKEN, FAILURES, StandIns, fate, notification_of
from tests.test_fakes import RebasingHttpClient


def test_fates_come_in_the_shares_of_the_issue() -> None:
    counts = Counter(fate(13, f"n{i}", 0) for i in range(20_000))
    for name, share in FAILURES:
        assert counts[name] / 20_000 == pytest.approx(share, abs=0.006)
    assert counts["ok"] / 20_000 == pytest.approx(0.82, abs=0.01)


def test_a_fate_depends_on_the_seed_the_id_and_the_attempt_only() -> None:
    draws = [fate(7, "n1", a) for a in range(50)]
    assert draws == [fate(7, "n1", a) for a in range(50)]
    assert draws != [fate(8, "n1", a) for a in range(50)]


def send(fakes: StandIns, notification_id: str, timeout_s: float = 2) -> str:
    client = Client(ACCOUNT_SID, AUTH_TOKEN,
                    http_client=RebasingHttpClient(fakes.twilio.url, timeout=timeout_s))
    try:
        client.messages.create(to="+14155550123", from_="+14155550100", body="hi",
                               status_callback=f"https://x.example/twilio/status?n="
                                               f"{notification_id}")
    except TwilioRestException as exc:
        return str(exc.status)
    except requests.exceptions.ReadTimeout:
        return "timeout"
    return "ok"


def test_each_request_is_answered_by_its_fate_and_kept() -> None:
    seed = 13
    # Ids whose first try is each fate, found from the pure function.
    ids = {}
    for i in range(2_000):
        ids.setdefault(fate(seed, f"n{i}", 0), f"n{i}")
    fakes = StandIns(seed)
    try:
        answers = {name: send(fakes, ids[name], timeout_s=0.5) for name in
                   ("ok", "429", "500", "permanent", "timeout")}
    finally:
        fakes.close()
    assert answers == {"ok": "ok", "429": "429", "500": "500", "permanent": "400",
                       "timeout": "timeout"}
    assert [(r.notification_id, r.fate) for r in fakes.requests] == [
        (ids[name], name) for name in ("ok", "429", "500", "permanent", "timeout")]
    # A timed-out answer is a message that went out.
    assert len(fakes.twilio.sent_messages()) == 2
    assert [r.accepted for r in fakes.requests] == [True, False, False, False, True]


def test_the_notification_id_is_read_from_either_provider() -> None:
    from tests.fakes import Recorded

    twilio = Recorded("POST", "/", {}, {}, b"", {"StatusCallback": [
        "https://x.example/twilio/status?n=a%3Ab"]}, None)
    sendgrid = Recorded("POST", "/", {}, {}, b"", {}, {"custom_args": {
        "notification_id": "c:d"}})
    assert [notification_of(r) for r in (twilio, sendgrid)] == ["a:b", "c:d"]
    assert notification_of(Recorded("POST", "/", {}, {}, b"", {}, None)) == ""


def test_the_twilio_stand_in_calls_back_for_each_message_it_took_signed() -> None:
    """As Twilio posts its status callbacks: `sent` for the messages it took (a timed-out
    one too), to the request's StatusCallback, with a signature the web checks; none for a
    refused one."""
    got: list[tuple[str, dict[str, str], bool]] = []
    server: ThreadingHTTPServer

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            form = {k: v[0] for k, v in parse_qs(body).items()}
            url = f"http://127.0.0.1:{server.server_port}{self.path}"
            got.append((self.path, form, RequestValidator(AUTH_TOKEN).validate(
                url, form, self.headers.get("X-Twilio-Signature", ""))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ids = {}
    for i in range(2_000):
        ids.setdefault(fate(13, f"n{i}", 0), f"n{i}")
    fakes = StandIns(13)
    try:
        hook = f"http://127.0.0.1:{server.server_port}/twilio/status"
        for name in ("ok", "429", "permanent", "timeout"):
            client = Client(ACCOUNT_SID, AUTH_TOKEN,
                            http_client=RebasingHttpClient(fakes.twilio.url, timeout=0.5))
            with contextlib.suppress(TwilioRestException, requests.exceptions.ReadTimeout):
                client.messages.create(to="+14155550123", from_="+14155550100", body="hi",
                                       status_callback=f"{hook}?n={ids[name]}")
        deadline = time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
    finally:
        fakes.close()
        server.shutdown()
    assert sorted((path, form["MessageStatus"], valid) for path, form, valid in got) == sorted(
        (f"/twilio/status?n={ids[name]}", "sent", True) for name in ("ok", "timeout"))
