"""The console's actions: each confirmation page, the POST that does it (CSRF checked,
audited, 303 back with a notice), the refusals (409 with why), 403 without the CSRF token,
401 without a session; and what each did, seen where others see it: the read API, the
webhook outbox, the ledger, a real worker's send."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from notifier.config import Settings
from notifier.console.allowed import (
    MAX_REASON_CHARS,
    RESEND_VALID,
    allowed_actions,
    appointment_changed,
    invite_kind,
    reason_error,
    refusal,
    resend_expiry,
    resend_id,
)
from notifier.console.audit import AuditLog
from notifier.delivery.channels.outbox import Outbox
from notifier.ledger.notifications import from_epoch
from notifier.ledger.records import AppointmentRecord
from notifier.ledger.store import Store
from notifier.timeutil import utcnow
from tests.console.test_notifications import (
    API_TOKEN,
    CONFIRM_EMAIL,
    CONFIRM_SMS,
    FailingChannel,
    api_settings,
    book,
    deliverer,
)
from tests.console.test_routes import FORM, audited, csrf_in, sign_in
from tests.kit import appointment, client_upserted, daytime_zone, store_and_apply
from tests.ledger_keys import due_score, notif_key, notification_ids

PHONE = "+14155550123"


@pytest.fixture
def settings(operators_file: Path) -> Settings:
    return api_settings(operators_file)


@pytest.fixture
def store(redis_client: Any) -> Store:
    return Store(redis_client)


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    return Outbox(tmp_path / "outbox")


def url(notification_id: str, action: str = "") -> str:
    path = f"/console/notifications/{quote(notification_id, safe='')}"
    return f"{path}/{action}" if action else path


def confirm(client: Any, path: str, **fields: str) -> Any:
    """The confirmation page at `path` fetched (its Confirm button and CSRF token
    checked), then its form posted with `fields`."""
    form = client.get(path)
    assert form.status_code == 200, form.text
    assert '<button type="submit">Confirm</button>' in form.text
    assert 'method="post"' in form.text and ">Go back without doing it</a>" in form.text
    return client.post(path, data={"csrf_token": csrf_in(form.text), **fields},
                       follow_redirects=False)


def read_api(client: Any, client_id: str = "c1") -> dict[str, dict[str, Any]]:
    answer = client.get(f"/v1/clients/{client_id}/notifications",
                        headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert answer.status_code == 200
    return {n["id"]: n for n in answer.json()["notifications"]}


def outbox_entries(store: Any) -> list[list[Any]]:
    """The raw entries of every shard's webhook outbox: [n, type, at, subject, data]."""
    return [json.loads(e) for s in store.keys.all()
            for e in store.redis.lrange(store.keys.webhook_outbox(s), 0, -1)]


def fail(store: Any, policy: Any, outbox: Any, notification_id: str = CONFIRM_EMAIL) -> None:
    """Send `notification_id` through a channel that refuses it: `failed`, code 550."""
    d = deliverer(store, policy, outbox, email=FailingChannel("550"),
                  sms=FailingChannel("21211"))
    assert d.deliver(notification_id, utcnow()) == "failed"


# Cancel -------------------------------------------------------------------------------
def test_cancel_a_scheduled_notification(client, store, policy, redis_client):
    book(store, policy, utcnow())
    sign_in(client)
    answer = confirm(client, url(CONFIRM_SMS, "cancel"))
    assert answer.status_code == 303
    assert answer.headers["location"] == url(CONFIRM_SMS) + "?done=cancelled"
    shown = client.get(answer.headers["location"]).text
    assert '<p class="notice" role="status">Cancelled.' in shown
    assert "cancelled in the console" in shown  # the reason, and the history's note
    assert "Cancel this notification" not in shown
    # Seen by the read API, announced to webhooks, off the schedule, in the history.
    view = read_api(client)[CONFIRM_SMS]
    assert view["state"] == "cancelled" and view["reason"] == "cancelled in the console"
    assert [e[3] for e in outbox_entries(store)
            if e[1] == "notification.cancelled"] == [CONFIRM_SMS]
    assert due_score(store.redis, CONFIRM_SMS) is None
    assert store.notification(CONFIRM_SMS)["h1"].split(" ", 2)[1:] == [
        "cancelled", "cancelled in the console"]
    assert ("ana", "cancel-notification", f"notification:{CONFIRM_SMS}") in \
        audited(redis_client)
    # The worker, reaching it, sends nothing.
    assert store.schedule.begin(CONFIRM_SMS, utcnow(), lease_s=30).verdict == "cancelled"


