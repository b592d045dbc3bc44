"""Delivering one notification: send-time checks, the outbox, retries, failures, recovery.

Real Redis, real templates, the real outbox; the failing channels are small classes of our
own `Channel` interface (the Twilio and SendGrid stand-ins come with the real providers).
"""

from __future__ import annotations

import dataclasses
import random
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from icalendar import Calendar

from notifier.config import MAX_ATTEMPTS, PROJECT_ROOT, Settings
from notifier.delivery.channels import Message, Receipt
from notifier.delivery.channels.outbox import Outbox
from notifier.delivery.compose import Stored
from notifier.delivery.decide import NEVER_TOLD, SENT_AS_CONFIRMATION, expired_because
from notifier.delivery.deliverer import Deliverer
from notifier.delivery.render import Renderer
from notifier.errors import PermanentError, RetryableError
from notifier.ledger.notifications import FINAL_STATES
from notifier.ledger.store import Store
from notifier.policy.common import PLANNED_AFTER_EXPIRY, QUIET_HOURS_PAST_EXPIRY
from notifier.policy.plan import Plan, PlannedNotification
from notifier.web.ops import LedgerCollector
from notifier.worker.digests import run_provider_digest
from tests.kit import (
    appointment,
    client_upserted,
    event_dict,
    prescription_filled,
    provider_upserted,
    refill_requested,
    store_and_apply,
)
from tests.ledger_keys import due_score, notif_key

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # 10:00 in New York
BOOKED = NOW - timedelta(minutes=1)
START = NOW + timedelta(days=10)
CONFIRM_EMAIL = "appointment_confirmation:a1:booked:email"
CONFIRM_SMS = "appointment_confirmation:a1:booked:sms"
DIGEST = "provider_digest:prov-1:20261125T150000Z:email"  # for a fire at NOW


class FailingChannel:
    def __init__(self, error: Exception) -> None:
        self.error, self.calls = error, 0

    def send(self, message: Message, now: datetime) -> Receipt:
        self.calls += 1
        raise self.error

    def already_sent(self, message: Message) -> bool | None:
        return None


@pytest.fixture
def store(redis_client) -> Store:
    return Store(redis_client)


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    return Outbox(tmp_path / "outbox")


def deliverer(store: Store, policy, sms=None, email=None, outbox: Outbox | None = None):
    settings = Settings.from_env({}, dotenv=Path("/nonexistent"))
    return Deliverer(store=store, channels={"sms": sms or outbox, "email": email or outbox},
                     renderer=Renderer(PROJECT_ROOT / "templates"), settings=settings,
                     policy=policy, rng=random.Random(7))


def book(store: Store, policy, zone: str = "America/New_York", **client_kw) -> None:
    store_and_apply(store, policy, client_upserted("c1", zone, BOOKED, **client_kw), BOOKED)
    store_and_apply(store, policy, provider_upserted("prov-1", BOOKED), BOOKED)
    store_and_apply(store, policy, appointment("appointment.scheduled", "a1", "c1", START, BOOKED),
                    BOOKED)


def test_confirmation_goes_out_with_an_invite(store, policy, outbox):
    book(store, policy)
    d = deliverer(store, policy, outbox=outbox)
    assert d.deliver(CONFIRM_EMAIL, NOW) == "sent"
    assert d.deliver(CONFIRM_SMS, NOW) == "sent"
    email, sms = outbox.messages()
    assert email["to"] == "c1@example.com" and email["kind"] == "appointment_confirmation"
    assert "Dr. Rivera" in email["body"]
    assert email["body"].rstrip().endswith(
        "If you are in immediate danger, call 911 or your local emergency number.")
    [ics_name] = email["attachments"]
    cal = Calendar.from_ical((outbox.directory / ics_name).read_bytes())
    [vevent] = cal.walk("VEVENT")
    assert str(cal["METHOD"]) == "REQUEST"
    assert int(vevent["SEQUENCE"]) == 0
    assert vevent.decoded("DTSTART") == START
    assert sms["to"] == "+14155550123" and sms["attachments"] == []
    view = {v.id: v for v in store.notifications_for("client", "c1")}[CONFIRM_SMS]
    # sent at `now` plus the moments the batch took to get to it
    assert view.state == "sent" and NOW <= view.sent_at < NOW + timedelta(seconds=5)


def test_a_second_deliver_never_sends_twice(store, policy, outbox):
    book(store, policy)
    d = deliverer(store, policy, outbox=outbox)
    assert d.deliver(CONFIRM_SMS, NOW) == "sent"
    assert d.deliver(CONFIRM_SMS, NOW + timedelta(seconds=1)) == "sent"
    assert len(outbox.messages()) == 1


def test_expired_is_never_sent_late(store, policy, outbox):
    book(store, policy)
    assert deliverer(store, policy, outbox=outbox).deliver(CONFIRM_SMS, START) == "expired"
    assert outbox.messages() == []
    assert store.notification(CONFIRM_SMS)["state"] == "expired"


