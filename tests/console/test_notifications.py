"""The console's notification page: facts, the message rendered with the deliverer's own
code (SMS with its size, email text, HTML as escaped source, the .ics), the history the
ledger's scripts now keep (sent, delivery reports, failures, retries), the 404 page and the
guards. Real Redis, real app, real deliverer with the file outbox."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from notifier.config import PROJECT_ROOT, Settings
from notifier.console.history import HISTORY_MAX, HistoryEntry, left_out, parse_history
from notifier.delivery.channels import Message, Receipt
from notifier.delivery.channels.outbox import Outbox
from notifier.delivery.deliverer import Deliverer
from notifier.delivery.render import Renderer
from notifier.errors import PermanentError
from notifier.ledger.notifications import from_epoch
from notifier.ledger.store import Store
from notifier.policy.plan import Plan, PlannedNotification
from notifier.timeutil import utcnow
from notifier.worker.digests import run_provider_digest
from tests.console.conftest import console_env
from tests.console.test_routes import audited, sign_in
from tests.delivery.test_deliverer import open_request
from tests.kit import (
    appointment,
    client_upserted,
    daytime_zone,
    provider_upserted,
    store_and_apply,
)
from tests.ledger_keys import notif_key, notification_ids, outbox_entries

API_TOKEN = "t" * 40
CONFIRM_EMAIL = "appointment_confirmation:a1:booked:email"
CONFIRM_SMS = "appointment_confirmation:a1:booked:sms"


def api_settings(operators_file: Path) -> Settings:
    """The console's settings with the read API's token, to check what it shows."""
    return Settings.from_env(console_env(operators_file, NOTIFIER_API_TOKEN=API_TOKEN),
                             dotenv=Path("/nonexistent"))


@pytest.fixture
def settings(operators_file: Path) -> Settings:
    return api_settings(operators_file)


@pytest.fixture
def store(redis_client) -> Store:
    return Store(redis_client)


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    return Outbox(tmp_path / "outbox")


class FailingChannel:
    """A channel whose every send fails permanently with `code`."""

    def __init__(self, code: str) -> None:
        self.code = code

    def send(self, message: Message, now: datetime) -> Receipt:
        raise PermanentError("the provider refused the number", code=self.code)

    def already_sent(self, message: Message) -> bool | None:
        return None


def book(store: Store, policy: Any, now: datetime, *, start_in: timedelta = timedelta(days=10),
         **client_kw: Any) -> datetime:
    """Client c1 (where it is about noon: no quiet hours), provider prov-1, appointment a1
    starting `start_in` after `now`, booked a minute before `now`; returns the start."""
    booked = now - timedelta(minutes=1)
    start = now + start_in
    store_and_apply(store, policy, client_upserted("c1", daytime_zone(now), booked,
                                                   **client_kw), booked)
    store_and_apply(store, policy, provider_upserted("prov-1", booked), booked)
    store_and_apply(store, policy, appointment("appointment.scheduled", "a1", "c1", start,
                                               booked), booked)
    return start


def deliverer(store: Store, policy: Any, outbox: Outbox, sms: Any = None,
              email: Any = None) -> Deliverer:
    settings = Settings.from_env({}, dotenv=Path("/nonexistent"))
    return Deliverer(store=store, channels={"sms": sms or outbox, "email": email or outbox},
                     renderer=Renderer(PROJECT_ROOT / "templates"), settings=settings,
                     policy=policy, rng=random.Random(7))


def page(client: Any, notification_id: str) -> Any:
    return client.get(f"/console/notifications/{quote(notification_id, safe='')}")


def test_the_page_shows_an_email_as_rendered_html_as_escaped_source_and_the_invite(
        client, store, policy, redis_client):
    book(store, policy, utcnow())
    sign_in(client)
    answer = page(client, CONFIRM_EMAIL)
    assert answer.status_code == 200
    html = answer.text
    assert "<h1>Notification</h1>" in html
    assert 'href="/console/clients/c1"' in html
    assert "appointment_confirmation" in html and "scheduled" in html
    assert "Rendered now from the stored params with the current templates" in html
    assert "Dr. Rivera" in html  # the text body, with the provider's current name
    # The HTML part is shown as source: its tags escaped, never live in our origin.
    assert "HTML (source, not rendered)" in html
    assert "&lt;p&gt;" in html or "&lt;html" in html
    assert "BEGIN:VCALENDAR" in html and "SEQUENCE:0" in html and "METHOD:REQUEST" in html
    # The due time in the client's zone and in UTC.
    assert " UTC" in html
    assert ("ana", "view", f"notification:{CONFIRM_EMAIL}") in audited(redis_client)


def test_the_page_takes_the_id_raw_as_well_as_quoted(client, store, policy):
    book(store, policy, utcnow())
    sign_in(client)
    answer = client.get(f"/console/notifications/{CONFIRM_SMS}")
    assert answer.status_code == 200
    assert CONFIRM_SMS in answer.text


def test_an_sms_is_shown_with_its_encoding_and_segments(client, store, policy):
    book(store, policy, utcnow())
    sign_in(client)
    html = page(client, CONFIRM_SMS).text
    assert "<h3>SMS</h3>" in html
    assert "GSM-7, 1 segment" in html or "GSM-7, 2 segments" in html
    assert "Cancel this notification" in html  # scheduled: it may be cancelled
    assert "Send again now" not in html


def test_an_unknown_id_answers_a_404_page(client, redis_client):
    sign_in(client)
    answer = page(client, "appointment_reminder:nope:x:sms")
    assert answer.status_code == 404
    assert "No such notification" in answer.text
    assert answer.headers["content-security-policy"].startswith("default-src 'self'")


def test_without_a_session_the_page_is_401(client, store, policy):
    book(store, policy, utcnow())
    answer = page(client, CONFIRM_SMS)
    assert answer.status_code == 401
    # Nothing of the notification; only the sign-in link back to the page asked for.
    shown = answer.text.replace(quote(CONFIRM_SMS, safe=""), "")
    assert "Dr. Rivera" not in shown and "appointment_confirmation" not in shown


def test_a_view_of_a_notification_id_that_cannot_be_an_id_does_not_bloat_the_audit(
        client, store, policy, redis_client):
    """A path that cannot be an id (far longer than any, or with characters no id has)
    answers the 404 page unaudited: the audit log is kept six years, and one GET of a
    40,000-character 'id' would otherwise write a 40 kB entry (QA, issue 15). Without a
    session it is still 401. The POSTs too (before their CSRF check: nothing is done)."""
    book(store, policy, utcnow())
    huge = "a" * 40_000
    paths = [f"/console/notifications/{huge}", f"/console/notifications/{huge}/resend",
             f"/console/notifications/{huge}/cancel",
             f"/console/appointments/{huge}/resend-invite",
             f"/console/clients/{huge}/sms-enable",
             "/console/notifications/a%20b", "/console/appointments/a%2Fb/resend-invite"]
    assert all(client.get(path).status_code == 401 for path in paths)
    sign_in(client)
    before = audited(redis_client)
    for path in paths:
        answer = client.get(path)
        assert answer.status_code == 404, (path[:60], answer.status_code)
        assert "no such" in answer.text.lower() and len(answer.text) < 20_000
    for path in paths[1:5]:
        assert client.post(path, data={"csrf_token": "x"}).status_code == 404
    assert audited(redis_client) == before
    # A real id is still viewed, and audited.
    assert page(client, CONFIRM_SMS).status_code == 200
    assert audited(redis_client)[-1][2] == f"notification:{CONFIRM_SMS}"


def test_every_id_the_policy_builds_is_one_the_console_takes(client, store, policy):
    """`NOTIFICATION_ID_RE` must never refuse a real id: every notification the policy
    plans for events whose ids are the longest the intake takes (128 characters, with
    each punctuation mark an id may hold), the digests', the copies sent again and the
    invites sent again from the console match it, with room to spare."""
    from notifier.console.allowed import resend_id
    from notifier.console.notifications import NOTIFICATION_ID_RE
    from notifier.console.operations import MAX_AGAIN, invite_id
    from notifier.policy.digest import digest_id
    from tests.kit import (
        event_dict,
        message_received,
        prescription_filled,
        refill_requested,
    )

    def longest(prefix: str) -> str:
        return (prefix + "-" + "a~._" * 40)[:128]

    now = utcnow()
    c, a, b, rx, rq, msg = (longest(p) for p in ("C", "A", "B", "R", "Q", "M"))
    before = now - timedelta(minutes=5)
    for evt in (
            client_upserted(c, daytime_zone(now), before),
            provider_upserted("prov-1", before),
            appointment("appointment.scheduled", a, c, now + timedelta(days=4), before),
            appointment("appointment.rescheduled", a, c, now + timedelta(days=5), before),
            event_dict("appointment.cancelled", {"appointment_id": a,
                                                 "cancelled_by": "provider"}, before),
            appointment("appointment.scheduled", b, c, now - timedelta(hours=1), before),
            event_dict("appointment.no_show", {"appointment_id": b, "party": "provider"},
                       before),
            prescription_filled(rx, c, (now - timedelta(days=27)).date(), before),
            refill_requested(rq, rx, c, before),
            event_dict("refill.denied", {"request_id": rq, "reason": "visit_required"},
                       before),
            message_received(msg, c, before)):
        store_and_apply(store, policy, evt, now)
    planned = notification_ids(store.redis)
    kinds = {i.split(":", 1)[0] for i in planned}
    assert len(kinds) >= 8, kinds  # the events above reached most of the policy
    ids = [*planned, *(resend_id(i, MAX_AGAIN) for i in planned),
           invite_id("appointment_updated", a, MAX_AGAIN, 10**6),
           digest_id(longest("P"), now)]
    assert [i for i in ids if not NOTIFICATION_ID_RE.fullmatch(i)] == []
    assert max(map(len, ids)) < 350
    sign_in(client)
    assert page(client, max(planned, key=len)).status_code == 200


def test_the_history_of_a_send_and_its_delivery_report_is_shown(
        client, store, policy, outbox):
    now = utcnow()
    book(store, policy, now)
    assert deliverer(store, policy, outbox).deliver(CONFIRM_SMS, now) == "sent"
    store.record_delivery(CONFIRM_SMS, "delivered", "", now)
    fields = store.notification(CONFIRM_SMS)
    entries = parse_history(fields)
    assert [(e.state, e.report) for e in entries] == [
        ("planned", False), ("sending", False), ("sent", False), ("delivered", True)]
    assert entries[1].note == "attempt 1"
    sign_in(client)
    html = page(client, CONFIRM_SMS).text
    assert "<h2>History</h2>" in html
    assert "delivery report: delivered" in html and "attempt 1" in html
    assert "delivered" in html  # the state as the read API shows it
    assert "Send again now" not in html and "Cancel this notification" not in html


def test_a_failure_with_its_code_and_an_undelivered_report_are_in_the_history(
        client, store, policy, outbox):
    now = utcnow()
    book(store, policy, now)
    d = deliverer(store, policy, outbox, email=FailingChannel("550"))
    assert d.deliver(CONFIRM_EMAIL, now) == "failed"
    assert deliverer(store, policy, outbox).deliver(CONFIRM_SMS, now) == "sent"
    store.record_delivery(CONFIRM_SMS, "undelivered", "30003", now)
    failed = parse_history(store.notification(CONFIRM_EMAIL))
    assert [e.state for e in failed] == ["planned", "sending", "failed"]
    report = parse_history(store.notification(CONFIRM_SMS))[-1]
    assert report == HistoryEntry(report.at, "undelivered", "code 30003", True)
    sign_in(client)
    html = page(client, CONFIRM_SMS).text
    assert "delivery report: undelivered" in html and "code 30003" in html
    assert "Send again now" in html  # shown as failed: it may be sent again
    assert "Send again now" in page(client, CONFIRM_EMAIL).text


def test_a_retry_and_a_long_multibyte_reason_keep_each_entry_within_64_bytes(store, policy):
    now = utcnow()
    book(store, policy, now)
    begun = store.schedule.begin(CONFIRM_SMS, now, lease_s=60)
    assert begun.may_send
    reason = "réessai après une erreur du fournisseur — " * 4
    assert store.schedule.reschedule(CONFIRM_SMS, now, reason, lease=begun.lease)
    raw = store.redis.hgetall(notif_key(CONFIRM_SMS))
    entries = {k.decode(): v for k, v in raw.items() if k.decode()[:1] == "h"}
    assert entries["hn"] == b"2"
    for name in ("h1", "h2"):
        assert len(entries[name]) <= 64
        entries[name].decode()  # whole characters: it decodes
    last = parse_history(store.notification(CONFIRM_SMS))[-1]
    assert last.state == "scheduled" and last.note.startswith("réessai après")


def held_twenty_times(store: Store, policy: Any) -> None:
    """Book, then begin and hold the SMS confirmation twenty times ("held 0".."held 19"):
    forty changes, past the history's sixteen."""
    now = utcnow()
    book(store, policy, now)
    for i in range(20):
        begun = store.schedule.begin(CONFIRM_SMS, now, lease_s=60)
        assert store.schedule.reschedule(CONFIRM_SMS, now, f"held {i}", lease=begun.lease,
                                         not_an_attempt=True)


