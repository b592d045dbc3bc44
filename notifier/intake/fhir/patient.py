"""`Patient` -> `client.upserted`.

- `first_name`: the first given name of the name in use (`use` usual first: FHIR's "known
  as", Peter Chalmers' `Jim`; then official, then any other but `old`/`maiden`), else the
  first word of its `text`; without a name the Patient is ignored (we greet clients by
  name).
- `phone`: the preferred mobile (`notifier.intake.fhir.contact`); `email`: the preferred
  email; `channels.sms`/`channels.email` are whether each exists: a contact point whose
  `period` has ended is how FHIR says "no longer use this", and is how an opt-out given in
  the EHR reaches us. A Patient with neither is still a client (the records other events
  need), reached by no channel.
- `timezone`: the timezone extension, else the practice's; `locale`: `communication`'s
  language when our templates have it, else English.
- `active: false` (merged, left the practice) or a `deceased` Patient: upserted with both
  channels off, so nothing more reaches them (refill reminders and follow-ups included;
  the appointments the EHR cancels come as their own events).
"""

from __future__ import annotations

from typing import Any

from notifier.intake.fhir import contact
from notifier.intake.fhir.common import Context, Defaults, Ignored, Mapped, envelope, updated_at

_LAST = {"old", "maiden"}


def first_name(names: list[Any] | None) -> str | None:
    """The given name a client is greeted by, None without one."""
    usable = [n for n in names or () if n.use not in _LAST]
    usable.sort(key=lambda n: {"usual": 0, "official": 1}.get(n.use, 2))
    for name in usable:
        for given in name.given or ():
            if given and given.strip():
                return str(given).strip()
        if name.text and name.text.strip():
            return str(name.text).split()[0]
    return None


def map_patient(patient: Any, ctx: Context, defaults: Defaults) -> Mapped:
    """A Patient as `client.upserted`, or why not."""
    at = updated_at(patient, ctx)
    reachable = not (patient.active is False or patient.deceasedBoolean
                     or patient.deceasedDateTime is not None)
    name = first_name(patient.name)
    if name is None:
        return Ignored("no given name (Patient.name): clients are greeted by name")
    phone = contact.mobile(patient.telecom, at, defaults)
    email = contact.email(patient.telecom, at)
    client = {"id": ctx.own(patient), "first_name": name, "phone": phone, "email": email,
              "timezone": contact.zone(patient.extension, defaults),
              "locale": contact.locale(patient.communication),
              "channels": {"sms": reachable and phone is not None,
                           "email": reachable and email is not None}}
    return [envelope(patient, ctx, "client.upserted", {"client": client})]