EXPIRED_AT_SEND_CASES = {
    "the workers reached it ten days late": (
        "America/New_York", START, None,
        "the workers reached it only after its expiry, 10 days after it was due"),
    "quiet hours at 06:00 in Los Angeles last past its 07:00 start": (
        "America/Los_Angeles", START - timedelta(hours=1), None, QUIET_HOURS_PAST_EXPIRY),
    "planned once its expiry had passed (an event applied late)": (
        "America/New_York", NOW, NOW - timedelta(hours=1), PLANNED_AFTER_EXPIRY),
}


@pytest.mark.parametrize(("zone", "at", "planned_expiring", "reason"),
                         list(EXPIRED_AT_SEND_CASES.values()), ids=list(EXPIRED_AT_SEND_CASES))
def test_expired_at_send_time_says_why(store, policy, outbox, zone, at, planned_expiring,
                                       reason):
    book(store, policy, zone=zone)
    notification_id = CONFIRM_SMS
    if planned_expiring is not None:
        notification_id = "escalation_notice:req-1:refill_request-window:sms"
        store.write_plan(Plan(outcome="applied", add=(PlannedNotification(
            id=notification_id, kind="escalation_notice", channel="sms", recipient="client",
            recipient_id="c1", entity="refill_request:req-1",
            due_at=planned_expiring - timedelta(hours=2), expires_at=planned_expiring),)), at)
    assert deliverer(store, policy, outbox=outbox).deliver(notification_id, at) == "expired"
    n = store.notification(notification_id)
    assert (n["state"], n["reason"]) == ("expired", reason)
    assert outbox.messages() == []


@pytest.mark.parametrize(("late", "words"), [
    (timedelta(seconds=40), "40 s"), (timedelta(minutes=12, seconds=5), "12 min"),
    (timedelta(hours=3), "3 h"), (timedelta(hours=3, minutes=5), "3 h 5 min"),
    (timedelta(days=1), "1 day"), (timedelta(days=2, hours=4, minutes=9), "2 days 4 h"),
])
def test_pure_the_expiry_reason_says_how_late_the_workers_were(late, words):
    n = Stored(id="x", kind="appointment_reminder", channel="sms", recipient="client",
               recipient_id="c1", due_at=NOW, expires_at=NOW + timedelta(seconds=1), params={},
               attempts=0, created_at=NOW - timedelta(days=1))
    assert expired_because(n, NOW + late) == (
        f"the workers reached it only after its expiry, {words} after it was due")
    # Planned at or after its expiry: that is the cause, however late the workers were.
    assert expired_because(dataclasses.replace(n, created_at=n.expires_at), NOW + late) == (
        PLANNED_AFTER_EXPIRY)


def test_quiet_hours_at_send_time_hold_until_morning(store, policy, outbox):
    book(store, policy, zone="America/Los_Angeles")
    late_evening = datetime(2026, 11, 26, 5, 30, tzinfo=UTC)  # 21:30 in Los Angeles
    assert deliverer(store, policy, outbox=outbox).deliver(CONFIRM_SMS, late_evening) == "held"
    morning = datetime(2026, 11, 26, 16, 0, tzinfo=UTC)  # 08:00 in Los Angeles
    assert due_score(store.redis, CONFIRM_SMS) == morning.timestamp()
    assert outbox.messages() == []


def test_a_closed_channel_is_suppressed_with_its_reason(store, policy, outbox):
    book(store, policy, sms=False)
    assert deliverer(store, policy, outbox=outbox).deliver(CONFIRM_SMS, NOW) == "suppressed"
    assert store.notification(CONFIRM_SMS)["reason"] == "client does not accept sms"


def test_an_unknown_client_is_waited_for(store, policy, outbox):
    store_and_apply(store, policy, appointment("appointment.scheduled", "a1", "c1", START, BOOKED),
                    BOOKED)
    d = deliverer(store, policy, outbox=outbox)
    assert d.deliver(CONFIRM_SMS, NOW) == "waiting"
    assert store.notification(CONFIRM_SMS)["reason"] == "waiting for client details"
    store_and_apply(store, policy, client_upserted("c1", "America/New_York", NOW), NOW)
    assert d.deliver(CONFIRM_SMS, NOW + timedelta(seconds=60)) == "sent"


def test_retryable_failures_back_off_then_give_up(store, policy, outbox):
    book(store, policy)
    failing = FailingChannel(RetryableError("busy", code="429", retry_after_s=30))
    d = deliverer(store, policy, sms=failing, outbox=outbox)
    now = NOW
    for attempt in range(1, MAX_ATTEMPTS):
        assert d.deliver(CONFIRM_SMS, now) == "retrying"
        due = due_score(store.redis, CONFIRM_SMS)
        assert due >= (now + timedelta(seconds=30)).timestamp(), attempt
        now = datetime.fromtimestamp(due, UTC)
    assert d.deliver(CONFIRM_SMS, now) == "failed"
    assert failing.calls == MAX_ATTEMPTS
    assert "gave up" in store.notification(CONFIRM_SMS)["reason"]


