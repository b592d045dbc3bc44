"""What a Patient or Practitioner says about reaching them: the mobile phone, the email,
the time zone and the language, read from `telecom`, `extension` and `communication`.

A contact point is in use unless its `period` ended at or before the resource's
`meta.lastUpdated` (so the reading is pure); among those in use the lowest `rank` wins
(FHIR: 1 is the most preferred; no rank comes after every ranked one), then the first
listed. A phone is a mobile when its `system` is `sms`, or `phone` with `use: mobile`: a
home or work line cannot take SMS, and a phone with no `use` is not assumed to. Numbers
are read with the practice's region when written without a country code (`(555)
555-0100`); one that is not a valid number is passed over for the next, and so is an
email address our events refuse (`ana.reyes@`): FHIR takes any string, and one typo
must not refuse the whole notification on every retry. A `mailto:` before an address
is dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import EmailStr, TypeAdapter, ValidationError

from notifier.intake.events import Client, e164
from notifier.intake.fhir.common import Defaults, ends_by, extension_values

#: The timezone extension FHIR defines for a resource's zone (an IANA name, `valueCode`).
TIMEZONE_URL = "http://hl7.org/fhir/StructureDefinition/timezone"
#: The locales our templates exist in; the first is the default.
LOCALES: tuple[str, ...] = get_args(Client.model_fields["locale"].annotation)


def _in_use(point: Any, at: datetime) -> bool:
    period = point.period
    return period is None or period.end is None or ends_by(period.end) > at


def ranked(telecom: Iterable[Any] | None, at: datetime) -> list[Any]:
    """The contact points in use at `at`, most preferred first."""
    points = [p for p in telecom or () if p.value and _in_use(p, at)]
    return sorted(points, key=lambda p: p.rank if p.rank is not None else 2**31)


def mobile(telecom: Iterable[Any] | None, at: datetime, defaults: Defaults) -> str | None:
    """The most preferred valid mobile number in use, E.164; None without one."""
    for point in ranked(telecom, at):
        if point.system == "sms" or (point.system == "phone" and point.use == "mobile"):
            number = e164(str(point.value), defaults.phone_region)
            if number is not None:
                return number
    return None


#: Our events' own email check (`Client.email` of `notifier.intake.events`).
_EMAIL: TypeAdapter[str] = TypeAdapter(EmailStr)


def valid_email(value: str) -> str | None:
    """`value` (less a `mailto:`) when our events take it as an email, else None."""
    address = value.strip()
    if address[:7].lower() == "mailto:":
        address = address[7:].strip()
    try:
        _EMAIL.validate_python(address)
    except ValidationError:
        return None
    return address


def email(telecom: Iterable[Any] | None, at: datetime) -> str | None:
    """The most preferred valid email address in use; None without one."""
    for point in ranked(telecom, at):
        if point.system == "email" and (address := valid_email(str(point.value))):
            return address
    return None


def zone(extensions: Iterable[Any] | None, defaults: Defaults) -> str:
    """The timezone extension's IANA zone, else the practice's (also for a zone we do not
    know: the default is a better guess than refusing the person)."""
    for _, ext in extension_values(extensions, TIMEZONE_URL):
        name = ext.valueCode or ext.valueString
        try:
            if name and "/" in name:
                ZoneInfo(name)
                return str(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            continue
    return defaults.zone


def locale(communication: Iterable[Any] | None) -> str:
    """The first of our locales among the languages (`en`, `es-MX` -> `es`), the
    preferred one looked at first; the default (`en`) otherwise."""
    languages = sorted(communication or (), key=lambda c: not c.preferred)
    for item in languages:
        for code in [c.code for c in item.language.coding or () if c.code]:
            primary = str(code).split("-")[0].lower()
            if primary in LOCALES:
                return primary
    return LOCALES[0]
