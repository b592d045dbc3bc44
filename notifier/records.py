"""Entity records kept in Redis: what has been applied to each client, provider, appointment.

Each record carries `updated_at`, the `occurred_at` of the last event applied to it, so an
older event arriving late can be recognised as stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict

from notifier.events import Appointment, Client, Provider


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")

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


RECORD_TYPES: dict[str, type[Record]] = {
    "client": ClientRecord,
    "provider": ProviderRecord,
    "appointment": AppointmentRecord,
}


@dataclass(frozen=True)
class State:
    """The records an event's policy needs, loaded before planning (None: never seen)."""

    client: ClientRecord | None = None
    provider: ProviderRecord | None = None
    appointment: AppointmentRecord | None = None