def test_no_retry_past_expiry(store, policy, outbox):
    book(store, policy)
    failing = FailingChannel(RetryableError("down", code="503", retry_after_s=3600))
    just_before_start = START - timedelta(minutes=5)
    d = deliverer(store, policy, sms=failing, outbox=outbox)
    assert d.deliver(CONFIRM_SMS, just_before_start) == "failed"
    assert "no time left" in store.notification(CONFIRM_SMS)["reason"]


def test_permanent_failure_is_recorded_with_the_code(store, policy, outbox):
    book(store, policy)
    failing = FailingChannel(PermanentError("invalid number", code="21211"))
    d = deliverer(store, policy, sms=failing, outbox=outbox)
    assert d.deliver(CONFIRM_SMS, NOW) == "failed"
    n = store.notification(CONFIRM_SMS)
    assert (n["state"], n["code"]) == ("failed", "21211")
    assert failing.calls == 1


def test_an_unexpected_error_puts_the_notification_back(store, policy, outbox):
    book(store, policy)
    broken = FailingChannel(RuntimeError("bug"))
    assert deliverer(store, policy, sms=broken, outbox=outbox).deliver(CONFIRM_SMS, NOW) == (
        "retrying")
    assert store.notification(CONFIRM_SMS)["state"] == "scheduled"


def test_recovery_after_a_crash_inside_the_send_asks_the_outbox(store, policy, outbox):
    book(store, policy)
    d = deliverer(store, policy, outbox=outbox)
    assert d.deliver(CONFIRM_SMS, NOW) == "sent"
    # Simulate the crash: the line is in the outbox but the ledger still says `sending`.
    store.redis.hset(notif_key(CONFIRM_SMS), mapping={"state": "sending",
                                                         "lease": NOW.timestamp()})
    assert d.deliver(CONFIRM_SMS, NOW + timedelta(seconds=61)) == "sent"
    assert store.notification(CONFIRM_SMS)["reason"] == "sent before a crash"
    assert len(outbox.messages()) == 1


def test_recovery_sends_when_the_crash_came_before_the_send(store, policy, outbox):
    book(store, policy)
    store.schedule.begin(CONFIRM_SMS, NOW, lease_s=60)  # the worker died right after this
    d = deliverer(store, policy, outbox=outbox)
    assert d.deliver(CONFIRM_SMS, NOW + timedelta(seconds=1)) == "busy"
    assert d.deliver(CONFIRM_SMS, NOW + timedelta(seconds=61)) == "sent"
    assert len(outbox.messages()) == 1


def test_a_missing_template_fails_the_notification_clearly(store, policy, outbox, tmp_path):
    book(store, policy)
    d = deliverer(store, policy, outbox=outbox)
    (tmp_path / "templates" / "sms").mkdir(parents=True)
    d.renderer = Renderer(tmp_path / "templates")
    assert d.deliver(CONFIRM_SMS, NOW) == "failed"
    assert "template" in store.notification(CONFIRM_SMS)["reason"]


def open_request(store: Store, policy, opened: datetime, **client_kw) -> None:
    store_and_apply(store, policy, client_upserted("c1", "America/New_York", opened, **client_kw),
                    opened)
    store_and_apply(store, policy, provider_upserted("prov-1", opened), opened)
    store_and_apply(store, policy, refill_requested("req-1", "rx-1", "c1", opened), opened)


def test_support_sms_is_suppressed_without_a_support_phone(store, policy, outbox):
    opened = NOW - timedelta(hours=48)
    open_request(store, policy, opened)
    d = deliverer(store, policy, outbox=outbox)
    assert d.deliver("support_escalation:req-1:refill_request-window:sms", NOW) == "suppressed"
    assert store.notification("support_escalation:req-1:refill_request-window:sms")["reason"] == (
        "NOTIFIER_SUPPORT_PHONE is not set")
    assert d.deliver("support_escalation:req-1:refill_request-window:email", NOW) == "sent"
    [alert] = outbox.messages()
    assert alert["to"] == "support@practice.example" and "48 hours" in alert["body"]


def test_escalation_notice_falls_back_to_email_when_sms_is_closed(store, policy, outbox):
    open_request(store, policy, NOW - timedelta(hours=48), sms=False)
    d = deliverer(store, policy, outbox=outbox)
    assert d.deliver("escalation_notice:req-1:refill_request-window:sms", NOW) == "suppressed"
    email = store.notification("escalation_notice:req-1:refill_request-window:email")
    assert (email["state"], email["reason"]) == (
        "scheduled", "instead of sms: client does not accept sms")
    assert d.deliver("escalation_notice:req-1:refill_request-window:email", NOW) == "sent"
    [notice] = outbox.messages()
    assert (notice["channel"], notice["to"]) == ("email", "c1@example.com")
    # Planned once on the other channel, however often the SMS is looked at again.
    notice_sms = "escalation_notice:req-1:refill_request-window:sms"
    assert not store.add_on_other_channel(notice_sms, "email", NOW, "again")


