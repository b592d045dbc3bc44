"""Twilio and SendGrid callbacks: signatures, delivery reports, fallbacks, inbound replies.

Requests are signed the way the providers sign them: Twilio's HMAC over the public URL and
the form fields (`RequestValidator.compute_signature`), SendGrid's ECDSA P-256 signature of
timestamp + body with a key made for the test.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from twilio.request_validator import RequestValidator

from notifier.config import Settings
from notifier.errors import ConfigError
from notifier.intake.replies import REPLY_WORDS
from notifier.ledger.store import Store
from notifier.timeutil import utcnow
from notifier.web.app import create_app
from notifier.web.provider_hooks import fresh_timestamp, sendgrid_key
from notifier.worker.actors import build_broker
from tests.kit import appointment, client_upserted, provider_upserted, store_and_apply

TOKEN = "twilio-auth-token"
PUBLIC = "https://notifier.example.org"
PHONE = "+14155550123"
SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
API_TOKEN = "provider-hooks-read-token-0123"
READ = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture(scope="module")
def ecdsa_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_key_b64(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


@pytest.fixture
def settings(ecdsa_key) -> Settings:
    return Settings.from_env({
        "NOTIFIER_WEBHOOK_SECRET": SECRET, "TWILIO_AUTH_TOKEN": TOKEN,
        "NOTIFIER_PUBLIC_URL": PUBLIC, "SENDGRID_WEBHOOK_PUBLIC_KEY": public_key_b64(ecdsa_key),
        "NOTIFIER_API_TOKEN": API_TOKEN,
    }, dotenv=Path("/nonexistent"))


@pytest.fixture
def store(redis_client) -> Store:
    return Store(redis_client)


@pytest.fixture
def http(settings, store, redis_url) -> Iterator[TestClient]:
    with TestClient(create_app(settings, store, build_broker(redis_url))) as client:
        yield client


def twilio_post(http: TestClient, path: str, form: dict[str, str], token: str = TOKEN):
    signature = RequestValidator(token).compute_signature(PUBLIC + path, form)
    return http.post(path, data=form, headers={"X-Twilio-Signature": signature})


def sendgrid_headers(body: str, key: ec.EllipticCurvePrivateKey, timestamp: str | None = None
                     ) -> dict[str, str]:
    timestamp = timestamp or str(int(datetime.now(UTC).timestamp()))
    signature = base64.b64encode(
        key.sign((timestamp + body).encode(), ec.ECDSA(hashes.SHA256()))).decode()
    return {"X-Twilio-Email-Event-Webhook-Signature": signature,
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
            "Content-Type": "application/json"}


def sendgrid_post(http: TestClient, events: list[dict], key: ec.EllipticCurvePrivateKey,
                  tamper: bool = False, timestamp: str | None = None):
    body = json.dumps(events)
    sent = body.replace("delivered", "bounce") if tamper else body
    return http.post("/sendgrid/events", content=sent,
                     headers=sendgrid_headers(body, key, timestamp))


def booked(store: Store, policy, *, sms: bool = True, email: bool = True) -> None:
    now = utcnow()
    store_and_apply(store, policy, client_upserted("c1", "America/New_York", now, sms=sms,
                                                   email=email), now)
    store_and_apply(store, policy, provider_upserted("prov-1", now), now)
    store_and_apply(store, policy, appointment("appointment.scheduled", "a1", "c1",
                                               now + timedelta(days=10), now), now)


def sent(store: Store, notification_id: str) -> None:
    begun = store.schedule.begin(notification_id, utcnow() + timedelta(days=1), lease_s=60)
    if begun.may_send:  # a join link is not due yet: left `scheduled` (as it always was)
        store.schedule.finish(notification_id, "sent", lease=begun.lease,
                              sent_at=utcnow().timestamp())


SMS_ID = "appointment_confirmation:a1:booked:sms"
EMAIL_ID = "appointment_confirmation:a1:booked:email"


def shown(http: TestClient, notification_id: str) -> dict:
    notes = http.get("/v1/clients/c1/notifications", headers=READ).json()["notifications"]
    return {n["id"]: n for n in notes}[notification_id]


# Twilio status callbacks -----------------------------------------------------------------

def test_a_valid_twilio_status_callback_records_delivery(http, store, policy):
    booked(store, policy)
    sent(store, SMS_ID)
    answer = twilio_post(http, f"/twilio/status?n={SMS_ID}",
                         {"MessageSid": "SM1", "MessageStatus": "delivered"})
    assert answer.status_code == 204
    assert shown(http, SMS_ID)["state"] == "delivered"


def test_a_status_callback_before_the_send_is_recorded_still_ends_right(http, store, policy):
    booked(store, policy)
    lease = store.schedule.begin(SMS_ID, utcnow() + timedelta(days=1), lease_s=60).lease
    twilio_post(http, f"/twilio/status?n={SMS_ID}",
                {"MessageSid": "SM1", "MessageStatus": "delivered"})
    store.schedule.finish(SMS_ID, "sent", lease=lease, sent_at=utcnow().timestamp())
    assert shown(http, SMS_ID)["state"] == "delivered"
    # A late `sent` report does not move it back.
    twilio_post(http, f"/twilio/status?n={SMS_ID}", {"MessageSid": "SM1",
                                                      "MessageStatus": "sent"})
    assert shown(http, SMS_ID)["state"] == "delivered"


def test_undelivered_records_the_code_and_the_number_that_opted_out(http, store, policy):
    booked(store, policy)
    sent(store, SMS_ID)
    twilio_post(http, f"/twilio/status?n={SMS_ID}",
                {"MessageSid": "SM1", "MessageStatus": "undelivered", "ErrorCode": "21610"})
    view = shown(http, SMS_ID)
    assert (view["state"], view["code"]) == ("failed", "21610")
    assert store.sms_opted_out(PHONE)


def test_an_sms_only_message_that_fails_goes_by_email(http, store, policy):
    now = utcnow()
    store_and_apply(store, policy, client_upserted("c1", "America/New_York", now), now)
    store_and_apply(store, policy, appointment("appointment.scheduled", "a1", "c1",
                                               now + timedelta(days=10), now,
                                               join_url="https://v.example.com/r/1"), now)
    join = next(n for n in store.notifications_for("client", "c1")
                if n.kind == "appointment_join_link")
    sent(store, join.id)
    twilio_post(http, f"/twilio/status?n={join.id}",
                {"MessageSid": "SM1", "MessageStatus": "failed", "ErrorCode": "30005"})
    sibling = store.notification(join.id.rsplit(":", 1)[0] + ":email")
    assert sibling["state"] == "scheduled"
    assert sibling["reason"] == "instead of sms: sms failed (30005)"


def test_unknown_ids_are_recorded_and_ignored(http, store):
    answer = twilio_post(http, "/twilio/status?n=nope",
                         {"MessageSid": "SM9", "MessageStatus": "delivered"})
    assert answer.status_code == 204
    [kept] = store.redis.lrange("n:callbacks:unknown", 0, -1)
    assert json.loads(kept)["id"] == "nope"


@pytest.mark.parametrize("path", ["/twilio/status?n=x", "/twilio/inbound"])
def test_twilio_routes_refuse_bad_signatures(http, store, path):
    form = {"MessageSid": "SM1", "MessageStatus": "delivered", "From": PHONE, "Body": "STOP"}
    assert twilio_post(http, path, form, token="wrong-token").status_code == 403
    assert http.post(path, data=form).status_code == 403  # unsigned
    signature = RequestValidator(TOKEN).compute_signature(PUBLIC + path, form)
    tampered = {**form, "Body": "START"}
    assert http.post(path, data=tampered,
                     headers={"X-Twilio-Signature": signature}).status_code == 403
    assert not store.sms_opted_out(PHONE)
    assert store.redis.llen("n:callbacks:unknown") == 0


def test_without_a_twilio_token_nothing_can_be_verified(store, redis_url):
    settings = Settings.from_env({"NOTIFIER_WEBHOOK_SECRET": SECRET},
                                 dotenv=Path("/nonexistent"))
    with TestClient(create_app(settings, store, build_broker(redis_url))) as client:
        form = {"MessageSid": "SM1", "MessageStatus": "delivered"}
        signature = RequestValidator(TOKEN).compute_signature(PUBLIC + "/twilio/status", form)
        answer = client.post("/twilio/status", data=form,
                             headers={"X-Twilio-Signature": signature})
        assert answer.status_code == 403


# SendGrid events -------------------------------------------------------------------------

def test_a_signed_sendgrid_batch_records_delivery_and_bounces(http, store, policy, ecdsa_key):
    booked(store, policy, sms=False)
    sent(store, EMAIL_ID)
    answer = sendgrid_post(http, [
        {"event": "processed", "notification_id": EMAIL_ID},
        {"event": "delivered", "notification_id": EMAIL_ID},
        {"event": "delivered", "notification_id": "unknown-id"},
    ], ecdsa_key)
    assert answer.status_code == 204
    assert shown(http, EMAIL_ID)["state"] == "delivered"
    assert store.redis.llen("n:callbacks:unknown") == 1


def test_a_bounce_fails_the_email_and_sms_is_not_added_when_planned(http, store, policy,
                                                                    ecdsa_key):
    booked(store, policy)
    sent(store, EMAIL_ID)
    sendgrid_post(http, [{"event": "bounce", "notification_id": EMAIL_ID, "status": "5.1.1"}],
                  ecdsa_key)
    view = shown(http, EMAIL_ID)
    assert (view["state"], view["code"]) == ("failed", "5.1.1")
    # The SMS twin was planned from the start: nothing new is added.
    assert store.notification(SMS_ID)["reason"] == ""


def test_a_tampered_or_unsigned_sendgrid_batch_is_refused(http, store, policy, ecdsa_key):
    booked(store, policy)
    sent(store, EMAIL_ID)
    events = [{"event": "delivered", "notification_id": EMAIL_ID}]
    assert sendgrid_post(http, events, ecdsa_key, tamper=True).status_code == 403
    assert http.post("/sendgrid/events", json=events).status_code == 403
    other = ec.generate_private_key(ec.SECP256R1())
    assert sendgrid_post(http, events, other).status_code == 403
    assert shown(http, EMAIL_ID)["state"] == "sent"


def test_a_signed_sendgrid_body_nested_too_deep_is_400_not_500(http, store, ecdsa_key):
    # Found while fuzzing the callbacks: json.loads raised RecursionError, answered 500.
    body = "[" * 20_000 + "]" * 20_000
    answer = http.post("/sendgrid/events", content=body,
                       headers=sendgrid_headers(body, ecdsa_key))
    assert (answer.status_code, answer.json()) == (400, {"error": "not JSON"})


def test_a_signed_sendgrid_event_with_a_lone_surrogate_is_skipped_not_500(http, store, policy,
                                                                         ecdsa_key):
    # Found while fuzzing the callbacks: a "\ud800" escape could not be encoded for Redis
    # (UnicodeEncodeError), answered 500.
    booked(store, policy, sms=False)
    sent(store, EMAIL_ID)
    answer = sendgrid_post(http, [
        {"event": "bounce", "notification_id": "\ud800"},
        {"event": "bounce", "notification_id": EMAIL_ID, "status": "\udfff"},
        {"event": "delivered", "notification_id": EMAIL_ID},
    ], ecdsa_key)
    assert answer.status_code == 204
    assert shown(http, EMAIL_ID)["state"] == "delivered", "the others in the batch count"
    assert store.redis.llen("n:callbacks:unknown") == 0


def sendgrid_time(offset: timedelta) -> str:
    return str(int((datetime.now(UTC) + offset).timestamp()))


@pytest.mark.parametrize("offset", [timedelta(minutes=-11), timedelta(minutes=11),
                                    timedelta(days=-30)])
def test_a_validly_signed_sendgrid_batch_with_a_stale_timestamp_is_refused(
        http, store, policy, ecdsa_key, offset):
    booked(store, policy)
    sent(store, EMAIL_ID)
    events = [{"event": "delivered", "notification_id": EMAIL_ID}]
    answer = sendgrid_post(http, events, ecdsa_key, timestamp=sendgrid_time(offset))
    assert answer.status_code == 403
    assert answer.json() == {"error": "stale timestamp"}
    assert shown(http, EMAIL_ID)["state"] == "sent"


@pytest.mark.parametrize("spelled", ["{}.0", "{}.9", "{}e0", "+{}", "{:_}"])
def test_a_sendgrid_timestamp_that_is_not_plain_digits_is_refused(http, store, policy,
                                                                  ecdsa_key, spelled):
    booked(store, policy)
    sent(store, EMAIL_ID)
    events = [{"event": "delivered", "notification_id": EMAIL_ID}]
    timestamp = spelled.format(int(datetime.now(UTC).timestamp()))
    assert sendgrid_post(http, events, ecdsa_key, timestamp=timestamp).status_code == 403
    assert shown(http, EMAIL_ID)["state"] == "sent"


@pytest.mark.parametrize("offset", [timedelta(minutes=-9), timedelta(minutes=9)])
def test_a_sendgrid_timestamp_within_10_minutes_is_accepted(http, store, policy, ecdsa_key,
                                                            offset):
    booked(store, policy)
    sent(store, EMAIL_ID)
    events = [{"event": "delivered", "notification_id": EMAIL_ID}]
    answer = sendgrid_post(http, events, ecdsa_key, timestamp=sendgrid_time(offset))
    assert answer.status_code == 204
    assert shown(http, EMAIL_ID)["state"] == "delivered"


@pytest.mark.parametrize(("skew_s", "fresh"), [
    (0, True), (600, True), (-600, True), (601, False), (-601, False),
])
def test_fresh_timestamp_allows_10_minutes_either_way(skew_s, fresh):
    now = datetime(2030, 3, 4, 12, 0, tzinfo=UTC)
    assert fresh_timestamp(str(int(now.timestamp()) + skew_s), now) is fresh


def test_a_malformed_sendgrid_public_key_stops_start_up():
    bad = Settings.from_env({"SENDGRID_WEBHOOK_PUBLIC_KEY": "not-a-key"},
                            dotenv=Path("/nonexistent"))
    with pytest.raises(ConfigError, match="^SENDGRID_WEBHOOK_PUBLIC_KEY"):
        sendgrid_key(bad)


# Inbound SMS -----------------------------------------------------------------------------

def inbound(http: TestClient, body: str, sender: str = PHONE):
    return twilio_post(http, "/twilio/inbound",
                       {"From": sender, "Body": body, "MessageSid": "SMin1"})


@pytest.mark.parametrize("word", ["STOP", "stop", " Stop ", "STOPALL", "UNSUBSCRIBE",
                                  "cancel", "END", "quit", "Revoke", "OPTOUT"])
def test_twilios_own_opt_out_words_opt_out_without_an_answer_of_ours(http, store, word):
    # Twilio blocks the number and confirms by itself; an answer of ours would be refused.
    answer = inbound(http, word)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/xml")
    assert "<Message>" not in answer.text
    assert store.sms_opted_out(PHONE)
    back = inbound(http, "start")
    assert "you will get our texts again" in back.text
    assert not store.sms_opted_out(PHONE)


@pytest.mark.parametrize("word", ["YES", "UNSTOP"])
def test_other_opt_in_words(http, store, word):
    store.set_sms_opt_out(PHONE, True)
    inbound(http, word)
    assert not store.sms_opted_out(PHONE)


def test_a_sentence_with_stop_in_it_is_not_an_opt_out(http, store):
    answer = inbound(http, "please stop by tomorrow")
    assert not store.sms_opted_out(PHONE)
    assert "use the portal" in answer.text


@pytest.mark.parametrize("word", ["HELP", "info"])
def test_help_answers_with_the_practice_and_how_to_stop(http, word):
    answer = inbound(http, word)
    assert "Riverbend Health" in answer.text and "+1 555 0100" in answer.text
    assert "Reply STOP to opt out" in answer.text


def test_c_confirms_the_next_appointment_in_the_read_api(http, store, policy):
    booked(store, policy)
    answer = inbound(http, "c")
    assert "is confirmed" in answer.text
    [appt] = http.get("/v1/clients/c1/notifications", headers=READ).json()["appointments"]
    assert appt["id"] == "a1" and appt["confirmed_at"] is not None


def test_r_tells_support_the_client_wants_to_reschedule(http, store, policy):
    booked(store, policy)
    answer = inbound(http, "R")
    assert "support team will contact you" in answer.text
    alert = store.notification("reschedule_request:c1:SMin1:email")
    assert (alert["state"], alert["to"]) == ("scheduled", "support")


def test_the_same_r_posted_twice_is_announced_once(http, store, policy):
    """Twilio may post one inbound SMS again: the support alert is planned once (its id
    has the SID) and `appointment.reschedule_requested` recorded once, so a receiver
    never gets the same change under two webhook-ids (found by QA)."""
    from tests.ledger_keys import outbox_entries

    booked(store, policy)
    inbound(http, "R")
    inbound(http, "R")
    requested = [e for e in outbox_entries(store.redis, store.keys)
                 if e.type == "appointment.reschedule_requested"]
    assert len(requested) == 1
    assert requested[0].payload()["data"] == {
        "sequence": requested[0].sequence, "appointment_id": "a1", "client_id": "c1",
        "provider_id": "prov-1", "source": "sms_reply"}


def test_c_from_an_unknown_number_or_without_appointments(http, store, policy):
    assert "could not match this number" in inbound(http, "C", sender="+14155550199").text
    now = utcnow()
    store_and_apply(store, policy, client_upserted("c1", "America/New_York", now), now)
    assert "no upcoming appointment" in inbound(http, "C").text


# Opt-out words as people type them (issue 10, item 4). A table that grows: each row is a
# reply as typed and whether it must be answered in Spanish. None of these is one of
# Twilio's own keywords sent exactly, so Twilio neither blocks nor confirms: we confirm.
TYPED_OPT_OUTS = [
    ("Opt out", "en"), ("opt-out", "en"), ("OPT-OUT", "en"), ("stop?", "en"), ('"STOP"', "en"),
    ("Stop 🛑", "en"), ("\u201cStop\u201d", "en"), ("ＳＴＯＰ", "en"), ("s\u200btop", "en"),
    ("stop \u270b\ufe0f", "en"), ("Stop all!", "en"), ("End.", "en"),
    ("Parar", "es"), ("Cancelar", "es"), ("Baja", "es"), ("¡Alto!", "es"), ("BAJA 🙏", "es"),
]


@pytest.mark.parametrize(("typed", "locale"), TYPED_OPT_OUTS)
def test_opt_out_words_as_people_type_them_opt_out_and_are_confirmed(http, store, typed,
                                                                     locale):
    answer = inbound(http, typed)
    assert answer.status_code == 200
    assert store.sms_opted_out(PHONE)
    assert "cannot take messages" not in answer.text
    expected = {"en": "you will get no more texts from us. Reply START",
                "es": "no le enviaremos mas mensajes. Responda INICIO"}[locale]
    assert expected in answer.text


@pytest.mark.parametrize(("typed", "expected"), [
    ("START", "you will get our texts again"), ("yes!", "you will get our texts again"),
    ("Un-stop", "you will get our texts again"), ("Inicio", "volvera a recibir"),
    ("ALTA", "volvera a recibir"), ("Sí", "volvera a recibir"), ("si", "volvera a recibir"),
])
def test_opt_in_words_as_people_type_them(http, store, typed, expected):
    store.set_sms_opt_out(PHONE, True)
    assert expected in inbound(http, typed).text
    assert not store.sms_opted_out(PHONE)


@pytest.mark.parametrize("row", REPLY_WORDS, ids=lambda w: w.word)
def test_every_word_of_the_table_is_acted_on(http, store, policy, row):
    booked(store, policy)
    store.set_sms_opt_out(PHONE, row.action == "opt_in")
    answer = inbound(http, row.word.lower())
    assert answer.status_code == 200 and "cannot take messages" not in answer.text
    assert store.sms_opted_out(PHONE) is (row.action == "opt_out")


def test_help_in_spanish_for_ayuda_or_a_spanish_speaking_client(http, store, policy):
    assert "Ayuda: +1 555 0100" in inbound(http, "¿Ayuda?").text
    now = utcnow()
    store_and_apply(store, policy, client_upserted("c1", "America/New_York", now, locale="es"),
                    now)
    answer = inbound(http, "HELP").text
    assert "recordatorios de citas" in answer and "Responda STOP para darse de baja" in answer


@pytest.mark.parametrize("typed", ["c", "C.", "'C'", "Ｃ", "c 👍"])
def test_our_confirm_keyword_as_people_type_it(http, store, policy, typed):
    booked(store, policy)
    assert "is confirmed" in inbound(http, typed).text
    assert not store.sms_opted_out(PHONE)


def test_a_spanish_speaking_client_is_answered_in_spanish(http, store, policy):
    now = utcnow()
    store_and_apply(store, policy, client_upserted("c1", "America/New_York", now, locale="es"),
                    now)
    assert "no encontramos ninguna cita" in inbound(http, "C").text
    assert "este numero no recibe mensajes" in inbound(http, "hola").text


# A phone shared by a family (issue 10, item 5) -------------------------------------------

def family(store: Store, policy, *, child_appointment: timedelta | None = None,
           parent_name: str = "Maria") -> datetime:
    """Parent and child share PHONE; the child was upserted last; the parent has an
    appointment in 10 days, the child one after `child_appointment` if given."""
    now = utcnow()
    store_and_apply(store, policy, client_upserted("parent", "America/New_York", now,
                                                   first_name=parent_name), now)
    store_and_apply(store, policy, provider_upserted("prov-1", now), now)
    store_and_apply(store, policy, appointment("appointment.scheduled", "a-parent", "parent",
                                               now + timedelta(days=10), now), now)
    later = now + timedelta(seconds=1)
    store_and_apply(store, policy, client_upserted("child", "America/New_York", later,
                                                   first_name="Leo"), later)
    if child_appointment is not None:
        store_and_apply(store, policy, appointment("appointment.scheduled", "a-child", "child",
                                                   now + child_appointment, later), later)
    return now


def appointments(http: TestClient, client_id: str) -> dict[str, dict]:
    shown = http.get(f"/v1/clients/{client_id}/notifications", headers=READ).json()
    return {a["id"]: a for a in shown["appointments"]}


def test_c_from_a_shared_phone_confirms_the_parents_appointment_and_says_whose(
        http, store, policy):
    family(store, policy)
    answer = inbound(http, "C").text
    assert "Maria's appointment on" in answer and "is confirmed" in answer
    assert appointments(http, "parent")["a-parent"]["confirmed_at"] is not None


def test_the_name_in_a_reply_keeps_to_gsm7_like_any_sms(http, store, policy):
    family(store, policy, parent_name="María 🌻")
    answer = inbound(http, "C").text
    assert "Maria's appointment on" in answer and "🌻" not in answer


def test_r_from_a_shared_phone_reschedules_the_parents_appointment_and_says_whose(
        http, store, policy):
    family(store, policy)
    answer = inbound(http, "R").text
    assert "support team will contact you" in answer and "Maria's appointment on" in answer
    alert = store.notification("reschedule_request:parent:SMin1:email")
    assert (alert["state"], alert["to"]) == ("scheduled", "support")
    assert json.loads(alert["params"])["appointment_id"] == "a-parent"


def test_c_from_a_shared_phone_confirms_the_soonest_appointment_of_the_family(
        http, store, policy):
    family(store, policy, child_appointment=timedelta(days=3))
    assert "Leo's appointment on" in inbound(http, "C").text
    assert appointments(http, "child")["a-child"]["confirmed_at"] is not None
    assert appointments(http, "parent")["a-parent"]["confirmed_at"] is None


def test_stop_from_a_shared_phone_opts_out_the_number_the_whole_family_has(http, store,
                                                                           policy):
    family(store, policy)
    inbound(http, "Stop 🛑")
    assert [c.client.id for c in store.clients_for_phone(PHONE)] == ["child", "parent"]
    assert store.sms_opted_out(PHONE)  # kept per number, which every client of it has
