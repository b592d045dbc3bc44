"""The FHIR intake's count of fills: which MedicationDispenses of each MedicationRequest it
has seen, so a dispense sent on its own still says how many refills are left
(`notifier.intake.fhir.medication`: `numberOfRepeatsAllowed` minus the refills dispensed).

Key (under `n:`): `fhir-fills:{MedicationRequest id}`, a set of dispense ids; a set, so a
dispense sent again (a new version, a server's retry) is counted once. It expires
`KEEP_S` after its last dispense: longer than any prescription is filled on.

Errors: on the ledger's client (`notifier.ledger.client`), `StoreUnavailable` when Redis
cannot be reached or take commands now, `StoreError` when it refuses one.
"""

from __future__ import annotations

from typing import Any

from notifier.ledger.notifications import PREFIX

#: A prescription is filled within a year of being written (US controlled substances:
#: 6 months), so a count untouched this long is of no more use.
KEEP_S = 400 * 24 * 3600


def fills_key(request_id: str) -> str:
    """The key of a MedicationRequest's dispenses: `n:fhir-fills:{id}`."""
    return f"{PREFIX}fhir-fills:{request_id}"


class FhirFills:
    """Dispenses seen per MedicationRequest, on the ledger's Redis client."""

    def __init__(self, client: Any) -> None:
        self.redis = client

    def count(self, request_key: str, dispense_id: str) -> int:
        """Record `dispense_id` as a fill of `request_key` (`MedicationRequest/{id}`) and
        return how many distinct dispenses of it are known, this one included. One round
        trip (a MULTI: the count is the one the add made)."""
        key = fills_key(request_key.removeprefix("MedicationRequest/"))
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.sadd(key, dispense_id)
            pipe.expire(key, KEEP_S)
            pipe.scard(key)
            _, _, count = pipe.execute()
        return int(count)