def test_a_client_who_replied_stop_gets_email_and_no_duplicate(store, policy, outbox):
    book(store, policy)
    store.set_sms_opt_out("+14155550123", True)
    d = deliverer(store, policy, outbox=outbox)
    assert d.deliver(CONFIRM_SMS, NOW) == "suppressed"
    assert store.notification(CONFIRM_SMS)["reason"] == "client replied STOP"
    # The confirmation is planned on email already: no second email is added.
    assert d.deliver(CONFIRM_EMAIL, NOW) == "sent"
    assert [m["channel"] for m in outbox.messages()] == ["email"]
    store.set_sms_opt_out("+14155550123", False)
    assert not store.sms_opted_out("+14155550123")


def test_a_digest_with_nothing_open_is_not_sent(store, policy, outbox):
    open_request(store, policy, NOW - timedelta(hours=2))
    run_provider_digest(store, NOW, None, NOW)
    store_and_apply(store, policy, event_dict("refill.sent", {"request_id": "req-1"}, NOW), NOW)
    d = deliverer(store, policy, outbox=outbox)
    assert d.deliver(DIGEST, NOW) == "suppressed"
    assert store.notification(DIGEST)["reason"] == (
        "nothing open")
    assert [m["kind"] for m in outbox.messages()] == []


def test_a_digest_lists_what_is_open_when_it_is_sent(store, policy, outbox):
    open_request(store, policy, NOW - timedelta(hours=2))
    assert run_provider_digest(store, NOW, "America/Chicago", NOW).planned == 1
    assert run_provider_digest(store, NOW, "Europe/Berlin", NOW).planned == 0
    d = deliverer(store, policy, outbox=outbox)
    assert d.deliver(DIGEST, NOW) == "sent"
    [digest] = outbox.messages()
    assert digest["to"] == "rivera@example.com"
    assert "refill request from client c1: waiting 2 h, 46 h left" in digest["body"]


def test_outcomes_and_backlog_are_counted_for_metrics(store, policy, outbox):
    book(store, policy, sms=False)
    d = deliverer(store, policy, outbox=outbox)
    d.deliver(CONFIRM_EMAIL, NOW)
    d.deliver(CONFIRM_SMS, NOW)
    families = {f.name: f for f in LedgerCollector(store).collect()}
    outcomes = {(s.labels["state"], s.labels["channel"]): s.value
                for s in families["notifier_notifications"].samples}
    # Every state on both channels, zero until one happens.
    zero = {(state, channel): 0 for state in FINAL_STATES for channel in ("sms", "email")}
    assert outcomes == {**zero, ("sent", "email"): 1, ("suppressed", "sms"): 1}
    # Four reminders (72 h and 24 h, on two channels) are still waiting for their time.
    assert families["notifier_scheduled"].samples[0].value == 4
    assert families["notifier_in_flight"].samples[0].value == 0


class CancellingChannel:
    """Cancels the appointment while its message is at the provider, then fails retryably."""

    def __init__(self, store: Store, policy) -> None:
        self.store, self.policy = store, policy

    def send(self, message: Message, now: datetime) -> Receipt:
        store_and_apply(self.store, self.policy, event_dict(
            "appointment.cancelled", {"appointment_id": "a1", "cancelled_by": "client"}, now),
            now)
        raise RetryableError("busy", code="503")

    def already_sent(self, message: Message) -> bool | None:
        return None


def test_a_notification_cancelled_while_it_is_sent_is_not_retried(store, policy, outbox):
    book(store, policy)
    d = deliverer(store, policy, sms=CancellingChannel(store, policy), outbox=outbox)
    assert d.deliver(CONFIRM_SMS, NOW) == "cancelled"
    n = store.notification(CONFIRM_SMS)
    assert (n["state"], n["reason"]) == ("cancelled", "superseded")
    assert due_score(store.redis, CONFIRM_SMS) is None


def test_a_superseded_message_is_never_moved_to_the_other_channel(store, policy, outbox):
    now = NOW
    store_and_apply(store, policy, client_upserted("c1", "America/New_York", now), now)
    store_and_apply(store, policy, appointment("appointment.scheduled", "a1", "c1", START, now,
                                               join_url="https://v.example.com/r/1"), now)
    join = next(v.id for v in store.notifications_for("client", "c1")
                if v.kind == "appointment_join_link")
    lease = store.schedule.begin(join, START, lease_s=60).lease
    store.schedule.finish(join, "sent", lease=lease)
    store_and_apply(store, policy, event_dict("appointment.cancelled", {
        "appointment_id": "a1", "cancelled_by": "client"}, now + timedelta(seconds=1)), now)
    assert not store.add_on_other_channel(join, "email", now, "sms failed")
    assert not store.notification(join.rsplit(":", 1)[0] + ":email")


