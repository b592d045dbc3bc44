"""parse_event: the integrator's event contract, one rule at a time."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.errors import InvalidEvent
from notifier.intake.events import (
    EVENT_MODELS,
    Appointment,
    AppointmentCancelledData,
    Client,
    ClientMessage,
    Prescription,
    Provider,
    RefillRequest,
    parse_event,
    parse_stored_event,
)
from notifier.intake.text import plain_text
from notifier.ledger.record_store import parse_record

OCCURRED_AT = "2030-03-04T12:00:00Z"

CLIENT = {"id": "c1", "first_name": "Ana", "phone": "+14155550123", "email": "ana@example.com",
          "timezone": "America/New_York", "locale": "es", "channels": {"sms": True, "email": False}}
APPOINTMENT = {"id": "a1", "client_id": "c1", "provider_id": "p1",
               "start": "2030-03-14T15:00:00Z", "end": "2030-03-14T15:30:00Z",
               "kind": "therapy", "join_url": "https://video.example/a1"}

#: A valid `data` for every event type.
SAMPLES: dict[str, dict[str, Any]] = {
    "client.upserted": {"client": CLIENT},
    "provider.upserted": {"provider": {"id": "p1", "name": "Dr. Rivera",
                                       "email": "rivera@example.com", "phone": "+12125550123",
                                       "timezone": "America/Chicago"}},
    "appointment.scheduled": {"appointment": APPOINTMENT},
    "appointment.rescheduled": {"appointment": {**APPOINTMENT, "start": "2030-03-15T15:00:00Z",
                                                "end": "2030-03-15T16:00:00Z"}},
    "appointment.cancelled": {"appointment_id": "a1", "cancelled_by": "provider"},
    "appointment.completed": {"appointment_id": "a1"},
    "appointment.no_show": {"appointment_id": "a1", "party": "client"},
    "prescription.filled": {"prescription": {"id": "rx1", "client_id": "c1", "provider_id": "p1",
                                             "medication": "Sertraline 50 mg",
                                             "filled_on": "2030-03-01", "days_supply": 30,
                                             "refills_remaining": 2}},
    "prescription.discontinued": {"prescription_id": "rx1"},
    "refill.requested": {"request": {"id": "rr1", "prescription_id": "rx1", "client_id": "c1",
                                     "provider_id": "p1"}},
    "refill.sent": {"request_id": "rr1"},
    "refill.denied": {"request_id": "rr1", "reason": "visit_required"},
    "message.received": {"message": {"id": "m1", "client_id": "c1", "provider_id": "p1"}},
    "message.answered": {"message_id": "m1"},
}


def body(type_: str, data: dict[str, Any] | None = None, **envelope: Any) -> bytes:
    event = {"id": "evt-1", "type": type_, "occurred_at": OCCURRED_AT,
             "data": SAMPLES[type_] if data is None else data}
    event.update(envelope)
    return json.dumps(event).encode()


def client_event(**fields: Any) -> bytes:
    return body("client.upserted", {"client": {**CLIENT, **fields}})


def problems(raw: bytes | str) -> dict[str, str]:
    """The problems `parse_event` reports, as {field: message}; fails if it accepts."""
    with pytest.raises(InvalidEvent) as caught:
        parse_event(raw)
    found = {p.field: p.message for p in caught.value.problems}
    assert len(found) == len(caught.value.problems), "a field reported twice"
    return found


def test_samples_cover_every_event_type():
    assert set(SAMPLES) == set(EVENT_MODELS)
    assert len(EVENT_MODELS) == 14


@pytest.mark.parametrize("type_", sorted(SAMPLES))
def test_every_event_type_parses_from_a_valid_sample(type_):
    event = parse_event(body(type_))
    assert event.id == "evt-1"
    assert event.type == type_
    assert event.occurred_at == datetime(2030, 3, 4, 12, tzinfo=UTC)
    assert event.data.model_dump(mode="json", exclude_none=True) == SAMPLES[type_]


def test_parsed_data_is_typed():
    assert isinstance(parse_event(body("client.upserted")).data.client, Client)
    assert isinstance(parse_event(body("provider.upserted")).data.provider, Provider)
    appt = parse_event(body("appointment.scheduled")).data.appointment
    assert isinstance(appt, Appointment)
    assert appt.start == datetime(2030, 3, 14, 15, tzinfo=UTC)
    rx = parse_event(body("prescription.filled")).data.prescription
    assert isinstance(rx, Prescription)
    assert rx.filled_on == date(2030, 3, 1)
    assert rx.days_supply == 30
    assert isinstance(parse_event(body("refill.requested")).data.request, RefillRequest)
    assert isinstance(parse_event(body("message.received")).data.message, ClientMessage)
    assert isinstance(parse_event(body("appointment.cancelled")).data, AppointmentCancelledData)


def test_parse_accepts_str_as_well_as_bytes():
    assert parse_event(body("refill.sent").decode()).type == "refill.sent"


def test_optional_fields_may_be_left_out():
    client = {k: v for k, v in CLIENT.items() if k not in ("phone", "email", "locale")}
    parsed = parse_event(body("client.upserted", {"client": client})).data.client
    assert (parsed.phone, parsed.email, parsed.locale) == (None, None, "en")
    appt = {k: v for k, v in APPOINTMENT.items() if k != "join_url"}
    assert parse_event(body("appointment.scheduled", {"appointment": appt})
                       ).data.appointment.join_url is None


@pytest.mark.parametrize("raw", [b"", b"not json", b"{", b"\xff\xfe\x00", b'{"id": "e1",}'])
def test_not_json_is_a_body_problem(raw):
    found = problems(raw)
    assert list(found) == ["body"]
    assert found["body"].startswith("not valid JSON")


@pytest.mark.parametrize("raw", [b"[]", b'[{"id": "e1"}]', b'"text"', b"42", b"null"])
def test_json_that_is_not_an_object_is_a_body_problem(raw):
    assert problems(raw) == {"body": "must be a JSON object"}


def test_nesting_deeper_than_the_parser_allows_is_a_body_problem():
    # 10,000 levels fit easily in 64 KiB; the parser gives up with a RecursionError.
    assert list(problems(b"[" * 10_000 + b"]" * 10_000)) == ["body"]
    assert list(problems(b'{"a":' * 10_000 + b"1" + b"}" * 10_000)) == ["body"]


@pytest.mark.parametrize("type_", ["appointment.booked", "", "Client.Upserted", 5, None, ["x"]])
def test_unknown_type_names_the_type_field(type_):
    found = problems(body("client.upserted", type=type_))
    assert list(found) == ["type"]
    assert "unknown event type" in found["type"]
    assert "client.upserted" in found["type"], "the message lists the known types"


def test_missing_type_names_the_type_field():
    event = json.loads(body("refill.sent"))
    del event["type"]
    assert list(problems(json.dumps(event))) == ["type"]


def test_unknown_type_still_reports_a_bad_envelope():
    found = problems(body("refill.sent", type="nope", id="has space",
                         occurred_at="2030-03-04T12:00:00"))
    assert set(found) == {"type", "id", "occurred_at"}


def test_missing_envelope_fields_are_each_named():
    assert set(problems(json.dumps({"type": "refill.sent"}))) == {"id", "occurred_at", "data"}


def test_problems_name_each_bad_field_with_a_dotted_path():
    found = problems(body("client.upserted", {"client": {
        **CLIENT, "phone": "415-555-0123", "email": "not-an-email", "timezone": "Mars/Olympus",
        "locale": "fr", "channels": {"sms": True}, "nickname": "Annie"}}))
    assert set(found) == {"data.client.phone", "data.client.email", "data.client.timezone",
                          "data.client.locale", "data.client.channels.email",
                          "data.client.nickname"}
    assert "E.164" in found["data.client.phone"]
    assert "IANA" in found["data.client.timezone"]
    assert "Extra inputs are not permitted" in found["data.client.nickname"]


def test_problems_index_into_nothing_deeper_than_the_bad_field():
    found = problems(body("prescription.filled", {"prescription": {
        **SAMPLES["prescription.filled"]["prescription"], "days_supply": 0,
        "refills_remaining": -1, "filled_on": "yesterday"}}))
    assert set(found) == {"data.prescription.days_supply", "data.prescription.refills_remaining",
                          "data.prescription.filled_on"}


def test_appointment_ending_before_it_starts_names_end():
    found = problems(body("appointment.scheduled", {"appointment": {
        **APPOINTMENT, "end": "2030-03-14T14:30:00Z"}}))
    assert found == {"data.appointment.end": "Value error, end must be after start"}


def test_appointment_ending_as_it_starts_is_rejected():
    found = problems(body("appointment.scheduled", {"appointment": {
        **APPOINTMENT, "end": APPOINTMENT["start"]}}))
    assert list(found) == ["data.appointment.end"]


def test_appointment_times_must_be_instants():
    found = problems(body("appointment.rescheduled", {"appointment": {
        **APPOINTMENT, "start": "2030-03-14T15:00:00", "kind": "surgery",
        "join_url": "not a url"}}))
    assert set(found) == {"data.appointment.start", "data.appointment.kind",
                          "data.appointment.join_url"}


def test_extra_fields_are_rejected_at_every_level():
    assert list(problems(body("refill.sent", {"request_id": "rr1", "note": "x"}))) == [
        "data.note"]
    assert list(problems(body("refill.sent", priority="high"))) == ["priority"]
    assert list(problems(body("client.upserted", {"client": {
        **CLIENT, "channels": {"sms": True, "email": True, "push": True}}}))) == [
        "data.client.channels.push"]


@pytest.mark.parametrize(("type_", "field", "value"), [
    ("appointment.cancelled", "cancelled_by", "robot"),
    ("appointment.no_show", "party", "support"),
    ("refill.denied", "reason", "because"),
])
def test_enumerated_values_are_checked(type_, field, value):
    data = {**SAMPLES[type_], field: value}
    assert list(problems(body(type_, data))) == [f"data.{field}"]


@pytest.mark.parametrize("phone", ["+14155550123", "+12125550123", "+442071838750"])
def test_e164_phone_is_accepted(phone):
    assert parse_event(client_event(phone=phone)).data.client.phone == phone


@pytest.mark.parametrize("phone", [
    "+1 415 555 0123",  # spaces: a valid number, but not E.164 form
    "+1-415-555-0123",
    "+1 (415) 555-0123",
    "14155550123",  # no plus
    "4155550123",
    "+14155550123 ",
    "+1415555012",  # one digit short
    "+141555501234",  # one digit long
    "+10005550123",  # no such area code
    "+999123456",  # no such country code
    "+",
    "",
    "phone",
])
def test_phone_not_in_strict_e164_is_rejected(phone):
    found = problems(client_event(phone=phone))
    assert list(found) == ["data.client.phone"]
    assert "E.164" in found["data.client.phone"]


def test_provider_phone_is_checked_too():
    provider = {**SAMPLES["provider.upserted"]["provider"], "phone": "+1 212 555 0123"}
    assert list(problems(body("provider.upserted", {"provider": provider}))) == [
        "data.provider.phone"]


@pytest.mark.parametrize("zone", ["America/New_York", "Europe/Madrid", "UTC", "Etc/GMT-3",
                                  "Asia/Kolkata", "America/Argentina/Buenos_Aires"])
def test_iana_timezone_is_accepted(zone):
    client = parse_event(client_event(timezone=zone)).data.client
    assert client.timezone == zone
    assert client.zone.key == zone


@pytest.mark.parametrize("zone", [
    "Mars/Olympus",
    "america/new_york",
    "America/New_York ",
    "America/New_York/",
    "America",  # a directory of the zone database, not a zone
    "",
    "/etc/passwd",
    "../../etc/passwd",
    "+05:00",
])
def test_timezone_not_in_the_iana_database_is_rejected(zone):
    found = problems(client_event(timezone=zone))
    assert list(found) == ["data.client.timezone"]
    assert "IANA" in found["data.client.timezone"]


def test_provider_timezone_is_checked_too():
    provider = {**SAMPLES["provider.upserted"]["provider"], "timezone": "Central"}
    assert list(problems(body("provider.upserted", {"provider": provider}))) == [
        "data.provider.timezone"]


@pytest.mark.parametrize("email", ["ana", "ana@", "@example.com", "ana example@example.com"])
def test_bad_email_is_rejected(email):
    assert list(problems(client_event(email=email))) == ["data.client.email"]


@pytest.mark.parametrize(("occurred_at", "says"), [
    ("1764518400", "RFC 3339"), (1764518400, "not a number"), (1764518400.5, "not a number"),
    ("2030-03-04", "RFC 3339"), ("2030-03-04T12:00:00+0530", "RFC 3339"),
    (" 2030-03-04T12:00:00Z", "RFC 3339"),
])
def test_unix_time_and_other_forms_are_no_rfc3339_instant(occurred_at, says):
    """pydantic alone reads a number, or a string of digits, as Unix time (found by QA)."""
    found = problems(body("refill.sent", occurred_at=occurred_at))
    assert says in found["occurred_at"], found


def test_naive_occurred_at_is_rejected():
    found = problems(body("refill.sent", occurred_at="2030-03-04T12:00:00"))
    assert found == {"occurred_at": "Input should have timezone info"}


@pytest.mark.parametrize("occurred_at", ["2030-03-04T12:00:00+05:30", "2030-03-04T12:00:00Z",
                                         "2030-03-04T12:00:00.123456-08:00",
                                         "2030-03-04t12:00:00z", "2030-03-04 12:00:00Z"])
def test_aware_occurred_at_is_accepted(occurred_at):
    event = parse_event(body("refill.sent", occurred_at=occurred_at))
    assert event.occurred_at == datetime.fromisoformat(occurred_at.upper())
    assert event.occurred_at.tzinfo is not None


@pytest.mark.parametrize("occurred_at", ["yesterday", "2030-02-30T12:00:00Z", ""])
def test_occurred_at_that_is_no_instant_is_rejected(occurred_at):
    assert list(problems(body("refill.sent", occurred_at=occurred_at))) == ["occurred_at"]


@pytest.mark.parametrize("event_id", ["a", "evt_1", "A.b-c~d_9", "x" * 128])
def test_id_in_the_safe_alphabet_is_accepted(event_id):
    assert parse_event(body("refill.sent", id=event_id)).id == event_id


@pytest.mark.parametrize("event_id", [
    "evt 1",  # a space
    " evt1",
    "evt1\n",
    "x" * 129,  # too long
    "",
    "-evt1",  # must start with a letter or digit
    "evt:1",  # ':' would break Redis key layouts
    "evt/1",
    "évt1",
    42,
])
def test_id_outside_the_safe_alphabet_is_rejected(event_id):
    assert list(problems(body("refill.sent", id=event_id))) == ["id"]


def test_entity_ids_follow_the_same_pattern():
    appt = {**APPOINTMENT, "id": "a 1", "client_id": "c" * 129, "provider_id": "p:1"}
    assert set(problems(body("appointment.scheduled", {"appointment": appt}))) == {
        "data.appointment.id", "data.appointment.client_id", "data.appointment.provider_id"}


def test_data_of_the_wrong_type_is_named():
    data = copy.deepcopy(SAMPLES["appointment.scheduled"])
    assert list(problems(body("appointment.cancelled", data))) == [
        "data.appointment_id", "data.cancelled_by", "data.appointment"]


@pytest.mark.parametrize(("path", "value"), [
    (("data", "prescription", "filled_on"), "9999-12-20"),
    (("occurred_at",), "9999-12-31T23:55:00Z"),
    (("occurred_at",), "1969-12-31T23:59:59Z"),
])
def test_implausible_years_are_refused_before_they_reach_planning(path, value):
    body = {"id": "e1", "type": "prescription.filled", "occurred_at": "2026-11-01T12:00:00Z",
            "data": {"prescription": {"id": "rx", "client_id": "c", "provider_id": "p",
                                      "medication": "m", "filled_on": "2026-11-01",
                                      "days_supply": 30, "refills_remaining": 1}}}
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(InvalidEvent) as caught:
        parse_event(json.dumps(body))
    assert [p.field for p in caught.value.problems] == [".".join(path)]
    assert "year must be between 1970 and 2100" in caught.value.problems[0].message


def test_a_far_start_is_refused_on_the_appointment():
    body = {"id": "e1", "type": "appointment.scheduled", "occurred_at": "2026-11-01T12:00:00Z",
            "data": {"appointment": {"id": "a", "client_id": "c", "provider_id": "p",
                                     "start": "9999-12-31T23:00:00Z",
                                     "end": "9999-12-31T23:30:00Z", "kind": "therapy",
                                     "join_url": "https://v.example.com/r"}}}
    with pytest.raises(InvalidEvent) as caught:
        parse_event(json.dumps(body))
    assert {p.field for p in caught.value.problems} >= {"data.appointment.start"}


# Strict input: the contract's JSON types, and free text fit for messages -----------------

REFUSED = "refused"

#: (event type, field, value sent, answer: the value as parsed, in JSON form, or REFUSED)
CONTRACT: list[tuple[str, str, Any, Any]] = [
    ("prescription.filled", "data.prescription.days_supply", 30, 30),
    ("prescription.filled", "data.prescription.days_supply", True, REFUSED),
    ("prescription.filled", "data.prescription.days_supply", "30", REFUSED),
    ("prescription.filled", "data.prescription.days_supply", 30.0, REFUSED),
    ("prescription.filled", "data.prescription.days_supply", 30.5, REFUSED),
    ("prescription.filled", "data.prescription.days_supply", None, REFUSED),
    ("prescription.filled", "data.prescription.refills_remaining", 0, 0),
    ("prescription.filled", "data.prescription.refills_remaining", False, REFUSED),
    ("prescription.filled", "data.prescription.refills_remaining", "2", REFUSED),
    ("prescription.filled", "data.prescription.filled_on", "2030-03-01", "2030-03-01"),
    ("prescription.filled", "data.prescription.filled_on", 20300301, REFUSED),
    ("prescription.filled", "data.prescription.medication", "Sertraline\u00ad 50 mg",
     "Sertraline 50 mg"),
    ("prescription.filled", "data.prescription.medication", "Sertraline\x0050", REFUSED),
    ("prescription.filled", "data.prescription.medication", 50, REFUSED),
    ("client.upserted", "data.client.channels.sms", True, True),
    ("client.upserted", "data.client.channels.sms", 1, REFUSED),
    ("client.upserted", "data.client.channels.sms", "true", REFUSED),
    ("client.upserted", "data.client.channels.email", "no", REFUSED),
    ("client.upserted", "data.client.first_name", "Ana", "Ana"),
    ("client.upserted", "data.client.first_name", "José María", "José María"),
    ("client.upserted", "data.client.first_name", "\ufeffAna\u200b", "Ana"),
    ("client.upserted", "data.client.first_name", "Ana\x00", REFUSED),
    ("client.upserted", "data.client.first_name", "Ana\r\nBcc: eve@example.com", REFUSED),
    ("client.upserted", "data.client.first_name", "Ana\u202egpj.exe", REFUSED),
    ("client.upserted", "data.client.first_name", "\u2067Ana\u2069", REFUSED),
    ("client.upserted", "data.client.first_name", "Ana\x85", REFUSED),
    ("client.upserted", "data.client.first_name", "\u200b", REFUSED),  # nothing left
    ("client.upserted", "data.client.first_name", "   ", REFUSED),  # nothing visible
    ("client.upserted", "data.client.first_name", "\u200d", REFUSED),
    ("client.upserted", "data.client.first_name", "Ana\uffff", REFUSED),
    ("client.upserted", "data.client.first_name", " Ana ", " Ana "),
    ("client.upserted", "data.client.first_name", "Ana\ud800", REFUSED),
    ("client.upserted", "data.client.first_name", 7, REFUSED),
    ("client.upserted", "data.client.email", "ana\r\n@example.com", REFUSED),
    ("client.upserted", "data.client.email", "a\u202ena@example.com", REFUSED),
    ("client.upserted", "data.client.email", "ana@example.com\u200b", REFUSED),
    ("client.upserted", "data.client.phone", "+14155550123\u202e", REFUSED),
    ("client.upserted", "data.client.phone", 14155550123, REFUSED),
    ("client.upserted", "data.client.timezone", "America/New_York\x00", REFUSED),
    ("client.upserted", "data.client.locale", "en\n", REFUSED),
    ("provider.upserted", "data.provider.name", "Dr. Rivera", "Dr. Rivera"),
    ("provider.upserted", "data.provider.name", "Dr.\u202eRivera", REFUSED),
    ("provider.upserted", "data.provider.name", "Dr. Rivera\n", REFUSED),
    ("appointment.scheduled", "data.appointment.start", "2030-03-14T16:00:00+01:00",
     "2030-03-14T16:00:00+01:00"),
    ("appointment.scheduled", "data.appointment.start", 1899900000, REFUSED),
    # A URL is parsed by the URL Standard, strictly: controls refused (tab, CR and LF,
    # which it would drop, included); what else is not ASCII is percent-encoded, so the
    # link that goes into a message is plain ASCII.
    ("appointment.scheduled", "data.appointment.join_url", "https://video.example/a\u202eb",
     "https://video.example/a%E2%80%AEb"),
    ("appointment.scheduled", "data.appointment.join_url", "https://video.example/a\x00b",
     REFUSED),
    ("appointment.scheduled", "data.appointment.join_url", "https://video.example/a\r\nb",
     REFUSED),
    ("appointment.scheduled", "data.appointment.join_url", "https://video.example/a\tb",
     REFUSED),
    ("appointment.scheduled", "data.appointment.join_url", "https://vi\u202edeo.example/a",
     REFUSED),
    ("appointment.cancelled", "data.cancelled_by", "client\x00", REFUSED),
    ("refill.sent", "occurred_at", "2030-03-04T12:00:00-05:00", "2030-03-04T12:00:00-05:00"),
    ("refill.sent", "occurred_at", 1899900000, REFUSED),
    ("refill.sent", "id", True, REFUSED),
    ("refill.sent", "id", 5, REFUSED),
    ("refill.sent", "id", "evt-1\u202e", REFUSED),
]


def _with(type_: str, field: str, value: Any) -> dict[str, Any]:
    event = json.loads(body(type_))
    *parents, last = field.split(".")
    target = event
    for key in parents:
        target = target[key]
    target[last] = value
    return event


def _dig(tree: Any, field: str) -> Any:
    for key in field.split("."):
        tree = tree[key]
    return tree


@pytest.mark.parametrize(("type_", "field", "value", "answer"), CONTRACT)
def test_the_contract_takes_what_it_says_and_refuses_the_rest(type_, field, value, answer):
    raw = json.dumps(_with(type_, field, value)).encode()
    if answer == REFUSED:
        assert list(problems(raw)) == [field]
        return
    event = parse_event(raw)
    parsed = {"id": event.id, "occurred_at": event.occurred_at.isoformat().replace(
        "+00:00", "Z"), "data": event.data.model_dump(mode="json")}
    assert _dig(parsed, field) == answer


@pytest.mark.parametrize(("value", "message"), [
    (True, "Input should be a valid integer (a JSON number without quotes or fraction, "
           "such as 30)"),
    ("30", "Input should be a valid integer (a JSON number without quotes or fraction, "
           "such as 30)"),
])
def test_a_refused_integer_says_what_an_integer_is(value, message):
    raw = json.dumps(_with("prescription.filled", "data.prescription.days_supply", value))
    assert problems(raw) == {"data.prescription.days_supply": message}


@pytest.mark.parametrize(("name", "message"), [
    ("Ana\x00", "Value error, must be plain text: U+0000 at index 3"),
    ("Ana\u202egpj.exe", "Value error, must be plain text: U+202E RIGHT-TO-LEFT OVERRIDE at "
                         "index 3"),
    ("Ana\r\n", "Value error, must be plain text: U+000D at index 3"),
    ("Ana\ud800", "must be text: holds half of a UTF-16 surrogate pair"),
])
def test_a_refused_character_is_named_with_where_it_is(name, message):
    assert problems(client_event(first_name=name))["data.client.first_name"].startswith(
        message)


def test_a_repeated_key_is_refused_the_id_included():
    raw = body("refill.sent").decode().replace('"id": "evt-1"', '"id": "evt-1", "id": "evt-2"')
    assert problems(raw) == {"id": "key given more than once in its object; send each key once"}
    raw = client_event().decode().replace('"first_name": "Ana"',
                                          '"first_name": "Ana", "first_name": "Eve"')
    assert list(problems(raw)) == ["data.client.first_name"]


@given(name=st.text(alphabet=st.characters(codec=None), max_size=110))
@settings(max_examples=300, derandomize=True, deadline=None)
def test_any_first_name_is_refused_naming_it_or_kept_as_plain_text(name):
    try:
        event = parse_event(client_event(first_name=name))
    except InvalidEvent as exc:
        assert [p.field for p in exc.problems] == ["data.client.first_name"]
        return
    kept = event.data.client.first_name
    assert kept == plain_text(name, refuse=False)
    assert 1 <= len(kept) <= 100
    assert kept.encode("utf-8").decode("utf-8") == kept, "encodable in any message"


def test_an_event_the_door_accepted_before_is_read_by_its_own_rules():
    """An event accepted by an older, laxer version waits in the queue across an upgrade:
    it is applied, not refused (accepted means applied)."""
    rx = {**SAMPLES["prescription.filled"]["prescription"], "days_supply": "30",
          "refills_remaining": True}
    raw = body("prescription.filled", {"prescription": rx})
    stored = parse_stored_event(raw).data.prescription
    assert (stored.days_supply, stored.refills_remaining) == (30, 1)
    repeated = body("refill.sent").decode().replace('"id": "evt-1"',
                                                    '"id": "evt-0", "id": "evt-1"')
    assert parse_stored_event(repeated).id == "evt-1", "the last copy, as json reads it"
    named = client_event(first_name="Ana\u202e\r\n\x00\u200b")
    assert parse_stored_event(named).data.client.first_name == "Ana", "never into a message"
    with pytest.raises(InvalidEvent):
        parse_stored_event(client_event(phone="415-555-0123"))


@pytest.mark.parametrize("type_", sorted(SAMPLES))
def test_the_door_and_the_stored_reading_agree_on_what_the_door_accepts(type_):
    assert parse_stored_event(body(type_)) == parse_event(body(type_))


def test_a_record_written_before_is_read_with_its_free_text_made_plain():
    record = {"updated_at": OCCURRED_AT, "client": {**CLIENT, "first_name": "Ana\u202e\r\n"}}
    parse_record.cache_clear()
    assert parse_record("client", json.dumps(record).encode()).client.first_name == "Ana"
