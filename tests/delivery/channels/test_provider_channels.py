"""The Twilio and SendGrid channels with the official SDKs, against local stand-ins that
speak their wire protocols: what we send, and how each answer is classified."""

from __future__ import annotations

import base64
import contextlib
import random
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from icalendar import Calendar

from notifier.config import Settings
from notifier.delivery.channels import Attachment, LookedUp, Message, ReportLookup
from notifier.delivery.channels.calendar import Invite, build_invite
from notifier.delivery.channels.outbox import Outbox
from notifier.delivery.channels.sendgrid_email import SendGridEmail
from notifier.delivery.channels.twilio_sms import MAX_VALIDITY_S, RoutingHttpClient, TwilioSMS
from notifier.errors import PermanentError, RetryableError
from tests.fakes import FakeSendGrid, FakeTwilio, Scripted

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
SID = "AC" + "0" * 32


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio(account_sid=SID, auth_token="test-token") as fake:
        yield fake


@pytest.fixture
def sendgrid() -> Iterator[FakeSendGrid]:
    with FakeSendGrid(api_key="SG.test-key") as fake:
        yield fake


def settings(twilio: FakeTwilio | None = None, sendgrid: FakeSendGrid | None = None,
             **env: str) -> Settings:
    base = {"TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": "test-token",
            "TWILIO_FROM": "+15005550006", "SENDGRID_API_KEY": "SG.test-key",
            "NOTIFIER_PUBLIC_URL": "https://notifier.example.org",
            "NOTIFIER_FROM_EMAIL": "reminders@practice.example"}
    if twilio:
        base["NOTIFIER_TWILIO_BASE_URL"] = twilio.url
    if sendgrid:
        base["SENDGRID_API_HOST"] = sendgrid.url
    return Settings.from_env({**base, **env}, dotenv=Path("/nonexistent"))


def sms(kind: str = "appointment_reminder", expires_in: timedelta = timedelta(hours=24)
        ) -> Message:
    return Message(notification_id=f"{kind}:a1:72h.x:sms", kind=kind, channel="sms",
                   to="+14155550123", body="Riverbend: reminder", due_at=NOW,
                   expires_at=NOW + expires_in)


def email() -> Message:
    invite = build_invite(Invite(
        appointment_id="a1", start=NOW + timedelta(days=3), end=NOW + timedelta(days=3, hours=1),
        sequence=0, method="REQUEST", organizer_email="reminders@practice.example",
        organizer_name="Riverbend", attendee_email="ana@example.com", attendee_name="Ana",
        summary="Appointment with Riverbend", description="Questions: +1 555 0100"), NOW)
    return Message(notification_id="appointment_confirmation:a1:booked:email",
                   kind="appointment_confirmation", channel="email", to="ana@example.com",
                   subject="Your appointment", body="Hi Ana", html="<p>Hi Ana</p>",
                   attachments=(Attachment("invite.ics", "text/calendar; method=REQUEST",
                                           invite),), due_at=NOW)


# Twilio ------------------------------------------------------------------------------------

def test_twilio_send_carries_callback_and_validity(twilio):
    receipt = TwilioSMS(settings(twilio)).send(sms(), NOW)
    [sent] = twilio.sent_messages()
    assert receipt.provider_id.startswith("SM") and receipt.sent_at == NOW
    assert (sent["To"], sent["From"], sent["Body"]) == (
        "+14155550123", "+15005550006", "Riverbend: reminder")
    callback = urlsplit(sent["StatusCallback"])
    assert callback.netloc == "notifier.example.org" and callback.path == "/twilio/status"
    assert parse_qs(callback.query)["n"] == ["appointment_reminder:a1:72h.x:sms"]
    assert sent["ValidityPeriod"] == str(MAX_VALIDITY_S)


@pytest.mark.parametrize(("body", "segments"), [
    ("Riverbend: reminder", 1),
    ("x" * 161, 2),
    ("x" * 307, 3),
    # Twilio counts after its Smart Encoding: the apostrophe is GSM-7 by then.
    ("O\u2019Brien " + "x" * 120, 1),
    ("Ana \U0001f33b " + "x" * 120, 2),  # an emoji has no look-alike: UCS-2
])
def test_twilio_sends_smart_encoded_and_its_segment_count_is_kept(twilio, body, segments):
    message = replace(sms(), body=body)
    receipt = TwilioSMS(settings(twilio)).send(message, NOW)
    [sent] = twilio.sent_messages()
    assert sent["SmartEncoded"] == "true"
    assert receipt.segments == segments