def test_waiting_and_quiet_hours_are_not_counted_as_attempts(store, policy, outbox):
    store_and_apply(store, policy, appointment("appointment.scheduled", "a1", "c1", START, BOOKED),
                    BOOKED)
    d = deliverer(store, policy, outbox=outbox)
    for minute in range(5):
        assert d.deliver(CONFIRM_SMS, NOW + timedelta(minutes=minute)) == "waiting"
    assert store.notification(CONFIRM_SMS)["attempts"] == "0"
    store_and_apply(store, policy, client_upserted("c1", "America/Los_Angeles", NOW), NOW)
    assert d.deliver(CONFIRM_SMS, datetime(2026, 11, 26, 5, 30, tzinfo=UTC)) == "held"
    assert store.notification(CONFIRM_SMS)["attempts"] == "0"


def test_a_quiet_hours_hold_forgets_the_reserved_send_slot(store, policy, outbox):
    book(store, policy, zone="America/Los_Angeles")
    evening = datetime(2026, 11, 26, 5, 30, tzinfo=UTC)
    lease = store.schedule.begin(CONFIRM_SMS, evening, lease_s=60).lease
    store.schedule.reschedule(CONFIRM_SMS, evening, "paced", lease=lease, not_an_attempt=True,
                              slot=evening.timestamp())
    assert float(store.notification(CONFIRM_SMS)["slot"]) == evening.timestamp()
    assert deliverer(store, policy, outbox=outbox).deliver(CONFIRM_SMS, evening) == "held"
    assert float(store.notification(CONFIRM_SMS)["slot"]) == 0


def test_a_visit_required_notice_is_suppressed_when_a_visit_is_booked_by_then(
        store, policy, outbox):
    store_and_apply(store, policy, client_upserted("c1", "America/New_York", BOOKED), BOOKED)
    fill = prescription_filled("rx-1", "c1", date(2026, 11, 1), BOOKED, refills_remaining=0)
    store_and_apply(store, policy, fill, BOOKED)
    notice = "visit_required:rx-1:fill20261101:sms"
    store_and_apply(store, policy, appointment("appointment.scheduled", "a1", "c1",
                                               datetime(2026, 11, 28, 15, tzinfo=UTC),
                                               BOOKED), BOOKED)
    d = deliverer(store, policy, outbox=outbox)
    assert d.deliver(notice, NOW) == "suppressed"
    assert store.notification(notice)["reason"] == "a visit is booked"


def test_the_same_fill_sent_again_does_not_bring_cancelled_reminders_back(store, policy):
    fill = prescription_filled("rx-1", "c1", date(2026, 11, 1), BOOKED)
    store_and_apply(store, policy, client_upserted("c1", "America/New_York", BOOKED), BOOKED)
    store_and_apply(store, policy, fill, BOOKED)
    store_and_apply(store, policy, refill_requested("req-1", "rx-1", "c1", NOW), NOW)
    again = {**fill, "id": "evt-resent"}
    plan = store_and_apply(store, policy, again, NOW)
    assert plan is not None and plan.outcome == "ignored"
    assert store.notification("refill_due:rx-1:fill20261101:sms")["state"] == "cancelled"


def test_the_join_link_sent_is_the_appointment_s_current_one(store, policy, outbox):
    store_and_apply(store, policy, client_upserted("c1", "America/New_York", BOOKED), BOOKED)
    first = appointment("appointment.scheduled", "a1", "c1", START, BOOKED,
                        join_url="https://video.example.com/r/old")
    store_and_apply(store, policy, first, BOOKED)
    join = next(v.id for v in store.notifications_for("client", "c1")
                if v.kind == "appointment_join_link")
    moved_room = appointment("appointment.rescheduled", "a1", "c1", START, NOW,
                             join_url="https://video.example.com/r/new")
    store_and_apply(store, policy, moved_room, NOW)
    d = deliverer(store, policy, outbox=outbox)
    link_time = START - timedelta(minutes=15)
    assert d.deliver(join, link_time) == "sent"
    [sms] = outbox.messages()
    assert "https://video.example.com/r/new" in sms["body"]
    assert "/r/old" not in sms["body"]


def test_a_join_link_for_a_visit_that_lost_its_link_is_not_sent(store, policy, outbox):
    store_and_apply(store, policy, client_upserted("c1", "America/New_York", BOOKED), BOOKED)
    store_and_apply(store, policy, appointment("appointment.scheduled", "a1", "c1", START,
                                               BOOKED, join_url="https://v.example.com/r/1"),
                    BOOKED)
    join = next(v.id for v in store.notifications_for("client", "c1")
                if v.kind == "appointment_join_link")
    store_and_apply(store, policy, appointment("appointment.rescheduled", "a1", "c1", START,
                                               NOW), NOW)
    d = deliverer(store, policy, outbox=outbox)
    assert d.deliver(join, START - timedelta(minutes=15)) == "suppressed"
    assert outbox.messages() == []


#: A Teams link longer than any join-link SMS can carry as it is (issue 10 item 3).
LONG_LINK = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_" + "N" * 260


def book_video(store, policy, join_url: str) -> str:
    store_and_apply(store, policy, client_upserted("c1", "America/New_York", BOOKED), BOOKED)
    store_and_apply(store, policy, appointment("appointment.scheduled", "a1", "c1", START,
                                               BOOKED, join_url=join_url), BOOKED)
    return next(v.id for v in store.notifications_for("client", "c1")
                if v.kind == "appointment_join_link")


