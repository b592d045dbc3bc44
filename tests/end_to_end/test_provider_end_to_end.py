"""End to end through the real Twilio and SendGrid SDKs, against local stand-ins: retries,
permanent failures and the other channel, opt-outs by reply, and pacing a burst."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from twilio.request_validator import RequestValidator

from notifier.ledger.store import Store
from tests.fakes import FakeSendGrid, FakeTwilio, Scripted
from tests.kit import (
    appointment,
    client_upserted,
    daytime_zone,
    provider_upserted,
    store_and_apply,
)
from tests.service import Service, wait_for

#: The whole service (web on a port, worker, clock) or its processes.
pytestmark = pytest.mark.e2e

SID = "AC" + "0" * 32
TOKEN = "test-token"
PUBLIC = "https://notifier.test"


@pytest.fixture
def fakes() -> Iterator[tuple[FakeTwilio, FakeSendGrid]]:
    with FakeTwilio(account_sid=SID, auth_token=TOKEN) as twilio, FakeSendGrid() as sendgrid:
        yield twilio, sendgrid


def provider_env(twilio: FakeTwilio, sendgrid: FakeSendGrid, **more: str) -> dict[str, str]:
    return {"TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": TOKEN,
            "TWILIO_FROM": "+15005550006", "NOTIFIER_TWILIO_BASE_URL": twilio.url,
            "SENDGRID_API_KEY": "SG.test-key", "SENDGRID_API_HOST": sendgrid.url,
            "NOTIFIER_PUBLIC_URL": PUBLIC, "NOTIFIER_RETRY_BASE_S": "0.05",
            "NOTIFIER_SMS_RATE_PER_S": "1000",
            # A provider's call may take 20 s, which a send needs left on its lease
            # (`delivery.fencing`): the service's 3 s lease is too short for one.
            "NOTIFIER_LEASE_S": "30", **more}


@pytest.fixture
def service(redis_client, redis_url, tmp_path, fakes) -> Iterator[Service]:
    svc = Service(redis_url, tmp_path, env=provider_env(*fakes, NOTIFIER_MAX_ATTEMPTS="3"))
    yield svc
    svc.close()


def ids_sent(twilio: FakeTwilio) -> list[str]:
    return [parse_qs(urlsplit(m["StatusCallback"]).query)["n"][0]
            for m in twilio.sent_messages()]


def onboard_and_book(service: Service, *, join_url: str | None = None,
                     appt_id: str = "a1", start_in: timedelta = timedelta(days=5)) -> None:
    now = datetime.now(UTC)
    for evt in (client_upserted("c1", daytime_zone(now), now - timedelta(hours=1)),
                provider_upserted("prov-1", now - timedelta(hours=1)),
                appointment("appointment.scheduled", appt_id, "c1", now + start_in, now,
                            join_url=join_url)):
        assert service.post(evt).status_code in (200, 202)


def signed_twilio(service: Service, path: str, form: dict[str, str]):
    signature = RequestValidator(TOKEN).compute_signature(PUBLIC + path, form)
    return service.http.post(path, data=form, headers={"X-Twilio-Signature": signature})


def state(service: Service, notification_id: str) -> dict[str, str]:
    return service.runtime.store.notification(notification_id)


SMS = "appointment_confirmation:a1:booked:sms"
EMAIL = "appointment_confirmation:a1:booked:email"


def test_a_rate_limited_send_is_retried_then_delivered(service, fakes):
    twilio, sendgrid = fakes
    twilio.script(FakeTwilio.error(20429, status=429, retry_after_s=1))
    onboard_and_book(service)
    wait_for(lambda: state(service, SMS).get("state") == "sent", what="the retried SMS")
    assert state(service, SMS)["attempts"] == "2"
    first, second = (r for r in twilio.requests if r.path.endswith("Messages.json"))
    assert second.body == first.body  # the same message, sent again
    wait_for(lambda: len(sendgrid.sent_mails()) == 1, what="the confirmation email")
    # The report names the message Twilio created (the SID recorded as the receipt).
    signed_twilio(service, f"/twilio/status?n={SMS}",
                  {"MessageSid": state(service, SMS)["receipt"], "MessageStatus": "delivered"})
    assert service.notifications("c1")[SMS]["state"] == "delivered"


def test_server_errors_are_retried_until_the_notification_fails(service, fakes):
    twilio, _ = fakes
    twilio.script(*[Scripted(status=500, body=b"oops")] * 3)
    onboard_and_book(service)
    wait_for(lambda: state(service, SMS).get("state") == "failed", what="the failure")
    assert state(service, SMS)["reason"].startswith("gave up after 3 attempts")
    assert twilio.sent_messages() == []
    assert service.notifications("c1")[SMS]["state"] == "failed"


def test_an_invalid_number_fails_and_the_sms_only_message_goes_by_email(service, fakes):
    twilio, sendgrid = fakes
    onboard_and_book(service, join_url="https://video.example.com/r/1",
                     start_in=timedelta(minutes=15, seconds=3))
    wait_for(lambda: len(twilio.sent_messages()) == 1, what="the confirmation SMS")
    twilio.script(FakeTwilio.error(21211))
    join = [k for k in service.notifications("c1") if k.startswith("appointment_join_link")]
    [join_sms] = join
    wait_for(lambda: state(service, join_sms).get("state") == "failed", what="the join link")
    assert state(service, join_sms)["code"] == "21211"
    join_email = join_sms.rsplit(":", 1)[0] + ":email"
    wait_for(lambda: state(service, join_email).get("state") == "sent", what="the email")
    mail = sendgrid.sent_mails()[-1]
    assert mail["custom_args"] == {"notification_id": join_email}
    assert "https://video.example.com/r/1" in mail["content"][0]["value"]


def test_21610_marks_the_number_opted_out_and_email_takes_over(service, fakes):
    twilio, sendgrid = fakes
    twilio.script(FakeTwilio.error(21610))
    onboard_and_book(service)
    wait_for(lambda: state(service, SMS).get("state") == "failed", what="the refused SMS")
    # Recorded just after the failure (its own round trip): waited for, not raced.
    wait_for(lambda: service.runtime.store.sms_opted_out("+14155550123"),
             what="the number opted out")
    wait_for(lambda: len(sendgrid.sent_mails()) == 1, what="the confirmation email")
    # The email twin was planned anyway: no second email is added for the failed SMS.
    wait_for(service.quiet, what="the service to go idle")
    assert len(sendgrid.sent_mails()) == 1


@pytest.mark.parametrize("rate", [None, "1000"], ids=["default-rate", "unpaced"])
def test_bookings_at_once_each_number_gets_its_own_answer(
        redis_client, redis_url, tmp_path, fakes, rate):
    """Three clients booked at once; Twilio rate-limits one number once and refuses another
    as unsubscribed (21610, as often as asked, like Twilio). In whatever order the worker's
    threads send, each number's outcome is its own answer."""
    twilio, sendgrid = fakes
    phones = {"c1": "+14155550101", "c2": "+14155550102", "c3": "+14155550103"}
    limited, opted_out = phones["c1"], phones["c2"]
    twilio.answer_to(limited, FakeTwilio.error(20429, status=429, retry_after_s=1))
    twilio.answer_to(opted_out, *[FakeTwilio.error(21610)] * 10)
    twilio.delay_randomly(0.05, random.Random(5))
    env = provider_env(twilio, sendgrid)
    if rate is None:
        del env["NOTIFIER_SMS_RATE_PER_S"]
    else:
        env["NOTIFIER_SMS_RATE_PER_S"] = rate
    service = Service(redis_url, tmp_path, env=env)
    try:
        now = datetime.now(UTC)
        assert service.post(provider_upserted("prov-1", now - timedelta(hours=1))).is_success
        for client_id, phone in phones.items():
            evt = client_upserted(client_id, daytime_zone(now), now - timedelta(hours=1))
            evt["data"]["client"]["phone"] = phone
            assert service.post(evt).is_success
        bookings = [appointment("appointment.scheduled", f"a-{client_id}", client_id,
                                now + timedelta(days=5), now) for client_id in phones]
        with ThreadPoolExecutor(len(bookings)) as pool:
            assert all(answer.is_success for answer in pool.map(service.post, bookings))

        def sms(client_id: str) -> dict[str, str]:
            return state(service, f"appointment_confirmation:a-{client_id}:booked:sms")

        wait_for(lambda: [sms(c).get("state") for c in phones] == ["sent", "failed", "sent"],
                 timeout_s=30, what="the three confirmation SMS")
        assert (sms("c2")["code"], sms("c2")["attempts"]) == ("21610", "1")  # not retried
        assert sms("c1")["attempts"] == "2" and sms("c3")["attempts"] == "1"
        store = service.runtime.store
        wait_for(lambda: store.sms_opted_out(opted_out), what="the number opted out")
        assert not store.sms_opted_out(limited) and not store.sms_opted_out(phones["c3"])
        wait_for(lambda: all(state(service, f"appointment_confirmation:a-{c}:booked:email")
                             .get("state") == "sent" for c in phones),
                 what="the confirmation emails")

        # A later booking for the opted-out client: its SMS are skipped, email goes instead.
        start = datetime.now(UTC) + timedelta(hours=72, seconds=3)
        assert service.post(appointment("appointment.scheduled", "a-later", "c2", start,
                                        datetime.now(UTC))).is_success
        reminder = f"appointment_reminder:a-later:72h.{start:%Y%m%dT%H%M%SZ}"
        wait_for(lambda: state(service, f"{reminder}:email").get("state") == "sent"
                 and state(service, f"{reminder}:sms").get("state") == "suppressed",
                 what="the later reminder, by email only")
        assert state(service, f"{reminder}:sms")["reason"] == "client replied STOP"
        wait_for(service.quiet, what="the service to go idle")
        to_opted_out = [r for r in twilio.requests
                        if r.path.endswith("Messages.json") and r.form["To"] == [opted_out]]
        assert len(to_opted_out) == 1
        assert sorted(m["To"] for m in twilio.sent_messages()) == [limited, phones["c3"]]
    finally:
        service.close()