def test_the_history_keeps_the_first_entries_and_the_latest_past_its_limit(store, policy):
    held_twenty_times(store, policy)
    fields = store.notification(CONFIRM_SMS)
    assert fields["hn"] == "40"  # every change counted: 20 begun, 20 held
    entries = parse_history(fields)
    assert len(entries) == 17  # planned, and 16 kept
    assert entries[1].state == "sending" and entries[-1].note == "held 19"
    # The 14th change is the 7th hold, the 15th a begin; the 16th to 39th are not kept.
    assert entries[-3].note == "held 6" and entries[-2].state == "sending"
    assert left_out(fields) == 24
    assert len(store.redis.hgetall(notif_key(CONFIRM_SMS))) < 128  # still compact


def test_a_history_past_its_limit_says_how_many_steps_are_not_kept(client, store, policy):
    held_twenty_times(store, policy)
    sign_in(client)
    text = page(client, CONFIRM_SMS).text
    assert ("24 steps not kept: the history holds the first 15 changes and the latest"
            in text)
    assert "held 19" in text and "held 6" in text and "held 7<" not in text


def test_the_history_limit_is_the_scripts(store):
    source = (PROJECT_ROOT / "notifier" / "ledger" / "lua" / "_webhook_emit.lua").read_text()
    assert f"local HISTORY_MAX, HISTORY_BYTES = {HISTORY_MAX}, 64" in source


