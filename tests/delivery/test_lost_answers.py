"""A send whose provider's answer was lost (`errors.MaybeSent`: a read timeout after the
request was written), with the real Twilio and SendGrid SDKs against the stand-ins: the
retry waits for the provider's first delivery report, and a report that came means the
message went out (recorded `sent`, nothing sent again); no report, and it is sent again.
A failure before the request left is retried as before, without the wait."""

from __future__ import annotations

import base64
import random
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from twilio.request_validator import RequestValidator

from notifier.config import PROJECT_ROOT, Settings
from notifier.delivery.channels import Message, sendgrid_email, twilio_sms
from notifier.delivery.channels.sendgrid_email import SendGridEmail
from notifier.delivery.channels.twilio_sms import TwilioSMS
from notifier.delivery.decide import MAYBE_SENT_AT, REPORTED_AFTER_LOST_ANSWER
from notifier.delivery.deliverer import Deliverer
from notifier.delivery.render import Renderer
from notifier.ledger.notifications import epoch
from notifier.ledger.store import Store
from notifier.web.app import create_app
from notifier.worker.actors import build_broker
from tests.delivery.test_deliverer import CONFIRM_EMAIL, CONFIRM_SMS, NOW, START, book
from tests.fakes import FakeSendGrid, FakeTwilio, Scripted

SID, TOKEN = "AC" + "0" * 32, "test-token"
PUBLIC = "https://notifier.test"
SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
#: The stand-in takes the message and holds its answer past the client's read timeout.
LOST = Scripted(status=201, delay_s=2.0, accepted=True)


def webhook_key() -> str:
    der = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


@pytest.fixture
def store(redis_client) -> Store:
    return Store(redis_client)


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio(account_sid=SID, auth_token=TOKEN) as fake:
        yield fake


@pytest.fixture
def sendgrid() -> Iterator[FakeSendGrid]:
    with FakeSendGrid(api_key="SG.test-key") as fake:
        yield fake


def settings(twilio_url: str, sendgrid_url: str = "http://127.0.0.1:9", **env: str) -> Settings:
    return Settings.from_env({
        "NOTIFIER_SMS_BACKEND": "twilio", "NOTIFIER_EMAIL_BACKEND": "sendgrid",
        "TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": TOKEN, "TWILIO_FROM": "+15005550006",
        "NOTIFIER_TWILIO_BASE_URL": twilio_url, "SENDGRID_API_KEY": "SG.test-key",
        "SENDGRID_API_HOST": sendgrid_url, "NOTIFIER_PUBLIC_URL": PUBLIC,
        "NOTIFIER_WEBHOOK_SECRET": SECRET,
        **env}, dotenv=Path("/nonexistent"))


def deliverer(store: Store, policy, s: Settings) -> Deliverer:
    email = SendGridEmail(s)
    email.client.client.timeout = 0.3  # the stand-in's held answer outlasts it
    return Deliverer(store=store, renderer=Renderer(PROJECT_ROOT / "templates"), settings=s,
                     channels={"sms": TwilioSMS(s, timeout_s=0.3), "email": email},
                     policy=policy, rng=random.Random(7))


def due_after(store: Store, notification_id: str) -> float:
    """Seconds from NOW to the notification's due time."""
    return float(store.notification(notification_id)["due"]) - epoch(NOW)


def test_a_lost_answer_then_a_status_callback_is_sent_once(store, policy, twilio):
    book(store, policy)
    d = deliverer(store, policy, settings(twilio.url))
    twilio.script(LOST)
    assert d.deliver(CONFIRM_SMS, NOW) == "retrying"
    held = store.notification(CONFIRM_SMS)
    assert held["state"] == "scheduled" and held[MAYBE_SENT_AT]
    assert due_after(store, CONFIRM_SMS) >= twilio_sms.REPORT_WAIT_S
    # Twilio's status callback for the message it took (`/twilio/status?n=...`).
    store.record_delivery(CONFIRM_SMS, "sent", "", NOW + timedelta(seconds=3))
    later = NOW + timedelta(seconds=due_after(store, CONFIRM_SMS))
    assert d.deliver(CONFIRM_SMS, later) == "sent"
    assert len(twilio.sent_messages()) == 1
    done = store.notification(CONFIRM_SMS)
    assert done["state"] == "sent" and done["reason"] == REPORTED_AFTER_LOST_ANSWER
    assert float(done["sent_at"]) == pytest.approx(float(held[MAYBE_SENT_AT]))
    assert "sent_again" not in done
    assert store.schedule.outcomes().get(("sent", "sms")) == 1


