"""SMS text (notifier/delivery/sms_text.py): segment counts as carriers count them, and
normalising text into GSM-7. Tables that grow: add a row for each input that once went wrong."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notifier.delivery.sms_text import (
    GSM7_BASIC,
    GSM7_EXTENDED,
    SmsSize,
    _char_units,
    _fold_char,
    gsm7_only,
    is_gsm7,
    measure,
    normalise,
)


def test_the_alphabet_is_3gpp_ts_23_038():
    # 128 code points of table 6.2.1 less the escape (0x1B); 10 of extension table 6.2.1.1
    # (form feed, ^ { } \ [ ~ ] | €).
    assert len(GSM7_BASIC) == 127
    assert len(GSM7_EXTENDED) == 10
    assert not GSM7_BASIC & GSM7_EXTENDED
    assert "`" not in GSM7_BASIC and "ç" not in GSM7_BASIC and "Ç" in GSM7_BASIC


#: (text, encoding, units, segments): TS 23.040 §9.2.3.24.1, 160/153 septets, 70/67 units.
SIZES = [
    ("", "GSM-7", 0, 0),
    ("a", "GSM-7", 1, 1),
    ("a" * 160, "GSM-7", 160, 1),
    ("a" * 161, "GSM-7", 161, 2),
    ("a" * 306, "GSM-7", 306, 2),
    ("a" * 307, "GSM-7", 307, 3),
    ("€" * 80, "GSM-7", 160, 1),  # extension characters take two septets
    ("€" * 81, "GSM-7", 162, 2),
    ("a" * 159 + "€", "GSM-7", 161, 2),
    # An escape pair is never split: 152 septets + "€" leaves one septet in part 1, so the
    # pair starts part 2 and the text needs 3 parts although 152+2+152 = 306 would fit 2.
    ("a" * 152 + "€" + "a" * 152, "GSM-7", 306, 3),
    ("a" * 151 + "€" + "a" * 153, "GSM-7", 306, 2),
    ("ñé¿¡ü" * 32, "GSM-7", 160, 1),  # Spanish letters in the basic table
    ("á" * 70, "UCS-2", 70, 1),  # not GSM-7: UCS-2
    ("á" * 71, "UCS-2", 71, 2),
    ("á" * 134, "UCS-2", 134, 2),
    ("á" * 135, "UCS-2", 135, 3),
    ("🌻" * 35, "UCS-2", 70, 1),  # outside the BMP: a surrogate pair, two units each
    ("🌻" * 36, "UCS-2", 72, 2),
    # A surrogate pair is not split either: 66 units + 🌻 does not fit 67, it starts part 2.
    ("a" * 66 + "🌻" + "a" * 66, "UCS-2", 134, 3),
    ("a" * 65 + "🌻" + "a" * 67, "UCS-2", 134, 2),
    ("Hi O’Brien", "UCS-2", 10, 1),  # one typographic apostrophe makes it all UCS-2
]


@pytest.mark.parametrize(("text", "encoding", "units", "segments"), SIZES)
def test_measure(text, encoding, units, segments):
    assert measure(text) == SmsSize(encoding, units, segments)


#: (typed, sent): what people and word processors type, and what the SMS carries.
NORMALISED = [
    ("O’Brien", "O'Brien"),  # U+2019
    ("‘Ana’ “Bo” „C‟ «D»", "'Ana' \"Bo\" \"C\" \"D\""),
    ("St. Mary’s Health", "St. Mary's Health"),
    ("Riverbend Health – Downtown", "Riverbend Health - Downtown"),  # en dash
    ("a—b‒c―d−e‐f‑g", "a-b-c-d-e-f-g"),
    ("Wait…", "Wait..."),
    ("a\u00a0b\u202fc\u2009d\u3000e\tf", "a b c d e f"),  # no-break, narrow, thin, CJK, tab
    ("A\u200bn\u200ca\u200d\u2060\ufeff\u00ad", "Ana"),  # zero-width and invisible
    ("María José Ángel sáb ¿qué? ñú ç", "Maria José Angel sab ¿qué? ñu c"),
    ("Zoë Çelik", "Zoe Çelik"),
    ("Ｆｕｌｌ ﬁne", "Full fine"),  # full-width letters, ligature
    ("Jose\u0301", "José"),  # decomposed é: NFC first
    ("Ana 🌻", "Ana 🌻"),  # kept by normalise; personal data goes through gsm7_only
    ("李 明", "李 明"),
    ("€5 [x] {y} ~z|^\\", "€5 [x] {y} ~z|^\\"),  # extension characters are GSM-7
    ("`tick`", "'tick'"),
]


@pytest.mark.parametrize(("typed", "sent"), NORMALISED)
def test_normalise(typed, sent):
    assert normalise(typed) == sent


@given(st.text())
def test_normalise_and_measure_are_per_character(text):
    """For speed, `normalise` folds only the distinct characters outside GSM-7 and `measure`
    counts units without a per-character list when the text fits one part: the same as
    folding, and counting, every character one by one."""
    nfc = unicodedata.normalize("NFC", text)
    assert normalise(text) == "".join(_fold_char(ch) for ch in nfc)
    size = measure(text)
    assert size.units == sum(_char_units(text, size.encoding))


def test_normalise_folds_what_people_type_character_by_character():
    text = unicodedata.normalize("NFC", "".join(
        chr(c) for c in (*range(0x20, 0x250), *range(0x2000, 0x2070), 0x3000, 0xFE0F,
                         0x1F33B, 0xFF21, 0xFB01)))
    assert normalise(text) == "".join(_fold_char(ch) for ch in text)


#: (first name as given, as an SMS carries it).
NAMES = [
    ("O’Brien", "O'Brien"),
    ("Ana 🌻", "Ana"),
    ("🌻 Ana 🌻", "Ana"),
    ("Zoë 🙂 李", "Zoe"),
    ("李明", ""),
    ("María-José", "Maria-José"),
    ("{Ana} €", "Ana"),  # extension characters (two septets each) are dropped too
    ("Ana\nBo", "Ana Bo"),
    ("👩‍👩‍👧", ""),  # a ZWJ sequence
]


@pytest.mark.parametrize(("given_name", "sent"), NAMES)
def test_personal_data_keeps_only_basic_gsm7(given_name, sent):
    assert gsm7_only(given_name) == sent


@given(st.text())
def test_normalised_text_is_stable_and_gsm7_only_is_one_septet_a_character(text):
    folded = normalise(text)
    assert normalise(folded) == folded
    kept = gsm7_only(text)
    assert is_gsm7(kept) and measure(kept).units == len(kept)
