"""Templates: Jinja2 files under `templates/`, one per kind, channel and locale.

    templates/sms/{kind}.{locale}.txt       the SMS body
    templates/email/{kind}.{locale}.txt     blocks `subject` and `body`, extending the
                                            locale's `_layout`, which adds the greeting,
                                            signature and the emergency line

The HTML part of an email is made from the text part (escaped, paragraphs, links), so the
two never disagree. A locale without its own template falls back to `en`.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from babel.dates import format_date, format_datetime

from notifier.errors import TemplateError

DEFAULT_LOCALE = "en"
#: How dates and times are written in each locale (CLDR patterns, via Babel).
#: Times are always in the client's own zone. English names it (EST); CLDR has no Spanish
#: abbreviations (it would print -0500), so Spanish leaves it out.
DATETIME_PATTERNS = {"en": "EEE, MMM d 'at' h:mm a z", "es": "EEE d 'de' MMM, H:mm"}
TIME_PATTERNS = {"en": "h:mm a z", "es": "H:mm"}
DATE_PATTERNS = {"en": "EEEE, MMMM d", "es": "EEEE d 'de' MMMM"}

# GSM 03.38 basic character set and its extension table (escape-prefixed, two septets).
GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = set("^{}\\[~]|€\f")


def to_gsm7(text: str) -> str:
    """Replace characters outside the GSM-7 alphabet by their closest GSM-7 letter.

    One accented letter outside GSM-7 (á, í, ó, ú, ç, …) would switch a whole SMS to UCS-2
    and halve what a segment holds, so "María" and "sáb" are sent as "Maria" and "sab".
    Characters with no GSM-7 base (emoji, other scripts) are kept: they cost segments but
    never change meaning.
    """
    out = []
    for ch in text:
        if ch in GSM7_BASIC or ch in GSM7_EXTENDED:
            out.append(ch)
            continue
        base = unicodedata.normalize("NFKD", ch)[0]
        out.append(base if base in GSM7_BASIC else ch)
    return "".join(out)


def sms_segments(text: str) -> int:
    """How many SMS segments `text` takes (GSM-7: 160/153 septets; else UCS-2: 70/67)."""
    if all(ch in GSM7_BASIC or ch in GSM7_EXTENDED for ch in text):
        septets = sum(2 if ch in GSM7_EXTENDED else 1 for ch in text)
        return 1 if septets <= 160 else -(-septets // 153)
    units = len(text.encode("utf-16-le")) // 2
    return 1 if units <= 70 else -(-units // 67)


def format_local_datetime(instant: datetime, zone: ZoneInfo, locale: str) -> str:
    pattern = DATETIME_PATTERNS.get(locale, DATETIME_PATTERNS[DEFAULT_LOCALE])
    return format_datetime(instant, pattern, tzinfo=zone, locale=locale)


def format_local_time(instant: datetime, zone: ZoneInfo, locale: str) -> str:
    pattern = TIME_PATTERNS.get(locale, TIME_PATTERNS[DEFAULT_LOCALE])
    return format_datetime(instant, pattern, tzinfo=zone, locale=locale)


def format_day(day: date, locale: str) -> str:
    pattern = DATE_PATTERNS.get(locale, DATE_PATTERNS[DEFAULT_LOCALE])
    return format_date(day, pattern, locale=locale)


def text_to_html(text: str) -> str:
    paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
    parts = []
    for paragraph in paragraphs:
        escaped = html.escape(paragraph).replace("\n", "<br>\n")
        linked = re.sub(r"(https?://[^\s<]+)", r'<a href="\1">\1</a>', escaped)
        parts.append(f"<p>{linked}</p>")
    return "<!doctype html>\n<html><body>\n" + "\n".join(parts) + "\n</body></html>\n"


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


class Renderer:
    def __init__(self, templates_dir: Path) -> None:
        if not templates_dir.is_dir():
            raise TemplateError(f"templates directory {templates_dir} does not exist")
        def environment(trim_blocks: bool) -> jinja2.Environment:
            return jinja2.Environment(
                loader=jinja2.FileSystemLoader(str(templates_dir)),
                undefined=jinja2.StrictUndefined,
                autoescape=False,  # plain text; HTML is escaped in text_to_html
                trim_blocks=trim_blocks,
                lstrip_blocks=True,
            )

        # Emails keep their line structure; SMS bodies are folded onto one line, so a
        # newline after a block tag must survive as the space between two sentences.
        self.env = environment(trim_blocks=True)
        self.sms_env = environment(trim_blocks=False)

    def _template(self, channel: str, kind: str, locale: str) -> jinja2.Template:
        env = self.sms_env if channel == "sms" else self.env
        for candidate in (locale, DEFAULT_LOCALE):
            try:
                return env.get_template(f"{channel}/{kind}.{candidate}.txt")
            except jinja2.TemplateNotFound:
                continue
        raise TemplateError(f"no {channel} template for {kind!r}")

    def sms(self, kind: str, locale: str, context: dict[str, Any]) -> str:
        template = self._template("sms", kind, locale)
        try:
            body = to_gsm7(" ".join(template.render(context).split()))
        except jinja2.TemplateError as exc:
            raise TemplateError(f"sms/{kind}.{locale}: {exc}") from exc
        return body

    def reply(self, name: str, locale: str, context: dict[str, Any]) -> str:
        """Our answer to an inbound SMS, from `templates/replies/{name}.{locale}.txt` (`en`
        when the locale has none), folded and kept to GSM-7 like an SMS body. Apart from
        `sms/` so that nothing that walks the notification kinds meets them."""
        for candidate in (locale, DEFAULT_LOCALE):
            try:
                template = self.sms_env.get_template(f"replies/{name}.{candidate}.txt")
                break
            except jinja2.TemplateNotFound:
                continue
        else:
            raise TemplateError(f"no reply template for {name!r}")
        try:
            return to_gsm7(" ".join(template.render(context).split()))
        except jinja2.TemplateError as exc:
            raise TemplateError(f"replies/{name}.{locale}: {exc}") from exc

    def email(self, kind: str, locale: str, context: dict[str, Any]) -> RenderedEmail:
        template = self._template("email", kind, locale)
        try:
            subject = "".join(template.blocks["subject"](template.new_context(context))).strip()
            text = template.render(context).strip() + "\n"
        except KeyError:
            raise TemplateError(f"email/{kind}.{locale}: no subject block") from None
        except jinja2.TemplateError as exc:
            raise TemplateError(f"email/{kind}.{locale}: {exc}") from exc
        text = re.sub(r"\n{3,}", "\n\n", text)
        return RenderedEmail(subject=" ".join(subject.split()), text=text,
                             html=text_to_html(text))

    def kinds(self, channel: str) -> list[str]:
        """The kinds that have an English template on `channel`."""
        names = self.env.list_templates(filter_func=lambda n: n.startswith(f"{channel}/"))
        return sorted({Path(n).name.split(".")[0] for n in names
                       if not Path(n).name.startswith("_")})