def test_an_sms_records_its_encoding_and_segments_in_the_ledger_api_and_outbox(
        store, policy, outbox):
    book(store, policy)
    assert deliverer(store, policy, outbox=outbox).deliver(CONFIRM_SMS, NOW) == "sent"
    [line] = outbox.messages()
    view = {v.id: v for v in store.notifications_for("client", "c1")}[CONFIRM_SMS]
    assert (view.sms_encoding, view.sms_segments) == ("GSM-7", line["segments"])
    assert line["encoding"] == "GSM-7" and line["segments"] in (1, 2)
    assert view.provider_segments is None  # the outbox is no carrier
    email = {v.id: v for v in store.notifications_for("client", "c1")}[CONFIRM_EMAIL]
    assert (email.sms_encoding, email.sms_segments) == (None, None)


class CarrierCounting:
    """A channel whose provider reports the segments it sent, as Twilio's num_segments."""

    def send(self, message: Message, now: datetime) -> Receipt:
        return Receipt(provider_id="SM1", sent_at=now, segments=3)

    def already_sent(self, message: Message) -> bool | None:
        return None


def test_the_providers_segment_count_is_kept_beside_ours(store, policy):
    book(store, policy)
    assert deliverer(store, policy, sms=CarrierCounting()).deliver(CONFIRM_SMS, NOW) == "sent"
    view = {v.id: v for v in store.notifications_for("client", "c1")}[CONFIRM_SMS]
    assert view.provider_segments == 3 and view.sms_segments in (1, 2)


def test_a_long_video_link_goes_as_the_short_link(store, policy, outbox):
    join = book_video(store, policy, LONG_LINK)
    d = deliverer(store, policy, outbox=outbox)
    assert d.deliver(join, START - timedelta(minutes=15)) == "sent"
    [sms] = outbox.messages()
    token = store.short_links.token_for("a1")
    assert f"http://localhost:8000/j/{token}" in sms["body"] and "teams" not in sms["body"]
    assert sms["segments"] == 1
    assert store.notification(join)["reason"] == "video link shortened to fit the SMS budget"
    assert store.short_links.appointment_for(token) == "a1"
    # README, "SMS budget": "one per appointment, kept 90 days".
    assert 90 * 86400 - 5 <= store.redis.ttl(f"n:short:{token}") <= 90 * 86400


def test_an_sms_over_budget_is_not_sent_and_goes_by_email(store, policy, outbox, tmp_path):
    # A template of the practice's own that no link or name can bring within budget.
    templates = tmp_path / "templates"
    shutil.copytree(PROJECT_ROOT / "templates", templates)
    (templates / "sms" / "appointment_join_link.en.txt").write_text(
        "{{ practice_name }}: " + "Your video visit is about to start. " * 10 + "{{ join_url }}")
    join = book_video(store, policy, "https://v.example.com/r/1")
    d = dataclasses.replace(deliverer(store, policy, outbox=outbox),
                            renderer=Renderer(templates))
    assert d.deliver(join, START - timedelta(minutes=15)) == "suppressed"
    assert outbox.messages() == []
    fields = store.notification(join)
    assert fields["reason"].startswith("over the SMS budget: sms/appointment_join_link.en is "
                                       "GSM-7")
    assert (fields["sms_encoding"], int(fields["sms_segments"])) == ("GSM-7", 3)
    email = join.rsplit(":", 1)[0] + ":email"
    assert store.notification(email)["state"] == "scheduled"
    assert d.deliver(email, START - timedelta(minutes=15)) == "sent"
    assert "https://v.example.com/r/1" in outbox.messages()[0]["body"]


class RedisFillsUpChannel:
    """Sends to the outbox, then Redis refuses every write (maxmemory reached)."""

    def __init__(self, outbox: Outbox, client) -> None:
        self.outbox, self.client = outbox, client

    def send(self, message: Message, now: datetime) -> Receipt:
        receipt = self.outbox.send(message, now)
        self.client.config_set("maxmemory", "1")
        return receipt

    def already_sent(self, message: Message) -> bool | None:
        return self.outbox.already_sent(message)


def test_a_send_redis_cannot_record_is_recovered_not_sent_again(store, policy, outbox):
    book(store, policy)
    d = deliverer(store, policy, sms=RedisFillsUpChannel(outbox, store.redis), outbox=outbox)
    try:
        assert d.deliver(CONFIRM_SMS, NOW) == "unrecorded"
    finally:
        store.redis.config_set("maxmemory", "0")
    assert store.notification(CONFIRM_SMS)["state"] == "sending"
    later = NOW + timedelta(seconds=61)  # the lease has run out
    assert deliverer(store, policy, outbox=outbox).deliver(CONFIRM_SMS, later) == "sent"
    assert store.notification(CONFIRM_SMS)["reason"] == "sent before a crash"
    assert len(outbox.messages()) == 1