def test_cancel_is_refused_unless_scheduled(client, store, policy, outbox, redis_client):
    now = utcnow()
    book(store, policy, now)
    assert deliverer(store, policy, outbox).deliver(CONFIRM_SMS, now) == "sent"
    sign_in(client)
    form = client.get(url(CONFIRM_SMS, "cancel"))
    assert form.status_code == 409
    assert "Only a scheduled notification can be cancelled" in form.text
    assert "Confirm" not in form.text
    # A form posted from a page opened before the send is refused the same way.
    token = csrf_in(client.get(url(CONFIRM_EMAIL, "cancel")).text)
    posted = client.post(url(CONFIRM_SMS, "cancel"), data={"csrf_token": token},
                         follow_redirects=False)
    assert posted.status_code == 409
    assert store.notification(CONFIRM_SMS)["state"] == "sent"
    assert not [a for a in audited(redis_client) if a[1] == "cancel-notification"]


def test_one_being_sent_cannot_be_cancelled(client, store, policy):
    now = utcnow()
    book(store, policy, now)
    assert store.schedule.begin(CONFIRM_SMS, now, lease_s=60).may_send
    sign_in(client)
    token = csrf_in(client.get(url(CONFIRM_EMAIL, "cancel")).text)
    posted = client.post(url(CONFIRM_SMS, "cancel"), data={"csrf_token": token})
    assert posted.status_code == 409
    assert "being sent right now and cannot be stopped" in posted.text


def test_cancelling_an_already_cancelled_notification_is_refused_and_not_audited_again(
        client, store, policy, redis_client):
    """A double submit (or a second operator, or the Back button) posting the cancel form
    of a notification cancelled already: 409, nothing announced again, one audit entry
    (QA, issue 15: it was answered `?done=cancelled` and audited twice)."""
    book(store, policy, utcnow())
    sign_in(client)
    token = csrf_in(client.get(url(CONFIRM_SMS, "cancel")).text)
    first = client.post(url(CONFIRM_SMS, "cancel"), data={"csrf_token": token},
                        follow_redirects=False)
    assert first.status_code == 303
    second = client.post(url(CONFIRM_SMS, "cancel"), data={"csrf_token": token},
                         follow_redirects=False)
    assert second.status_code == 409, (second.status_code, second.headers.get("location"))
    assert "Only a scheduled notification can be cancelled; this one is cancelled" \
        in second.text
    cancels = [a for a in audited(redis_client) if a[1] == "cancel-notification"]
    assert len(cancels) == 1, cancels
    assert len([e for e in outbox_entries(store) if e[1] == "notification.cancelled"]) == 1


def test_a_notification_the_system_cancelled_is_not_cancelled_by_the_operator(
        client, store, policy, redis_client):
    """The confirmation page opened, then the appointment cancelled (its notifications
    with it): the Confirm is refused, and the audit does not say the operator did it."""
    now = utcnow()
    start = book(store, policy, now)
    sign_in(client)
    token = csrf_in(client.get(url(CONFIRM_SMS, "cancel")).text)
    # The appointment moved: its scheduled notifications cancelled by the system.
    store_and_apply(store, policy, appointment("appointment.rescheduled", "a1", "c1",
                                               start + timedelta(hours=3), now), now)
    assert store.notification(CONFIRM_SMS)["state"] == "cancelled"
    posted = client.post(url(CONFIRM_SMS, "cancel"), data={"csrf_token": token},
                         follow_redirects=False)
    assert posted.status_code == 409
    assert store.notification(CONFIRM_SMS)["reason"] != "cancelled in the console"
    assert not [a for a in audited(redis_client) if a[1] == "cancel-notification"]


