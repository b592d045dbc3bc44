"""`MedicationRequest` and `MedicationDispense` -> `prescription.discontinued` and
`prescription.filled`. Our prescription is the MedicationRequest (its id is ours).

- MedicationRequest `stopped`, `cancelled` or `completed` -> `prescription.discontinued`
  (its reminders stop). Any other status is ignored: reminders start with a fill.
- MedicationDispense `completed` -> `prescription.filled`; any other status is ignored.
  `filled_on` is `whenHandedOver`'s date as written (the pharmacy's local day);
  `days_supply` its `daysSupply` (days, rounded), else the request's
  `dispenseRequest.expectedSupplyDuration`; `medication` its `medicationCodeableConcept`
  (text, else display), else the contained or bundled Medication's `code`, else the
  request's. The client is `subject`, else the request's; the provider the request's
  `requester` (a Practitioner).
- The dispense needs its MedicationRequest (`authorizingPrescription`), contained in it or
  in the same payload (a Subscription on MedicationDispense with `_include=
  MedicationDispense:prescription`, or a bundle): a dispense without it is ignored,
  saying so, since neither the prescriber nor the refills allowed are known otherwise.
- `refills_remaining` = `dispenseRequest.numberOfRepeatsAllowed` (none given: 0) minus the
  refills already dispensed: the dispenses of that request known up to and including this
  one, less the first fill (`Context.fills`). Our events carry only the number left, so
  the count is the caller's (`notifier.intake.fhir.mapping.FillCounter`): `notifier fhir
  map` counts the payload's own dispenses; `POST /fhir/r4/notify` every dispense it has
  seen (`notifier.ledger.fhir_fills`), so an EHR sending each dispense alone still gets
  the count right.
"""

from __future__ import annotations

from typing import Any

from notifier.intake.fhir.common import (
    Context,
    Defaults,
    Ignored,
    Mapped,
    concept_text,
    day_of,
    envelope,
    ref_of,
)

#: MedicationRequest statuses that end a prescription's reminders.
ENDED = ("stopped", "cancelled", "completed")


def map_request(request: Any, ctx: Context, defaults: Defaults) -> Mapped:
    """A MedicationRequest as `prescription.discontinued`, or why nothing."""
    if request.status not in ENDED:
        return Ignored(f"a MedicationRequest {request.status}: reminders start with a "
                       "dispense")
    return [envelope(request, ctx, "prescription.discontinued",
                     {"prescription_id": request.id})]


def _contained(resource: Any, reference: str | None) -> Any | None:
    if reference and reference.startswith("#"):
        for inner in resource.contained or ():
            if inner.id == reference[1:]:
                return inner
    return None


def authorizing(dispense: Any, ctx: Context) -> Any | None:
    """The dispense's MedicationRequest, from its `contained` or the payload."""
    for reference in dispense.authorizingPrescription or ():
        found = (_contained(dispense, reference.reference)
                 or ctx.resolve(reference.reference))
        if found is not None and found.get_resource_type() == "MedicationRequest":
            return found
    return None


def _medication(resource: Any, ctx: Context) -> str | None:
    if resource.medicationCodeableConcept is not None:
        return concept_text(resource.medicationCodeableConcept)
    reference = resource.medicationReference
    if reference is None:
        return None
    medication = _contained(resource, reference.reference) or ctx.resolve(reference.reference)
    if medication is not None and medication.get_resource_type() == "Medication":
        return concept_text(medication.code)
    return str(reference.display) if reference.display else None


def _days_supply(dispense: Any, request: Any) -> int | None:
    if dispense.daysSupply is not None and dispense.daysSupply.value is not None:
        return int(round(dispense.daysSupply.value))
    expected = request.dispenseRequest.expectedSupplyDuration if request.dispenseRequest else None
    if expected is not None and expected.value is not None:
        per_day = {"d": 1, "wk": 7, "mo": 30, "a": 365}.get(expected.code or "d")
        return int(round(expected.value * per_day)) if per_day else None
    return None


def request_key(request: Any) -> str:
    """How `Context.fills` names a MedicationRequest."""
    return f"MedicationRequest/{request.id}"


def map_dispense(dispense: Any, ctx: Context, defaults: Defaults) -> Mapped:
    """A MedicationDispense as `prescription.filled`, or why nothing."""
    if dispense.status != "completed":
        return Ignored(f"a MedicationDispense {dispense.status}: only a completed one is a fill")
    request = authorizing(dispense, ctx)
    if request is None or request.id is None:
        return Ignored("its MedicationRequest (authorizingPrescription) is neither contained "
                       "nor in the payload: include it (_include=MedicationDispense:"
                       "prescription)")
    filled_on = day_of(dispense.whenHandedOver)
    if filled_on is None:
        return Ignored("not handed over on a known day (MedicationDispense.whenHandedOver)")
    client = ref_of(ctx, dispense.subject, "Patient") or ref_of(ctx, request.subject, "Patient")
    provider = ref_of(ctx, request.requester, "Practitioner")
    if client is None or provider is None:
        return Ignored("no Patient (subject) or Practitioner (the request's requester)")
    medication = _medication(dispense, ctx) or _medication(request, ctx)
    if medication is None:
        return Ignored("no medication named (medicationCodeableConcept / Reference)")
    days = _days_supply(dispense, request)
    if days is None:
        return Ignored("no daysSupply, nor the request's expectedSupplyDuration")
    allowed = (request.dispenseRequest.numberOfRepeatsAllowed
               if request.dispenseRequest else None) or 0
    refills_used = max(ctx.fills.get(request_key(request), 1) - 1, 0)
    prescription = {"id": request.id, "client_id": client, "provider_id": provider,
                    "medication": medication, "filled_on": filled_on.isoformat(),
                    "days_supply": days, "refills_remaining": max(allowed - refills_used, 0)}
    return [envelope(dispense, ctx, "prescription.filled", {"prescription": prescription})]

