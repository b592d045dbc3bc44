"""The stand-ins' faults: the shares of issue 13, and the same answers for a seed whatever
order the requests arrive in."""

from __future__ import annotations

from collections import Counter

import pytest
import requests
from twilio.base.exceptions import TwilioRestException
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