def test_cancel_of_an_unknown_notification_is_a_clear_404(client):
    sign_in(client)
    answer = client.get(url("appointment_reminder:zz:x:sms", "cancel"))
    assert answer.status_code == 404
    assert "no such notification" in answer.text.lower()


# Send again now -------------------------------------------------------------------------
def test_send_a_failed_notification_again_now(client, store, policy, outbox, redis_client):
    now = utcnow()
    book(store, policy, now)
    fail(store, policy, outbox)
    before = store.redis.hgetall(notif_key(CONFIRM_EMAIL))
    sign_in(client)
    assert "Send again now" in client.get(url(CONFIRM_EMAIL)).text
    page = client.get(url(CONFIRM_EMAIL, "resend")).text
    assert "quiet hours" in page  # the send-time checks still apply, and it says so
    answer = confirm(client, url(CONFIRM_EMAIL, "resend"))
    assert answer.status_code == 303
    new_id = "appointment_confirmation:a1:booked.again1:email"
    assert answer.headers["location"] == (
        url(CONFIRM_EMAIL) + "?done=resent&new=" + quote(new_id, safe=""))
    shown = client.get(answer.headers["location"]).text
    assert '<p class="notice" role="status">Planned again' in shown
    assert f'href="{url(new_id)}"' in shown
    # The old one unchanged; the new one scheduled, due now, with the same params.
    assert store.redis.hgetall(notif_key(CONFIRM_EMAIL)) == before
    new = store.notification(new_id)
    assert new["state"] == "scheduled" and new["reason"] == "sent again from the console"
    assert abs(from_epoch(new["due"]) - utcnow()) < timedelta(minutes=1)
    assert new["params"] == store.notification(CONFIRM_EMAIL)["params"]
    assert due_score(store.redis, new_id) is not None
    assert read_api(client)[new_id]["state"] == "scheduled"
    assert ("ana", f"resend-notification: as {new_id}", f"notification:{CONFIRM_EMAIL}") \
        in audited(redis_client)
    # A real worker sends it, with its invite.
    assert deliverer(store, policy, outbox).deliver(new_id, utcnow()) == "sent"
    [sent] = outbox.messages()
    assert sent["kind"] == "appointment_confirmation" and sent["attachments"]
    # Sending the old one again once more makes a second new one.
    again = confirm(client, url(CONFIRM_EMAIL, "resend"))
    assert "again2" in again.headers["location"]


def test_one_confirmation_form_posted_twice_sends_again_once(client, store, policy, outbox,
                                                             redis_client):
    """A double click on Confirm (or Back and Confirm again, or a retried POST) posts the
    same form twice: the second is refused while the first copy is still to go out, with
    a link to it, and so is the confirmation page (QA, issue 15: it planned `.again1` and
    `.again2`, and the client got the message twice)."""
    book(store, policy, utcnow())
    fail(store, policy, outbox)
    sign_in(client)
    token = csrf_in(client.get(url(CONFIRM_EMAIL, "resend")).text)
    first = client.post(url(CONFIRM_EMAIL, "resend"), data={"csrf_token": token},
                        follow_redirects=False)
    assert first.status_code == 303
    copy = "appointment_confirmation:a1:booked.again1:email"
    second = client.post(url(CONFIRM_EMAIL, "resend"), data={"csrf_token": token},
                         follow_redirects=False)
    assert second.status_code == 409
    assert f"already planned again as {copy}, not sent yet" in second.text
    assert f'<a href="{url(copy)}">{copy}</a>' in second.text
    form = client.get(url(CONFIRM_EMAIL, "resend"))
    assert form.status_code == 409 and "Confirm" not in form.text
    assert f'<a href="{url(copy)}">{copy}</a>' in form.text
    # Still pending while it is being sent.
    assert store.schedule.begin(copy, utcnow(), lease_s=60).may_send
    assert client.get(url(CONFIRM_EMAIL, "resend")).status_code == 409
    assert notification_ids(store.redis, "*again*") == [copy]
    assert len([a for a in audited(redis_client)
                if a[1].startswith("resend-notification")]) == 1


