"""Event schemas: what integrators may post to `POST /v1/events`, as pydantic models.

`parse_event(raw_bytes)` is the one way in; it raises `InvalidEvent` naming every bad field.
It is strict: JSON types as the contract gives them (an integer is a JSON number without a
fraction, never `true` or `"30"`; a boolean is `true` or `false`; instants, dates and URLs
are strings), no key given twice (`json_body`), no control or bidirectional-override
character in free text (`text`). `parse_stored_event` reads an event the door accepted,
perhaps under an older version's laxer rules, so that an accepted event is always applied.
Entity records kept in Redis reuse these models, so what we store is what we validated.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
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
from notifier.intake.json_body import load_object, strings_with_surrogates
from notifier.intake.text import plain_text

#: Ids end up inside Redis keys and dedupe keys, so they are kept to a safe alphabet.
Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,127}$")]


def e164(text: str, region: str | None) -> str | None:
    """`text` as an E.164 number (`+14155550123`) when it is a valid phone number (national
    ones read in `region`, an ISO 3166 code such as `US`), else None. How the FHIR intake
    reads a Patient's telecom and the console a number typed in its search."""
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


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


#: The validation context of `parse_event`: free text with a refused character is a
#: problem there; elsewhere (records and events written before) the character is removed.
AT_THE_DOOR = {"at_the_door": True}


def _free_text(value: Any, info: ValidationInfo) -> Any:
    # Before the length check, so text of nothing but removed characters is too short.
    if not isinstance(value, str):
        return value  # refused by the str schema, in its words
    return plain_text(value, refuse=bool(info.context and info.context.get("at_the_door")))


#: An instant as RFC 3339 writes it: a date, a time, and `Z` or an offset (seconds and
#: their fraction optional; one without its offset is refused after, by `AwareDatetime`).
#: pydantic alone also reads a number, or a string of digits, as Unix time: `"1764518400"`
#: is more likely a mistake than a time.
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:\d{2})?")


def _rfc3339(value: Any) -> Any:
    """A string in RFC 3339's form, read (a datetime, so that strict validation after
    this takes it as it is); a number refused; anything else left to the datetime schema.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError("an RFC 3339 instant in a string, not a number")
    if not isinstance(value, str):
        return value
    if not RFC3339.fullmatch(value):
        raise ValueError("an RFC 3339 instant with an offset, such as 2026-12-01T15:00:00Z")
    return datetime.fromisoformat(value.upper())


Phone = Annotated[str, AfterValidator(_e164)]
Instant = Annotated[AwareDatetime, BeforeValidator(_rfc3339), AfterValidator(_plausible)]
Day = Annotated[date, AfterValidator(_plausible)]
TimeZone = Annotated[str, AfterValidator(_iana_zone)]
#: Free text that goes into messages: see `notifier.intake.text` for what it may hold.
Name = Annotated[str, Field(min_length=1, max_length=100), BeforeValidator(_free_text)]


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


#: What strict validation means, added to pydantic's words where "30" or `true` would
#: leave an integrator wondering what is wrong with them.
_STRICT_HINTS = {
    "int_type": " (a JSON number without quotes or fraction, such as 30)",
    "bool_type": " (JSON true or false, without quotes)",
    "string_type": " (a JSON string, in quotes)",
}


def _problems(exc: ValidationError) -> list[FieldProblem]:
    return [
        FieldProblem(".".join(str(part) for part in error["loc"]) or "body",
                     error["msg"] + _STRICT_HINTS.get(error["type"], ""))
        for error in exc.errors(include_url=False)
    ]


def parse_event(raw: bytes | str) -> Event:
    """Validate a raw event body as it arrives at the door, strictly (see the module
    docstring); raises `InvalidEvent` listing every bad field."""
    text, body = load_object(raw)
    model = _model_or_refuse(body)
    try:
        # Validated from the text, not from `body`: pydantic's JSON mode is what takes
        # instants, dates and URLs as strings while refusing a string for a number.
        parsed = model.model_validate_json(text, strict=True, context=AT_THE_DOOR)
    except ValidationError as exc:
        problems = _problems(exc)
        if any(error["type"] == "json_invalid" for error in exc.errors()):
            # `json` took what pydantic's parser does not: a lone surrogate escape.
            problems = [FieldProblem(path, "must be text: holds half of a UTF-16 surrogate "
                                           "pair (a \\ud800-\\udfff escape without its pair)")
                        for path in strings_with_surrogates(body)] or problems
        raise InvalidEvent(problems) from None
    return _validated(parsed)


def parse_stored_event(raw: bytes | str) -> Event:
    """Validate an event the door accepted, by this version or an older one, under the
    rules it was accepted by: lax types (`"30"` read as 30), the last copy of a repeated
    key, refused characters of free text removed. The rules tightened since must not
    leave an accepted event unapplied. Raises `InvalidEvent` listing every bad field."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidEvent([FieldProblem("body", f"not valid JSON: {exc}")]) from None
    if not isinstance(body, dict):
        raise InvalidEvent([FieldProblem("body", "must be a JSON object")])
    model = _model_or_refuse(body)
    try:
        parsed = model.model_validate(body)
    except ValidationError as exc:
        raise InvalidEvent(_problems(exc)) from None
    return _validated(parsed)


def _validated(parsed: _Envelope) -> Event:
    fields = parsed.model_dump(include={"id", "occurred_at", "type"})
    return Event(data=parsed.data, **fields)  # type: ignore[attr-defined]


def _model_or_refuse(body: dict[str, Any]) -> type[_Envelope]:
    """The model of `body`'s type; raises `InvalidEvent` naming `type` (and any bad
    envelope field) for an unknown one."""
    event_type = body.get("type")
    model = EVENT_MODELS.get(event_type) if isinstance(event_type, str) else None
    if model is None:
        known = ", ".join(sorted(EVENT_MODELS))
        problems = [FieldProblem("type", f"unknown event type {event_type!r}; one of: {known}")]
        envelope = {k: v for k, v in body.items() if k in ("id", "occurred_at")}
        try:
            _Envelope.model_validate_json(json.dumps(
                {"id": "x", "occurred_at": "2000-01-01T00:00:00Z", **envelope}), strict=True)
        except ValidationError as exc:
            # Less a "body" problem: a lone surrogate json.dumps writes, pydantic refuses.
            problems.extend(p for p in _problems(exc) if p.field != "body")
        raise InvalidEvent(problems)
    return model
