"""The SMS budget (notifier/delivery/sms_budget.py): every failing input of issue 10 as a row
of a table that grows, the start-up check of the practice's settings, and a property over
random names, practice names and link lengths.

Messages are composed as the worker composes them (`compose_client_message`) from the real
templates; the short link is a function of ours counting its calls."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import available_timezones

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notifier.config import PROJECT_ROOT, Settings
from notifier.delivery.compose import STAFF_KINDS, compose_client_message
from notifier.delivery.preview import SAMPLE_PROVIDER, sample_client, sample_stored
from notifier.delivery.render import Renderer
from notifier.delivery.sms_budget import (
    MAX_SEGMENTS,
    SHORT_LINK_FALLBACK,
    OverBudget,
    check_configuration,
    client_sms_kinds,
    short_url,
)
from notifier.delivery.sms_text import GSM7_BASIC
from notifier.errors import ConfigError, TemplateError

NOW = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
#: A Wednesday in September, the longest day and month names in both locales.
START = datetime(2026, 9, 30, 22, 30, tzinfo=UTC)
RENDERER = Renderer(PROJECT_ROOT / "templates")
CLIENT_SMS = client_sms_kinds(RENDERER, STAFF_KINDS)
LOCALES = ("en", "es")
PUBLIC_URL = "https://notifier.riverbend-health.example.org"
TOKEN = "AbCdEfGhIjKlMnOp"
#: A real-length Teams link (231 characters), as issue 10 reports it.
TEAMS = ("https://teams.microsoft.com/l/meetup-join/19%3ameeting_NzQ2ZTE5YjItZDU0Ni00OTljLWI5"
         "ZjMtNmQ3ZmM0MmE4YjYx%40thread.v2/0?context=%7b%22Tid%22%3a%2272f988bf-86f1-41af-91ab"
         "-2d7cd011db47%22%2c%22Oid%22%3a%2211e4c5f5-9a6b-4c3e-8d2a0%22%7d")
ZOOM = "https://us02web.zoom.us/j/85512345678?pwd=bXlQc0RjT1VhZk5QbGxWc3ZtQ0ZqUT09"


def config(**env: str) -> Settings:
    return Settings.from_env({"NOTIFIER_PUBLIC_URL": PUBLIC_URL, **env},
                             dotenv=Path("/nonexistent"))


class Shortener:
    def __init__(self, public_url: str = PUBLIC_URL) -> None:
        self.calls, self.public_url = 0, public_url

    def __call__(self) -> str:
        self.calls += 1
        return short_url(self.public_url, TOKEN)


def sms(kind: str, locale: str = "en", *, first_name: str = "Ana", join_url: str | None = ZOOM,
        zone: str = "America/New_York", settings_: Settings | None = None,
        shorten: Shortener | None = None, **params: object):
    record = sample_client(locale, first_name=first_name)
    record = record.model_copy(update={"client": record.client.model_copy(
        update={"timezone": zone})})
    n = sample_stored(kind, "sms", start=START.isoformat(),
                      end=(START + timedelta(minutes=30)).isoformat(),
                      change_by=(START - timedelta(hours=24)).isoformat(), join_url=join_url,
                      **params)
    return compose_client_message(n, record, SAMPLE_PROVIDER, settings_ or config(), RENDERER,
                                  NOW, shorten=shorten or Shortener())


def assert_within_budget(message) -> None:
    assert message.sms.encoding == "GSM-7", message.body
    assert message.sms.segments <= MAX_SEGMENTS, (message.sms, message.body)


# Issue 10, items 1-3: each failing input, as (first name, kind, what the SMS must say) ------

FAILING_NAMES = [
    # 1. typographic punctuation: U+2019 made the confirmation and 72 h reminder 3 segments
    ("O’Brien", "appointment_confirmation", "Hi O'Brien,"),
    ("O’Brien", "appointment_reminder", "Reminder, O'Brien:"),
    ("“Bo” Smith–Jones…", "appointment_confirmation", "Hi Bo Smith-Jones,"),
    # 3. a name that is no name: no link, path or markup reaches the phone
    ("https://evil.example/x", "appointment_confirmation", "Hi, your appointment"),
    ("Ana (she/her)", "appointment_confirmation", "Hi Ana,"),
    ("<b>Ana</b>", "appointment_reminder", "Reminder: your appointment"),
    ("Ana\u00a0María\u200b", "appointment_confirmation", "Hi Ana Maria,"),
    # 2. emoji: 3 segments, the worst template 4
    ("Ana 🌻", "appointment_confirmation", "Hi Ana,"),
    ("Ana 🌻", "appointment_reminder", "Reminder, Ana:"),
    ("Ana 🌻", "visit_required", "Hi Ana,"),
    ("👩‍👩‍👧 Zoë", "refill_nudge", "Hi Zoe,"),
    # a name with nothing GSM-7 keeps the greeting without it
    ("李明", "appointment_confirmation", "Hi, your appointment"),
    ("李明", "appointment_reminder", "Reminder: your appointment"),
    ("李明", "appointment_cancelled", "Hi, your appointment"),
]


@pytest.mark.parametrize(("first_name", "kind", "says"), FAILING_NAMES)
def test_names_as_people_type_them_stay_within_budget(first_name, kind, says):
    message = sms(kind, first_name=first_name)
    assert_within_budget(message)
    assert says in message.body


FAILING_NAMES_ES = [
    ("O’Brien", "appointment_confirmation", "Hola, O'Brien."),
    ("Ana 🌻", "appointment_reminder", "Hola, Ana."),
    ("李明", "appointment_confirmation", "Hola. Agendamos"),
]


@pytest.mark.parametrize(("first_name", "kind", "says"), FAILING_NAMES_ES)
def test_names_as_people_type_them_stay_within_budget_in_spanish(first_name, kind, says):
    message = sms(kind, "es", first_name=first_name)
    assert_within_budget(message)
    assert says in message.body


#: 1. practice names that put 21 and 22 of the client SMS templates over 2 segments.
FAILING_PRACTICE_NAMES = ["St. Mary’s Health", "Riverbend Health – Downtown",
                          "Riverbend Health — Downtown…", "Riverbend\u00a0Health"]


@pytest.mark.parametrize("practice_name", FAILING_PRACTICE_NAMES)
@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("kind", CLIENT_SMS)
def test_typographic_practice_names_are_folded_in_every_template(practice_name, locale, kind):
    message = sms(kind, locale, first_name="María-Josefína Úrsula 🌻",
                  settings_=config(NOTIFIER_PRACTICE_NAME=practice_name), late_fee=True)
    assert_within_budget(message)
    folded = practice_name.replace("’", "'").replace("–", "-").replace("—", "-").replace(
        "…", "...").replace("\u00a0", " ")
    assert message.body.startswith(f"{folded}:")


@pytest.mark.parametrize("practice_name", FAILING_PRACTICE_NAMES)
def test_typographic_practice_names_pass_the_start_up_check(practice_name):
    check_configuration(config(NOTIFIER_PRACTICE_NAME=practice_name), RENDERER, STAFF_KINDS)


# 3. real video links -----------------------------------------------------------------------

def test_the_teams_link_is_231_characters():
    assert len(TEAMS) == 231


@pytest.mark.parametrize("locale", LOCALES)
def test_a_long_teams_link_becomes_the_short_link(locale):
    # Issue 10: with this practice name the Spanish join link SMS was 3 segments.
    shorten = Shortener()
    message = sms("appointment_join_link", locale, join_url=TEAMS,
                  shorten=shorten, settings_=config(
                      NOTIFIER_PRACTICE_NAME="Riverbend Health Partners"))
    assert_within_budget(message)
    assert f"{PUBLIC_URL}/j/{TOKEN}" in message.body and "teams" not in message.body
    assert message.fallback == SHORT_LINK_FALLBACK
    assert shorten.calls == 1


@pytest.mark.parametrize("locale", LOCALES)
def test_a_link_that_fits_is_sent_as_it_is_and_no_short_link_is_made(locale):
    shorten = Shortener()
    message = sms("appointment_join_link", locale, join_url=ZOOM, shorten=shorten)
    assert ZOOM in message.body and message.fallback == ""
    assert shorten.calls == 0


def test_without_a_short_link_a_message_over_budget_is_not_sent():
    record = sample_client("es")
    n = sample_stored("appointment_join_link", "sms", join_url=TEAMS + "&x=" + "y" * 200)
    with pytest.raises(OverBudget, match=r"appointment_join_link.es is GSM-7, \d+ septets, "
                                         r"\d segments, over the budget of 2 segments"):
        compose_client_message(n, record, SAMPLE_PROVIDER, config(), RENDERER, NOW)


def test_a_template_over_budget_is_not_sent_whatever_the_link(tmp_path):
    # The last step of the rule, with a template of our own too long for any link.
    (tmp_path / "sms").mkdir()
    (tmp_path / "sms" / "refill_sent.en.txt").write_text("{{ practice_name }} " + "x" * 300)
    with pytest.raises(OverBudget) as raised:
        compose_client_message(sample_stored("refill_sent", "sms"), sample_client("en"),
                               SAMPLE_PROVIDER, config(), Renderer(tmp_path), NOW,
                               shorten=Shortener())
    assert (raised.value.size.segments, raised.value.template) == (3, "refill_sent.en")


# Configuration that cannot break it ----------------------------------------------------------

def test_the_default_configuration_passes_the_start_up_check():
    check_configuration(config(), RENDERER, STAFF_KINDS)


CONFIG_OVER_BUDGET = [
    ("NOTIFIER_PRACTICE_NAME",
     "The Riverbend Community Behavioral Health Partners of Greater Springfield"),
    ("NOTIFIER_PRACTICE_URL",
     "https://portal.riverbend-health.example.org/patients/self-service/appointments/book"),
    ("NOTIFIER_PRACTICE_PHONE", "+1 555 0100 (Mon-Fri 8am-6pm) or +1 555 0199 after hours, ask "
                                "for the on-call coordinator"),
]


@pytest.mark.parametrize(("variable", "value"), CONFIG_OVER_BUDGET)
def test_a_setting_that_would_break_the_budget_stops_start_up_naming_it(variable, value):
    with pytest.raises(ConfigError) as raised:
        check_configuration(config(**{variable: value}), RENDERER, STAFF_KINDS)
    message = str(raised.value)
    assert message.startswith(f"{variable}: ")
    assert "sms/" in message and "segments" in message and "\n" not in message


@pytest.mark.parametrize("variable", ["NOTIFIER_PRACTICE_URL", "NOTIFIER_PUBLIC_URL"])
def test_a_url_that_folding_would_change_stops_start_up(variable):
    """clínica.example folded into GSM-7 is clinica.example: another host."""
    with pytest.raises(ConfigError) as raised:
        check_configuration(config(**{variable: "https://clínica.example/portal"}), RENDERER,
                            STAFF_KINDS)
    assert str(raised.value) == (
        f"{variable}: 'https://clínica.example/portal' is not ASCII: an SMS cannot carry it "
        "as it is, and folding it would change where it leads; give its ASCII form "
        "(punycode host, percent-encoded path)")


def test_a_long_public_url_stops_start_up_through_the_short_link():
    url = "https://notifier.riverbend-health.example.org/" + "services/" * 20 + "sms"
    with pytest.raises(ConfigError, match=r"^NOTIFIER_PUBLIC_URL: .* sms/appointment_join_link"):
        check_configuration(config(NOTIFIER_PUBLIC_URL=url), RENDERER, STAFF_KINDS)


@pytest.mark.parametrize(("variable", "value", "named"), [
    ("NOTIFIER_PRACTICE_NAME", "Clínica 李", "李"),
    ("NOTIFIER_PRACTICE_NAME", "Riverbend Health 🌻", "🌻"),
    ("NOTIFIER_PRACTICE_PHONE", "+1 555 0100 ☎", "☎"),
])
def test_a_setting_outside_gsm7_stops_start_up_naming_the_characters(variable, value, named):
    with pytest.raises(ConfigError, match=rf"^{variable}: .*outside the SMS alphabet.*{named}"):
        check_configuration(config(**{variable: value}), RENDERER, STAFF_KINDS)


def test_a_template_over_budget_whatever_the_configuration_stops_start_up(tmp_path):
    (tmp_path / "sms").mkdir()
    (tmp_path / "sms" / "refill_sent.en.txt").write_text("{{ practice_name }} " + "x" * 300)
    with pytest.raises(TemplateError, match=r"^sms/refill_sent.en: GSM-7, 3\d\d septets, "
                                            r"3 segments in the worst case"):
        check_configuration(config(), Renderer(tmp_path), STAFF_KINDS)


# The property: any name, practice name and link ----------------------------------------------

ZONES = sorted(available_timezones())
#: Practice names people would configure: GSM-7 letters with typographic punctuation, odd
#: spaces and accents mixed in; and anything at all, which the check mostly refuses.
PRACTICE_ALPHABET = "".join(sorted(GSM7_BASIC - {"\n", "\r"})) + "’‘“”–—…\u00a0\u200báíóúç€["


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(first_name=st.text(min_size=1, max_size=100),
       practice_name=st.one_of(st.text(PRACTICE_ALPHABET, min_size=1, max_size=70),
                               st.text(min_size=1, max_size=30)),
       link_chars=st.integers(min_value=10, max_value=2000),
       zone=st.sampled_from(ZONES),
       start=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2030, 12, 31),
                          timezones=st.just(UTC)),
       late_fee=st.booleans())
def test_every_client_sms_fits_or_start_up_refuses_the_configuration(
        first_name, practice_name, link_chars, zone, start, late_fee):
    practice = config(NOTIFIER_PRACTICE_NAME=practice_name.strip() or "x")
    try:
        check_configuration(practice, RENDERER, STAFF_KINDS)
    except ConfigError:
        return  # the documented fallback for configuration: start-up stops
    join_url = "https://video.example.com/" + "r" * link_chars
    for kind in CLIENT_SMS:
        for locale in LOCALES:
            record = sample_client(locale, first_name=first_name)
            record = record.model_copy(update={"client": record.client.model_copy(
                update={"timezone": zone})})
            n = sample_stored(kind, "sms", start=start.isoformat(),
                              end=(start + timedelta(minutes=30)).isoformat(),
                              change_by=(start - timedelta(hours=24)).isoformat(),
                              join_url=join_url, late_fee=late_fee)
            message = compose_client_message(n, record, SAMPLE_PROVIDER, practice, RENDERER,
                                             NOW, shorten=Shortener())
            assert_within_budget(message)
