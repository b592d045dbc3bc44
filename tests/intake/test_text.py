"""plain_text: which characters free text going into messages may hold (names, medication)."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.intake.text import BIDI_CONTROLS, NONCHARACTERS, plain_text

#: (text, at the door: the kept text or the refused code point, elsewhere: the kept text)
TABLE = [
    ("Ana", "Ana", "Ana"),
    ("José María", "José María", "José María"),
    ("O'Brien-Smith", "O'Brien-Smith", "O'Brien-Smith"),
    ("Zoë\u00a0Ann", "Zoë\u00a0Ann", "Zoë\u00a0Ann"),  # no-break space: kept
    ("李\u3000小龙", "李\u3000小龙", "李\u3000小龙"),  # ideographic space: kept
    ("محمد", "محمد", "محمد"),  # right-to-left letters need no control
    ("\u0645\u0647\u200c\u0633\u0627", "\u0645\u0647\u200c\u0633\u0627",
     "\u0645\u0647\u200c\u0633\u0627"),  # Persian: zero-width non-joiner kept
    ("Ana \U0001f469\u200d\U0001f4bb", "Ana \U0001f469\u200d\U0001f4bb",
     "Ana \U0001f469\u200d\U0001f4bb"),  # emoji sequence: zero-width joiner kept
    ("Ana\x00", "U+0000", "Ana"),
    ("Ana\r\nBcc: x@example.com", "U+000D", "AnaBcc: x@example.com"),
    ("Ana\n", "U+000A", "Ana"),
    ("Ana\tB", "U+0009", "AnaB"),
    ("Ana\x1b[31m", "U+001B", "Ana[31m"),
    ("Ana\x7f", "U+007F", "Ana"),
    ("Ana\x85", "U+0085", "Ana"),  # C1 next line
    ("Ana\u2028B", "U+2028", "AnaB"),
    ("Ana\u2029B", "U+2029", "AnaB"),
    ("Ana\u202egpj.exe", "U+202E", "Anagpj.exe"),  # right-to-left override
    *((f"A{chr(c)}na", f"U+{c:04X}", "Ana") for c in (0x202A, 0x202B, 0x202C, 0x202D, 0x2066,
                                                       0x2067, 0x2068, 0x2069)),
    ("Ana\ud800", "U+D800", "Ana"),  # a lone surrogate cannot be encoded
    ("\ufeffAna", "Ana", "Ana"),  # byte order mark: removed
    ("A\u200bna", "Ana", "Ana"),  # zero-width space
    ("Ana\u00ad", "Ana", "Ana"),  # soft hyphen
    ("\u200fAna\u200e", "Ana", "Ana"),  # right-to-left and left-to-right marks
    ("A\u2060na", "Ana", "Ana"),  # word joiner
    ("Ana\U000e0041\U000e0042", "Ana", "Ana"),  # tag characters (hidden text)
    ("\u200b", "", ""),  # nothing left: the schema's length check refuses it
    ("Ana\uffff", "U+FFFF", "Ana"),  # noncharacters: never for interchange
    ("Ana\ufdd0", "U+FDD0", "Ana"),
    ("Ana\U0010fffe", "U+10FFFE", "Ana"),
    ("Ana\ue000", "Ana\ue000", "Ana\ue000"),  # private use: kept
]

#: Text with no visible character: refused at the door, kept as it is elsewhere.
INVISIBLE = ["   ", "\u00a0", "\u3000", "\u200d", " \u200c ", "\u200b \ufeff",
             # found by QA: blank letters and symbols, and marks with no base
             "\u3164", "\uffa0", "\u115f", "\u2800", "\u034f", "\ufe0f", "\u0301",
             "\u17b4"]


@pytest.mark.parametrize("text", INVISIBLE)
def test_text_with_nothing_visible_is_refused_at_the_door(text):
    with pytest.raises(ValueError, match="^must hold a visible character"):
        plain_text(text)
    assert plain_text(text, refuse=False) == text.replace("\u200b", "").replace("\ufeff", "")


@pytest.mark.parametrize(("text", "at_the_door", "elsewhere"), TABLE)
def test_what_free_text_may_hold(text, at_the_door, elsewhere):
    assert plain_text(text, refuse=False) == elsewhere
    if at_the_door.startswith("U+"):
        with pytest.raises(ValueError, match=rf"^must be plain text: {re.escape(at_the_door)}\b"):
            plain_text(text)
    else:
        assert plain_text(text) == at_the_door


def test_the_refusal_names_the_character_and_where_it_is():
    with pytest.raises(ValueError) as caught:
        plain_text("Ana\u202egpj.exe")
    assert str(caught.value).startswith(
        "must be plain text: U+202E RIGHT-TO-LEFT OVERRIDE at index 3")


def _unsafe(char: str) -> bool:
    category = unicodedata.category(char)
    return (category in {"Cc", "Cs", "Zl", "Zp"} or char in BIDI_CONTROLS
            or char in NONCHARACTERS or (category == "Cf" and char not in "\u200c\u200d"))


def _invisible(text: str) -> bool:
    return bool(text) and not any(unicodedata.category(c)[0] in "LNPS"
                                  and c not in "\u115f\u1160\u3164\uffa0\u2800\u17b4\u17b5"
                                  for c in text)


@settings(max_examples=500, derandomize=True)
@given(st.text(alphabet=st.characters(codec=None), max_size=40))
def test_whatever_the_text_nothing_unsafe_is_left_and_the_door_agrees(text):
    kept = plain_text(text, refuse=False)
    assert not any(_unsafe(char) for char in kept)
    assert plain_text(kept, refuse=False) == kept, "removing twice changes nothing"
    assert [c for c in text if not _unsafe(c)] == list(kept), "nothing else is touched"
    try:
        at_the_door = plain_text(text)
    except ValueError:
        assert _invisible(kept) or any(
            unicodedata.category(c) in {"Cc", "Cs", "Zl", "Zp"} or c in BIDI_CONTROLS
            or c in NONCHARACTERS for c in text)
    else:
        assert at_the_door == kept