def test_stop_by_reply_then_start(service, fakes):
    twilio, sendgrid = fakes
    now = datetime.now(UTC)
    service.post(client_upserted("c1", daytime_zone(now), now))
    stop = signed_twilio(service, "/twilio/inbound",
                         {"From": "+14155550123", "Body": "stop", "MessageSid": "SMin1"})
    assert stop.status_code == 200
    start = now + timedelta(hours=72, seconds=3)
    service.post(appointment("appointment.scheduled", "a1", "c1", start, now))
    reminder = f"appointment_reminder:a1:72h.{start:%Y%m%dT%H%M%SZ}"
    wait_for(lambda: state(service, f"{reminder}:email").get("state") == "sent"
             and state(service, f"{reminder}:sms").get("state") == "suppressed",
             what="the reminder, by email only")
    assert state(service, f"{reminder}:sms")["reason"] == "client replied STOP"
    assert twilio.sent_messages() == []
    assert len(sendgrid.sent_mails()) == 2  # confirmation and reminder, by email only

    signed_twilio(service, "/twilio/inbound",
                  {"From": "+14155550123", "Body": "START", "MessageSid": "SMin2"})
    service.post(appointment("appointment.scheduled", "a2", "c1", now + timedelta(days=9), now))
    wait_for(lambda: "appointment_confirmation:a2:booked:sms" in ids_sent(twilio),
             what="SMS again after START")


