"""Entity records kept in Redis: what has been applied to each client, provider, appointment.

Each record carries `updated_at`, the `occurred_at` of the last event applied to it, so an
older event arriving late can be recognised as stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from notifier.intake.events import Appointment, Client, Prescription, Provider


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    updated_at: AwareDatetime

    def is_newer_than(self, occurred_at: datetime) -> bool:
        """Whether this record already reflects something later than `occurred_at`."""
        return self.updated_at > occurred_at


class ClientRecord(Record):
    client: Client


class ProviderRecord(Record):
    provider: Provider


AppointmentStatus = Literal["scheduled", "cancelled", "completed", "no_show"]


class AppointmentRecord(Record):
    appointment: Appointment
    status: AppointmentStatus = "scheduled"
    #: iCalendar SEQUENCE: raised on every reschedule and on cancellation
    sequence: int = 0
    cancelled_by: str | None = None
    confirmed_at: AwareDatetime | None = None


class ClosedAppointmentRecord(Record):
    """An appointment cancelled, completed or missed before we saw it booked: kept so the
    late booking is recognised as stale instead of planning reminders for it."""

    status: Literal["cancelled", "completed", "no_show"]


class VisitsRecord(Record):
    """A client's visits as far as we know them: the basis of visit-required and follow-up."""

    last_completed_on: date | None = None
    #: appointment id -> start, for appointments still scheduled that had not started when
    #: the record was last written (`without_started`): a visit whose completion or no-show
    #: never arrives leaves at the next write instead of staying for ever
    upcoming: dict[str, AwareDatetime] = Field(default_factory=dict)

    def without_started(self, now: datetime) -> dict[str, datetime]:
        """`upcoming` without the visits that started at or before `now` (aware): what a
        write keeps. Pure; the readers below ignore started visits whether or not a write
        has dropped them yet."""
        return {appt: start for appt, start in self.upcoming.items() if start > now}

    def has_visit_after(self, instant: datetime) -> bool:
        """Whether a still-scheduled visit starts after `instant` (aware)."""
        return any(start > instant for start in self.upcoming.values())

    def has_visit_between(self, start: datetime, end: datetime) -> bool:
        """Whether a still-scheduled visit starts strictly between `start` and `end`
        (aware)."""
        return any(start < visit < end for visit in self.upcoming.values())


class PrescriptionRecord(Record):
    prescription: Prescription
    status: Literal["active", "discontinued"] = "active"


class ClosedPrescriptionRecord(Record):
    """A prescription discontinued before we saw it filled (after waiting for the fill):
    kept so the late fill is recognised as stale instead of planning refill reminders."""

    status: Literal["discontinued"] = "discontinued"


class RefillAskedRecord(Record):
    """That a refill of the prescription was requested, `updated_at` the latest request's
    `occurred_at`: written in the prescription's shard with the request's cancel of its
    reminders (`PlanWriter._cancel_elsewhere`), so a fill applied after the request but
    occurred before it plans no reminders the request has made moot (the two are
    different subjects, applied by different workers in either order; found by QA)."""


ItemKind = Literal["refill_request", "message"]


class OpenItemRecord(Record):
    """A refill request or client message waiting for the provider (or a tombstone: an item
    closed before we saw it open, so a late `opened` event is recognised as stale)."""

    id: str
    kind: ItemKind
    client_id: str | None = None
    provider_id: str | None = None
    prescription_id: str | None = None
    opened_at: AwareDatetime | None = None
    status: Literal["open", "closed"] = "open"
    closed_reason: str | None = None


class OpenItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: ItemKind
    client_id: str
    opened_at: AwareDatetime
    escalates_at: AwareDatetime


class ProviderQueueRecord(Record):
    """A provider's open items, for the daily digest: item ref -> what it is."""

    items: dict[str, OpenItem] = Field(default_factory=dict)


RECORD_TYPES: dict[str, type[Record]] = {
    "client": ClientRecord,
    "provider": ProviderRecord,
    "appointment": AppointmentRecord,
    "appointment_closed": ClosedAppointmentRecord,
    "visits": VisitsRecord,
    "prescription": PrescriptionRecord,
    "prescription_closed": ClosedPrescriptionRecord,
    "refill_asked": RefillAskedRecord,
    "refill_request": OpenItemRecord,
    "message": OpenItemRecord,
    "provider_queue": ProviderQueueRecord,
}


@dataclass(frozen=True)
class State:
    """The records an event's policy needs, loaded before planning (None: never seen)."""

    client: ClientRecord | None = None
    provider: ProviderRecord | None = None
    appointment: AppointmentRecord | None = None
    appointment_closed: ClosedAppointmentRecord | None = None
    visits: VisitsRecord | None = None
    prescription: PrescriptionRecord | None = None
    prescription_closed: ClosedPrescriptionRecord | None = None
    refill_asked: RefillAskedRecord | None = None
    item: OpenItemRecord | None = None
    provider_queue: ProviderQueueRecord | None = None

    @classmethod
    def from_records(cls, records: dict[str, Record]) -> State:
        """Sort loaded records (by ref) into their slots."""
        found: dict[str, Record] = {}
        for ref, record in records.items():
            kind = ref.split(":", 1)[0]
            found["item" if kind in ("refill_request", "message") else kind] = record
        return cls(**found)  # type: ignore[arg-type]