def test_a_message_its_channel_cannot_carry_says_so(client, store, policy):
    now = utcnow()
    booked = now - timedelta(minutes=1)
    event = client_upserted("c9", "America/New_York", booked, phone=None)
    del event["data"]["client"]["email"]
    store_and_apply(store, policy, event, booked)
    store_and_apply(store, policy, appointment("appointment.scheduled", "a9", "c9",
                                               now + timedelta(days=5), booked), booked)
    sign_in(client)
    text = page(client, "appointment_confirmation:a9:booked:sms").text
    assert "It cannot go by sms now: no phone number." in text
    book(store, policy, now)  # c1 has a number
    assert "cannot go by" not in page(client, CONFIRM_SMS).text


def test_a_provider_digest_page_speaks_of_the_provider(client, store, policy):
    now = utcnow()
    open_request(store, policy, now - timedelta(hours=2))
    assert run_provider_digest(store, now, None, now).planned == 1
    [key] = notification_ids(store.redis, "provider_digest:*")
    sign_in(client)
    text = page(client, key).text
    assert "the provider's current details" in text and "client's" not in text


def test_a_pending_notification_gets_no_history_field(store, policy):
    book(store, policy, utcnow())
    raw = store.redis.hgetall(notif_key(CONFIRM_SMS))
    assert [k for k in raw if k.startswith(b"h")] == []


