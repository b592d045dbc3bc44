"""Reading replies to our SMS (issue 10, item 4): the pure part, without HTTP or Redis.

What the reply words do end to end, over signed Twilio webhooks, is in
tests/web/test_provider_hooks.py; this is how a body becomes a word, and which answer and
language follow.
"""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from notifier.config import PROJECT_ROOT, Settings
from notifier.delivery.render import Renderer, format_local_datetime
from notifier.delivery.sms_text import measure
from notifier.errors import TemplateError
from notifier.intake.replies import (
    LOCALES,
    REPLY_TEMPLATES,
    REPLY_WORDS,
    WORDS,
    carrier_confirmed,
    check_reply_templates,
    normalise,
    read_word,
    reply_locale,
    soonest,
)
from notifier.ledger.records import AppointmentRecord, ClientRecord

NOW = datetime(2030, 3, 4, 15, 0, tzinfo=UTC)
ZWSP, ZWJ, WJ, BOM, VS16 = "\u200b", "\u200d", "\u2060", "\ufeff", "\ufe0f"


def test_no_two_words_of_the_table_read_the_same():
    assert len(WORDS) == len(REPLY_WORDS)
    assert all(normalise(w.word) for w in REPLY_WORDS)


def test_the_readme_lists_every_word_of_the_table():
    readme = (PROJECT_ROOT / "README.md").read_text()
    table = readme[readme.index("| does | English"):readme.index("Twilio itself blocks")]
    for word in REPLY_WORDS:
        assert re.search(rf"\b{word.word}\b", table), word.word


def test_cancel_is_an_opt_out_word_and_our_keywords_are_c_and_r():
    assert WORDS["CANCEL"].action == "opt_out"
    assert WORDS["CANCELAR"].action == "opt_out"
    assert {w.word for w in REPLY_WORDS if w.action in ("confirm", "reschedule")} == {"C", "R"}


# Grows: each row is something a person typed and the word it must read as.
SPELLINGS = [
    ("Opt out", "OPTOUT"), ("opt-out", "OPTOUT"), ("OPT-OUT", "OPTOUT"), ("opt_out", "OPTOUT"),
    ("stop?", "STOP"), ('"STOP"', "STOP"), ("\u201cStop\u201d", "STOP"), ("'stop'", "STOP"),
    ("«stop»", "STOP"), ("Stop 🛑", "STOP"), ("🛑STOP🛑", "STOP"), ("STOP!!!", "STOP"),
    ("ＳＴＯＰ", "STOP"), (f"S{ZWSP}TOP", "STOP"), (f"{BOM}stop{WJ}", "STOP"),
    (f"stop ✋{VS16}", "STOP"), (f"stop 👋🏽{ZWJ}", "STOP"), ("stop\n", "STOP"),
    ("Stop all", "STOPALL"), ("un-subscribe", "UNSUBSCRIBE"), ("End.", "END"),
    ("Parar", "PARAR"), ("Cancelar", "CANCELAR"), ("Baja", "BAJA"), ("¡ALTO!", "ALTO"),
    ("baja.", "BAJA"), ("Sí", "SI"), ("SÍ", "SI"), ("si", "SI"), ("S\u0301I", "SI"),
    ("sí 👍", "SI"), ("Inicio", "INICIO"), ("alta", "ALTA"), ("¿Ayuda?", "AYUDA"),
    ("help!", "HELP"), ("Info?", "INFO"), ("c", "C"), ("C.", "C"), ("r!", "R"), ("Ｒ", "R"),
    ("'c'", "C"),
]


@pytest.mark.parametrize(("typed", "word"), SPELLINGS)
def test_a_word_as_people_type_it(typed, word):
    assert read_word(typed) is WORDS[word]


@pytest.mark.parametrize("typed", [
    "please stop by tomorrow", "stop it", "STOP STOP", "", "   ", "🛑", "?", "CC", "confirm",
    "stopp", "cancel my appointment", "no", "sí, gracias", "ok",
])
def test_not_a_word(typed):
    assert read_word(typed) is None


@pytest.mark.parametrize(("body", "confirmed"), [
    ("STOP", True), ("stop", True), (" Cancel \n", True), ("OPTOUT", True),
    ("Opt out", False), ("opt-out", False), ("stop?", False), ('"STOP"', False),
    ("Stop 🛑", False), ("PARAR", False), ("Baja", False),
])
def test_twilio_confirms_only_its_own_keywords_sent_exactly(body, confirmed):
    word = read_word(body)
    assert word is not None and word.action == "opt_out"
    assert carrier_confirmed(body, word) is confirmed