def test_validity_is_the_time_left_and_only_for_time_bound_kinds(twilio):
    channel = TwilioSMS(settings(twilio))
    channel.send(sms("appointment_join_link", timedelta(minutes=25)), NOW)
    channel.send(sms("refill_due", timedelta(days=7)), NOW)
    join, refill = twilio.sent_messages()
    assert join["ValidityPeriod"] == "1500"
    assert "ValidityPeriod" not in refill


def test_a_messaging_service_replaces_the_from_number(twilio):
    TwilioSMS(settings(twilio, TWILIO_MESSAGING_SERVICE_SID="MG" + "1" * 32)).send(sms(), NOW)
    [sent] = twilio.sent_messages()
    assert sent["MessagingServiceSid"] == "MG" + "1" * 32 and "From" not in sent


def test_twilio_429_is_retryable_after_its_retry_after(twilio):
    twilio.script(FakeTwilio.error(20429, status=429, retry_after_s=7))
    with pytest.raises(RetryableError) as caught:
        TwilioSMS(settings(twilio)).send(sms(), NOW)
    assert (caught.value.code, caught.value.retry_after_s) == ("20429", 7.0)


def test_twilio_retry_after_as_an_http_date_is_waited_for(twilio):
    twilio.script(FakeTwilio.error(20429, status=429,
                                   retry_after_s="Wed, 25 Nov 2026 15:02:00 GMT"))
    with pytest.raises(RetryableError) as caught:
        TwilioSMS(settings(twilio)).send(sms(), NOW)
    assert (caught.value.code, caught.value.retry_after_s) == ("20429", 120.0)


def test_twilio_5xx_is_retryable(twilio):
    twilio.script(Scripted(status=503, body=b"<html>busy</html>"))
    with pytest.raises(RetryableError) as caught:
        TwilioSMS(settings(twilio)).send(sms(), NOW)
    assert caught.value.code == "503" and caught.value.retry_after_s is None


@pytest.mark.parametrize("code", [21211, 21610, 21614])
def test_twilio_permanent_codes_are_not_retried(twilio, code):
    twilio.script(FakeTwilio.error(code))
    with pytest.raises(PermanentError) as caught:
        TwilioSMS(settings(twilio)).send(sms(), NOW)
    assert caught.value.code == str(code)


def test_a_twilio_timeout_is_retryable(twilio):
    twilio.script(Scripted(status=201, delay_s=2.0))
    channel = TwilioSMS(settings(twilio), timeout_s=0.3)
    with pytest.raises(RetryableError) as caught:
        channel.send(sms(), NOW)
    assert caught.value.code == "network"


def test_a_twilio_send_awaits_its_delivery_report(twilio):
    assert TwilioSMS(settings(twilio)).send(sms(), NOW).awaits_report


# Twilio look-ups: the Message resource fetched by SID (the repair job, `worker.reports`)

def test_a_look_up_fetches_the_message_by_sid_with_its_status_and_code(twilio):
    channel = TwilioSMS(settings(twilio))
    sid = channel.send(sms(), NOW).provider_id
    assert channel.look_up(sid, NOW) == LookedUp(status="queued", code="", to="+14155550123")
    twilio.set_status(sid, "undelivered", error_code=30003)
    assert channel.look_up(sid, NOW) == LookedUp(status="undelivered", code="30003",
                                                 to="+14155550123")
    fetched = twilio.requests[-1]
    assert (fetched.method, fetched.path) == (
        "GET", f"/2010-04-01/Accounts/{SID}/Messages/{sid}.json")


def test_a_look_up_of_a_sid_twilio_does_not_know_is_permanent(twilio):
    with pytest.raises(PermanentError) as caught:
        TwilioSMS(settings(twilio)).look_up("SM" + "f" * 32, NOW)
    assert caught.value.code == "20404"


def test_a_look_up_answered_429_is_retryable_after_its_retry_after(twilio):
    twilio.script(FakeTwilio.error(20429, status=429, retry_after_s=7))
    with pytest.raises(RetryableError) as caught:
        TwilioSMS(settings(twilio)).look_up("SM" + "0" * 32, NOW)
    assert (caught.value.code, caught.value.retry_after_s) == ("20429", 7.0)


