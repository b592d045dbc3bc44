"""SMS text: the GSM-7 alphabet, normalising text into it, and counting segments as carriers do.

Pure functions, no I/O. The budget *policy* (what to do when a message does not fit) is in
`notifier.delivery.sms_budget`; this module only says what a text is and what it costs.

References:

- 3GPP TS 23.038 §6.2.1: the GSM 7-bit default alphabet (128 characters, one septet each) and
  its extension table (§6.2.1.1), reached through the escape septet 0x1B, so an extension
  character costs two septets and the pair is never split between two parts.
- 3GPP TS 23.040 §9.2.3.24.1: a concatenated SMS carries a 6-octet user data header in each
  part, leaving 134 of the 140 octets: 153 septets (GSM-7) or 67 UCS-2 code units per part,
  against 160 / 70 for a single message. A UTF-16 surrogate pair is not split either.

No maintained Python package counts segments this way (the GSM 03.38 codecs on PyPI encode,
they do not split), and the tables are short and fixed by the standard, so they are here.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Literal

#: 3GPP TS 23.038 table 6.2.1: the default alphabet, in code order (0x1B, the escape, left out).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
#: 3GPP TS 23.038 table 6.2.1.1: the extension table (escape + one septet: two septets each).
GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")
GSM7 = GSM7_BASIC | GSM7_EXTENDED

#: Characters people and word processors type that have a plain GSM-7 equivalent, folded the
#: way GOV.UK Notify folds them before sending (notifications-utils, `SanitiseSMS`).
TYPOGRAPHIC = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",  # ‘ ’ ‚ ‛ ′
    "\u02bc": "'", "\u00b4": "'", "`": "'",  # ʼ ´ ` (the backtick is not in GSM-7)
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',  # “ ” „ ‟ ″
    "\u00ab": '"', "\u00bb": '"',  # « »
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-",  # ‐ ‑ ‒ – —
    "\u2015": "-", "\u2212": "-",  # ― −
    "\u2026": "...",  # …
    "\u2022": "-", "\u00b7": "-",  # • ·
    "\t": " ",
}
#: Spaces of every width become one plain space (U+00A0 no-break, U+202F narrow no-break,
#: which CLDR puts before AM/PM, and the typographic spaces U+2000-U+200A).
SPACES = frozenset("\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
                   "\u2009\u200a\u202f\u205f\u3000")
#: Invisible characters that carry nothing a reader sees (zero-width space, joiners, word
#: joiner, byte-order mark, soft hyphen, Mongolian vowel separator): dropped.
INVISIBLE = frozenset("\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e")

Encoding = Literal["GSM-7", "UCS-2"]
#: Per message / per part of a concatenated message (TS 23.040 §9.2.3.24.1).
LIMITS: dict[str, tuple[int, int]] = {"GSM-7": (160, 153), "UCS-2": (70, 67)}


def _fold_char(ch: str) -> str:
    if ch in GSM7:
        return ch
    if ch in TYPOGRAPHIC:
        return TYPOGRAPHIC[ch]
    if ch in SPACES:
        return " "
    if ch in INVISIBLE or unicodedata.category(ch) == "Mn" or 0xFE00 <= ord(ch) <= 0xFE0F:
        # Combining marks left after NFC (and emoji variation selectors) on their own.
        return ""
    # An accented letter outside GSM-7 (á, í, ó, ú, ç, ā) becomes its base letter when that
    # is in GSM-7 ("María" is sent as "Maria" rather than turning the message into UCS-2);
    # likewise compatibility forms (full-width Ａ, the ligature ﬁ).
    base = "".join(c for c in unicodedata.normalize("NFKD", ch)
                   if unicodedata.category(c) != "Mn")
    return base if base and all(c in GSM7_BASIC for c in base) else ch


def normalise(text: str) -> str:
    """NFC, then every character folded to its GSM-7 equivalent where one exists (quotes,
    dashes, ellipsis, spaces, invisible characters, accented letters). What has no
    equivalent (emoji, other scripts) is kept: see `gsm7_only` for personal data."""
    text = unicodedata.normalize("NFC", text)
    # Folding is per character: only the few distinct ones outside GSM-7 need a look (a
    # message is mostly plain letters; CLDR's narrow space before AM/PM is the usual other).
    odd = set(text).difference(GSM7)
    if not odd:
        return text
    return text.translate({ord(ch): _fold_char(ch) for ch in odd})


def gsm7_only(text: str) -> str:
    """`normalise`, then only characters of the basic GSM-7 table, with runs of spaces made
    one. For personal data (a first name): an emoji or another script there would make a
    whole SMS UCS-2 and push it past its budget; extension characters ({, €, ~) are dropped
    too, so each character left costs exactly one septet."""
    folded = normalise(text)
    kept = folded.translate(dict.fromkeys(map(ord, set(folded).difference(GSM7_BASIC))))
    return " ".join(kept.split())


def is_gsm7(text: str) -> bool:
    """Whether every character of `text` is in GSM-7 (basic or extension table)."""
    return GSM7.issuperset(text)


@dataclass(frozen=True)
class SmsSize:
    """What a text costs as an SMS: its encoding, its length in septets (GSM-7) or UTF-16 code
    units (UCS-2), and the number of parts a carrier bills."""

    encoding: Encoding
    units: int
    segments: int

    def describe(self) -> str:
        """The size in words: `GSM-7, 161 septets, 2 segments`."""
        unit = "septets" if self.encoding == "GSM-7" else "UCS-2 units"
        plural = "" if self.segments == 1 else "s"
        return f"{self.encoding}, {self.units} {unit}, {self.segments} segment{plural}"


def _char_units(text: str, encoding: Encoding) -> list[int]:
    if encoding == "GSM-7":
        return [2 if ch in GSM7_EXTENDED else 1 for ch in text]
    return [len(ch.encode("utf-16-le")) // 2 for ch in text]


def measure(text: str) -> SmsSize:
    """Encoding, length and segment count of `text` as sent without any folding.

    Parts are filled greedily and a character whose units (an escape pair, a surrogate pair)
    do not fit in what is left of a part starts the next one, as TS 23.040 requires; so a
    text can take one more part than length / 153 suggests.
    """
    encoding: Encoding = "GSM-7" if is_gsm7(text) else "UCS-2"
    single, part = LIMITS[encoding]
    if encoding == "GSM-7":
        total = len(text) + sum(text.count(ch) for ch in GSM7_EXTENDED)
    else:
        total = len(text.encode("utf-16-le")) // 2
    if total <= single:
        return SmsSize(encoding, total, 1 if total else 0)
    units = _char_units(text, encoding)
    segments, left = 1, part
    for size in units:
        if size > left:
            segments, left = segments + 1, part
        left -= size
    return SmsSize(encoding, total, segments)