def test_once_the_copy_has_gone_out_the_notification_can_be_sent_again(
        client, store, policy, outbox):
    """Sending again deliberately after the first copy was sent (or failed, or expired)
    is allowed: the next copy is `.again2`, and sent again from a copy, still `.again{n}`
    of the original."""
    book(store, policy, utcnow())
    fail(store, policy, outbox)
    sign_in(client)
    assert confirm(client, url(CONFIRM_EMAIL, "resend")).status_code == 303
    first = "appointment_confirmation:a1:booked.again1:email"
    fail(store, policy, outbox, first)
    again = confirm(client, url(first, "resend"))
    assert again.status_code == 303
    assert "again2" in again.headers["location"]
    assert deliverer(store, policy, outbox).deliver(
        "appointment_confirmation:a1:booked.again2:email", utcnow()) == "sent"
    third = confirm(client, url(CONFIRM_EMAIL, "resend"))
    assert "again3" in third.headers["location"]


def test_two_resends_at_the_same_moment_plan_one_copy(store, policy, outbox):
    """Posts arriving at once all pass the "nothing pending" check before any writes:
    they then plan the same id (one past the last copy), and the ledger keeps one."""
    from concurrent.futures import ThreadPoolExecutor

    from notifier.console.operations import resend_invite, resend_notification

    now = utcnow()
    book(store, policy, now)
    fail(store, policy, outbox)
    with ThreadPoolExecutor(8) as pool:
        done = list(pool.map(lambda _: resend_notification(store, CONFIRM_EMAIL, now),
                             range(8)))
        invites = list(pool.map(lambda _: resend_invite(store, "a1", now, timedelta(0)),
                                range(8)))
    assert [d.subject for d in done if d.ok] == [
        "appointment_confirmation:a1:booked.again1:email"]
    assert {d.pending for d in done if not d.ok} == {
        "appointment_confirmation:a1:booked.again1:email"}
    assert [d.subject for d in invites if d.ok] == [
        "appointment_confirmation:a1:invite1.seq0:email"]
    assert len(notification_ids(store.redis, "*again*")) == 1
    assert len(notification_ids(store.redis, "*invite*")) == 1


def test_send_again_is_refused_for_a_scheduled_notification(client, store, policy,
                                                           redis_client):
    book(store, policy, utcnow())
    sign_in(client)
    assert "Send again now" not in client.get(url(CONFIRM_SMS)).text
    form = client.get(url(CONFIRM_SMS, "resend"))
    assert form.status_code == 409
    assert "Only a failed or expired notification can be sent again" in form.text
    token = csrf_in(client.get(url(CONFIRM_SMS, "cancel")).text)
    posted = client.post(url(CONFIRM_SMS, "resend"), data={"csrf_token": token})
    assert posted.status_code == 409
    assert not store.redis.exists(notif_key(resend_id(CONFIRM_SMS, 1)))
    assert not [a for a in audited(redis_client) if a[1].startswith("resend")]


def test_send_again_is_refused_once_its_appointment_changed(client, store, policy, outbox,
                                                           redis_client):
    now = utcnow()
    start = book(store, policy, now)
    fail(store, policy, outbox)
    store_and_apply(store, policy, appointment("appointment.rescheduled", "a1", "c1",
                                               start + timedelta(hours=3), now), now)
    sign_in(client)
    form = client.get(url(CONFIRM_EMAIL, "resend"))
    assert form.status_code == 409 and "changed since it was planned" in form.text
    token = csrf_in(form.text)
    posted = client.post(url(CONFIRM_EMAIL, "resend"), data={"csrf_token": token})
    assert posted.status_code == 409
    assert not store.redis.exists(notif_key(resend_id(CONFIRM_EMAIL, 1)))
    assert not [a for a in audited(redis_client) if a[1].startswith("resend")]


def test_the_page_does_not_offer_to_send_again_what_its_appointment_changed(
        client, store, policy, outbox):
    now = utcnow()
    start = book(store, policy, now)
    fail(store, policy, outbox)
    sign_in(client)
    assert "Send again now" in client.get(url(CONFIRM_EMAIL)).text
    store_and_apply(store, policy, appointment("appointment.rescheduled", "a1", "c1",
                                               start + timedelta(hours=3), now), now)
    page = client.get(url(CONFIRM_EMAIL)).text
    assert "Send again now" not in page
    assert "Not offered again: Its appointment was changed since it was planned" in page