def test_a_look_up_answered_5xx_or_timing_out_is_retryable(twilio):
    twilio.script(Scripted(status=500, body=b"oops"), Scripted(status=200, delay_s=2.0))
    channel = TwilioSMS(settings(twilio), timeout_s=0.3)
    with pytest.raises(RetryableError) as caught:
        channel.look_up("SM" + "0" * 32, NOW)
    assert caught.value.code == "500"
    with pytest.raises(RetryableError) as caught:
        channel.look_up("SM" + "0" * 32, NOW)
    assert caught.value.code == "network"


def test_only_twilio_can_be_asked_about_a_message(twilio, sendgrid, tmp_path):
    """SendGrid answers about one message only through a paid add-on: not asked."""
    assert isinstance(TwilioSMS(settings(twilio)), ReportLookup)
    assert not isinstance(SendGridEmail(settings(sendgrid=sendgrid)), ReportLookup)
    assert not isinstance(Outbox(tmp_path), ReportLookup)


def test_concurrent_sends_each_see_their_own_answer(twilio):
    """One channel shared by many threads, as the worker's threads share it: each send is
    classified by the answer to its own request, never by another thread's."""
    threads, per_thread = 8, 30
    answers = {"opted out": FakeTwilio.error(21610),
               "rate limited": FakeTwilio.error(20429, status=429, retry_after_s=1)}
    expected: dict[str, str] = {}
    for i in range(threads * per_thread):
        to = f"+1415555{i:04d}"
        expected[to] = ("opted out", "rate limited", "sent")[i % 3]
        if expected[to] in answers:
            twilio.answer_to(to, answers[expected[to]])
    twilio.delay_randomly(0.02, random.Random(7))  # answers overtake each other
    channel = TwilioSMS(settings(twilio))
    seen: dict[str, str] = {}
    receipts: list[str] = []
    start = threading.Barrier(threads)

    def send_all(numbers: list[str]) -> None:
        start.wait()
        for to in numbers:
            message = replace(sms(), to=to, notification_id=f"appointment_reminder:{to}:sms")
            try:
                receipts.append(channel.send(message, NOW).provider_id)
                seen[to] = "sent"
            except PermanentError as exc:
                seen[to] = "opted out" if exc.code == "21610" else f"permanent {exc.code}"
            except RetryableError as exc:
                seen[to] = ("rate limited" if (exc.code, exc.retry_after_s) == ("20429", 1.0)
                            else f"retryable {exc.code} after {exc.retry_after_s}")
            except Exception as exc:  # anything else is a mix-up as well: record it
                seen[to] = f"{type(exc).__name__}: {exc}"

    numbers = list(expected)
    workers = [threading.Thread(target=send_all, args=(numbers[t::threads],))
               for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    wrong = {to: (expected[to], seen.get(to)) for to in expected if seen.get(to) != expected[to]}
    assert not wrong, f"{len(wrong)} of {len(expected)} sends saw another's answer: {wrong}"
    # Every 201 went to its own send: as many receipts as messages taken, none twice.
    assert len(set(receipts)) == len(receipts) == len(twilio.sent_messages()) == Counter(
        expected.values())["sent"]


def test_each_thread_sends_with_its_own_sdk_client(twilio):
    """The SDK keeps each response on its HTTP client and returns it from there, so threads
    sharing one could read each other's answers. One thread's send leaves another's alone."""
    refused = "+14155550001"
    twilio.answer_to(refused, FakeTwilio.error(21610))
    channel = TwilioSMS(settings(twilio))
    used: dict[str, RoutingHttpClient] = {}

    def send(to: str) -> None:
        with contextlib.suppress(PermanentError):
            channel.send(replace(sms(), to=to), NOW)
        used[to] = channel.http

    for to in (refused, "+14155550002"):
        worker = threading.Thread(target=send, args=(to,))
        worker.start()
        worker.join()
    last = used[refused]._test_only_last_response
    assert last is not None and last.status_code == 400  # its 21610, not the other's 201
    assert used[refused] is not used["+14155550002"]


def test_wrong_twilio_credentials_are_permanent(twilio):
    with pytest.raises(PermanentError) as caught:
        TwilioSMS(settings(twilio, TWILIO_AUTH_TOKEN="wrong")).send(sms(), NOW)
    assert caught.value.code == "20003"


# SendGrid ----------------------------------------------------------------------------------

def test_sendgrid_send_has_both_parts_the_invite_and_the_notification_id(sendgrid):
    receipt = SendGridEmail(settings(sendgrid=sendgrid)).send(email(), NOW)
    [mail] = sendgrid.sent_mails()
    # The receipt is SendGrid's X-Message-Id, not our own id.
    assert receipt.provider_id and receipt.provider_id != email().notification_id
    assert receipt.awaits_report  # SendGrid's event webhook reports delivery
    assert mail["from"] == {"email": "reminders@practice.example", "name": "Riverbend Health"}
    assert mail["personalizations"] == [{"to": [{"email": "ana@example.com"}]}]
    assert [c["type"] for c in mail["content"]] == ["text/plain", "text/html"]
    assert mail["custom_args"] == {"notification_id": "appointment_confirmation:a1:booked:email"}
    [attachment] = mail["attachments"]
    assert attachment["type"] == "text/calendar; method=REQUEST"
    assert attachment["filename"] == "invite.ics"
    cal = Calendar.from_ical(base64.b64decode(attachment["content"]))
    assert str(cal["METHOD"]) == "REQUEST"
    assert sendgrid.requests[0].headers["authorization"] == "Bearer SG.test-key"


def test_sendgrid_429_is_retryable_after_its_retry_after(sendgrid):
    sendgrid.script(FakeSendGrid.error(429, retry_after_s=12))
    with pytest.raises(RetryableError) as caught:
        SendGridEmail(settings(sendgrid=sendgrid)).send(email(), NOW)
    assert (caught.value.code, caught.value.retry_after_s) == ("429", 12.0)


def test_sendgrid_retry_after_as_an_http_date_is_waited_for(sendgrid):
    sendgrid.script(FakeSendGrid.error(503, retry_after_s="Wed, 25 Nov 2026 16:00:00 GMT"))
    with pytest.raises(RetryableError) as caught:
        SendGridEmail(settings(sendgrid=sendgrid)).send(email(), NOW)
    assert (caught.value.code, caught.value.retry_after_s) == ("503", 3600.0)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_sendgrid_5xx_is_retryable(sendgrid, status):
    sendgrid.script(FakeSendGrid.error(status))
    with pytest.raises(RetryableError) as caught:
        SendGridEmail(settings(sendgrid=sendgrid)).send(email(), NOW)
    assert caught.value.code == str(status)


def test_sendgrid_400_is_permanent(sendgrid):
    sendgrid.script(FakeSendGrid.error(400, "Does not contain a valid address.",
                                       field="personalizations.0.to"))
    with pytest.raises(PermanentError) as caught:
        SendGridEmail(settings(sendgrid=sendgrid)).send(email(), NOW)
    assert caught.value.code == "400"


def test_a_sendgrid_timeout_is_retryable(sendgrid):
    sendgrid.script(Scripted(status=202, delay_s=2.0))
    channel = SendGridEmail(settings(sendgrid=sendgrid))
    channel.client.client.timeout = 0.3
    with pytest.raises(RetryableError) as caught:
        channel.send(email(), NOW)
    assert caught.value.code == "network"


def test_sendgrid_unreachable_is_retryable():
    with FakeSendGrid() as gone:
        url = gone.url
    with pytest.raises(RetryableError):
        SendGridEmail(settings(SENDGRID_API_HOST=url)).send(email(), NOW)


@pytest.mark.parametrize(("level", "logged"), [("INFO", False), ("WARNING", False),
                                               ("DEBUG", True)])
def test_the_twilio_sdk_logs_its_requests_only_when_asked_for_debug(twilio, caplog, level,
                                                                    logged):
    """The SDK logs every request at INFO with the account URL and headers; `notifier`
    quiets it unless NOTIFIER_LOG_LEVEL=DEBUG."""
    import logging

    from notifier.cli.common import setup_logging

    sdk = logging.getLogger("twilio")
    before = sdk.level
    caplog.set_level(logging.DEBUG)
    try:
        setup_logging(level)
        TwilioSMS(settings(twilio)).send(sms(), NOW)
    finally:
        sdk.setLevel(before)
    from_sdk = [r for r in caplog.records if r.name.startswith("twilio")]
    assert bool(from_sdk) == logged
    assert all(r.levelno >= logging.WARNING for r in from_sdk) or logged
