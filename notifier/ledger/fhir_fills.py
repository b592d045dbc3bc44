"""The FHIR intake's memory of earlier notifications (`notifier.intake.fhir.mapping.Memory`
on Redis): each prescription's dispenses, so a dispense sent on its own still says how
many refills are left, and what a later dispense or refill Task needs of each
MedicationRequest, since a plain R4 Subscription posts every resource alone.

Keys (under `n:`), by our prescription id (`notifier.intake.fhir.common.Context.scoped`):
- `fhir-fills:{id}`: a sorted set of dispense ids scored by `whenHandedOver` (Unix
  seconds): a dispense's place in it is its fill number; a new version of a dispense moves
  it, a resend is counted once, one entered in error is removed;
- `fhir-rx:{id}`: the request's `KnownRequest` as JSON, replaced only by a newer version
  (by `meta.lastUpdated`).
Each expires `KEEP_S` after it was last written: longer than any prescription is filled on.

Errors: on the ledger's client (`notifier.ledger.client`), `StoreUnavailable` when Redis
cannot be reached or take commands now, `StoreError` when it refuses one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from notifier.intake.fhir.medication import KnownRequest
from notifier.ledger.notifications import PREFIX

#: A prescription is filled within a year of being written (US controlled substances:
#: 6 months), so a record untouched this long is of no more use.
KEEP_S = 400 * 24 * 3600


def fills_key(prescription_id: str) -> str:
    """The key of a prescription's dispenses: `n:fhir-fills:{id}`."""
    return f"{PREFIX}fhir-fills:{prescription_id}"


def request_key(prescription_id: str) -> str:
    """The key of a remembered MedicationRequest: `n:fhir-rx:{id}`."""
    return f"{PREFIX}fhir-rx:{prescription_id}"


def _newer(given: KnownRequest, stored: bytes | None) -> bool:
    """Whether `given` should replace the stored record (an unreadable one: yes)."""
    if stored is None or not given.updated:
        return True
    try:
        before = KnownRequest.from_json(json.loads(stored))
        if not before.updated:
            return True
        return datetime.fromisoformat(given.updated) >= datetime.fromisoformat(before.updated)
    except (ValueError, TypeError):
        return True


class FhirFills:
    """Fills and MedicationRequests seen, on the ledger's Redis client."""

    def __init__(self, client: Any) -> None:
        self.redis = client

    def count(self, prescription_id: str, dispense_id: str, handed_at: float) -> int:
        """Record the fill and return its place (1-based) by (`handed_at`, id). One round
        trip (a MULTI: the rank is the one after the add)."""
        key = fills_key(prescription_id)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(key, {dispense_id: handed_at})
            pipe.expire(key, KEEP_S)
            pipe.zrank(key, dispense_id)
            _, _, rank = pipe.execute()
        return int(rank) + 1

    def void(self, prescription_id: str, dispense_id: str) -> None:
        """Forget a fill (a dispense entered in error)."""
        self.redis.zrem(fills_key(prescription_id), dispense_id)

    def recall(self, prescription_ids: Iterable[str]) -> dict[str, KnownRequest]:
        """The remembered requests among `prescription_ids` (one MGET); an unreadable
        record is as none."""
        ids = list(prescription_ids)
        if not ids:
            return {}
        found: dict[str, KnownRequest] = {}
        for prescription_id, raw in zip(ids, self.redis.mget([request_key(i) for i in ids]),
                                        strict=True):
            if raw is None:
                continue
            try:
                found[prescription_id] = KnownRequest.from_json(json.loads(raw))
            except (ValueError, TypeError):
                continue
        return found

    def remember(self, requests: Iterable[KnownRequest]) -> None:
        """Keep each request unless a newer version of it is kept (two round trips: the
        records read, then the newer ones written; a race between two notifications of
        one request within them keeps either, both being recent)."""
        newest: dict[str, KnownRequest] = {}
        for request in requests:
            if request.id not in newest or _newer(request, json.dumps(
                    newest[request.id].to_json()).encode()):
                newest[request.id] = request
        if not newest:
            return
        stored = self.redis.mget([request_key(i) for i in newest])
        with self.redis.pipeline(transaction=False) as pipe:
            for (prescription_id, request), before in zip(newest.items(), stored, strict=True):
                if _newer(request, before):
                    pipe.set(request_key(prescription_id), json.dumps(request.to_json()),
                             ex=KEEP_S)
            pipe.execute()