# Nothing is said about what was never said: an update or cancellation of a booking whose
# client was never told of it.
CANCEL_EMAIL = "appointment_cancelled:a1:seq1:email"
CANCEL_SMS = "appointment_cancelled:a1:seq1:sms"
UPDATE_EMAIL = "appointment_updated:a1:seq1:email"
UPDATE_SMS = "appointment_updated:a1:seq1:sms"
MOVED_TO = START + timedelta(days=2)


def cancel(store: Store, policy, at: datetime = NOW) -> None:
    store_and_apply(store, policy, event_dict("appointment.cancelled", {
        "appointment_id": "a1", "cancelled_by": "client"}, at), at)


def move(store: Store, policy, at: datetime = NOW) -> None:
    store_and_apply(store, policy, appointment("appointment.rescheduled", "a1", "c1", MOVED_TO,
                                               at), at)


def test_a_cancellation_of_a_booking_never_announced_is_suppressed(store, policy, outbox):
    book(store, policy)
    cancel(store, policy)  # before the confirmation went out: it is superseded
    assert store.notification(CONFIRM_EMAIL)["state"] == "cancelled"
    d = deliverer(store, policy, outbox=outbox)
    for key in (CANCEL_EMAIL, CANCEL_SMS):
        assert d.deliver(key, NOW) == "suppressed"
        n = store.notification(key)
        assert (n["state"], n["reason"]) == ("suppressed", NEVER_TOLD)
    assert outbox.messages() == []


def test_a_never_told_cancellation_does_not_go_by_the_other_channel(store, policy, outbox):
    sms_only = dataclasses.replace(policy, appointments=dataclasses.replace(
        policy.appointments, cancellation_channels=("sms",)))
    book(store, sms_only, sms=False)
    cancel(store, sms_only)
    assert deliverer(store, sms_only, outbox=outbox).deliver(CANCEL_SMS, NOW) == "suppressed"
    assert store.notification(CANCEL_SMS)["reason"] == NEVER_TOLD
    assert store.notification(CANCEL_EMAIL) == {}
    assert outbox.messages() == []


def test_a_reschedule_of_a_booking_never_announced_confirms_the_new_time(store, policy, outbox):
    book(store, policy)
    move(store, policy)
    d = deliverer(store, policy, outbox=outbox)
    assert d.deliver(UPDATE_EMAIL, NOW) == "sent"
    assert d.deliver(UPDATE_SMS, NOW) == "sent"
    email, sms = outbox.messages()
    assert (email["kind"], email["dedupe_key"]) == ("appointment_confirmation", UPDATE_EMAIL)
    assert (sms["kind"], sms["dedupe_key"]) == ("appointment_confirmation", UPDATE_SMS)
    assert email["subject"] == "Your appointment on Mon, Dec 7 at 10:00 AM EST is booked"
    assert "is booked for Mon, Dec 7 at 10:00 AM EST" in email["body"]
    assert "moved" not in email["body"] + sms["body"]
    assert "is booked for Mon, Dec 7 at 10:00 AM EST" in sms["body"]
    [ics_name] = email["attachments"]
    cal = Calendar.from_ical((outbox.directory / ics_name).read_bytes())
    [vevent] = cal.walk("VEVENT")
    assert str(cal["METHOD"]) == "REQUEST" and int(vevent["SEQUENCE"]) == 1
    assert vevent.decoded("DTSTART") == MOVED_TO
    for key in (UPDATE_EMAIL, UPDATE_SMS):
        n = store.notification(key)
        assert (n["state"], n["kind"], n["reason"]) == (
            "sent", "appointment_updated", SENT_AS_CONFIRMATION)
    # Now the client knows of it: its cancellation goes out.
    cancel(store, policy, NOW + timedelta(minutes=1))
    cancel_email = "appointment_cancelled:a1:seq2:email"
    assert d.deliver(cancel_email, NOW + timedelta(minutes=1)) == "sent"
    assert outbox.messages()[-1]["kind"] == "appointment_cancelled"


def test_a_reschedule_after_the_confirmation_went_out_is_an_update(store, policy, outbox):
    book(store, policy)
    d = deliverer(store, policy, outbox=outbox)
    assert d.deliver(CONFIRM_SMS, NOW) == "sent"  # the email never went out: told anyway
    move(store, policy, NOW + timedelta(minutes=1))
    assert d.deliver(UPDATE_EMAIL, NOW + timedelta(minutes=1)) == "sent"
    update = outbox.messages()[-1]
    assert update["kind"] == "appointment_updated" and "has moved" in update["body"]
    assert store.notification(UPDATE_EMAIL)["reason"] == ""


def test_a_cancellation_after_the_confirmation_went_out_is_sent(store, policy, outbox):
    book(store, policy)
    d = deliverer(store, policy, outbox=outbox)
    assert d.deliver(CONFIRM_EMAIL, NOW) == "sent"
    cancel(store, policy, NOW + timedelta(minutes=1))
    assert d.deliver(CANCEL_EMAIL, NOW + timedelta(minutes=1)) == "sent"
    assert d.deliver(CANCEL_SMS, NOW + timedelta(minutes=1)) == "sent"
    kinds = [(m["kind"], m["channel"]) for m in outbox.messages()]
    assert kinds == [("appointment_confirmation", "email"), ("appointment_cancelled", "email"),
                     ("appointment_cancelled", "sms")]
    [ics_name] = outbox.messages()[1]["attachments"]
    cal = Calendar.from_ical((outbox.directory / ics_name).read_bytes())
    assert str(cal["METHOD"]) == "CANCEL"
    assert store.notification(CANCEL_EMAIL)["state"] == "sent"


