"""Templates and invites: every template renders, SMS stay within 2 segments and carry no
clinical detail, every client email ends with the emergency line, invites are well formed."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, available_timezones

import pytest
from icalendar import Calendar
from jinja2 import meta

from notifier.config import PROJECT_ROOT, Settings
from notifier.delivery.channels.calendar import Invite, build_invite, invite_uid
from notifier.delivery.compose import INVITE_METHODS, STAFF_KINDS, Stored, compose_client_message
from notifier.delivery.preview import (
    SAMPLE_PRESCRIPTION,
    SAMPLE_PROVIDER,
    preview,
    sample_client,
    sample_stored,
)
from notifier.delivery.render import Renderer, text_to_html, zone_label
from notifier.delivery.sms_text import is_gsm7, measure, normalise
from notifier.errors import TemplateError
from notifier.ledger.records import ClientRecord

EMERGENCY = {
    "en": "If you are in immediate danger, call 911 or your local emergency number.",
    "es": "Si está en peligro inmediato, llame al 911 o al número de emergencias local.",
}
#: Words no SMS may carry (no medication, diagnosis, dosage or psychiatry), checked
#: case-insensitively.
CLINICAL_WORDS = ("psychiatr", "medication", "prescription", "dosage", "diagnos", " mg")
START = datetime(2026, 12, 14, 15, 30, tzinfo=UTC)
NOW = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(PROJECT_ROOT / "templates")


TEMPLATES = Renderer(PROJECT_ROOT / "templates")
CLIENT_SMS = [k for k in TEMPLATES.kinds("sms") if k not in STAFF_KINDS]
CLIENT_EMAIL = [k for k in TEMPLATES.kinds("email") if k not in STAFF_KINDS]
LOCALES = ("en", "es")
#: The longest first name the schema allows makes the worst case for SMS length; accents
#: outside GSM-7 would make it UCS-2.
LONGEST_NAME = ("María-Josefína Úrsula " * 5)[:100]
#: A Saturday ("sáb" in Spanish) in September, the longest month name in both locales.
SATURDAY = datetime(2026, 9, 26, 14, 30, tzinfo=UTC)


def client(locale: str = "en", zone: str = "America/New_York") -> ClientRecord:
    record = sample_client(locale, first_name=LONGEST_NAME)
    return record.model_copy(update={"client": record.client.model_copy(
        update={"timezone": zone})})


def stored(kind: str, channel: str, **params: object) -> Stored:
    fixed: dict[str, object] = {"start": START.isoformat(),
                                "end": (START + timedelta(minutes=30)).isoformat(),
                                "change_by": (START - timedelta(hours=24)).isoformat()}
    return sample_stored(kind, channel, **{**fixed, **params})


def settings(**env: str) -> Settings:
    return Settings.from_env({"NOTIFIER_PRACTICE_NAME": "Riverbend Health Partners", **env},
                             dotenv=Path("/nonexistent"))


@pytest.mark.parametrize("kind", CLIENT_SMS)
@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("change_by", [True, False])
@pytest.mark.parametrize("start", [START, SATURDAY])
def test_every_client_sms_fits_two_segments_and_names_nothing_clinical(renderer, kind, locale,
                                                                      change_by, start):
    n = stored(kind, "sms", start=start.isoformat(),
               runout=start.date().isoformat(), book_by=start.date().isoformat(),
               **({} if change_by else {"change_by": None}))
    message = compose_client_message(n, client(locale), SAMPLE_PROVIDER,
                                     settings(NOTIFIER_EMAIL_SHOWS_MEDICATION="true"), renderer,
                                     NOW, prescription=SAMPLE_PRESCRIPTION)
    assert message.sms == measure(message.body)
    assert message.sms.segments <= 2, (kind, message.sms, message.body)
    assert message.sms.encoding == "GSM-7", message.body
    assert "Riverbend Health Partners" in message.body
    lowered = message.body.lower()
    assert not any(word in lowered for word in CLINICAL_WORDS), message.body
    assert "sertraline" not in lowered
    assert "  " not in message.body and "\n" not in message.body
    assert "CANCEL" not in message.body.upper().replace("CANCELLED", "").replace(
        "CANCELADA", "")


@pytest.mark.parametrize("kind", TEMPLATES.kinds("sms"))
def test_no_sms_template_can_even_refer_to_the_medication(kind):
    for locale in LOCALES:
        path = PROJECT_ROOT / "templates" / "sms" / f"{kind}.{locale}.txt"
        if path.exists():
            names = meta.find_undeclared_variables(TEMPLATES.env.parse(path.read_text()))
            assert "medication" not in names, path


@pytest.mark.parametrize("kind", CLIENT_EMAIL)
@pytest.mark.parametrize("locale", LOCALES)
def test_every_client_email_ends_with_the_emergency_line(renderer, kind, locale):
    message = compose_client_message(stored(kind, "email"), client(locale), SAMPLE_PROVIDER,
                                     settings(), renderer, NOW,
                                     prescription=SAMPLE_PRESCRIPTION)
    assert message.body.rstrip().endswith(EMERGENCY[locale])
    assert EMERGENCY[locale] in (message.html or "")
    assert message.subject and "\n" not in message.subject
    assert not any(word in message.subject.lower() for word in CLINICAL_WORDS)
    assert "sertraline" not in message.body.lower()
    assert ("invite.ics" in [a.filename for a in message.attachments]) == (kind in INVITE_METHODS)


@pytest.mark.parametrize("kind", ["refill_due", "visit_required"])
def test_email_names_the_medication_only_when_the_practice_allows(renderer, kind):
    shown = compose_client_message(stored(kind, "email"), client(), SAMPLE_PROVIDER,
                                   settings(NOTIFIER_EMAIL_SHOWS_MEDICATION="on"), renderer, NOW,
                                   prescription=SAMPLE_PRESCRIPTION)
    assert "Sertraline 50 mg" in shown.body
    assert "Sertraline" not in (shown.subject or "")


@pytest.mark.parametrize("kind", sorted(STAFF_KINDS))
def test_staff_messages_render_with_ids_not_contact_details(kind):
    text = preview(settings(), kind, "en", None)
    assert "client-1" in text
    assert "+14155550123" not in text and "ana@example.com" not in text
    if kind in TEMPLATES.kinds("sms"):
        sms = preview(settings(), kind, "en", "sms").split("\n", 1)[1]
        assert measure(sms).segments <= 2, sms


def test_times_are_written_in_the_clients_zone(renderer):
    message = compose_client_message(stored("appointment_reminder", "sms"), client(),
                                     SAMPLE_PROVIDER, settings(), renderer, NOW)
    assert "Mon, Dec 14 at 10:30 AM EST" in message.body
    assert "Sun, Dec 13 at 10:30 AM EST" in message.body  # change-by, start - 24 h


#: Issue 10 item 6: one zone rule for every locale, across a DST change. (zone, instant,
#: English, Spanish): CLDR's abbreviation where it has one, else the zone's city; never an
#: offset such as "+0000".
ZONE_TIMES = [
    ("Europe/London", datetime(2026, 3, 28, 8, 37, tzinfo=UTC),
     "Sat, Mar 28 at 8:37 AM GMT", "sáb 28 de mar, 8:37 GMT"),
    ("Europe/London", datetime(2026, 3, 30, 8, 37, tzinfo=UTC),  # BST from Mar 29
     "Mon, Mar 30 at 9:37 AM BST", "lun 30 de mar, 9:37 BST"),
    ("America/New_York", datetime(2026, 3, 7, 15, 0, tzinfo=UTC),
     "Sat, Mar 7 at 10:00 AM EST", "sáb 7 de mar, 10:00 EST"),
    ("America/New_York", datetime(2026, 3, 9, 15, 0, tzinfo=UTC),  # EDT from Mar 8
     "Mon, Mar 9 at 11:00 AM EDT", "lun 9 de mar, 11:00 EDT"),
    ("America/New_York", datetime(2026, 11, 2, 15, 0, tzinfo=UTC),  # EST again from Nov 1
     "Mon, Nov 2 at 10:00 AM EST", "lun 2 de nov, 10:00 EST"),
    ("Europe/Madrid", datetime(2026, 3, 30, 8, 0, tzinfo=UTC),
     "Mon, Mar 30 at 10:00 AM CEST", "lun 30 de mar, 10:00 CEST"),
    # Dublin's winter is its negative daylight saving in the tz database: still GMT.
    ("Europe/Dublin", datetime(2026, 1, 15, 9, 0, tzinfo=UTC),
     "Thu, Jan 15 at 9:00 AM GMT", "jue 15 de ene, 9:00 GMT"),
    ("Europe/Dublin", datetime(2026, 7, 15, 9, 0, tzinfo=UTC),
     "Wed, Jul 15 at 10:00 AM IST", "mié 15 de jul, 10:00 IST"),
    # No CLDR abbreviation: the city, in the message's language, folded into GSM-7.
    ("America/Bogota", datetime(2026, 3, 9, 15, 0, tzinfo=UTC),
     "Mon, Mar 9 at 10:00 AM Bogota Time", "lun 9 de mar, 10:00 hora de Bogota"),
    ("Asia/Tokyo", datetime(2026, 3, 9, 1, 0, tzinfo=UTC),
     "Mon, Mar 9 at 10:00 AM Tokyo Time", "lun 9 de mar, 10:00 hora de Tokio"),
    # A fixed-offset zone has no city: its offset, with the sign the clock has (IANA's
    # Etc/GMT+9 is nine hours behind UTC; Babel would say "GMT+9").
    ("Etc/GMT+9", datetime(2026, 3, 9, 19, 0, tzinfo=UTC),
     "Mon, Mar 9 at 10:00 AM UTC-9", "lun 9 de mar, 10:00 UTC-9"),
    ("Etc/GMT-14", datetime(2026, 3, 9, 20, 0, tzinfo=UTC),
     "Tue, Mar 10 at 10:00 AM UTC+14", "mar 10 de mar, 10:00 UTC+14"),
]


@pytest.mark.parametrize(("zone", "start", "english", "spanish"), ZONE_TIMES)
def test_times_name_the_zone_one_way_in_every_locale(renderer, zone, start, english, spanish):
    for locale, written in (("en", english), ("es", spanish)):
        n = stored("appointment_confirmation", "sms", start=start.isoformat())
        message = compose_client_message(n, client(locale, zone), SAMPLE_PROVIDER, settings(),
                                         renderer, NOW)
        assert normalise(written) in message.body, message.body
        assert not re.search(r"[+-]\d{4}\b", message.body), message.body


def test_every_zone_has_a_label_and_it_is_gsm7():
    instants = (datetime(2026, 1, 15, 12, tzinfo=UTC), datetime(2026, 7, 15, 12, tzinfo=UTC))
    for key in sorted(available_timezones()):
        for locale in LOCALES:
            for instant in instants:
                label = normalise(zone_label(instant, ZoneInfo(key), locale))
                assert label and is_gsm7(label), (key, locale, label)
                assert not re.fullmatch(r"[+-]\d{4}", label), (key, locale, label)
                # Etc/GMT+N is N hours behind UTC: never named "GMT+N".
                assert not re.search(r"GMT[+-]\d", label), (key, locale, label)


@pytest.mark.parametrize("locale", LOCALES)
def test_a_late_cancellation_says_a_fee_may_apply_in_sms_and_email(renderer, locale):
    says = {"en": "late-cancellation fee may apply",
            "es": "cargo por cancelación tardía"}[locale]
    for channel in ("sms", "email"):
        late = compose_client_message(stored("appointment_cancelled", channel, late_fee=True),
                                      client(locale), SAMPLE_PROVIDER, settings(), renderer, NOW)
        on_time = compose_client_message(stored("appointment_cancelled", channel),
                                         client(locale), SAMPLE_PROVIDER, settings(), renderer,
                                         NOW)
        folded = normalise(says) if channel == "sms" else says
        assert folded in late.body and folded not in on_time.body


def test_a_reminder_inside_the_late_window_does_not_offer_a_fee_free_change(renderer):
    message = compose_client_message(stored("appointment_reminder", "sms", change_by=None),
                                     client(), SAMPLE_PROVIDER, settings(), renderer, NOW)
    assert "avoid a late fee" not in message.body
    assert "late fee may apply" in message.body


def test_a_locale_without_templates_falls_back_to_english(renderer):
    assert "booked" in renderer.sms("appointment_confirmation", "fr", {
        "practice_name": "P", "first_name": "A", "start_local": "x", "join_url": None,
        "practice_phone": "1"})


def test_missing_template_and_missing_variable_raise_template_error(renderer, tmp_path):
    with pytest.raises(TemplateError, match="no sms template"):
        renderer.sms("no_such_kind", "en", {})
    with pytest.raises(TemplateError, match="appointment_confirmation"):
        renderer.sms("appointment_confirmation", "en", {})
    with pytest.raises(TemplateError, match="does not exist"):
        Renderer(tmp_path / "missing")


def test_a_provider_we_do_not_know_is_named_in_the_clients_language(renderer):
    message = compose_client_message(stored("appointment_reminder", "email"), client("es"),
                                     None, settings(), renderer, NOW)
    assert "su profesional de salud" in message.body
    assert "your provider" not in message.body


def test_html_part_escapes_and_links():
    html = text_to_html("Hi <b>Ana</b>,\n\nJoin at https://video.example.com/r/1 now")
    assert "&lt;b&gt;Ana&lt;/b&gt;" in html
    assert '<a href="https://video.example.com/r/1">https://video.example.com/r/1</a>' in html


def test_invite_is_well_formed_and_stable():
    invite = Invite(appointment_id="a1", start=START, end=START + timedelta(minutes=30),
                    sequence=3, method="CANCEL", organizer_email="reminders@practice.example",
                    organizer_name="Riverbend", attendee_email="ana@example.com",
                    attendee_name="Ana", summary="Appointment with Riverbend",
                    description="Questions: +1 555 0100")
    cal = Calendar.from_ical(build_invite(invite, NOW))
    [event] = cal.walk("VEVENT")
    assert str(cal["METHOD"]) == "CANCEL"
    assert str(event["UID"]) == invite_uid("a1", "reminders@practice.example") == (
        "appointment-a1@practice.example")
    assert int(event["SEQUENCE"]) == 3
    assert event.decoded("DTSTART") == START and event.decoded("DTSTAMP") == NOW
    assert str(event["ORGANIZER"]) == "mailto:reminders@practice.example"
    assert str(event["ATTENDEE"]) == "mailto:ana@example.com"
    assert str(event["STATUS"]) == "CANCELLED"
    assert build_invite(invite, NOW) == build_invite(invite, NOW)



# --- the provider digest's wording ------------------------------------------------------------

@pytest.mark.parametrize(("local_hour", "greeting"), [
    (2, "Hello"), (4, "Hello"), (5, "Good morning"), (8, "Good morning"),
    (11, "Good morning"), (12, "Good afternoon"), (17, "Good afternoon"),
    (18, "Good evening"), (23, "Good evening")])
def test_the_digest_greets_by_the_provider_local_hour(renderer, policy, local_hour, greeting):
    """A digest run by hand at 02:24 provider-local does not say good morning."""
    from notifier.delivery.compose import compose_provider_digest
    from notifier.delivery.preview import SAMPLE_QUEUE

    # SAMPLE_PROVIDER is in America/Chicago (UTC-6 in December).
    now = datetime(2026, 12, 1, local_hour + 6, 24, tzinfo=UTC) if local_hour < 18 else \
        datetime(2026, 12, 2, local_hour - 18, 24, tzinfo=UTC)
    message = compose_provider_digest(sample_stored("provider_digest", "email"),
                                      SAMPLE_PROVIDER, SAMPLE_QUEUE, Settings(), policy,
                                      renderer, now)
    assert message.body.startswith(f"{greeting} Dr. Rivera,\n\n")
    hour12 = local_hour % 12 or 12
    assert (f"These 2 requests are waiting for your answer as of Tuesday, December 1, "
            f"{hour12}:24 {'AM' if local_hour < 12 else 'PM'} CST, oldest first:\n") \
        in message.body


def test_a_digest_of_one_item_says_so(renderer, policy):
    from notifier.delivery.compose import compose_provider_digest
    from notifier.delivery.preview import SAMPLE_QUEUE
    from notifier.ledger.records import ProviderQueueRecord

    one = ProviderQueueRecord(updated_at=NOW, items=dict(list(SAMPLE_QUEUE.items.items())[:1]))
    message = compose_provider_digest(sample_stored("provider_digest", "email"),
                                      SAMPLE_PROVIDER, one, Settings(), policy, renderer, NOW)
    assert message.subject == "1 open request waiting for you (1 overdue)"
    assert "This request is waiting for your answer as of Tuesday, December 1, 9:00 AM CST, " \
        "oldest first:\n" in message.body
