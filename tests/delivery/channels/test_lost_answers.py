"""Which failures of a provider's call may have left the message with the provider
(`errors.MaybeSent`) and which certainly did not (a plain `RetryableError`), with the
official SDKs against local servers: a read timeout or a connection dropped after the
request was written may have; a refused connection never did."""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Iterator

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from urllib3.exceptions import MaxRetryError, NameResolutionError, ProtocolError

from notifier.delivery.channels import sendgrid_email, twilio_sms
from notifier.delivery.channels.sendgrid_email import SendGridEmail
from notifier.delivery.channels.twilio_sms import TwilioSMS, never_left
from notifier.errors import MaybeSent, RetryableError
from tests.delivery.channels.test_provider_channels import NOW, email, settings, sms
from tests.fakes import FakeSendGrid, FakeTwilio, Scripted


def webhook_key() -> str:
    der = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def whole(data: bytes) -> bool:
    """Whether `data` holds a request's head and its whole body (by Content-Length)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return True


@pytest.fixture
def hangs_up() -> Iterator[str]:
    """A server that reads a request and closes the connection without an answer: the
    request reached it, its answer never came."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                data = b""
                while not whole(data):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(5)
    server.close()


def closed_url() -> str:
    with FakeTwilio() as gone:
        return gone.url


# Twilio (requests under the SDK)

def test_a_twilio_read_timeout_may_have_sent_and_waits_for_its_status_callback():
    with FakeTwilio(account_sid="AC" + "0" * 32, auth_token="test-token") as twilio:
        twilio.script(Scripted(status=201, delay_s=2.0, accepted=True))
        channel = TwilioSMS(settings(twilio), timeout_s=0.3)
        with pytest.raises(MaybeSent) as caught:
            channel.send(sms(), NOW)
    assert caught.value.code == "network"
    assert caught.value.report_wait_s == twilio_sms.REPORT_WAIT_S


def test_a_twilio_connection_dropped_after_the_request_may_have_sent(hangs_up):
    channel = TwilioSMS(settings(NOTIFIER_TWILIO_BASE_URL=hangs_up))
    with pytest.raises(MaybeSent):
        channel.send(sms(), NOW)


def test_a_twilio_connection_refused_never_left():
    channel = TwilioSMS(settings(NOTIFIER_TWILIO_BASE_URL=closed_url()))
    with pytest.raises(RetryableError) as caught:
        channel.send(sms(), NOW)
    assert not isinstance(caught.value, MaybeSent) and caught.value.code == "network"


@pytest.fixture
def no_tls() -> Iterator[str]:
    """An https URL whose server takes the TCP connection and closes it before the TLS
    handshake ends (a TLS-terminating proxy down, a middlebox): nothing was sent."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    server.close()


def test_a_twilio_tls_handshake_that_failed_never_left(no_tls):
    """Found by QA: taken as a lost answer, it waited 60 s, and one due within a minute of
    its expiry was `failed` unsent."""
    channel = TwilioSMS(settings(NOTIFIER_TWILIO_BASE_URL=no_tls), timeout_s=2)
    with pytest.raises(RetryableError) as caught:
        channel.send(sms(), NOW)
    assert not isinstance(caught.value, MaybeSent), str(caught.value)
    assert never_left(requests.exceptions.SSLError("handshake failure"))


def test_never_left_knows_requests_connect_failures_from_the_rest():
    """A connect timeout and a connection never opened (refused, DNS) never left; a
    connection aborted (`ProtocolError`) or read timeout may have."""
    dns = NameResolutionError("api.twilio.com", None, socket.gaierror("no such host"))
    assert never_left(requests.ConnectTimeout())
    assert never_left(requests.ConnectionError(MaxRetryError(None, "/", dns)))
    assert not never_left(requests.ConnectionError(ProtocolError("Connection aborted.")))
    assert not never_left(requests.ReadTimeout())
    assert not never_left(requests.ConnectionError(MaxRetryError(None, "/", None)))


# SendGrid (urllib under python_http_client)

def sendgrid_channel(fake_url: str, **env: str) -> SendGridEmail:
    channel = SendGridEmail(settings(SENDGRID_API_HOST=fake_url, **env))
    channel.client.client.timeout = 0.3
    return channel


def test_a_sendgrid_read_timeout_may_have_sent_and_waits_for_the_event_webhook():
    with FakeSendGrid(api_key="SG.test-key") as sendgrid:
        sendgrid.script(Scripted(status=202, delay_s=2.0, accepted=True),
                        Scripted(status=202, delay_s=2.0, accepted=True))
        with pytest.raises(MaybeSent) as caught:
            sendgrid_channel(sendgrid.url,
                             SENDGRID_WEBHOOK_PUBLIC_KEY=webhook_key()).send(email(), NOW)
        assert caught.value.report_wait_s == sendgrid_email.REPORT_WAIT_S
        # No webhook key: no event can tell, so no wait (retried as before).
        with pytest.raises(MaybeSent) as caught:
            sendgrid_channel(sendgrid.url).send(email(), NOW)
        assert caught.value.report_wait_s is None


def test_a_sendgrid_connection_dropped_after_the_request_may_have_sent(hangs_up):
    with pytest.raises(MaybeSent):
        sendgrid_channel(hangs_up).send(email(), NOW)


def test_a_sendgrid_connection_refused_never_left():
    with pytest.raises(RetryableError) as caught:
        sendgrid_channel(closed_url()).send(email(), NOW)
    assert not isinstance(caught.value, MaybeSent) and caught.value.code == "network"
