"""Delivery reports never unsay a final one, belong to the message they name, and opt out
the number a message went to; the repair job asks again after a refusal that says nothing
of the message. Real Redis, the real SDKs against `tests.fakes` (found by QA, 2026-11-30)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from notifier.config import Settings
from notifier.ledger.notifications import epoch
from notifier.ledger.reading import shown_state
from notifier.ledger.store import Store
from notifier.policy.plan import Plan, PlannedNotification
from notifier.runtime import Runtime
from notifier.timeutil import utcnow
from notifier.worker.reports import LookupOutcome, run_report_lookups
from tests.ledger_keys import notif_key, put_on_schedule
from tests.web.test_provider_hooks import (  # noqa: F401  (fixtures)
    booked,
    ecdsa_key,
    http,
    settings,
    twilio_post,
)
from tests.worker.test_reports import NOW, SID, SMS, fakes, twilio  # noqa: F401
from tests.worker.test_reports import book as book_and_send
from tests.worker.test_reports import sid as sid_of


@pytest.fixture
def store(redis_client) -> Store:
    return Store(redis_client)


def provider_runtime(redis_url: str, tmp_path: Path, twilio_fake, sendgrid_fake) -> Runtime:
    """The runtime with Twilio and SendGrid pointed at the stand-ins, a 10-minute wait."""
    return Runtime.build(Settings.from_env({
        "NOTIFIER_REDIS_URL": redis_url, "NOTIFIER_VAR_DIR": str(tmp_path / "var"),
        "TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": "test-token",
        "TWILIO_FROM": "+15005550006", "NOTIFIER_TWILIO_BASE_URL": twilio_fake.url,
        "SENDGRID_API_KEY": "SG.test-key", "SENDGRID_API_HOST": sendgrid_fake.url,
        "NOTIFIER_PUBLIC_URL": "https://notifier.test", "NOTIFIER_SMS_RATE_PER_S": "1000",
        "NOTIFIER_LEASE_S": "30", "NOTIFIER_DELIVERY_REPORT_WAIT_S": "600",
    }, dotenv=Path("/nonexistent")), redis_url)


def _sent_sms(store: Store, kind: str = "appointment_join_link") -> str:
    """A client SMS of an SMS-only kind, sent through Twilio now (its SID recorded)."""
    now = utcnow()
    n = PlannedNotification(
        id=f"{kind}:a1:qa:sms", kind=kind, channel="sms", recipient="client",
        recipient_id="c1", entity="appointment:a1", due_at=now,
        expires_at=now + timedelta(hours=1))
    store.write_plan(Plan(outcome="applied", add=(n,)), now)
    begun = store.schedule.begin(n.id, now, lease_s=60)
    assert begun.may_send
    store.schedule.finish(n.id, "sent", lease=begun.lease, report_at=epoch(now) + 3600,
                          sent_at=epoch(now), receipt="SM" + "a" * 32)
    return n.id


@pytest.mark.parametrize("late", ["undelivered", "failed", "bounce", "dropped"])
def test_delivered_is_never_overwritten_by_a_later_report(store, late):
    """README: delivery reports only move forward. A final report of the same rank
    (`notif_delivery.lua` compares with >=) replaces `delivered`."""
    sms = _sent_sms(store)
    store.schedule.record_delivery(sms, "delivered", "", utcnow())
    store.schedule.record_delivery(sms, late, "30005", utcnow())
    fields = store.notification(sms)
    assert (fields.get("delivery"), shown_state(fields)) == ("delivered", "delivered")


def test_a_late_failure_callback_after_delivered_sends_no_fallback_email(http, store, policy):  # noqa: F811
    """Through the real /twilio/status route: an SMS Twilio reported `delivered` (or the
    repair job found delivered), then an out-of-order `undelivered`: the read API shows
    it failed, and the client is sent the same message by email as well."""
    booked(store, policy)
    sms = _sent_sms(store)
    path = f"/twilio/status?n={sms}"
    for status, code in (("delivered", ""), ("undelivered", "30005")):
        form = {"MessageSid": "SM" + "a" * 32, "MessageStatus": status}
        if code:
            form["ErrorCode"] = code
        assert twilio_post(http, path, form).status_code == 204
    sibling = store.notification(sms.removesuffix(":sms") + ":email")
    assert not sibling, f"a fallback email was planned for a delivered SMS: {sibling}"
    assert store.notification(sms).get("delivery") == "delivered"


def test_a_lookup_refused_for_our_credentials_is_asked_again_not_settled_unknown(
        fakes, policy, redis_url, redis_client, tmp_path: Path):  # noqa: F811
    """A 401 (Twilio 20003, the auth token rotated while a worker still has the old one) or
    a 403 says nothing about the message, yet the job reads every refusal but a 429/5xx
    as "Twilio does not know this SID": `unknown`, final for the job, never asked again,
    so an undelivered SMS (or a 21610 opt-out) Twilio knows of is never acted on. The
    README names only 20404 as a reason for `unknown`."""
    from tests.fakes import FakeTwilio
    from tests.worker.test_reports import LATER
    twilio_fake, sendgrid_fake = fakes
    runtime = provider_runtime(redis_url, tmp_path, twilio_fake, sendgrid_fake)
    book_and_send(runtime, policy, "a1")
    store = runtime.store
    sms = SMS.format("a1")
    twilio_fake.set_status(sid_of(store, sms), "undelivered", error_code=21610)
    twilio_fake.script(FakeTwilio.error(20003, 401))
    done = run_report_lookups(store, runtime.channels, LATER)
    assert store.notification(sms).get("delivery") != "unknown", dict(done)
    # the next run, with Twilio answering again, finds the failure and opts the number out
    run_report_lookups(store, runtime.channels, LATER + timedelta(minutes=1))
    assert store.notification(sms).get("delivery") == "undelivered"


def test_a_21610_found_by_the_lookup_opts_out_the_number_it_was_sent_to_not_a_new_one(
        fakes, policy, redis_url, redis_client, tmp_path: Path):  # noqa: F811
    """The look-up comes days after the send (72 h by default). A client who changed
    numbers meanwhile (a common reason for an SMS not to arrive) gets the NEW number
    opted out by a 21610 about the OLD one (`after_reported_failure` opts out the phone
    on the client's record now, not the message's `to`): every later SMS to them is
    `suppressed` as "client replied STOP" although that number never did."""
    from tests.kit import client_upserted, store_and_apply
    from tests.worker.test_reports import LATER, PHONE
    twilio_fake, sendgrid_fake = fakes
    runtime = provider_runtime(redis_url, tmp_path, twilio_fake, sendgrid_fake)
    book_and_send(runtime, policy, "a1")
    store = runtime.store
    sms = SMS.format("a1")
    new_phone = "+14155559876"
    changed = NOW + timedelta(minutes=1)
    store_and_apply(store, policy, client_upserted("c1", "America/New_York", changed,
                                                   phone=new_phone), changed)
    twilio_fake.set_status(sid_of(store, sms), "undelivered", error_code=21610)
    assert run_report_lookups(store, runtime.channels, LATER)[LookupOutcome.FAILED] == 1
    assert not store.sms_opted_out(new_phone), "the new number, which never said STOP"
    assert store.sms_opted_out(PHONE)


def test_a_report_about_another_message_sid_does_not_settle_the_recorded_one(
        http, store, policy):  # noqa: F811
    """Window 3 (Twilio's answer lost to the read timeout after it accepted the message)
    leaves two Twilio messages for one notification, both with `StatusCallback ?n=<id>`.
    /twilio/status never compares `MessageSid` with the recorded `receipt`, so the
    unrecorded copy's report lands on the notification: with real processes
    (/tmp/qa2h/s7.py) the recorded join-link SMS was `delivered`, the duplicate's
    `undelivered` 30007 (carriers filter identical texts) came after it, the SMS shows
    `failed` and the client got the join link by email too (3 messages)."""
    booked(store, policy)
    sms = _sent_sms(store)  # receipt SMaaaa...
    path = f"/twilio/status?n={sms}"
    assert twilio_post(http, path, {"MessageSid": "SM" + "a" * 32,
                                    "MessageStatus": "delivered"}).status_code == 204
    assert twilio_post(http, path, {"MessageSid": "SM" + "b" * 32, "MessageStatus": "undelivered",
                                    "ErrorCode": "30007"}).status_code == 204
    assert not store.notification(sms.removesuffix(":sms") + ":email")
    assert store.notification(sms).get("delivery") == "delivered"


def test_another_copys_failure_before_any_report_of_ours_changes_nothing(
        http, store, policy):  # noqa: F811
    """The second copy's `undelivered` arriving first: our send (its `receipt`) has no
    report yet, and still none after; no fallback."""
    booked(store, policy)
    sms = _sent_sms(store)  # receipt SMaaaa...
    path = f"/twilio/status?n={sms}"
    assert twilio_post(http, path, {"MessageSid": "SM" + "b" * 32, "MessageStatus": "undelivered",
                                    "ErrorCode": "30007"}).status_code == 204
    assert "delivery" not in store.notification(sms)
    assert not store.notification(sms.removesuffix(":sms") + ":email")
    # A report without a SID (not said) is taken as ours, as before.
    assert twilio_post(http, path, {"MessageStatus": "sent"}).status_code == 204
    assert store.notification(sms).get("delivery") == "sent"


def test_a_lost_answer_s_failure_after_its_appointment_was_cancelled_plans_no_email(
        http, store, policy):  # noqa: F811
    """A client SMS whose answer was lost waits, `scheduled` with `maybe_sent_at`, for its
    report; the appointment is cancelled meanwhile (the SMS `cancelled`, not `superseded`:
    it was not sending). Twilio's `undelivered` for the message that did leave plans no
    email about the cancelled appointment (found by QA: it did, due now)."""
    from tests.kit import event_dict, store_and_apply

    booked(store, policy, email=True)
    now = utcnow()
    sms = _sent_sms(store)  # an SMS-only kind about appointment a1 ...
    # ... put back as the lost-answer hold leaves it (the same fields `lost_answer_hold` sets)
    store.redis.hset(notif_key(sms), mapping={"state": "scheduled",
                                                "maybe_sent_at": now.timestamp()})
    store.redis.hdel(notif_key(sms), "receipt", "sent_at")
    put_on_schedule(store.redis, {sms: now.timestamp() + 60})
    store_and_apply(store, policy, event_dict(
        "appointment.cancelled", {"appointment_id": "a1", "cancelled_by": "client"}, now), now)
    fields = store.notification(sms)
    assert fields["state"] == "cancelled"
    form = {"MessageSid": "SM" + "b" * 32, "MessageStatus": "undelivered",
            "ErrorCode": "30005", "To": "+14155550123"}
    assert twilio_post(http, f"/twilio/status?n={sms}", form).status_code == 204
    sibling = store.notification(sms.removesuffix(":sms") + ":email")
    assert not sibling, f"an email planned for a cancelled appointment: {sibling}"
