"""`Appointment` -> `appointment.scheduled` / `cancelled` / `completed` / `no_show`.

By `status`:

- `booked` -> `appointment.scheduled`, every time; for a patient participant whose
  `status` is `declined` (one of a group who will not come) `appointment.cancelled` by the
  client instead, so they are not reminded of it. Our policy reads a second
  `appointment.scheduled` for an appointment it knows as an update
  (`notifier.policy.appointments.plan_scheduled`): new times send `appointment_updated`,
  the same times only refresh its details (a new video link). So whether a version is a
  reschedule needs no memory of the previous start here, and an out-of-order version is
  `stale` by its `occurred_at` rather than guessed from.
- `cancelled` -> `appointment.cancelled`, `cancelled_by` from `cancelationReason`'s codes
  (HL7 appointment-cancellation-reason: `pat…` the client, `prov…` the provider, anything
  else or none: support); `entered-in-error` -> cancelled by support (the client may have
  been told of it).
- `fulfilled` -> `appointment.completed`.
- `noshow` -> `appointment.no_show`: `party: provider` when a Practitioner participant's
  status is `declined` (R4 has no per-participant no-show; declining is what an EHR marks),
  else the client.
- `proposed`, `pending`, `waitlist`, `arrived`, `checked-in`: ignored (not booked yet, or
  under way: nothing to tell).

The client is the `Patient` participant, the provider the first `Practitioner` one (a
PractitionerRole or Location is not a provider to us); without both it is ignored. An
Appointment with several patients (group therapy) becomes one event set per patient, and
our appointment id is always `{Appointment.id}.{Patient.id}` (hashed when too long:
`common.fit`): each client has their own
reminders, and the ids do not change when a patient joins (a patient removed from the
group is not cancelled for them: the EHR cancels their part, or their own appointment).

`start`, `end` (or `start + minutesDuration`); without a start it is ignored. `kind` is
`therapy` when the service, type or specialty says so (SNOMED 75516001, or a text or
display with the word "therapy", "psychotherapy" or "counseling"/"counselling", but not
"medication therapy" or "drug therapy": medication therapy management is ours, and so is
"therapeutic drug monitoring"), else `medication_management`. The video
link is the R5 `virtualService` backport extension's `address` (a URL), else the value of
the first of `Defaults.video_extensions` present.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from notifier.intake.fhir.common import (
    Context,
    Defaults,
    Ignored,
    Mapped,
    codes,
    envelope,
    extension_values,
    fit,
    instant,
    ref_of,
)

#: R5's Appointment.virtualService as an R4 extension (FHIR cross-version extensions).
VIRTUAL_SERVICE_URL = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment.virtualService"
#: SNOMED CT "Psychotherapy".
PSYCHOTHERAPY = "75516001"
_THERAPY = re.compile(r"(?<!medication )(?<!drug )\b(psycho)?therapy\b|\bcounsell?ing\b",
                      re.IGNORECASE)
_NOT_YET = {"proposed": "proposed, not booked yet", "pending": "pending, not booked yet",
            "waitlist": "on the waitlist, not booked", "arrived": "under way (arrived)",
            "checked-in": "under way (checked in)"}


def _url(ext: Any) -> str | None:
    value = ext.valueUrl or ext.valueUri or ext.valueString
    return str(value) if value else None


def join_url(appointment: Any, defaults: Defaults) -> str | None:
    """The video link, or None."""
    for _, ext in extension_values(appointment.extension, VIRTUAL_SERVICE_URL):
        for part in ext.extension or ():
            if part.url in ("address", "addressUrl") and _url(part):
                return _url(part)
    for url in defaults.video_extensions:
        for _, ext in extension_values(appointment.extension, url):
            if _url(ext):
                return _url(ext)
    return None


def kind(appointment: Any) -> str:
    """`therapy` or `medication_management`, as the module docstring says."""
    concepts = [*(appointment.serviceType or ()), *(appointment.specialty or ()),
                *(appointment.serviceCategory or ()), appointment.appointmentType]
    for concept in concepts:
        if concept is None:
            continue
        if PSYCHOTHERAPY in codes(concept):
            return "therapy"
        words = [concept.text or "", *(c.display or "" for c in concept.coding or ())]
        if any(_THERAPY.search(text) for text in words):
            return "therapy"
    return "medication_management"


def _participants(appointment: Any, ctx: Context
                  ) -> tuple[list[str], set[str], list[tuple[str, Any]]]:
    """(patients in order, those who declined, (practitioner, participant) pairs)."""
    patients: list[str] = []
    declined: set[str] = set()
    practitioners: list[tuple[str, Any]] = []
    for participant in appointment.participant or ():
        if patient := ref_of(ctx, participant.actor, "Patient"):
            if patient not in patients:
                patients.append(patient)
            if participant.status == "declined":
                declined.add(patient)
        if practitioner := ref_of(ctx, participant.actor, "Practitioner"):
            practitioners.append((practitioner, participant))
    return patients, declined, practitioners


def _cancelled_by(appointment: Any) -> str:
    for code in codes(appointment.cancelationReason):
        if code.startswith("pat"):
            return "client"
        if code.startswith("prov"):
            return "provider"
    return "support"


def map_appointment(appointment: Any, ctx: Context, defaults: Defaults) -> Mapped:
    """An Appointment as our events (one set per patient), or why none."""
    status = appointment.status
    if status in _NOT_YET:
        return Ignored(f"an Appointment {_NOT_YET[status]}")
    patients, declined, practitioners = _participants(appointment, ctx)
    if not patients:
        return Ignored("no Patient participant (Appointment.participant.actor)")
    if not practitioners:
        return Ignored("no Practitioner participant (Appointment.participant.actor)")
    provider_id, _ = practitioners[0]
    events: list[dict[str, Any]] = []
    for patient in patients:
        appointment_id = fit(f"{ctx.own(appointment)}.{patient}")
        data: dict[str, Any]
        if status == "booked" and patient in declined:
            data = {"appointment_id": appointment_id, "cancelled_by": "client"}
            kind_name = "appointment.cancelled"
        elif status == "booked":
            if appointment.start is None:
                return Ignored("booked with no start (Appointment.start)")
            end = appointment.end
            if end is None and appointment.minutesDuration:
                end = appointment.start + timedelta(minutes=appointment.minutesDuration)
            if end is None:
                return Ignored("booked with no end or minutesDuration (Appointment.end)")
            data = {"appointment": {
                "id": appointment_id, "client_id": patient, "provider_id": provider_id,
                "start": instant(appointment.start), "end": instant(end),
                "kind": kind(appointment), "join_url": join_url(appointment, defaults)}}
            kind_name = "appointment.scheduled"
        elif status in ("cancelled", "entered-in-error"):
            data = {"appointment_id": appointment_id,
                    "cancelled_by": _cancelled_by(appointment) if status == "cancelled"
                    else "support"}
            kind_name = "appointment.cancelled"
        elif status == "fulfilled":
            data, kind_name = {"appointment_id": appointment_id}, "appointment.completed"
        elif status == "noshow":
            absent = any(p.status == "declined" for _, p in practitioners)
            data = {"appointment_id": appointment_id,
                    "party": "provider" if absent else "client"}
            kind_name = "appointment.no_show"
        else:
            return Ignored(f"an Appointment with status {status!r}")
        events.append(envelope(appointment, ctx, kind_name, data, suffix=patient))
    return events
