"""Event schemas: what integrators may post to `POST /v1/events`, as pydantic models.

`parse_event(raw_bytes)` is the one way in; it raises `InvalidEvent` naming every bad field.
Entity records kept in Redis reuse these models, so what we store is what we validated.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    HttpUrl,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
)

from notifier.errors import FieldProblem, InvalidEvent

#: Ids end up inside Redis keys and dedupe keys, so they are kept to a safe alphabet.
Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,127}$")]


def _e164(value: str) -> str:
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        raise ValueError("not a phone number in E.164 form (+ and country code)") from None
    formatted = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if formatted != value or not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number in E.164 form, e.g. +14155550123")
    return value


def _iana_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # OSError: a directory of the zone database such as "America" (IsADirectoryError).
        raise ValueError("not an IANA time zone, e.g. America/New_York") from None
    return value


#: Times far outside the practice's life are typos (9999 for 2026) and would overflow the
#: date arithmetic of planning, so they are refused at the door.
EARLIEST_YEAR, LATEST_YEAR = 1970, 2100


def _plausible(value: datetime | date) -> datetime | date:
    if not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        raise ValueError(f"year must be between {EARLIEST_YEAR} and {LATEST_YEAR}")
    return value


Phone = Annotated[str, AfterValidator(_e164)]
Instant = Annotated[AwareDatetime, AfterValidator(_plausible)]
Day = Annotated[date, AfterValidator(_plausible)]
TimeZone = Annotated[str, AfterValidator(_iana_zone)]
Name = Annotated[str, Field(min_length=1, max_length=100)]


class Strict(BaseModel):
    """Unknown fields are rejected loudly rather than silently dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Channels(Strict):
    sms: bool
    email: bool


class Client(Strict):
    id: Id
    first_name: Name
    phone: Phone | None = None
    email: EmailStr | None = None
    timezone: TimeZone
    locale: Literal["en", "es"] = "en"
    channels: Channels

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class Provider(Strict):
    id: Id
    name: Name
    email: EmailStr
    phone: Phone | None = None
    timezone: TimeZone

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class Appointment(Strict):
    id: Id
    client_id: Id
    provider_id: Id
    start: Instant
    end: Instant
    kind: Literal["medication_management", "therapy"]
    join_url: HttpUrl | None = None

    @field_validator("end")
    @classmethod
    def _ends_after_start(cls, end: datetime, info: ValidationInfo) -> datetime:
        # A field validator, so the problem names `end` rather than the whole appointment.
        start = info.data.get("start")
        if start is not None and end <= start:
            raise ValueError("end must be after start")
        return end


class Prescription(Strict):
    id: Id
    client_id: Id
    provider_id: Id
    medication: Name
    filled_on: Day
    days_supply: int = Field(ge=1, le=400)
    refills_remaining: int = Field(ge=0, le=100)


class RefillRequest(Strict):
    id: Id
    prescription_id: Id
    client_id: Id
    provider_id: Id


class ClientMessage(Strict):
    id: Id
    client_id: Id
    provider_id: Id


# Event `data` payloads, one per type.
class ClientUpsertedData(Strict):
    client: Client


class ProviderUpsertedData(Strict):
    provider: Provider


class AppointmentData(Strict):
    appointment: Appointment


class AppointmentCancelledData(Strict):
    appointment_id: Id
    cancelled_by: Literal["client", "provider", "support"]


class AppointmentCompletedData(Strict):
    appointment_id: Id


class AppointmentNoShowData(Strict):
    appointment_id: Id
    party: Literal["client", "provider"]


class PrescriptionFilledData(Strict):
    prescription: Prescription


class PrescriptionDiscontinuedData(Strict):
    prescription_id: Id


class RefillRequestedData(Strict):
    request: RefillRequest


class RefillSentData(Strict):
    request_id: Id


class RefillDeniedData(Strict):
    request_id: Id
    reason: Literal["visit_required", "other"]


class MessageReceivedData(Strict):
    message: ClientMessage


class MessageAnsweredData(Strict):
    message_id: Id


class _Envelope(Strict):
    id: Id
    occurred_at: Instant


def _event(type_name: str, data: type[Strict]) -> type[_Envelope]:
    fields: dict[str, Any] = {"type": (Literal[type_name], ...), "data": (data, ...)}
    return create_model(
        "Event_" + type_name.replace(".", "_"), __base__=_Envelope, **fields
    )


#: Every event type and the model of its `data`.
DATA_BY_TYPE: dict[str, type[Strict]] = {
    "client.upserted": ClientUpsertedData,
    "provider.upserted": ProviderUpsertedData,
    "appointment.scheduled": AppointmentData,
    "appointment.rescheduled": AppointmentData,
    "appointment.cancelled": AppointmentCancelledData,
    "appointment.completed": AppointmentCompletedData,
    "appointment.no_show": AppointmentNoShowData,
    "prescription.filled": PrescriptionFilledData,
    "prescription.discontinued": PrescriptionDiscontinuedData,
    "refill.requested": RefillRequestedData,
    "refill.sent": RefillSentData,
    "refill.denied": RefillDeniedData,
    "message.received": MessageReceivedData,
    "message.answered": MessageAnsweredData,
}
EVENT_MODELS = {name: _event(name, data) for name, data in DATA_BY_TYPE.items()}


class Event(Strict):
    """A validated event: the envelope plus its typed `data`."""

    id: Id
    type: str
    occurred_at: Instant
    data: Any


def _problems(exc: ValidationError) -> list[FieldProblem]:
    return [
        FieldProblem(".".join(str(part) for part in error["loc"]) or "body", error["msg"])
        for error in exc.errors(include_url=False)
    ]


def parse_event(raw: bytes | str) -> Event:
    """Validate a raw event body; raises `InvalidEvent` listing every bad field."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: nesting deeper than the parser allows, e.g. 1,000 "[".
        raise InvalidEvent([FieldProblem("body", f"not valid JSON: {exc}")]) from None
    if not isinstance(body, dict):
        raise InvalidEvent([FieldProblem("body", "must be a JSON object")])
    event_type = body.get("type")
    model = EVENT_MODELS.get(event_type) if isinstance(event_type, str) else None
    if model is None:
        known = ", ".join(sorted(EVENT_MODELS))
        problems = [FieldProblem("type", f"unknown event type {event_type!r}; one of: {known}")]
        envelope = {k: v for k, v in body.items() if k in ("id", "occurred_at")}
        try:
            _Envelope.model_validate({"id": "x", "occurred_at": "2000-01-01T00:00:00Z", **envelope})
        except ValidationError as exc:
            problems.extend(_problems(exc))
        raise InvalidEvent(problems)
    try:
        parsed = model.model_validate(body)
    except ValidationError as exc:
        raise InvalidEvent(_problems(exc)) from None
    fields = parsed.model_dump(include={"id", "occurred_at"})
    return Event(type=str(event_type), data=parsed.data, **fields)  # type: ignore[attr-defined]
