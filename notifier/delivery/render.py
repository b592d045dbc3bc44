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
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from babel import Locale, UnknownLocaleError
from babel.core import get_global
from babel.dates import (
    format_date,
    format_datetime,
    get_timezone,
    get_timezone_location,
    get_timezone_name,
)

from notifier.delivery.sms_text import normalise
from notifier.errors import TemplateError

DEFAULT_LOCALE = "en"
#: How dates and times are written in each locale (CLDR patterns, via Babel), always in the
#: client's own zone and followed by `zone_label`.
DATETIME_PATTERNS = {"en": "EEE, MMM d 'at' h:mm a", "es": "EEE d 'de' MMM, H:mm"}
TIME_PATTERNS = {"en": "h:mm a", "es": "H:mm"}
DATE_PATTERNS = {"en": "EEEE, MMMM d", "es": "EEEE d 'de' MMMM"}
#: What counts as a zone abbreviation in CLDR's short names (EST, BST, AKDT, CEST); anything
#: else Babel returns for `short` is a long name or an offset ("-0500") no reader knows.
ZONE_ABBREVIATION = re.compile(r"[A-Z]{2,5}")


def _daylight(local: datetime) -> bool:
    """Whether `local` is in its zone's summer time. Europe/Dublin counts winter as its
    negative daylight saving (dst() < 0), so summer there is the time with dst() == 0."""
    dst = local.dst()
    if dst is None or dst < timedelta(0):
        return False
    if dst > timedelta(0):
        return True
    zone = local.tzinfo
    return any((datetime(local.year, month, 15, 12, tzinfo=zone).dst() or timedelta(0))
               < timedelta(0) for month in (1, 7))


@lru_cache(maxsize=1024)
def _zone_abbreviation(zone_key: str, daylight: bool) -> str | None:
    """The zone's CLDR short name as written in English in the zone's own country (EST/EDT
    for New York from en_US, GMT/BST for London from en_GB), if CLDR has one."""
    territory = get_global("zone_territories").get(zone_key)
    try:
        where = Locale.parse(f"en_{territory}") if territory else Locale("en")
    except (UnknownLocaleError, ValueError):
        where = Locale("en")
    name = get_timezone_name(get_timezone(zone_key), width="short", locale=where,
                             zone_variant="daylight" if daylight else "standard")
    return name if ZONE_ABBREVIATION.fullmatch(name) else None


@lru_cache(maxsize=1024)
def _zone_city(zone_key: str, locale: str) -> str:
    """CLDR's "{city} Time" ("hora de {city}") in the message's locale; for a fixed-offset
    `Etc/` zone, which has no city, its offset from UTC (`etc_offset_label`)."""
    if zone_key.startswith("Etc/"):
        return etc_offset_label(ZoneInfo(zone_key))
    city = get_timezone_location(get_timezone(zone_key), locale=locale, return_city=True)
    return str(Locale.parse(locale).zone_formats["region"] % city)


def etc_offset_label(zone: ZoneInfo) -> str:
    """A fixed-offset zone named by its offset from UTC, in ASCII (an SMS stays GSM-7):
    `UTC-9` for `Etc/GMT+9`, `UTC+5:30`. IANA's `Etc/GMT+9` is nine hours *behind* UTC
    (POSIX signs), and Babel calls it "GMT+9" as if it were ahead: its own name is never
    shown."""
    offset = zone.utcoffset(datetime(2000, 1, 1)) or timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign, minutes = ("-", -minutes) if minutes < 0 else ("+", minutes)
    hours, rest = divmod(minutes, 60)
    return f"UTC{sign}{hours}" + (f":{rest:02d}" if rest else "")


