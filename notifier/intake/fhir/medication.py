"""`MedicationRequest` and `MedicationDispense` -> `prescription.discontinued` and
`prescription.filled`. Our prescription is the MedicationRequest (its id is ours; a
contained one's id is local to its container, so ours is `{container id}_{contained id}`:
`_` is never in a FHIR id).

- MedicationRequest `stopped`, `cancelled` or `completed` -> `prescription.discontinued`
  (its reminders stop). Any other status is ignored: reminders start with a fill. Either
  way what a later dispense or refill Task needs of it is kept (`KnownRequest`, through
  `notifier.intake.fhir.mapping.Memory`): a plain R4 Subscription posts each resource
  alone, the dispense after its request.
- MedicationDispense `completed` -> `prescription.filled`; any other status is ignored.
  `filled_on` is `whenHandedOver`'s date as written (the pharmacy's local day);
  `days_supply` its `daysSupply` (days, rounded), else the request's
  `dispenseRequest.expectedSupplyDuration`; `medication` its `medicationCodeableConcept`
  (text, else display), else the contained or bundled Medication's `code`, else the
  request's, made to fit our events (its first line, cut to 100 characters). The client is
  `subject`, else the request's; the provider the request's `requester` (a Practitioner).
- The dispense needs its MedicationRequest (`authorizingPrescription`): contained in it, in
  the same payload (a bundle, or `_include=MedicationDispense:prescription`), or
  remembered from an earlier notification; without it the dispense is ignored, saying
  so, since neither the prescriber nor the refills allowed are known otherwise.
- `refills_remaining` = `dispenseRequest.numberOfRepeatsAllowed` (none given: 0) minus the
  refills dispensed: the dispense's place among its request's known dispenses in
  `whenHandedOver` order, less the first fill (`Context.fills`). Our events carry only the
  number left, so the count is the caller's (`notifier.intake.fhir.mapping.Memory`):
  `notifier fhir map` counts the payload's own dispenses; `POST /fhir/r4/notify` every
  dispense it has seen (`notifier.ledger.fhir_fills`), so an EHR sending each dispense
  alone still gets the count right. A dispense `entered-in-error` is no longer counted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from notifier.intake.fhir.common import (
    Context,
    Defaults,
    Ignored,
    Mapped,
    concept_text,
    day_of,
    envelope,
    fit,
    ref_id,
    ref_of,
)

#: MedicationRequest statuses that end a prescription's reminders.
ENDED = ("stopped", "cancelled", "completed")


def map_request(request: Any, ctx: Context, defaults: Defaults) -> Mapped:
    """A MedicationRequest as `prescription.discontinued`, or why nothing."""
    if request.status not in ENDED:
        return Ignored(f"no event for a MedicationRequest {request.status}: reminders start "
                       "with its dispense")
    return [envelope(request, ctx, "prescription.discontinued",
                     {"prescription_id": ctx.own(request)})]


def _contained(resource: Any, reference: str | None) -> Any | None:
    if reference and reference.startswith("#"):
        for inner in resource.contained or ():
            if inner.id == reference[1:]:
                return inner
    return None


#: Our longest free text (`notifier.intake.events.Name`).
NAME_MAX = 100


def fitted_text(text: str | None) -> str | None:
    """Free text made to fit our events' names: its first non-blank line, spaces collapsed,
    cut to `NAME_MAX` characters (with an ellipsis); None when nothing is left. FHIR
    allows any length and several lines; a pharmacy's label need not fit an SMS."""
    lines = [" ".join(line.split()) for line in (text or "").splitlines()]
    first = next((line for line in lines if line), None)
    if first is None:
        return None
    return first if len(first) <= NAME_MAX else first[:NAME_MAX - 1].rstrip() + "\u2026"


def _medication(resource: Any, ctx: Context) -> str | None:
    if resource.medicationCodeableConcept is not None:
        return fitted_text(concept_text(resource.medicationCodeableConcept))
    reference = resource.medicationReference
    if reference is None:
        return None
    medication = _contained(resource, reference.reference) or ctx.resolve(reference.reference)
    if medication is not None and medication.get_resource_type() == "Medication":
        return fitted_text(concept_text(medication.code))
    return fitted_text(str(reference.display)) if reference.display else None


def _supply_days(request: Any) -> int | None:
    expected = request.dispenseRequest.expectedSupplyDuration if request.dispenseRequest else None
    if expected is not None and expected.value is not None:
        per_day = {"d": 1, "wk": 7, "mo": 30, "a": 365}.get(expected.code or "d")
        return int(round(expected.value * per_day)) if per_day else None
    return None