def test_a_burst_is_paced_by_the_send_rate_and_nothing_is_lost_or_doubled(
        redis_client, redis_url, tmp_path, fakes, policy):
    twilio, sendgrid = fakes
    bookings, rate = 500, 50
    # Everything is due before the service starts, so the whole burst meets the limiter.
    now = datetime.now(UTC)
    store = Store(redis_client)
    store_and_apply(store, policy, client_upserted("c1", daytime_zone(now), now), now)
    for i in range(bookings):
        store_and_apply(store, policy, appointment(
            "appointment.scheduled", f"a{i}", "c1", now + timedelta(days=9), now), now)
    started = time.monotonic()
    service = Service(redis_url, tmp_path,
                      env=provider_env(twilio, sendgrid, NOTIFIER_SMS_RATE_PER_S=str(rate)))
    try:
        wait_for(lambda: len(twilio.sent_messages()) >= bookings, timeout_s=60,
                 what="every SMS of the burst")
        took_s = time.monotonic() - started
        wait_for(service.quiet, what="the service to go idle")
        counts = Counter(ids_sent(twilio))
        assert len(counts) == bookings and set(counts.values()) == {1}
        # Paced, not rejected: the limiter lets at most `rate` a second through.
        assert took_s >= (bookings - 1) / rate * 0.95
        print(f"{bookings} SMS at {rate}/s took {took_s:.1f} s")
        states = Counter(store.notification(f"appointment_confirmation:a{i}:booked:sms")["state"]
                         for i in range(bookings))
        assert states == {"sent": bookings}
    finally:
        service.close()