def zone_label(instant: datetime, zone: ZoneInfo, locale: str) -> str:
    """How a message names the client's zone: one rule for every locale. The zone's CLDR
    abbreviation where it has one (GMT/BST, EST/EDT, CET/CEST: the ones clocks and TV show
    there, so a Spanish message in New York says EST too), else its city in the message's
    language ("Bogotá Time", "hora de Bogotá"). Offsets such as "+0000" are never shown."""
    local = instant.astimezone(zone)
    return (_zone_abbreviation(zone.key, _daylight(local))
            or _zone_city(zone.key, locale if locale in DATETIME_PATTERNS else DEFAULT_LOCALE))


@lru_cache(maxsize=64)
def _locale(identifier: str) -> Locale:
    """A Babel locale, parsed once: Babel parses an identifier given as a string again on
    each call, about a fifth of a date's formatting (measured). Raises what
    `Locale.parse` raises (`UnknownLocaleError`, ValueError), never cached."""
    return Locale.parse(identifier)


def format_local_datetime(instant: datetime, zone: ZoneInfo, locale: str) -> str:
    """`instant` written in `zone` with the locale's pattern (`en`'s for another locale),
    followed by `zone_label`: `Tue, Dec 14 at 3:30 PM EST`."""
    pattern = DATETIME_PATTERNS.get(locale, DATETIME_PATTERNS[DEFAULT_LOCALE])
    written = format_datetime(instant, pattern, tzinfo=zone, locale=_locale(locale))
    return f"{written} {zone_label(instant, zone, locale)}"


def format_local_time(instant: datetime, zone: ZoneInfo, locale: str) -> str:
    """The time of day of `instant` in `zone`, as `format_local_datetime` writes it: `3:30
    PM EST`."""
    pattern = TIME_PATTERNS.get(locale, TIME_PATTERNS[DEFAULT_LOCALE])
    written = format_datetime(instant, pattern, tzinfo=zone, locale=_locale(locale))
    return f"{written} {zone_label(instant, zone, locale)}"


def format_day(day: date, locale: str) -> str:
    """A date in the locale's pattern (`en`'s for another locale): `Monday, December 14`."""
    pattern = DATE_PATTERNS.get(locale, DATE_PATTERNS[DEFAULT_LOCALE])
    return format_date(day, pattern, locale=_locale(locale))


def text_to_html(text: str) -> str:
    """An HTML document from a text email: paragraphs escaped, line breaks kept, http(s)
    URLs made links."""
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
    """The templates under one directory. Raises `TemplateError` when the directory does not
    exist."""
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
        """The SMS body of `kind` in `locale` (`en` when it has none): one line, folded into
        GSM-7 where it can be. Raises `TemplateError` when the template is missing or fails
        to render."""
        template = self._template("sms", kind, locale)
        try:
            # Folded onto one line, then into GSM-7 where an equivalent exists (quotes,
            # dashes, accents, CLDR's narrow no-break space before AM/PM).
            body = " ".join(normalise(template.render(context)).split())
        except jinja2.TemplateError as exc:
            raise TemplateError(f"sms/{kind}.{locale}: {exc}") from exc
        return body

    def reply(self, name: str, locale: str, context: dict[str, Any]) -> str:
        """Our answer to an inbound SMS, from `templates/replies/{name}.{locale}.txt` (`en`
        when the locale has none), folded and kept to GSM-7 like an SMS body. Apart from
        `sms/` so that nothing that walks the notification kinds meets them. Raises
        `TemplateError` when the template is missing or fails to render."""
        for candidate in (locale, DEFAULT_LOCALE):
            try:
                template = self.sms_env.get_template(f"replies/{name}.{candidate}.txt")
                break
            except jinja2.TemplateNotFound:
                continue
        else:
            raise TemplateError(f"no reply template for {name!r}")
        try:
            return " ".join(normalise(template.render(context)).split())
        except jinja2.TemplateError as exc:
            raise TemplateError(f"replies/{name}.{locale}: {exc}") from exc

    def email(self, kind: str, locale: str, context: dict[str, Any]) -> RenderedEmail:
        """The subject, text and HTML of the email of `kind` in `locale` (`en` when it has
        none). Raises `TemplateError` when the template is missing, has no `subject` block
        or fails to render."""
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