# Guards: CSRF and session, for every action ----------------------------------------------
POSTS = [url(CONFIRM_SMS, "cancel"), url(CONFIRM_EMAIL, "resend"), "/console/clients/c1/sms-enable",
         "/console/appointments/a1/resend-invite"]


@pytest.mark.parametrize("path", POSTS)
def test_an_action_without_the_csrf_token_is_403_and_does_nothing(client, store, policy, path,
                                                                  redis_client):
    book(store, policy, utcnow())
    store.set_sms_opt_out(PHONE, True)
    sign_in(client)
    answer = client.post(path, data={"reason": "asked"}, headers=FORM)
    assert answer.status_code == 403
    assert store.notification(CONFIRM_SMS)["state"] == "scheduled"
    assert store.sms_opted_out(PHONE)
    assert not notification_ids(store.redis, "*invite*")
    assert [a for a in audited(redis_client) if a[1] not in ("login", "view")] == []


@pytest.mark.parametrize("path", POSTS)
def test_an_action_without_a_session_is_401(client, store, policy, path):
    book(store, policy, utcnow())
    assert client.get(path).status_code == 401
    assert client.post(path, data={"csrf_token": "x"}).status_code == 401
    assert store.notification(CONFIRM_SMS)["state"] == "scheduled"


@pytest.mark.parametrize("path", POSTS)
def test_an_action_and_its_audit_entry_are_one_write(client, store, policy, outbox, path,
                                                     redis_client, monkeypatch):
    """The entry is appended by the script that makes the change, not by a call after it:
    with the audit log unable to write anything once the form is posted (as when Redis
    goes away right after the change), the action is still done, answered 303 and
    audited, each exactly once (QA, issue 15: 1 to 5 in 1,000 cancels were done, answered
    503 and never audited when Redis was killed between the two calls)."""
    book(store, policy, utcnow())
    fail(store, policy, outbox)
    store.set_sms_opt_out(PHONE, True)
    sign_in(client)
    form = client.get(path)
    assert form.status_code == 200, form.text
    before = len(audited(redis_client))

    def gone(*args: Any) -> str:
        raise AssertionError("the audit log was written after the action")

    monkeypatch.setattr(AuditLog, "record", gone)
    answer = client.post(path, data={"csrf_token": csrf_in(form.text), "reason": "asked"},
                         follow_redirects=False)
    assert answer.status_code == 303, answer.text
    entries = audited(redis_client)[before:]
    assert len(entries) == 1 and entries[0][0] == "ana", entries
    action = {"cancel": "cancel-notification", "resend": "resend-notification",
              "sms-enable": "sms-enable", "resend-invite": "resend-invite"}
    assert entries[0][1].split(":")[0] == action[path.rsplit("/", 1)[1]]


# Re-enable SMS --------------------------------------------------------------------------
def test_re_enable_sms_with_a_reason(client, store, policy, redis_client):
    book(store, policy, utcnow())
    store.set_sms_opt_out(PHONE, True)
    sign_in(client)
    form = client.get("/console/clients/c1/sms-enable")
    assert 'name="reason"' in form.text and "required" in form.text
    answer = confirm(client, "/console/clients/c1/sms-enable",
                     reason="Client called and asked for texts again")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/clients/c1?done=sms-enabled"
    assert not store.sms_opted_out(PHONE)
    [opted_in] = [e for e in outbox_entries(store) if e[1] == "client.opted_in"]
    data = json.loads(opted_in[4])
    assert data["source"] == "operator" and data["client_ids"] == ["c1"]
    assert PHONE not in opted_in[4]  # ids only, never the number
    assert ("ana", "sms-enable: Client called and asked for texts again", "client:c1") in \
        audited(redis_client)
    page = client.get(answer.headers["location"])
    assert '<p class="notice" role="status">SMS re-enabled for this number' in page.text


@pytest.mark.parametrize("reason,why", [("", "the reason is required"),
                                        ("   ", "the reason is required"),
                                        ("x" * (MAX_REASON_CHARS + 1), "200 characters")])
