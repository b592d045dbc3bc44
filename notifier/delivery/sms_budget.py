"""The SMS budget: every client SMS within two segments, whatever the names, links and
configuration put into it, counted as carriers count (GSM-7 or UCS-2). Pure, apart from the
start-up check's template reads.

The rule, applied at render time to every client SMS (`fit`), in this order:

1. Everything is normalised (`sms_text.normalise`): NFC, typographic quotes, dashes,
   ellipsis, odd spaces and invisible characters folded to GSM-7, accents dropped where
   GSM-7 lacks the letter (María -> Maria).
2. Personal data keeps only GSM-7 letters (`sms_name`): "Ana 🌻" is "Ana", a name in
   another script is left out ("Hi, your appointment ..."), at most 20 characters. An emoji
   in a name is not worth a message twice the price that may arrive in three parts. Only
   words of letters (with an inner ' or -) are kept, their surrounding punctuation dropped:
   a "name" such as `https://evil.example/x` or `(she/her)` is left out, so no link, path
   or markup of an integrator's data reaches a client's phone in our words.
3. Over budget with the video link as it is: the link is replaced by this service's short
   link (`{NOTIFIER_PUBLIC_URL}/j/<token>`, which redirects to the visit's current link).
4. Still over budget: the SMS is not sent. It is `suppressed` with the reason, and the
   message goes by email where the client allows it. Never a silent 3-segment send.

What makes step 4 unreachable with the shipped templates is the start-up check
(`check_configuration`): every client template is rendered with the worst case each
variable can bring (the longest date, zone name, first name and short link) and the
configured practice name, phone and URL, and a value that would push any of them over the
budget stops start-up naming the variable and the template.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

from babel.dates import format_date, format_datetime

from notifier.config import Settings
from notifier.delivery.render import (
    DATE_PATTERNS,
    DATETIME_PATTERNS,
    TIME_PATTERNS,
    Renderer,
    zone_label,
)
from notifier.delivery.sms_text import SmsSize, gsm7_only, is_gsm7, measure, normalise
from notifier.errors import ConfigError, TemplateError

#: The most segments a client SMS may take.
MAX_SEGMENTS = 2
#: A first name in an SMS: at most this many characters (each one septet, see `sms_name`).
SMS_NAME_CHARS = 20
#: The length of a short link's token (`notifier.ledger.shortlinks`), for the worst case.
SHORT_TOKEN_CHARS = 16
#: Configuration that goes into client SMS, by the environment variable that sets it.
SMS_SETTINGS = {"NOTIFIER_PRACTICE_NAME": "practice_name",
                "NOTIFIER_PRACTICE_PHONE": "practice_phone",
                "NOTIFIER_PRACTICE_URL": "practice_url",
                "NOTIFIER_PUBLIC_URL": "public_url"}
LOCALES = ("en", "es")
SHORT_LINK_FALLBACK = "video link shortened to fit the SMS budget"


class OverBudget(TemplateError):
    """A client SMS does not fit its budget even after every fallback: it is not sent."""

    def __init__(self, template: str, size: SmsSize) -> None:
        super().__init__(f"sms/{template} is {size.describe()}, over the budget of "
                         f"{MAX_SEGMENTS} segments")
        self.template = template
        self.size = size


@dataclass(frozen=True)
class FittedSms:
    body: str
    size: SmsSize
    #: the fallback used to fit it, or "" when none was needed
    fallback: str = ""


def within_budget(size: SmsSize) -> bool:
    """Whether `size` takes at most `MAX_SEGMENTS` segments."""
    return size.segments <= MAX_SEGMENTS


#: A word of a name as SMS carry it: letters, joined by an apostrophe or a hyphen inside
#: (O'Brien, Smith-Jones), nothing else.
NAME_WORD = re.compile(r"[^\W\d_]+(?:['-][^\W\d_]+)*")


def sms_name(first_name: str) -> str:
    """A first name as client SMS carry it: its words of basic GSM-7 letters (each
    without the punctuation around it; a word with any other character left out), at most
    20 characters ("“Bo” Smith–Jones…" -> "Bo Smith-Jones"; "https://x.example" -> "")."""
    words = (word.strip(string.punctuation) for word in gsm7_only(first_name).split())
    return " ".join(w for w in words if NAME_WORD.fullmatch(w))[:SMS_NAME_CHARS].strip()


def short_url(public_url: str, token: str) -> str:
    """The short link of `token` under the public URL: `{public_url}/j/{token}`."""
    return f"{public_url.rstrip('/')}/j/{token}"


def fit(template: str, render: Callable[[dict[str, Any]], str], context: dict[str, Any],
        shorten: Callable[[], str] | None) -> FittedSms:
    """Render a client SMS within budget (steps 3 and 4 of the module's rule; the context's
    personal data is already cleaned). `template` names it in errors (`kind.locale`);
    `shorten()` gives the short link to the video visit, called only when it is needed (it
    makes one on first use). Raises `OverBudget` (a `TemplateError`) when it does not fit
    even with the short link, and `TemplateError` as `render` does."""
    body = render(context)
    size = measure(body)
    if within_budget(size):
        return FittedSms(body, size)
    if context.get("join_url") and shorten is not None:
        body = render({**context, "join_url": shorten()})
        shortened = measure(body)
        if within_budget(shortened):
            return FittedSms(body, shortened, SHORT_LINK_FALLBACK)
        size = shortened
    raise OverBudget(template, size)


# The worst case --------------------------------------------------------------------------

#: Instants to try for the longest date: every day of a year, at a two-digit hour in the
#: morning and evening (10:30 and 22:30 UTC; the zone does not change the pattern's width).
def _instants() -> Iterator[datetime]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for day in range(366):
        for hour in (10, 22):
            yield start + timedelta(days=day, hours=hour, minutes=30)


def _longest(values: Iterator[str]) -> str:
    return max((normalise(v) for v in values), key=lambda v: (measure(v).units, v))


@lru_cache(maxsize=8)
def longest_zone(locale: str) -> tuple[str, str]:
    """The IANA zone a client may have whose label (`render.zone_label`) is the longest in
    `locale`, and that label (winter or summer, whichever is longer)."""
    instants = (datetime(2026, 1, 15, 12, tzinfo=UTC), datetime(2026, 7, 15, 12, tzinfo=UTC))
    labels = {normalise(zone_label(t, ZoneInfo(key), locale)): key
              for key in sorted(available_timezones(), reverse=True) for t in instants}
    label = _longest(iter(labels))
    return labels[label], label


def longest_zone_label(locale: str) -> str:
    """The longest zone label in `locale` (see `longest_zone`)."""
    return longest_zone(locale)[1]


@lru_cache(maxsize=8)
def worst_case_values(locale: str) -> dict[str, str]:
    """The longest value each date and time variable of an SMS can take in `locale`."""
    zone = longest_zone_label(locale)
    moment = _longest(format_datetime(t, DATETIME_PATTERNS[locale], tzinfo=UTC, locale=locale)
                      for t in _instants())
    time = _longest(format_datetime(t, TIME_PATTERNS[locale], tzinfo=UTC, locale=locale)
                    for t in _instants())
    day = _longest(format_date(t.date(), DATE_PATTERNS[locale], locale=locale)
                   for t in _instants())
    return {"start_local": f"{moment} {zone}", "change_by_local": f"{moment} {zone}",
            "start_time_local": f"{time} {zone}", "runout_local": day, "book_by_local": day}


def worst_case_contexts(settings: Settings, locale: str) -> Iterator[dict[str, Any]]:
    """Contexts for every branch of a client SMS template (a change-by date or not, a video
    link or not, a late fee or not, a book-by date or not), each with the longest values."""
    values = worst_case_values(locale)
    base: dict[str, Any] = {
        # A name of 20 one-septet letters is the longest `sms_name` lets through.
        "first_name": "W" * SMS_NAME_CHARS,
        "practice_name": settings.practice_name, "practice_phone": settings.practice_phone,
        "practice_url": settings.practice_url, "provider_name": "", "item_kind": "",
        "medication": None, **values,
        "join_url": short_url(settings.public_url, "x" * SHORT_TOKEN_CHARS),
    }
    for change_by in (values["change_by_local"], None):
        for join_url in (base["join_url"], None):
            for late_fee in (True, False):
                for book_by in (values["book_by_local"], None):
                    yield {**base, "change_by_local": change_by, "join_url": join_url,
                           "late_fee": late_fee, "book_by_local": book_by}


def client_sms_kinds(renderer: Renderer, staff_kinds: frozenset[str]) -> list[str]:
    """The kinds with an SMS template, staff kinds left out, sorted."""
    return [k for k in renderer.kinds("sms") if k not in staff_kinds]


def worst_case_sizes(settings: Settings, renderer: Renderer,
                     staff_kinds: frozenset[str]) -> dict[str, SmsSize]:
    """The largest size of each client SMS template (`kind.locale`) over its worst cases.
    Raises `TemplateError` when a template fails to render."""
    sizes: dict[str, SmsSize] = {}
    for kind in client_sms_kinds(renderer, staff_kinds):
        for locale in LOCALES:
            worst = max((measure(renderer.sms(kind, locale, context))
                         for context in worst_case_contexts(settings, locale)),
                        key=lambda s: (s.segments, s.encoding == "UCS-2", s.units))
            sizes[f"{kind}.{locale}"] = worst
    return sizes


def check_configuration(settings: Settings, renderer: Renderer,
                        staff_kinds: frozenset[str],
                        env_defaults: Mapping[str, str] | None = None) -> None:
    """Stop start-up (ConfigError, one line) when a practice name, phone or URL would put a
    client SMS over budget, naming the variable and the template; TemplateError when the
    templates alone do (whatever the configuration)."""
    defaults = Settings()
    for variable, field in SMS_SETTINGS.items():
        value = getattr(settings, field)
        if variable.endswith("_URL") and not value.isascii():
            # Folding a URL into GSM-7 (clínica -> clinica) would send people elsewhere.
            raise ConfigError(
                f"{variable}: {value!r} is not ASCII: an SMS cannot carry it as it is, and "
                "folding it would change where it leads; give its ASCII form (punycode "
                "host, percent-encoded path)")
        outside = sorted({ch for ch in normalise(value) if not is_gsm7(ch)})
        if outside:
            raise ConfigError(
                f"{variable}: {value!r} has characters outside the SMS alphabet (GSM-7): "
                f"{' '.join(outside)}; every SMS would be sent as UCS-2, over budget")
    for template, size in worst_case_sizes(settings, renderer, staff_kinds).items():
        if within_budget(size):
            continue
        to_blame = [variable for variable, field in SMS_SETTINGS.items()
                    if getattr(settings, field) != getattr(defaults, field)
                    and within_budget(worst_case_sizes(
                        replace(settings, **{field: getattr(defaults, field)}), renderer,
                        staff_kinds)[template])]
        if not to_blame:
            raise TemplateError(f"sms/{template}: {size.describe()} in the worst case, over "
                                f"the budget of {MAX_SEGMENTS} segments")
        variable = to_blame[0]
        value = getattr(settings, SMS_SETTINGS[variable])
        raise ConfigError(
            f"{variable}: {value!r} is too long for the SMS budget: sms/{template} would take "
            f"{size.describe()} with the longest names and dates (at most {MAX_SEGMENTS} "
            "segments)")
