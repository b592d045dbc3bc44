"""The Twilio and SendGrid stand-ins of `tests/fakes.py`, failing as a provider does, the
same way for a seed whatever order requests arrive in.

Each request's answer is drawn from (seed, notification id, how many requests for that id
came before): 10% 429 (Retry-After 1 s), 5% 500, 2% a timeout, 1% a permanent refusal
(Twilio 21211, SendGrid 400), else success. The timeout is the worst realistic one: the
provider takes the message, and its answer is held past the SDK's read timeout
(`notifier.config.PROVIDER_TIMEOUT_S`). Every request is kept with its time, its id and
what it was answered.

As real Twilio does when a request gives `StatusCallback`, the Twilio stand-in posts a
signed `sent` status callback for each message it took (a timed-out one too), a second
later: the worker waits for that report before sending again a message whose answer it
lost, and finds it (`delivery.decide.reported_after_lost_answer`). The SendGrid stand-in
posts no events (no `SENDGRID_WEBHOOK_PUBLIC_KEY` here), so a lost SendGrid answer is sent
again after the usual backoff: duplicate window 3.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Literal
from urllib.parse import parse_qs, urlsplit

import requests
from twilio.request_validator import RequestValidator

from notifier.config import PROVIDER_TIMEOUT_S
from tests.fakes import FakeSendGrid, FakeTwilio, Recorded, Scripted

Fate = Literal["ok", "429", "500", "timeout", "permanent"]
#: Each failure and its share of requests (issue 13).
FAILURES: tuple[tuple[Fate, float], ...] = (("429", 0.10), ("500", 0.05), ("timeout", 0.02),
                                            ("permanent", 0.01))
#: How long a timed-out answer is held: past the SDK's read timeout.
HOLD_S = PROVIDER_TIMEOUT_S + 1.0
#: Seconds after taking a message that the Twilio stand-in posts its `sent` callback.
CALLBACK_AFTER_S = 1.0
ACCOUNT_SID, AUTH_TOKEN, API_KEY = "AC" + "c" * 32, "chaos-token", "SG.chaos-key"
TWILIO_FROM = "+14155550199"


def fate(seed: int, notification_id: str, attempt: int,
         failures: tuple[tuple[Fate, float], ...] = FAILURES) -> Fate:
    """The answer to the `attempt`-th request (0 first) for `notification_id` (pure)."""
    x = random.Random(f"{seed}:{notification_id}:{attempt}").random()
    for name, share in failures:
        if x < share:
            return name
        x -= share
    return "ok"


@dataclass(frozen=True)
class Request:
    """One request a stand-in received: epoch seconds, the notification, its answer."""

    at: float
    notification_id: str
    fate: Fate

    @property
    def accepted(self) -> bool:
        """Whether the provider took the message (it went out)."""
        return self.fate in ("ok", "timeout")


def notification_of(request: Recorded) -> str:
    """The notification id a request carries: Twilio's status callback `?n=`, SendGrid's
    `custom_args`; "" for neither."""
    callback = request.form.get("StatusCallback", [""])[0]
    if callback:
        return parse_qs(urlsplit(callback).query).get("n", [""])[0]
    if isinstance(request.json, dict):
        return str((request.json.get("custom_args") or {}).get("notification_id", ""))
    return ""


class StandIns:
    """Both stand-ins, answering by `fate(seed, ...)`; `failures` () makes them succeed."""

    def __init__(self, seed: int,
                 failures: tuple[tuple[Fate, float], ...] = FAILURES) -> None:
        self.seed, self.failures = seed, failures
        self.requests: list[Request] = []
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.twilio = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
        self.sendgrid = FakeSendGrid(API_KEY)
        self.twilio.answer_with(partial(self._decide, True))
        self.sendgrid.answer_with(partial(self._decide, False))

    def env(self) -> dict[str, str]:
        """The settings that send SMS and email through the stand-ins."""
        return {"NOTIFIER_SMS_BACKEND": "twilio", "NOTIFIER_EMAIL_BACKEND": "sendgrid",
                "TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                "TWILIO_FROM": TWILIO_FROM, "NOTIFIER_TWILIO_BASE_URL": self.twilio.url,
                "SENDGRID_API_KEY": API_KEY, "SENDGRID_API_HOST": self.sendgrid.url}

    def _decide(self, sms: bool, request: Recorded) -> Scripted | None:
        notification_id = notification_of(request)
        with self._lock:
            attempt = self._counts.get(notification_id, 0)
            self._counts[notification_id] = attempt + 1
            answer = fate(self.seed, notification_id, attempt, self.failures)
            self.requests.append(Request(time.time(), notification_id, answer))
        if sms and answer in ("ok", "timeout"):
            self._call_back(request)
        if answer == "429":
            return (FakeTwilio.error(20429, 429, retry_after_s=1) if sms
                    else FakeSendGrid.error(429, retry_after_s=1))
        if answer == "500":
            return FakeTwilio.error(20500, 500) if sms else FakeSendGrid.error(500)
        if answer == "timeout":
            return Scripted(0, delay_s=HOLD_S, accepted=True)
        if answer == "permanent":
            return FakeTwilio.error(21211) if sms else FakeSendGrid.error(400, "Bad Request")
        return None

    def _call_back(self, request: Recorded) -> None:
        """Post Twilio's `sent` status callback for the message `request` sent, to its
        `StatusCallback` URL, signed as Twilio signs, `CALLBACK_AFTER_S` later (from a timer
        thread; a callback the web does not take is dropped, as Twilio gives up too)."""
        url = request.form.get("StatusCallback", [""])[0]
        if not url:
            return
        form = {"MessageSid": "SM" + "0" * 32, "MessageStatus": "sent"}
        signature = RequestValidator(AUTH_TOKEN).compute_signature(url, form)

        def post() -> None:
            with contextlib.suppress(requests.RequestException):
                requests.post(url, data=form, headers={"X-Twilio-Signature": signature},
                              timeout=10)

        timer = threading.Timer(CALLBACK_AFTER_S, post)
        timer.daemon = True
        timer.start()

    def close(self) -> None:
        self.twilio.close()
        self.sendgrid.close()


@contextmanager
def stand_ins(seed: int, failures: tuple[tuple[Fate, float], ...] = FAILURES
              ) -> Iterator[StandIns]:
    """Both stand-ins, serving from this process until the block ends."""
    fakes = StandIns(seed, failures)
    try:
        yield fakes
    finally:
        fakes.close()
