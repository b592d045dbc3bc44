"""What the pure policy tests share: times, parsed events, client records, and a ledger that
gives each event the records the store would load for it (`refs_for`, `derived_refs`)."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from typing import Any

from notifier.intake.events import Event, parse_event
from notifier.ledger.records import ClientRecord, Record, State
from notifier.policy import derived_refs, plan, refs_for
from notifier.policy.figures import Policy
from notifier.policy.plan import Plan

_event_ids = itertools.count(1)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0,
        second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def iso(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def event(type_: str, data: dict[str, Any], occurred_at: datetime) -> Event:
    """An event as the worker sees it: through the same parser as the web's."""
    return parse_event(json.dumps({"id": f"evt-{next(_event_ids)}", "type": type_,
                                   "occurred_at": iso(occurred_at), "data": data}).encode())


def client_record(client_id: str, zone: str, at: datetime) -> ClientRecord:
    upserted = event("client.upserted", {"client": {
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
