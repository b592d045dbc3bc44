"""Free text that goes into messages (a client's first name, a provider's name, a
medication): which characters it may hold.

`plain_text(text, refuse=True)` is the rule at the door; `refuse=False` is the rule for
text accepted before (an event stored, or a record written, by an older version): the same
characters are removed instead, so none ever reaches a message.

At the door, controls (NUL, tab, CR, LF, DEL, C1), U+2028/U+2029, lone surrogates and the
bidirectional embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069) are refused:
no name holds them, so they mean a broken integration or an attack (CR/LF split an email
header or an .ics line; U+202E shows what follows it right to left, a spoofing vector in
email; a surrogate cannot be encoded). Other invisible format characters (Unicode Cf: zero-
width space, BOM, soft hyphen, LRM/RLM, word joiner, tag characters) are removed: copying a
name from a document brings them along, and refusing would leave a client without reminders
for something no one can see. Zero-width joiner and non-joiner are kept: Persian and Indic
names and emoji are spelt with them. Also refused at the door: the Unicode noncharacters
(U+FDD0-U+FDEF and the last two code points of every plane, U+FFFE, U+FFFF, ...), which
Unicode reserves for a program's internal use, never for interchange (Unicode 15, §23.7),
and text with no visible character: "Hi   ," greets no one. Visible means a letter, digit,
punctuation mark or symbol (Unicode L, N, P, S) other than the blank ones (the Hangul
fillers, the blank braille pattern); spaces, joiners, variation selectors and combining
marks with no base show nothing on their own.
Private-use characters are kept (a vendor's logo in a name is a choice, not an error), and
so are code points unassigned in this Python's Unicode version (a newer emoji).
README "Decisions" has the table.
"""

from __future__ import annotations

import unicodedata

#: Unicode general categories refused at the door: controls, line and paragraph
#: separators, surrogates.
REFUSED_CATEGORIES = frozenset({"Cc", "Zl", "Zp", "Cs"})
#: Bidirectional embeddings, overrides (U+202A-U+202E) and isolates (U+2066-U+2069).
BIDI_CONTROLS = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)))
#: Format characters kept: zero-width non-joiner and joiner.
KEPT_FORMAT = frozenset({"\u200c", "\u200d"})
#: Letters and symbols that draw nothing: Hangul fillers (choseong, jungseong, compatibility,
#: halfwidth), the blank braille pattern, and the Khmer inherent vowels (U+17B4, U+17B5).
BLANK_GRAPHIC = frozenset("\u115f\u1160\u3164\uffa0\u2800\u17b4\u17b5")
#: Unicode's noncharacters: U+FDD0-U+FDEF and U+xxFFFE, U+xxFFFF of each of the 17 planes.
NONCHARACTERS = frozenset([chr(c) for c in range(0xFDD0, 0xFDF0)]
                          + [chr(p * 0x10000 + c) for p in range(17) for c in (0xFFFE, 0xFFFF)])


def _describe(char: str) -> str:
    # Controls have no Unicode name; the code point is what an integrator can search for.
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X} {name}".rstrip() if name else f"U+{ord(char):04X}"


def plain_text(text: str, refuse: bool = True) -> str:
    """`text` without the characters the table above removes. With `refuse`, a refused
    character raises ValueError naming it (code point and name) and its index, and so does
    text with no visible character left (empty text is left to the caller's length
    check); without, refused characters are removed too and nothing else is refused."""
    if text.isprintable() and not NONCHARACTERS.intersection(text):
        # Nearly every name: no control, format, separator or surrogate (a C-speed scan).
        kept = text
    else:
        kept = "".join(_kept_chars(text, refuse))
    if refuse and kept and not any(_visible(c) for c in kept):
        raise ValueError("must hold a visible character (a letter, digit, punctuation mark "
                         "or symbol): this holds only spaces, joiners, marks or blanks")
    return kept


def _visible(char: str) -> bool:
    return unicodedata.category(char)[0] in "LNPS" and char not in BLANK_GRAPHIC


def _kept_chars(text: str, refuse: bool) -> list[str]:
    kept = []
    for index, char in enumerate(text):
        category = unicodedata.category(char)
        if category in REFUSED_CATEGORIES or char in BIDI_CONTROLS or char in NONCHARACTERS:
            if refuse:
                raise ValueError(f"must be plain text: {_describe(char)} at index {index} "
                                 "(control, line-break, bidirectional-override and "
                                 "noncharacter code points are refused)")
            continue
        if category == "Cf" and char not in KEPT_FORMAT:
            continue
        kept.append(char)
    return kept