def test_re_enable_sms_wants_a_reason_of_at_most_200_characters(client, store, policy, reason,
                                                               why, redis_client):
    book(store, policy, utcnow())
    store.set_sms_opt_out(PHONE, True)
    sign_in(client)
    form = client.get("/console/clients/c1/sms-enable")
    answer = client.post("/console/clients/c1/sms-enable",
                         data={"csrf_token": csrf_in(form.text), "reason": reason})
    assert answer.status_code == 400
    assert why in answer.text and 'role="alert"' in answer.text
    assert store.sms_opted_out(PHONE)
    assert not [a for a in audited(redis_client) if a[1].startswith("sms-enable")]


@pytest.mark.parametrize("reason,why", [
    ("asked by phone\x00", "U+0000"), ("asked by phone\x1b[2J", "U+001B"),
    ("asked by phone \u202edeggol", "U+202E RIGHT-TO-LEFT OVERRIDE"),
    ("\u200b\u200b", "the reason is required"), ("\u0301", "visible character")])
def test_the_re_enable_reason_keeps_no_control_or_bidi_characters_in_the_audit(
        client, store, policy, redis_client, reason, why):
    """The reason goes into the audit log, kept six years as evidence: NUL, ESC (a
    terminal escape sequence for whoever reads the log with a terminal tool) and U+202E
    (shows what follows it reversed) are refused with the form (400) saying which, as
    the intake refuses them in free text (`intake.text.plain_text`) (QA, issue 15)."""
    book(store, policy, utcnow())
    store.set_sms_opt_out(PHONE, True)
    sign_in(client)
    form = client.get("/console/clients/c1/sms-enable")
    answer = client.post("/console/clients/c1/sms-enable", follow_redirects=False, data={
        "csrf_token": csrf_in(form.text), "reason": reason})
    assert answer.status_code == 400
    assert why in answer.text and 'role="alert"' in answer.text
    assert store.sms_opted_out(PHONE)
    assert not [a for a in audited(redis_client) if a[1].startswith("sms-enable")]


def test_a_reason_typed_on_several_lines_is_kept_on_one(client, store, policy,
                                                      redis_client):
    book(store, policy, utcnow())
    store.set_sms_opt_out(PHONE, True)
    sign_in(client)
    answer = confirm(client, "/console/clients/c1/sms-enable",
                     reason="Client called.\r\n\tAsked\u200b for texts again ")
    assert answer.status_code == 303
    assert ("ana", "sms-enable: Client called. Asked for texts again", "client:c1") in \
        audited(redis_client)


def test_re_enable_sms_is_refused_when_the_number_is_not_opted_out(client, store, policy):
    book(store, policy, utcnow())
    sign_in(client)
    form = client.get("/console/clients/c1/sms-enable")
    assert form.status_code == 409
    assert "not opted out" in form.text
    token = csrf_in(client.get(url(CONFIRM_SMS, "cancel")).text)
    posted = client.post("/console/clients/c1/sms-enable",
                         data={"csrf_token": token, "reason": "asked"})
    assert posted.status_code == 409
    assert [e for e in outbox_entries(store) if e[1] == "client.opted_in"] == []
    assert client.get("/console/clients/nobody/sms-enable").status_code == 409


# Resend the latest invite -----------------------------------------------------------------
def test_resend_the_latest_invite_with_the_current_sequence(client, store, policy, outbox,
                                                           redis_client):
    now = utcnow()
    start = book(store, policy, now)
    moved = start + timedelta(hours=2)
    store_and_apply(store, policy, appointment("appointment.rescheduled", "a1", "c1", moved,
                                               now), now)
    sign_in(client)
    answer = confirm(client, "/console/appointments/a1/resend-invite")
    assert answer.status_code == 303
    new_id = "appointment_updated:a1:invite1.seq1:email"
    assert answer.headers["location"] == ("/console/clients/c1?done=invite-resent&new="
                                          + quote(new_id, safe=""))
    new = store.notification(new_id)
    assert new["state"] == "scheduled" and new["to_id"] == "c1"
    assert json.loads(new["params"])["sequence"] == 1
    assert ("ana", f"resend-invite: as {new_id}", "appointment:a1") in audited(redis_client)
    page = client.get(answer.headers["location"]).text
    assert "The latest calendar invite is planned again" in page
    assert f'<a href="/console/notifications/{quote(new_id, safe="")}">{new_id}</a>' in page
    assert deliverer(store, policy, outbox).deliver(new_id, utcnow()) == "sent"
    [email] = outbox.messages()
    ics = (outbox.directory / email["attachments"][0]).read_text()
    assert "SEQUENCE:1" in ics and "METHOD:REQUEST" in ics
    assert moved.strftime("%Y%m%dT%H%M%SZ") in ics