def test_a_status_callback_posted_to_the_web_while_the_answer_was_lost_is_found(
        store, policy, twilio, redis_url):
    """The callback Twilio posts, at the URL our request gave it, while the worker still
    waits for the answer: kept on the hash, found by the next attempt."""
    book(store, policy)
    s = settings(twilio.url)
    twilio.script(LOST)
    assert deliverer(store, policy, s).deliver(CONFIRM_SMS, NOW) == "retrying"
    [taken] = twilio.sent_messages()
    url, form = taken["StatusCallback"], {"MessageSid": "SM1", "MessageStatus": "queued"}
    signature = RequestValidator(TOKEN).compute_signature(url, form)
    with TestClient(create_app(s, store, build_broker(redis_url))) as http:
        answer = http.post(url.removeprefix(PUBLIC), data=form,
                           headers={"X-Twilio-Signature": signature})
    assert answer.status_code == 204
    later = NOW + timedelta(seconds=due_after(store, CONFIRM_SMS))
    assert deliverer(store, policy, s).deliver(CONFIRM_SMS, later) == "sent"
    assert len(twilio.sent_messages()) == 1


def test_a_lost_answer_and_no_report_is_sent_again_after_the_wait(store, policy, twilio):
    book(store, policy)
    d = deliverer(store, policy, settings(twilio.url))
    twilio.script(LOST)
    assert d.deliver(CONFIRM_SMS, NOW) == "retrying"
    later = NOW + timedelta(seconds=due_after(store, CONFIRM_SMS))
    assert d.deliver(CONFIRM_SMS, later) == "sent"
    assert len(twilio.sent_messages()) == 2  # a missed reminder is the worse failure
    assert store.notification(CONFIRM_SMS)["attempts"] == "2"


def test_a_connection_refused_is_retried_at_once_as_before(store, policy):
    with FakeTwilio() as gone:
        closed = gone.url
    book(store, policy)
    assert deliverer(store, policy, settings(closed)).deliver(CONFIRM_SMS, NOW) == "retrying"
    held = store.notification(CONFIRM_SMS)
    assert MAYBE_SENT_AT not in held
    assert due_after(store, CONFIRM_SMS) <= 5.0  # the backoff's first step, 2.5-5 s


def test_a_lost_answer_too_close_to_the_expiry_to_wait_fails_as_before(store, policy,
                                                                      twilio):
    """Waiting for a report would pass the expiry: no retry, `failed`, as any retry would."""
    book(store, policy)
    d = deliverer(store, policy, settings(twilio.url))
    twilio.script(LOST)
    near = START - timedelta(seconds=twilio_sms.REPORT_WAIT_S / 2)
    assert d.deliver(CONFIRM_SMS, near) == "failed"
    assert "no time left to retry" in store.notification(CONFIRM_SMS)["reason"]
    assert len(twilio.sent_messages()) == 1


def test_a_report_after_a_lost_answer_is_sent_even_past_the_expiry(store, policy, twilio):
    """The report says it went out: `sent`, not `expired`, whenever the next attempt runs."""
    book(store, policy)
    d = deliverer(store, policy, settings(twilio.url))
    twilio.script(LOST)
    assert d.deliver(CONFIRM_SMS, NOW) == "retrying"
    store.record_delivery(CONFIRM_SMS, "delivered", "", NOW + timedelta(seconds=3))
    assert d.deliver(CONFIRM_SMS, START + timedelta(hours=1)) == "sent"


