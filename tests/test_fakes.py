"""The Twilio and SendGrid stand-ins, driven by the real SDKs over HTTP.

Also pins down what each SDK raises, so the channels map it to RetryableError and
PermanentError knowingly:

    Twilio (twilio 9): a 4xx/5xx -> TwilioRestException(.status, .code, .msg, .uri), .code
        being the status when the body is not Twilio's JSON (an RFC 9457 body would give a
        TwilioServiceException instead). No response headers on it: Retry-After is only on
        the HttpClient's last response. Timeout -> requests.exceptions.ReadTimeout, refused
        -> requests.exceptions.ConnectionError, neither wrapped by the SDK.
    SendGrid (python_http_client): HTTPError subclasses by status (TooManyRequestsError,
        InternalServerError, ...; a status without its own class, e.g. 502, is the bare
        HTTPError) with .status_code, .body (bytes) and .headers (case-insensitive).
        Read timeout -> the built-in TimeoutError, not wrapped; refused -> urllib's URLError.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
from python_http_client import exceptions as sg_errors
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import (
    Attachment,
    CustomArg,
    Disposition,
    FileContent,
    FileName,
    FileType,
    Mail,
)
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from tests.fakes import SENDGRID_UNAUTHORIZED, FakeSendGrid, FakeTwilio, Scripted

SID = "AC" + "0" * 32
TO, FROM = "+14155550123", "+14155550100"
CALLBACK = "https://notifier.example.com/webhooks/twilio/status"
INVITE = b"BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nEND:VCALENDAR\r\n"


class RebasingHttpClient(TwilioHttpClient):
    """Sends the SDK's requests to `base_url` instead of Twilio's host, as production does."""

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base = urlsplit(base_url)

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        rebased = urlsplit(url)._replace(scheme=self.base.scheme, netloc=self.base.netloc)
        return super().request(method, urlunsplit(rebased), *args, **kwargs)


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio(SID, "test-token") as fake:
        yield fake


@pytest.fixture
def fake_sendgrid() -> Iterator[FakeSendGrid]:
    with FakeSendGrid("SG.test-key") as fake:
        yield fake


def twilio_client(fake: FakeTwilio, token: str = "test-token", timeout_s: float = 1
                  ) -> tuple[Client, RebasingHttpClient]:
    http = RebasingHttpClient(fake.url, timeout=timeout_s)
    return Client(SID, token, http_client=http), http


def send_sms(client: Client, **extra: Any) -> Any:
    return client.messages.create(to=TO, from_=FROM, body="Reminder: visit tomorrow 10:00",
                                  **extra)


def sendgrid_client(fake: FakeSendGrid, api_key: str = "SG.test-key") -> SendGridAPIClient:
    client = SendGridAPIClient(api_key, host=fake.url)
    client.client.timeout = 1
    return client


def mail() -> Mail:
    return Mail(from_email="clinic@example.com", to_emails="ana@example.com",
                subject="Your appointment", plain_text_content="See you on Tuesday.")


# Twilio


def test_twilio_send_is_recorded_with_basic_auth(fake_twilio: FakeTwilio) -> None:
    client, _ = twilio_client(fake_twilio)

    message = send_sms(client, status_callback=CALLBACK, validity_period=600)

    assert message.sid.startswith("SM") and len(message.sid) == 34
    assert (message.status, message.to, message.from_) == ("queued", TO, FROM)
    assert message.account_sid == SID and message.num_segments == "1"
    assert message.date_created.tzinfo is not None
    [request] = fake_twilio.requests
    assert request.method == "POST"
    assert request.path == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert request.headers["authorization"] == (
        "Basic " + base64.b64encode(f"{SID}:test-token".encode()).decode())
    assert fake_twilio.sent_messages() == [{
        "To": TO, "From": FROM, "Body": "Reminder: visit tomorrow 10:00",
        "StatusCallback": CALLBACK, "ValidityPeriod": "600"}]


def test_twilio_message_is_fetched_by_sid_with_the_status_set_for_it(
        fake_twilio: FakeTwilio) -> None:
    client, _ = twilio_client(fake_twilio)
    sid = send_sms(client).sid

    assert client.messages(sid).fetch().status == "queued"
    fake_twilio.set_status(sid, "undelivered", error_code=30003)
    fetched = client.messages(sid).fetch()

    assert (fetched.sid, fetched.to, fetched.status, fetched.error_code) == (
        sid, TO, "undelivered", 30003)
    assert fake_twilio.requests[-1].method == "GET"
    assert fake_twilio.requests[-1].path == f"/2010-04-01/Accounts/{SID}/Messages/{sid}.json"


def test_twilio_message_never_sent_is_404_with_20404(fake_twilio: FakeTwilio) -> None:
    client, _ = twilio_client(fake_twilio)

    with pytest.raises(TwilioRestException) as caught:
        client.messages("SM" + "0" * 32).fetch()

    assert (caught.value.status, caught.value.code) == (404, 20404)
    with pytest.raises(TwilioRestException) as caught:
        twilio_client(fake_twilio, token="wrong-token")[0].messages("SM" + "0" * 32).fetch()
    assert caught.value.status == 401


def test_twilio_messaging_service_send_is_accepted_without_a_sender(
        fake_twilio: FakeTwilio) -> None:
    client, _ = twilio_client(fake_twilio)

    message = client.messages.create(to=TO, messaging_service_sid="MG" + "1" * 32,
                                     body="á" * 71)  # á is not GSM-7: UCS-2

    assert (message.status, message.from_, message.num_segments) == ("accepted", None, "2")


def test_twilio_429_carries_retry_after_only_on_the_last_response(fake_twilio: FakeTwilio) -> None:
    client, http = twilio_client(fake_twilio)
    fake_twilio.script(FakeTwilio.error(20429, 429, retry_after_s=7))

    with pytest.raises(TwilioRestException) as caught:
        send_sms(client)

    assert (caught.value.status, caught.value.code) == (429, 20429)
    assert "Too Many Requests" in caught.value.msg
    assert not hasattr(caught.value, "headers")
    assert http._test_only_last_response is not None
    assert http._test_only_last_response.headers["retry-after"] == "7"
    assert fake_twilio.sent_messages() == []


def test_twilio_invalid_number_is_21211(fake_twilio: FakeTwilio) -> None:
    client, _ = twilio_client(fake_twilio)
    fake_twilio.script(FakeTwilio.error(21211, message=f"Invalid 'To' Phone Number: {TO}"))

    with pytest.raises(TwilioRestException) as caught:
        send_sms(client)

    assert (caught.value.status, caught.value.code) == (400, 21211)
    assert caught.value.msg == f"Unable to create record: Invalid 'To' Phone Number: {TO}"


@pytest.mark.parametrize(("answer", "code"), [
    (FakeTwilio.error(20500, 500), 20500),
    # A body that is not Twilio's JSON (a gateway's HTML page): the SDK uses the status as code.
    (Scripted(503, b"<html>Service Unavailable</html>", {"Content-Type": "text/html"}), 503),
])
def test_twilio_server_errors(fake_twilio: FakeTwilio, answer: Scripted, code: int) -> None:
    client, _ = twilio_client(fake_twilio)
    fake_twilio.script(answer)

    with pytest.raises(TwilioRestException) as caught:
        send_sms(client)

    assert (caught.value.status, caught.value.code) == (answer.status, code)


def test_twilio_missing_body_is_rejected_by_the_fake(fake_twilio: FakeTwilio) -> None:
    client, _ = twilio_client(fake_twilio)

    with pytest.raises(TwilioRestException) as caught:
        client.messages.create(to=TO, from_=FROM)

    assert (caught.value.status, caught.value.code) == (400, 21602)


def test_twilio_timeout_raises_requests_read_timeout(fake_twilio: FakeTwilio) -> None:
    client, http = twilio_client(fake_twilio, timeout_s=0.5)
    fake_twilio.script(Scripted(201, delay_s=5))

    with pytest.raises(requests.exceptions.ReadTimeout):
        send_sms(client)

    assert http._test_only_last_response is None
    assert len(fake_twilio.requests) == 1


def test_twilio_accepts_then_times_out(fake_twilio: FakeTwilio) -> None:
    client, _ = twilio_client(fake_twilio, timeout_s=0.5)
    fake_twilio.script(Scripted(0, delay_s=5, accepted=True))

    with pytest.raises(requests.exceptions.ReadTimeout):
        send_sms(client)

    # The message went out all the same: the client just never heard.
    assert [m["To"] for m in fake_twilio.sent_messages()] == [TO]


def test_answers_decided_per_request_come_before_chaos_mode(fake_twilio: FakeTwilio) -> None:
    client, _ = twilio_client(fake_twilio)
    fake_twilio.fail_randomly(1.0, random.Random(1), [FakeTwilio.error(20500, 500)])
    seen: list[str] = []

    def decide(request: Any) -> Scripted | None:
        seen.append(request.form["Body"][0])
        return FakeTwilio.error(21211) if len(seen) == 1 else None

    fake_twilio.answer_with(decide)
    with pytest.raises(TwilioRestException) as first:
        send_sms(client)
    with pytest.raises(TwilioRestException) as second:
        send_sms(client)  # decide said nothing: chaos mode answers
    fake_twilio.answer_with(None)
    fake_twilio.fail_randomly(0, random.Random(1), [])
    send_sms(client)

    assert (first.value.code, second.value.code, len(seen)) == (21211, 20500, 2)
    assert len(fake_twilio.sent_messages()) == 1


def test_twilio_wrong_token_is_401(fake_twilio: FakeTwilio) -> None:
    client, _ = twilio_client(fake_twilio, token="wrong-token")
    fake_twilio.script(FakeTwilio.error(20429, 429))

    with pytest.raises(TwilioRestException) as caught:
        send_sms(client)

    assert (caught.value.status, caught.value.code) == (401, 20003)
    assert fake_twilio.sent_messages() == []
    # Authentication comes first: the scripted 429 is still queued for the next request.
    with pytest.raises(TwilioRestException) as caught:
        send_sms(twilio_client(fake_twilio)[0])
    assert caught.value.status == 429


def test_twilio_chaos_mode_is_reproducible_from_the_seed(fake_twilio: FakeTwilio) -> None:
    def failures(seed: int) -> list[int]:
        fake_twilio.fail_randomly(0.5, random.Random(seed), [FakeTwilio.error(20500, 500),
                                                        FakeTwilio.error(20429, 429)])
        client, _ = twilio_client(fake_twilio)
        statuses = []
        for _ in range(12):
            try:
                send_sms(client)
                statuses.append(201)
            except TwilioRestException as error:
                statuses.append(error.status)
        return statuses

    first, second = failures(7), failures(7)

    assert first == second and {201, 500, 429} <= set(first)
    assert len(fake_twilio.sent_messages()) == 2 * first.count(201)
    assert len(fake_twilio.wait_for_requests(24, timeout_s=1)) == 24


def test_twilio_answers_for_a_number_go_to_that_number_first(fake_twilio: FakeTwilio) -> None:
    client, _ = twilio_client(fake_twilio)
    other = "+14155550199"
    fake_twilio.answer_to(TO, FakeTwilio.error(21610), FakeTwilio.error(20429, 429))
    fake_twilio.script(FakeTwilio.error(20500, 500))

    def status(to: str) -> int:
        try:
            client.messages.create(to=to, from_=FROM, body="hi")
            return 201
        except TwilioRestException as error:
            return error.code

    # The scripted 500 goes to whichever request comes first without an answer of its own.
    assert [status(other), status(TO), status(other), status(TO), status(TO)] == [
        20500, 21610, 201, 20429, 201]
    assert [m["To"] for m in fake_twilio.sent_messages()] == [other, TO]


def test_random_delays_still_answer_each_request_its_own(fake_twilio: FakeTwilio) -> None:
    fake_twilio.delay_randomly(0.1, random.Random(3))
    numbers = [f"+1415555{i:04d}" for i in range(8)]

    def send(to: str) -> Any:
        return twilio_client(fake_twilio)[0].messages.create(to=to, from_=FROM, body="hi")

    with ThreadPoolExecutor(8) as pool:
        sent = list(pool.map(send, numbers))

    assert [message.to for message in sent] == numbers
    assert sorted(m["To"] for m in fake_twilio.sent_messages()) == numbers
    with pytest.raises(ValueError):
        fake_twilio.delay_randomly(-1, random.Random(3))


def test_chaos_mode_rejects_a_rate_outside_0_to_1(fake_twilio: FakeTwilio) -> None:
    with pytest.raises(ValueError):
        fake_twilio.fail_randomly(1.5, random.Random(1), [FakeTwilio.error(20500, 500)])
    with pytest.raises(ValueError):
        fake_twilio.fail_randomly(0.5, random.Random(1), [])


# SendGrid


def test_sendgrid_send_with_calendar_attachment_is_recorded_as_json(
        fake_sendgrid: FakeSendGrid) -> None:
    message = mail()
    message.attachment = Attachment(FileContent(base64.b64encode(INVITE).decode()),
                                    FileName("invite.ics"),
                                    FileType("text/calendar; method=REQUEST"),
                                    Disposition("attachment"))
    message.custom_arg = [CustomArg("notification_id", "n-1"), CustomArg("kind", "invite")]

    response = sendgrid_client(fake_sendgrid).send(message)

    assert (response.status_code, response.body) == (202, b"")
    assert response.headers["X-Message-Id"]
    [request] = fake_sendgrid.requests
    assert (request.method, request.path) == ("POST", "/v3/mail/send")
    assert request.headers["authorization"] == "Bearer SG.test-key"
    assert request.headers["content-type"] == "application/json"
    [sent] = fake_sendgrid.sent_mails()
    assert sent == request.json
    assert sent["attachments"] == [{
        "content": base64.b64encode(INVITE).decode(), "filename": "invite.ics",
        "type": "text/calendar; method=REQUEST", "disposition": "attachment"}]
    assert base64.b64decode(sent["attachments"][0]["content"]) == INVITE
    assert sent["custom_args"] == {"notification_id": "n-1", "kind": "invite"}
    assert sent["personalizations"] == [{"to": [{"email": "ana@example.com"}]}]


def test_sendgrid_429_carries_retry_after_on_the_exception(fake_sendgrid: FakeSendGrid) -> None:
    fake_sendgrid.script(FakeSendGrid.error(429, retry_after_s=30))

    with pytest.raises(sg_errors.TooManyRequestsError) as caught:
        sendgrid_client(fake_sendgrid).send(mail())

    assert caught.value.status_code == 429
    assert caught.value.headers["retry-after"] == "30"
    assert json.loads(caught.value.body)["errors"][0]["message"] == "too many requests"
    assert fake_sendgrid.sent_mails() == []


@pytest.mark.parametrize(("status", "error_type"), [
    (400, sg_errors.BadRequestsError),
    (500, sg_errors.InternalServerError),
    (503, sg_errors.ServiceUnavailableError),
    (502, sg_errors.HTTPError),
])
def test_sendgrid_errors_map_to_http_error_subclasses(
        fake_sendgrid: FakeSendGrid, status: int, error_type: type[sg_errors.HTTPError]) -> None:
    fake_sendgrid.script(FakeSendGrid.error(status, "something went wrong", field="content"))

    with pytest.raises(error_type) as caught:
        sendgrid_client(fake_sendgrid).send(mail())

    assert type(caught.value) is error_type  # exactly: 502 has no class of its own
    assert caught.value.status_code == status
    assert caught.value.to_dict == {"errors": [
        {"message": "something went wrong", "field": "content", "help": None}]}


def test_sendgrid_incomplete_mail_is_rejected_by_the_fake(fake_sendgrid: FakeSendGrid) -> None:
    message = mail()
    message.attachment = Attachment(FileContent("not base64!"), FileName("invite.ics"))

    with pytest.raises(sg_errors.BadRequestsError) as caught:
        sendgrid_client(fake_sendgrid).send(message)

    assert [e["field"] for e in caught.value.to_dict["errors"]] == ["attachments.0.content"]


def test_sendgrid_timeout_raises_builtin_timeout_error(fake_sendgrid: FakeSendGrid) -> None:
    fake_sendgrid.script(Scripted(202, delay_s=5))
    client = sendgrid_client(fake_sendgrid)
    client.client.timeout = 0.5

    with pytest.raises(TimeoutError):
        client.send(mail())

    assert len(fake_sendgrid.requests) == 1


def test_sendgrid_accepts_then_times_out(fake_sendgrid: FakeSendGrid) -> None:
    fake_sendgrid.script(Scripted(0, delay_s=5, accepted=True))
    client = sendgrid_client(fake_sendgrid)
    client.client.timeout = 0.5

    with pytest.raises(TimeoutError):
        client.send(mail())

    assert len(fake_sendgrid.sent_mails()) == 1


@pytest.mark.parametrize("api_key", ["SG.wrong-key", ""])
def test_sendgrid_wrong_key_is_401(fake_sendgrid: FakeSendGrid, api_key: str,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SENDGRID_API_KEY", raising=False)  # the SDK's fallback for no key
    with pytest.raises(sg_errors.UnauthorizedError) as caught:
        sendgrid_client(fake_sendgrid, api_key).send(mail())

    assert caught.value.status_code == 401
    assert caught.value.to_dict["errors"][0]["message"] == SENDGRID_UNAUTHORIZED
    assert fake_sendgrid.sent_mails() == []


def test_concurrent_sends_are_all_recorded(fake_sendgrid: FakeSendGrid) -> None:
    with pytest.raises(TimeoutError):
        fake_sendgrid.wait_for_requests(1, timeout_s=0.05)

    with ThreadPoolExecutor(8) as pool:
        sends = [pool.submit(sendgrid_client(fake_sendgrid).send, mail()) for _ in range(16)]
        recorded = fake_sendgrid.wait_for_requests(16)
        ids = {send.result().headers["X-Message-Id"] for send in sends}

    assert len(recorded) == len(fake_sendgrid.sent_mails()) == len(ids) == 16