def test_an_invite_resend_is_refused_while_the_last_one_is_still_to_go_out(
        client, store, policy, outbox, redis_client):
    """The invite's confirmation form posted twice sends once; once that invite has gone
    out, sending it again is allowed."""
    book(store, policy, utcnow())
    sign_in(client)
    path = "/console/appointments/a1/resend-invite"
    token = csrf_in(client.get(path).text)
    assert client.post(path, data={"csrf_token": token},
                       follow_redirects=False).status_code == 303
    first = "appointment_confirmation:a1:invite1.seq0:email"
    second = client.post(path, data={"csrf_token": token}, follow_redirects=False)
    assert second.status_code == 409
    assert f"The invite was already planned again as {first}, not sent yet" in second.text
    assert f'<a href="{url(first)}">{first}</a>' in second.text
    assert client.get(path).status_code == 409
    assert notification_ids(store.redis, "*invite*") == [first]
    assert deliverer(store, policy, outbox).deliver(first, utcnow()) == "sent"
    again = confirm(client, path)
    assert again.status_code == 303
    assert quote("appointment_confirmation:a1:invite2.seq0:email", safe="") in \
        again.headers["location"]
    assert len([a for a in audited(redis_client) if a[1].startswith("resend-invite")]) == 2


def test_resend_invite_is_refused_for_a_cancelled_or_unknown_appointment(client, store,
                                                                         policy):
    now = utcnow()
    book(store, policy, now)
    store_and_apply(store, policy, {"id": "evt-cancel-a1", "type": "appointment.cancelled",
                                    "occurred_at": now.isoformat(),
                                    "data": {"appointment_id": "a1",
                                             "cancelled_by": "client"}}, now)
    assert isinstance(store.load_record("appointment:a1"), AppointmentRecord)
    sign_in(client)
    form = client.get("/console/appointments/a1/resend-invite")
    assert form.status_code == 409 and "This appointment is cancelled" in form.text
    assert client.get("/console/appointments/zz/resend-invite").status_code == 409


def test_resend_invite_is_refused_for_a_client_without_email_or_a_started_visit(
        client, store, policy):
    now = utcnow()
    book(store, policy, now, start_in=timedelta(minutes=-5))
    sign_in(client)
    form = client.get("/console/appointments/a1/resend-invite")
    assert form.status_code == 409 and "already started" in form.text
    later = utcnow()
    no_email = client_upserted("c2", daytime_zone(later), later)
    del no_email["data"]["client"]["email"]
    store_and_apply(store, policy, no_email, later)
    store_and_apply(store, policy, appointment("appointment.scheduled", "a2", "c2",
                                               later + timedelta(days=2), later), later)
    form = client.get("/console/appointments/a2/resend-invite")
    assert form.status_code == 409 and "no email address" in form.text
    token = csrf_in(client.get(url(CONFIRM_SMS)).text)
    posted = client.post("/console/appointments/a2/resend-invite", data={"csrf_token": token})
    assert posted.status_code == 409
    assert notification_ids(store.redis, "*invite*") == []


