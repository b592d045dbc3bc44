"""`Task` (a refill request) -> `refill.requested` / `refill.sent` / `refill.denied`.

A Task is a refill request when its `focus` is a MedicationRequest (our prescription);
any other Task is ignored. Our refill request's id is the Task's. By `status`:

- `requested`, `received`, `accepted`, `ready`, `in-progress` -> `refill.requested` (the
  request is open; a later version with the same status is a duplicate opening our
  policy ignores);
- `completed` -> `refill.sent`;
- `rejected` -> `refill.denied`, `reason: visit_required` when `statusReason` has the code
  `visit-required` (any system) or its text says one is needed ("visit required", "needs
  an appointment", "book a visit"; not "no visit needed" nor "refilled at last visit"),
  else `other`: `visit_required` asks the client to book one;
- `cancelled` (withdrawn by whoever asked) and `entered-in-error` (a request that never
  was) -> `refill.denied` with `reason: other`: the request is closed, so support is not
  alerted about it (our policy tells the client nothing of an `other` denial it did not
  open);
- `draft`, `on-hold`, `failed`: ignored.

The client is `for` (a Patient); the provider `owner` when it is a Practitioner, else the
focused MedicationRequest's `requester`, that request being in the payload or remembered
from its own notification (`Context.requests`); without either the opening is ignored
(closings need only the Task's id).
"""

from __future__ import annotations

import re
from typing import Any

from notifier.intake.fhir.common import (
    Context,
    Defaults,
    Ignored,
    Mapped,
    codes,
    envelope,
    ref_of,
)
from notifier.intake.fhir.medication import KnownRequest, known_request

OPEN = ("requested", "received", "accepted", "ready", "in-progress")
VISIT_CODES = ("visit-required", "visit_required")
#: A text saying a visit is needed, not negated.
_VISIT_NEEDED = re.compile(
    r"(?<!\bno )(?<!\bnot )\b(visit|appointment)s?\s+(is\s+|are\s+)?(required|needed|"
    r"necessary)\b|\b(needs?|requires?|book|schedule)\s+(a|an|another|a\s+new)\s+"
    r"(office\s+|follow-up\s+)?(visit|appointment)\b", re.IGNORECASE)


def denial_reason(task: Any) -> str:
    """`visit_required` or `other`, from `statusReason`."""
    reason = task.statusReason
    if reason is None:
        return "other"
    if any(code in VISIT_CODES for code in codes(reason)):
        return "visit_required"
    texts = [reason.text or "", *(c.display or "" for c in reason.coding or ())]
    return "visit_required" if any(_VISIT_NEEDED.search(t) for t in texts) else "other"


def _prescriber(task: Any, ctx: Context, prescription: str) -> str | None:
    """The focused MedicationRequest's requester: from the payload, else remembered."""
    request = ctx.resolve(task.focus.reference)
    if request is not None and request.get_resource_type() == "MedicationRequest":
        return known_request(request, ctx).provider_id
    remembered = ctx.requests.get(prescription)
    return remembered.provider_id if isinstance(remembered, KnownRequest) else None


def map_task(task: Any, ctx: Context, defaults: Defaults) -> Mapped:
    """A refill-request Task as our events, or why none."""
    prescription = ref_of(ctx, task.focus, "MedicationRequest")
    if prescription is None:
        return Ignored("not a refill request (Task.focus is not a MedicationRequest)")
    status = task.status
    if status in OPEN:
        client = ref_of(ctx, task.for_fhir, "Patient")
        provider = (ref_of(ctx, task.owner, "Practitioner")
                    or _prescriber(task, ctx, prescription))
        if client is None or provider is None:
            return Ignored("no Patient (Task.for) or Practitioner (Task.owner, or the "
                           "MedicationRequest's requester, in the payload or posted before)")
        request_data = {"id": ctx.own(task), "prescription_id": prescription,
                        "client_id": client, "provider_id": provider}
        return [envelope(task, ctx, "refill.requested", {"request": request_data})]
    if status == "completed":
        return [envelope(task, ctx, "refill.sent", {"request_id": ctx.own(task)})]
    if status in ("rejected", "cancelled", "entered-in-error"):
        reason = denial_reason(task) if status == "rejected" else "other"
        return [envelope(task, ctx, "refill.denied",
                         {"request_id": ctx.own(task), "reason": reason})]
    return Ignored(f"a refill request {status}")
