"""The FHIR R4 intake: what a practice's EHR posts (its resources, as a Subscription's
notifications) made into our own events, so the same policies run on them.

- `parse`: bytes -> the payload's resources, validated with `fhir.resources` (R4B models);
  problems named by FHIRPath;
- one pure mapper per resource: `patient`, `practitioner`, `appointment`, `medication`
  (MedicationRequest and MedicationDispense), `task`, `communication`; each takes a
  resource, its `Context` and the practice's `Defaults` and returns our events or
  `Ignored(reason)`;
- `contact`: telecom, zone and language read for Patient and Practitioner;
- `common`: what the mappers share (event ids from `meta`, references, `Ignored`);
- `mapping`: `map_payload(raw, defaults)`, the whole payload mapped and checked.
"""

from notifier.intake.fhir.common import Defaults, Ignored
from notifier.intake.fhir.mapping import MappedResource, map_payload

__all__ = ["Defaults", "Ignored", "MappedResource", "map_payload"]
