"""Builders shared by the tests: events, a daytime zone, applying events to a store."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

from notifier.intake.apply import apply_stored_event
from notifier.ledger.store import Store
from notifier.policy.figures import Policy
from notifier.policy.plan import Plan

_ids = itertools.count(1)


def daytime_zone(now: datetime) -> str:
    """A fixed-offset zone where it is about noon at `now`, so quiet hours never interfere.

    Etc/GMT zones have inverted signs: Etc/GMT-3 is UTC+3.
    """
    offset = 12 - now.astimezone(UTC).hour
    offset = offset - 24 if offset > 14 else offset
    return "Etc/GMT" + (f"{-offset:+d}" if offset else "")


def zone_at_hour(now: datetime, hour: int) -> str:
    """A fixed-offset zone where the local hour at `now` is `hour` (Etc/GMT signs are
    inverted: Etc/GMT+7 is UTC-7)."""
    offset = (hour - now.astimezone(UTC).hour + 12) % 24 - 12
    return "Etc/GMT" + (f"{-offset:+d}" if offset else "")


def iso(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def event(type_: str, data: dict[str, Any], occurred_at: datetime, event_id: str | None = None
          ) -> dict[str, Any]:
    return {"id": event_id or f"evt-{next(_ids)}", "type": type_, "occurred_at": iso(occurred_at),
            "data": data}


def client_upserted(client_id: str, zone: str, occurred_at: datetime, *, sms: bool = True,
                    email: bool = True, locale: str = "en", first_name: str = "Ana",
                    phone: str | None = "+14155550123") -> dict[str, Any]:
    """A client; `phone=None` for one without a number."""
    client: dict[str, Any] = {
        "id": client_id, "first_name": first_name, "email": f"{client_id}@example.com",
        "timezone": zone, "locale": locale, "channels": {"sms": sms, "email": email}}
    if phone is not None:
        client["phone"] = phone
    return event("client.upserted", {"client": client}, occurred_at)


def provider_upserted(provider_id: str, occurred_at: datetime) -> dict[str, Any]:
    return event("provider.upserted", {"provider": {
        "id": provider_id, "name": "Dr. Rivera", "email": "rivera@example.com",
        "timezone": "America/Chicago"}}, occurred_at)


def appointment(type_: str, appt_id: str, client_id: str, start: datetime, occurred_at: datetime,
                *, join_url: str | None = None, minutes: int = 30) -> dict[str, Any]:
    appt: dict[str, Any] = {"id": appt_id, "client_id": client_id, "provider_id": "prov-1",
                            "start": iso(start), "end": iso(start + timedelta(minutes=minutes)),
                            "kind": "medication_management"}
    if join_url:
        appt["join_url"] = join_url
    return event(type_, {"appointment": appt}, occurred_at)


def store_and_apply(store: Store, policy: Policy, evt: dict[str, Any], now: datetime
                    ) -> Plan | None:
    """What the web and the worker do for one event, without HTTP or a queue."""
    store.store_event(evt["id"], json.dumps(evt).encode(), now)
    return apply_stored_event(store, evt["id"], policy, now)


def prescription_filled(rx_id: str, client_id: str, filled_on: date, occurred_at: datetime, *,
                        days_supply: int = 30, refills_remaining: int = 2) -> dict[str, Any]:
    return event("prescription.filled", {"prescription": {
        "id": rx_id, "client_id": client_id, "provider_id": "prov-1",
        "medication": "Sertraline 50 mg", "filled_on": filled_on.isoformat(),
        "days_supply": days_supply, "refills_remaining": refills_remaining}}, occurred_at)


def refill_requested(request_id: str, rx_id: str, client_id: str, occurred_at: datetime
                     ) -> dict[str, Any]:
    return event("refill.requested", {"request": {
        "id": request_id, "prescription_id": rx_id, "client_id": client_id,
        "provider_id": "prov-1"}}, occurred_at)


def message_received(message_id: str, client_id: str, occurred_at: datetime) -> dict[str, Any]:
    return event("message.received", {"message": {
        "id": message_id, "client_id": client_id, "provider_id": "prov-1"}}, occurred_at)