def test_sendgrid_waits_for_its_event_webhook_only_when_it_is_configured(store, policy,
                                                                        twilio, sendgrid):
    book(store, policy)
    sendgrid.script(LOST)
    plain = deliverer(store, policy, settings(twilio.url, sendgrid.url))
    assert plain.deliver(CONFIRM_EMAIL, NOW) == "retrying"
    assert MAYBE_SENT_AT not in store.notification(CONFIRM_EMAIL)
    assert due_after(store, CONFIRM_EMAIL) <= 5.0  # no event can tell: retried as before
    sendgrid.script(LOST)
    hooked = deliverer(store, policy, settings(twilio.url, sendgrid.url,
                                               SENDGRID_WEBHOOK_PUBLIC_KEY=webhook_key()))
    later = NOW + timedelta(seconds=due_after(store, CONFIRM_EMAIL))
    assert hooked.deliver(CONFIRM_EMAIL, later) == "retrying"
    assert store.notification(CONFIRM_EMAIL)[MAYBE_SENT_AT]
    assert due_after(store, CONFIRM_EMAIL) >= sendgrid_email.REPORT_WAIT_S
    # SendGrid's `processed` event, our id in its custom_args.
    store.record_delivery(CONFIRM_EMAIL, "processed", "", later)
    last = NOW + timedelta(seconds=due_after(store, CONFIRM_EMAIL))
    assert hooked.deliver(CONFIRM_EMAIL, last) == "sent"
    assert len(sendgrid.sent_mails()) == 2  # the first lost answer was retried, as before


def test_a_crash_after_the_provider_took_it_and_reported_is_not_sent_again(store, policy,
                                                                           twilio):
    """The process died between Twilio's answer and recording the send: `sending`, no
    receipt. Its status callback came meanwhile, so the recovery records it `sent`."""
    book(store, policy)
    s = settings(twilio.url)
    begun = store.schedule.begin(CONFIRM_SMS, NOW, lease_s=60)
    assert begun.may_send
    # The worker's send went out, and then it died.
    receipt = TwilioSMS(s).send(Message(
        notification_id=CONFIRM_SMS, kind="appointment_confirmation", channel="sms",
        to="+14155550123", body="Riverbend: confirmed", due_at=NOW,
        expires_at=NOW + timedelta(days=1)), NOW)
    store.record_delivery(CONFIRM_SMS, "sent", "", NOW + timedelta(seconds=2),
                          receipt.provider_id)
    later = NOW + timedelta(seconds=61)  # its lease has run out
    assert deliverer(store, policy, s).deliver(CONFIRM_SMS, later) == "sent"
    assert store.notification(CONFIRM_SMS)["reason"] == "sent before a crash"
    assert len(twilio.sent_messages()) == 1


def test_a_crash_before_the_provider_took_it_is_sent_on_recovery(store, policy, twilio):
    book(store, policy)
    assert store.schedule.begin(CONFIRM_SMS, NOW, lease_s=60).may_send  # then it died
    later = NOW + timedelta(seconds=61)
    assert deliverer(store, policy, settings(twilio.url)).deliver(CONFIRM_SMS, later) == "sent"
    assert len(twilio.sent_messages()) == 1


def test_two_lost_answers_then_a_report_is_sent_at_the_first_attempt_s_time(
        store, policy, twilio):
    """Found by QA: the second lost answer overwrote the first's time."""
    book(store, policy)
    d = deliverer(store, policy, settings(twilio.url))
    twilio.script(LOST)
    assert d.deliver(CONFIRM_SMS, NOW) == "retrying"
    first = float(store.notification(CONFIRM_SMS)[MAYBE_SENT_AT])
    later = NOW + timedelta(seconds=due_after(store, CONFIRM_SMS))
    twilio.script(LOST)
    assert d.deliver(CONFIRM_SMS, later) == "retrying"
    assert float(store.notification(CONFIRM_SMS)[MAYBE_SENT_AT]) == first
    store.record_delivery(CONFIRM_SMS, "delivered", "", later)
    last = NOW + timedelta(seconds=due_after(store, CONFIRM_SMS))
    assert d.deliver(CONFIRM_SMS, last) == "sent"
    assert len(twilio.sent_messages()) == 2
    assert float(store.notification(CONFIRM_SMS)["sent_at"]) == first