# The pure decisions -------------------------------------------------------------------------
def test_which_actions_a_notification_allows():
    assert allowed_actions({}) == frozenset()
    assert allowed_actions({"state": "scheduled"}) == {"cancel"}
    assert allowed_actions({"state": "sending"}) == frozenset()
    assert allowed_actions({"state": "failed"}) == {"resend"}
    assert allowed_actions({"state": "expired"}) == {"resend"}
    assert allowed_actions({"state": "sent", "delivery": "undelivered"}) == {"resend"}
    assert allowed_actions({"state": "sent", "delivery": "delivered"}) == frozenset()
    assert allowed_actions({"state": "failed", "retired": "1797000000"}) == frozenset()
    assert allowed_actions({"state": "cancelled"}) == frozenset()
    assert allowed_actions({"state": "failed", "superseded": "superseded"}) == frozenset()
    assert "replaced it" in refusal("resend", {"state": "failed", "superseded": "x"})
    assert refusal("cancel", {"state": "scheduled"}) == ""
    assert "being sent" in refusal("cancel", {"state": "sending"})
    assert "retention" in refusal("resend", {"state": "failed", "retired": "1"})


def booked_in_three_days(store: Store, policy: Any, now: datetime) -> AppointmentRecord:
    """Client c1 and appointment a1, three days after `now`, applied: a1's record."""
    store_and_apply(store, policy, client_upserted("c1", daytime_zone(now), now), now)
    store_and_apply(store, policy, appointment("appointment.scheduled", "a1", "c1",
                                               now + timedelta(days=3), now), now)
    record = store.load_record("appointment:a1")
    assert isinstance(record, AppointmentRecord)
    return record


def test_a_message_about_an_appointment_changed_since_is_not_sent_again(store, policy):
    now = utcnow()
    record = booked_in_three_days(store, policy, now)
    about = {"appointment_id": "a1", "sequence": 0}
    assert appointment_changed("appointment_reminder", {}, None, now) == ""
    assert appointment_changed("appointment_reminder", about, record, now) == ""
    assert "no longer on record" in appointment_changed("appointment_reminder", about, None,
                                                        now)
    moved = record.model_copy(update={"sequence": 1})
    assert "changed since" in appointment_changed("appointment_reminder", about, moved, now)
    cancelled = record.model_copy(update={"status": "cancelled"})
    assert "cancelled now" in appointment_changed("appointment_reminder", about, cancelled,
                                                  now)
    assert appointment_changed("appointment_cancelled", about, cancelled, now) == ""
    assert "is scheduled now" in appointment_changed("appointment_cancelled", about, record,
                                                     now)
    assert "over" in appointment_changed("appointment_reminder", about, record,
                                         now + timedelta(days=4))


def test_the_id_and_expiry_of_a_notification_sent_again():
    assert resend_id("appointment_reminder:a1:72h.20261210T150000Z:sms", 1) == \
        "appointment_reminder:a1:72h.20261210T150000Z.again1:sms"
    assert resend_id("appointment_reminder:a1:72h.X.again1:sms", 2) == \
        "appointment_reminder:a1:72h.X.again2:sms"
    now = utcnow()
    assert resend_expiry(now + timedelta(days=2), now) == now + timedelta(days=2)
    assert resend_expiry(now - timedelta(days=2), now) == now + RESEND_VALID
    assert resend_expiry(now + timedelta(minutes=5), now) == now + RESEND_VALID


def test_the_next_copy_and_the_one_still_pending():
    from notifier.console.allowed import next_copy

    assert next_copy([("x1", ""), ("x2", "")]) == ("", 1)
    assert next_copy([("x1", "sent"), ("x2", "")]) == ("", 2)
    assert next_copy([("x1", "failed"), ("x2", "scheduled"), ("x3", "")]) == ("x2", 3)
    assert next_copy([("x1", "sending"), ("x2", "")]) == ("x1", 2)
    # One no longer kept before the last one kept: one past the last.
    assert next_copy([("x1", ""), ("x2", "expired"), ("x3", "")]) == ("", 3)
    assert next_copy([("x1", "cancelled"), ("x2", "")]) == ("", 2)


def test_reason_rules_and_the_invites_kind(store, policy):
    assert reason_error("asked by phone") == ""
    assert reason_error("") and reason_error("x" * 201)
    assert reason_error(" " + "x" * 200 + " ") == ""
    now = utcnow()
    record = booked_in_three_days(store, policy, now)
    assert invite_kind(record) == "appointment_confirmation"
    assert invite_kind(record.model_copy(update={"sequence": 2})) == "appointment_updated"
