"""What the console's client page shows, read from the ledger in a fixed number of round
trips whatever the client's history (`load_client_file`): the client's record, their
number's opt-out, their notifications of the read API's window (`READ_WINDOW`) and to
come, their upcoming appointments, their prescriptions and their open refill requests and
messages with when each escalates.

Errors: as the ledger's (`StoreUnavailable`, `StoreError`); a record that no longer
parses raises pydantic's `ValidationError`, as everywhere records are read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from notifier.ledger.batch import Batch
from notifier.ledger.reading import NotificationRow
from notifier.ledger.record_store import client_of, parse_record
from notifier.ledger.records import (
    AppointmentRecord,
    ClientRecord,
    OpenItemRecord,
    PrescriptionRecord,
    ProviderQueueRecord,
)
from notifier.ledger.store import Store
from notifier.policy.refills import runout_day
from notifier.web.read_api import READ_WINDOW


@dataclass(frozen=True)
class OpenRequest:
    """A refill request or message waiting for the provider. `escalates_at`: when support
    is alerted (from the provider's queue; None when the queue no longer lists it)."""

    ref: str
    item: OpenItemRecord
    escalates_at: datetime | None


@dataclass(frozen=True)
class PrescriptionLine:
    """A prescription and the day it runs out (filled on + days of supply)."""

    record: PrescriptionRecord
    runs_out_on: date


@dataclass(frozen=True)
class ClientFile:
    """Everything the client page shows. `sms_opted_out`: None when the client has no
    number."""

    client: ClientRecord
    sms_opted_out: bool | None
    notifications: list[NotificationRow]
    appointments: list[AppointmentRecord]
    prescriptions: list[PrescriptionLine]
    requests: list[OpenRequest]


def load_client_file(store: Store, client_id: str, now: datetime) -> ClientFile | None:
    """The client page's data at `now`, or None for a client with no record. Seven round
    trips at most: the record and the client's entity refs; the notifications (two); the
    upcoming appointments (two); the entity records with the opt-out; the providers'
    queues (only when a request is open)."""
    batch = Batch(store.redis)
    raw_client = store.records.queue_raw_records(batch, [f"client:{client_id}"])
    entity_refs = store.records.queue_client_entity_refs(batch, client_id)
    batch.run()
    raw = raw_client.get().get(f"client:{client_id}")
    record = parse_record("client", raw) if raw is not None else None
    if not isinstance(record, ClientRecord):
        return None
    notifications = store.notifications_for("client", client_id, since=now - READ_WINDOW)
    appointments = store.upcoming_appointments(client_id, now)

    phone = record.client.phone
    raw_entities = store.records.queue_raw_records(batch, entity_refs.get())
    opted_out = store.opt_outs.queue_opted_out(batch, [phone] if phone else [])
    batch.run()
    # A ref stays in the set when its record moves to another client: checked here.
    entities = {ref: entity for ref, raw in raw_entities.get().items()
                if client_of(entity := parse_record(ref.split(":", 1)[0], raw)) == client_id}
    prescriptions = sorted(
        (PrescriptionLine(r, runout_day(r.prescription)) for r in entities.values()
         if isinstance(r, PrescriptionRecord)),
        key=lambda line: (line.runs_out_on, line.record.prescription.id))
    items = {ref: r for ref, r in entities.items()
             if isinstance(r, OpenItemRecord) and r.status == "open"}
    return ClientFile(client=record,
                      sms_opted_out=opted_out.get()[phone] if phone else None,
                      notifications=notifications, appointments=appointments,
                      prescriptions=prescriptions, requests=open_requests(store, items))


def open_requests(store: Store, items: dict[str, OpenItemRecord]) -> list[OpenRequest]:
    """The open `items` (by ref) with when each escalates, read from their providers'
    queues in one round trip (none without items); soonest escalation first, those the
    queue does not list last."""
    queues = store.load_records(sorted({f"provider_queue:{i.provider_id}"
                                        for i in items.values() if i.provider_id}))
    requests = []
    for ref, item in items.items():
        queue = queues.get(f"provider_queue:{item.provider_id}")
        listed = queue.items.get(ref) if isinstance(queue, ProviderQueueRecord) else None
        requests.append(OpenRequest(ref, item, listed.escalates_at if listed else None))
    return sorted(requests, key=lambda r: (r.escalates_at is None,
                                           r.escalates_at or datetime.min, r.ref))