def test_a_retired_row_drops_its_history_and_its_page_says_its_content_is_gone(
        client, redis_client, policy, outbox):
    now = utcnow()
    store = Store(redis_client, keep_finished_s=60, history_s=3600)
    book(store, policy, now)
    assert deliverer(store, policy, outbox).deliver(CONFIRM_SMS, now) == "sent"
    assert store.trimmer.run(now + timedelta(days=30)).retired >= 1
    raw = store.redis.hgetall(notif_key(CONFIRM_SMS))
    assert b"retired" in raw and not [k for k in raw if k.startswith(b"h")]
    assert parse_history(store.notification(CONFIRM_SMS)) == []
    sign_in(client)
    answer = page(client, CONFIRM_SMS)
    assert answer.status_code == 200
    assert "content is no longer kept" in answer.text
    assert "No history is kept" in answer.text
    assert "Send again now" not in answer.text


def test_a_message_that_cannot_be_rendered_says_why(client, store):
    now = utcnow()
    store.write_plan(Plan(outcome="applied", add=(PlannedNotification(
        id="appointment_reminder:a9:x:sms", kind="appointment_reminder", channel="sms",
        recipient="client", recipient_id="nobody", entity="appointment:a9", due_at=now,
        expires_at=now + timedelta(hours=1), params={"appointment_id": "a9"}),)), now)
    sign_in(client)
    answer = page(client, "appointment_reminder:a9:x:sms")
    assert answer.status_code == 200
    assert "details are not on record" in answer.text


# parse_history, pure ------------------------------------------------------------------
def test_parse_history_of_a_hash_without_any_history():
    assert parse_history({}) == []
    assert parse_history({"state": "sent", "created": "1797000000"}) == [
        HistoryEntry(from_epoch("1797000000"), "planned", "")]


def test_parse_history_orders_by_number_and_skips_what_does_not_read():
    fields = {"hn": "11", "h10": "1797000010 sent", "h2": "1797000002 scheduled quiet hours",
              "h1": "1797000001 sending attempt 1", "h3": "not-a-time failed",
              "h11": "1797000011 report:bounce code 550", "h4": "1797000004"}
    entries = parse_history(fields)
    assert [(e.state, e.note, e.report) for e in entries] == [
        ("sending", "attempt 1", False), ("scheduled", "quiet hours", False),
        ("sent", "", False), ("bounce", "code 550", True)]
    assert entries[0].at == from_epoch("1797000001")


def test_the_outbox_entry_of_a_history_change_is_unchanged(store, policy, outbox):
    """The history is the hash's own: the webhook announcements stay as they were."""
    now = utcnow()
    book(store, policy, now)
    deliverer(store, policy, outbox).deliver(CONFIRM_SMS, now)
    types = [e.type for e in outbox_entries(store.redis, store.keys)]
    assert types.count("notification.sent") == 1