def client(client_id: str, locale: str = "en") -> ClientRecord:
    return ClientRecord.model_validate({"updated_at": NOW, "client": {
        "id": client_id, "first_name": client_id.title(), "phone": "+14155550123",
        "timezone": "America/New_York", "locale": locale,
        "channels": {"sms": True, "email": False}}})


@pytest.mark.parametrize(("typed", "locales", "expected"), [
    ("AYUDA", ["en"], "es"),          # a Spanish word: Spanish
    ("HELP", ["es"], "es"),           # the client's locale
    ("HELP", ["es", "es"], "es"),
    ("HELP", ["en", "es"], "en"),     # a family that does not agree: English
    ("HELP", [], "en"),               # an unknown number
    ("PARAR", [], "es"),
    ("hello", ["es"], "es"),          # not a word: still the client's locale
])
def test_reply_locale(typed, locales, expected):
    clients = [client(f"c{i}", locale) for i, locale in enumerate(locales)]
    assert reply_locale(read_word(typed), clients) == expected


def appt(appt_id: str, client_id: str, hours: int) -> AppointmentRecord:
    start = NOW + timedelta(hours=hours)
    return AppointmentRecord.model_validate({"updated_at": NOW, "appointment": {
        "id": appt_id, "client_id": client_id, "provider_id": "p1", "start": start,
        "end": start + timedelta(minutes=30), "kind": "medication_management"}})


def test_soonest_of_a_family():
    parent, child = client("parent"), client("child")
    assert soonest([]) is None
    assert soonest([(parent, appt("a1", "parent", 48)), (child, appt("a2", "child", 24))]
                   ) == (child, appt("a2", "child", 24))
    # A tie: the same one whatever the order.
    tie = [(parent, appt("a1", "parent", 24)), (child, appt("a2", "child", 24))]
    assert soonest(tie) == soonest(tie[::-1]) == (child, appt("a2", "child", 24))


# Reply templates ------------------------------------------------------------------------

def settings() -> Settings:
    return Settings.from_env({}, dotenv=Path("/nonexistent"))


def test_every_reply_renders_in_every_locale_within_two_segments():
    renderer, config = Renderer(PROJECT_ROOT / "templates"), settings()
    check_reply_templates(renderer, config, NOW)
    for name in REPLY_TEMPLATES:
        for locale in LOCALES:
            text = renderer.reply(name, locale, {
                "practice_name": config.practice_name, "practice_phone": config.practice_phone,
                "practice_url": config.practice_url, "first_name": "Maximiliana Josefina",
                "start_local": format_local_datetime(NOW, ZoneInfo("America/New_York"),
                                                     locale)})
            size = measure(text)
            assert "{" not in text and size.encoding == "GSM-7" and size.segments <= 2, (
                name, locale, text)


def copy_templates(tmp_path: Path) -> Path:
    shutil.copytree(PROJECT_ROOT / "templates", tmp_path / "templates")
    return tmp_path / "templates"


def test_a_missing_reply_template_stops_start_up(tmp_path):
    templates = copy_templates(tmp_path)
    for locale in LOCALES:
        (templates / "replies" / f"help.{locale}.txt").unlink()
    with pytest.raises(TemplateError, match="no reply template for 'help'"):
        check_reply_templates(Renderer(templates), settings(), NOW)


def test_a_broken_reply_template_stops_start_up(tmp_path):
    templates = copy_templates(tmp_path)
    (templates / "replies" / "confirmed.es.txt").write_text("{{ practice_name }} {{ nope }}\n")
    with pytest.raises(TemplateError, match="replies/confirmed.es: 'nope' is undefined"):
        check_reply_templates(Renderer(templates), settings(), NOW)


def test_a_locale_without_its_own_reply_falls_back_to_english(tmp_path):
    templates = copy_templates(tmp_path)
    (templates / "replies" / "help.es.txt").unlink()
    text = Renderer(templates).reply("help", "es", {
        "practice_name": "P", "practice_phone": "1", "practice_url": "u"})
    assert "Reply STOP to opt out" in text