def test_a_cancellation_waits_while_the_confirmation_is_being_sent(store, policy, outbox):
    book(store, policy)
    lease = store.schedule.begin(CONFIRM_SMS, NOW, lease_s=60).lease  # another worker's
    cancel(store, policy)
    d = deliverer(store, policy, outbox=outbox)
    assert d.deliver(CANCEL_EMAIL, NOW) == "waiting"
    n = store.notification(CANCEL_EMAIL)
    assert (n["state"], n["attempts"]) == ("scheduled", "0")
    due = due_score(store.redis, CANCEL_EMAIL)
    assert NOW.timestamp() + 1 <= due <= NOW.timestamp() + 2
    # The confirmation went out after all: the client was told, the cancellation follows.
    store.schedule.finish(CONFIRM_SMS, "sent", lease=lease)
    later = datetime.fromtimestamp(due, UTC)
    assert d.deliver(CANCEL_EMAIL, later) == "sent"
    assert [m["kind"] for m in outbox.messages()] == ["appointment_cancelled"]


def test_a_cancellation_decides_once_the_confirmation_being_sent_failed(store, policy, outbox):
    book(store, policy)
    lease = store.schedule.begin(CONFIRM_SMS, NOW, lease_s=60).lease
    cancel(store, policy)
    d = deliverer(store, policy, outbox=outbox)
    assert d.deliver(CANCEL_SMS, NOW) == "waiting"
    store.schedule.finish(CONFIRM_SMS, "failed", lease=lease, reason="invalid number")
    assert d.deliver(CANCEL_SMS, NOW + timedelta(seconds=2)) == "suppressed"
    assert store.notification(CANCEL_SMS)["reason"] == NEVER_TOLD


def test_the_same_notice_being_sent_on_the_other_channel_does_not_hold_it(store, policy, outbox):
    book(store, policy)
    cancel(store, policy)
    store.schedule.begin(CANCEL_SMS, NOW, lease_s=60)  # its twin, on another worker
    d = deliverer(store, policy, outbox=outbox)
    assert d.deliver(CANCEL_EMAIL, NOW) == "suppressed"
    assert store.notification(CANCEL_EMAIL)["reason"] == NEVER_TOLD


def test_a_notification_whose_entry_expired_counts_as_told(store, policy, outbox):
    book(store, policy)
    cancel(store, policy)
    # 90 days after it finished, the superseded confirmation's entry is gone: it may have
    # gone out, so the cancellation is sent rather than withheld.
    store.redis.delete(notif_key(CONFIRM_EMAIL))
    assert deliverer(store, policy, outbox=outbox).deliver(CANCEL_EMAIL, NOW) == "sent"


def test_a_reschedule_of_a_booking_we_never_saw_goes_out_as_a_confirmation(store, policy, outbox):
    store_and_apply(store, policy, client_upserted("c1", "America/New_York", BOOKED), BOOKED)
    move(store, policy)
    assert deliverer(store, policy, outbox=outbox).deliver(UPDATE_SMS, NOW) == "sent"
    [sms] = outbox.messages()
    assert sms["kind"] == "appointment_confirmation" and "is booked for" in sms["body"]
    assert store.notification(UPDATE_SMS)["reason"] == SENT_AS_CONFIRMATION


def test_a_client_whose_details_never_arrive_is_waited_for_then_suppressed_at_expiry(
        store, policy, outbox):
    """The README: it "waits (re-checked every minute) until it expires, then is
    `suppressed` with the reason" — not `expired` as if the workers were late, not sent."""
    start = NOW + timedelta(minutes=30)
    store_and_apply(store, policy, appointment("appointment.scheduled", "a1", "c1", start,
                                               BOOKED), BOOKED)
    expires = datetime.fromtimestamp(float(store.notification(CONFIRM_SMS)["expires"]), UTC)
    assert expires == start
    d = deliverer(store, policy, outbox=outbox)
    now, waits = NOW, 0
    while (outcome := d.deliver(CONFIRM_SMS, now)) == "waiting":
        due = datetime.fromtimestamp(due_score(store.redis, CONFIRM_SMS), UTC)
        assert due - now == timedelta(minutes=1)
        now, waits = due, waits + 1
    assert outcome == "suppressed"
    assert now < expires <= now + timedelta(minutes=1)
    assert waits == 29  # 15:00 to 15:28; at 15:29 the next look would be at the expiry
    n = store.notification(CONFIRM_SMS)
    assert (n["state"], n["reason"]) == ("suppressed", "client details never arrived")
    assert outbox.messages() == []
