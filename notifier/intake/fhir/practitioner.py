"""`Practitioner` -> `provider.upserted`.

- `name`: the name's `text`, else prefix, given and family joined (`Dr. Lena Rivera`).
- `email` (required by our providers: their digest goes there): the preferred work email in
  use, else any; without one the Practitioner is ignored, saying so.
- `phone`: the preferred valid mobile or work phone, E.164, when there is one.
- `timezone`: the timezone extension, else the practice's.
- `active: false`: ignored.
"""

from __future__ import annotations

from typing import Any

from notifier.intake.events import e164
from notifier.intake.fhir import contact
from notifier.intake.fhir.common import Context, Defaults, Ignored, Mapped, envelope, updated_at


def display_name(names: list[Any] | None) -> str | None:
    """How a provider is named to clients, None without a name."""
    usable = sorted(names or (), key=lambda n: n.use not in ("usual", "official", None))
    for name in usable:
        if name.text and name.text.strip():
            return str(name.text).strip()
        parts = [*(name.prefix or ()), *(name.given or ()), name.family or ""]
        joined = " ".join(str(p).strip() for p in parts if p and str(p).strip())
        if joined:
            return joined
    return None


def _phone(telecom: list[Any] | None, ctx: Context, defaults: Defaults, at: Any) -> str | None:
    for point in contact.ranked(telecom, at):
        if point.system in ("phone", "sms") and point.use in ("mobile", "work", None):
            number = e164(str(point.value), defaults.phone_region)
            if number is not None:
                return number
    return None


def map_practitioner(practitioner: Any, ctx: Context, defaults: Defaults) -> Mapped:
    """A Practitioner as `provider.upserted`, or why not."""
    at = updated_at(practitioner, ctx)
    if practitioner.active is False:
        return Ignored("an inactive Practitioner")
    name = display_name(practitioner.name)
    if name is None:
        return Ignored("no name (Practitioner.name): clients are told who they see")
    work = [p for p in practitioner.telecom or () if p.use in ("work", None)]
    email = contact.email(work, at) or contact.email(practitioner.telecom, at)
    if email is None:
        return Ignored("no email (Practitioner.telecom): a provider's digest goes by email")
    provider = {"id": ctx.own(practitioner), "name": name, "email": email,
                "phone": _phone(practitioner.telecom, ctx, defaults, at),
                "timezone": contact.zone(practitioner.extension, defaults)}
    return [envelope(practitioner, ctx, "provider.upserted", {"provider": provider})]