@dataclass(frozen=True)
class KnownRequest:
    """What a dispense or a refill Task needs of its MedicationRequest: our prescription id
    (`id`), the client (`client_id`, its `subject`) and prescriber (`provider_id`, its
    `requester` when a Practitioner), `medication` (fitted), `refills_allowed`
    (`numberOfRepeatsAllowed`, 0 when not given), `days_supply` (`expectedSupplyDuration`
    in days), and `updated` (its `meta.lastUpdated`, RFC 3339, "" when unknown), by which
    a remembered one is replaced only by a newer one."""

    id: str
    client_id: str | None
    provider_id: str | None
    medication: str | None
    refills_allowed: int
    days_supply: int | None
    updated: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> KnownRequest:
        """Raises TypeError for a record not of this shape."""
        return cls(**value)


def known_request(request: Any, ctx: Context, our_id: str | None = None) -> KnownRequest:
    """What is kept of a MedicationRequest (`our_id`: by default `ctx.own(request)`)."""
    allowed = (request.dispenseRequest.numberOfRepeatsAllowed
               if request.dispenseRequest else None) or 0
    meta = request.meta
    updated = (meta.lastUpdated.isoformat()
               if meta is not None and meta.lastUpdated is not None else "")
    return KnownRequest(id=our_id or ctx.own(request),
                        client_id=ref_of(ctx, request.subject, "Patient"),
                        provider_id=ref_of(ctx, request.requester, "Practitioner"),
                        medication=_medication(request, ctx), refills_allowed=int(allowed),
                        days_supply=_supply_days(request), updated=updated)


def contained_id(ctx: Context, container: Any, local: str) -> str:
    """Our id of a resource contained in `container` as `#local`."""
    return ctx.scoped(fit(f"{container.id}_{local}"))


def prescription_of(dispense: Any, ctx: Context) -> tuple[str, Any | None] | None:
    """(our prescription id, the MedicationRequest model when contained or in the payload)
    of the dispense's first `authorizingPrescription` that names one; None when none
    does. The id alone is enough to count fills; the model, or a `KnownRequest`
    remembered under that id, is what maps a fill."""
    for reference in dispense.authorizingPrescription or ():
        literal = reference.reference
        inner = _contained(dispense, literal)
        if inner is not None and inner.get_resource_type() == "MedicationRequest":
            return contained_id(ctx, dispense, str(inner.id)), inner
        found = ctx.resolve(literal)
        if found is not None and found.get_resource_type() == "MedicationRequest" and found.id:
            return ctx.own(found), found
        parsed = ref_id(literal)
        if parsed is not None and parsed[0] == "MedicationRequest":
            return ctx.scoped(parsed[1]), None
    return None


def authorizing(dispense: Any, ctx: Context) -> KnownRequest | None:
    """The dispense's MedicationRequest: contained, in the payload, or remembered."""
    found = prescription_of(dispense, ctx)
    if found is None:
        return None
    our_id, model = found
    if model is not None:
        return known_request(model, ctx, our_id)
    remembered = ctx.requests.get(our_id)
    return remembered if isinstance(remembered, KnownRequest) else None


def map_dispense(dispense: Any, ctx: Context, defaults: Defaults) -> Mapped:
    """A MedicationDispense as `prescription.filled`, or why nothing."""
    if dispense.status != "completed":
        return Ignored(f"a MedicationDispense {dispense.status}: only a completed one is a fill")
    request = authorizing(dispense, ctx)
    if request is None:
        return Ignored("its MedicationRequest (authorizingPrescription) is neither contained, "
                       "in the payload, nor posted to us before: include it "
                       "(_include=MedicationDispense:prescription) or subscribe to "
                       "MedicationRequest too")
    filled_on = day_of(dispense.whenHandedOver)
    if filled_on is None:
        return Ignored("not handed over on a known day (MedicationDispense.whenHandedOver)")
    client = ref_of(ctx, dispense.subject, "Patient") or request.client_id
    if client is None or request.provider_id is None:
        return Ignored("no Patient (subject) or Practitioner (the request's requester)")
    medication = _medication(dispense, ctx) or request.medication
    if medication is None:
        return Ignored("no medication named (medicationCodeableConcept / Reference)")
    days = (int(round(dispense.daysSupply.value))
            if dispense.daysSupply is not None and dispense.daysSupply.value is not None
            else request.days_supply)
    if days is None:
        return Ignored("no daysSupply, nor the request's expectedSupplyDuration")
    refills_used = max(ctx.fills.get(request.id, 1) - 1, 0)
    prescription = {"id": request.id, "client_id": client, "provider_id": request.provider_id,
                    "medication": medication, "filled_on": filled_on.isoformat(),
                    "days_supply": days,
                    "refills_remaining": max(request.refills_allowed - refills_used, 0)}
    return [envelope(dispense, ctx, "prescription.filled", {"prescription": prescription})]
