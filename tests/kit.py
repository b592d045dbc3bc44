"""The one test kit: times and zones, events and what becomes of them.

Two shapes of an event, named apart:
- `event_dict(...)` is the JSON object a caller posts to `/v1/events` (and the worker
  reads back from the store): build one with it, or with the builders below
  (`client_upserted`, `appointment`, ...), and hand it to `store_and_apply` or to HTTP;
- `parsed_event(...)` is the same object through the web's own parser, the pydantic
  `Event` the pure policy sees; with `Ledger`, `client_record` and `rows` for the policy
  tests, which give each event the records the store would load for it (`refs_for`,
  `derived_refs`).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

from redis.connection import Connection

from notifier.intake.apply import apply_stored_event
from notifier.intake.events import Event, parse_event
from notifier.ledger.records import ClientRecord, Record, State
from notifier.ledger.store import Store
from notifier.policy import derived_refs, plan, refs_for
from notifier.policy.figures import Policy
from notifier.policy.plan import Plan

_event_ids = itertools.count(1)


# Times and zones ------------------------------------------------------------------------
def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0,
        second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def iso(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


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


# Events as posted: JSON dicts -----------------------------------------------------------
def event_dict(type_: str, data: dict[str, Any], occurred_at: datetime,
               event_id: str | None = None) -> dict[str, Any]:
    """An event as a caller posts it: the JSON object, not yet parsed."""
    return {"id": event_id or f"evt-{next(_event_ids)}", "type": type_,
            "occurred_at": iso(occurred_at), "data": data}


def client_upserted(client_id: str, zone: str, occurred_at: datetime, *, sms: bool = True,
                    email: bool = True, locale: str = "en", first_name: str = "Ana",
                    phone: str | None = "+14155550123") -> dict[str, Any]:
    """A client; `phone=None` for one without a number."""
    client: dict[str, Any] = {
        "id": client_id, "first_name": first_name, "email": f"{client_id}@example.com",
        "timezone": zone, "locale": locale, "channels": {"sms": sms, "email": email}}
    if phone is not None:
        client["phone"] = phone
    return event_dict("client.upserted", {"client": client}, occurred_at)


def provider_upserted(provider_id: str, occurred_at: datetime) -> dict[str, Any]:
    return event_dict("provider.upserted", {"provider": {
        "id": provider_id, "name": "Dr. Rivera", "email": "rivera@example.com",
        "timezone": "America/Chicago"}}, occurred_at)


def appointment(type_: str, appt_id: str, client_id: str, start: datetime, occurred_at: datetime,
                *, join_url: str | None = None, minutes: int = 30) -> dict[str, Any]:
    appt: dict[str, Any] = {"id": appt_id, "client_id": client_id, "provider_id": "prov-1",
                            "start": iso(start), "end": iso(start + timedelta(minutes=minutes)),
                            "kind": "medication_management"}
    if join_url:
        appt["join_url"] = join_url
    return event_dict(type_, {"appointment": appt}, occurred_at)


def prescription_filled(rx_id: str, client_id: str, filled_on: date, occurred_at: datetime, *,
                        days_supply: int = 30, refills_remaining: int = 2) -> dict[str, Any]:
    return event_dict("prescription.filled", {"prescription": {
        "id": rx_id, "client_id": client_id, "provider_id": "prov-1",
        "medication": "Sertraline 50 mg", "filled_on": filled_on.isoformat(),
        "days_supply": days_supply, "refills_remaining": refills_remaining}}, occurred_at)


def refill_requested(request_id: str, rx_id: str, client_id: str, occurred_at: datetime
                     ) -> dict[str, Any]:
    return event_dict("refill.requested", {"request": {
        "id": request_id, "prescription_id": rx_id, "client_id": client_id,
        "provider_id": "prov-1"}}, occurred_at)


def message_received(message_id: str, client_id: str, occurred_at: datetime) -> dict[str, Any]:
    return event_dict("message.received", {"message": {
        "id": message_id, "client_id": client_id, "provider_id": "prov-1"}}, occurred_at)


def store_and_apply(store: Store, policy: Policy, evt: dict[str, Any], now: datetime
                    ) -> Plan | None:
    """What the web and the worker do for one event, without HTTP or a queue."""
    store.store_event(evt["id"], json.dumps(evt).encode(), now)
    return apply_stored_event(store, evt["id"], policy, now)


# Events as the policy sees them: parsed, and the records they meet ----------------------
def parsed_event(type_: str, data: dict[str, Any], occurred_at: datetime) -> Event:
    """An event as the worker sees it: `event_dict` through the same parser as the web's."""
    return parse_event(json.dumps(event_dict(type_, data, occurred_at)).encode())


def client_record(client_id: str, zone: str, at: datetime) -> ClientRecord:
    upserted = parsed_event("client.upserted", {"client": {
        "id": client_id, "first_name": "Ana", "phone": "+14155550123",
        "email": "ana@example.com", "timezone": zone, "locale": "en",
        "channels": {"sms": True, "email": True}}}, at)
    return ClientRecord(client=upserted.data.client, updated_at=at)


class Ledger:
    """The records the store would hold; each event sees the ones the store would load."""

    def __init__(self) -> None:
        self.records: dict[str, Record] = {}

    def state(self, evt: Event) -> State:
        loaded = {ref: self.records[ref] for ref in refs_for(evt) if ref in self.records}
        loaded |= {ref: self.records[ref] for ref in derived_refs(loaded)
                   if ref in self.records}
        return State.from_records(loaded)

    def plan(self, evt: Event, now: datetime, policy: Policy) -> Plan:
        return plan(evt, self.state(evt), now, policy)

    def apply(self, evt: Event, now: datetime, policy: Policy) -> Plan:
        result = self.plan(evt, now, policy)
        self.records.update(result.records)  # type: ignore[arg-type]
        return result


Row = tuple[datetime, datetime, str]


def rows(result: Plan) -> dict[str, Row]:
    """The notifications of a plan as id -> (due_at, expires_at, state)."""
    assert len({n.id for n in result.add}) == len(result.add), "duplicate ids in one plan"
    return {n.id: (n.due_at, n.expires_at, n.state) for n in result.add}


class CountingConnection(Connection):
    """A real Redis connection that counts the requests it writes, class-wide (one is one
    round trip the client then waits for: a command, or a pipeline sent whole)."""

    sent = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        """Count one request, then send it as redis-py does."""
        CountingConnection.sent += 1
        super().send_packed_command(command, check_health)


@contextmanager
def counted_pipelines(client: Any) -> Iterator[list[int]]:
    """Inside it, each pipeline `client` opens appends 1 to the list it yields: a test counts
    the round trips of code that batches its Redis work one pipeline a round trip."""
    opened: list[int] = []
    original = client.pipeline

    def counting(*args: Any, **kwargs: Any) -> Any:
        opened.append(1)
        return original(*args, **kwargs)

    client.pipeline = counting
    try:
        yield opened
    finally:
        del client.pipeline
