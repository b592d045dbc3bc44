"""Patient -> client.upserted: the mobile phone, email, locale, zone, and what makes a
Patient nobody to write to."""

from __future__ import annotations

import pytest

from notifier.errors import InvalidEvent
from notifier.intake.fhir import Defaults
from tests.intake.fhir.build import events, ignored, of, resource

HOME = {"system": "phone", "value": "(312) 555-0142", "use": "home"}
MOBILE = {"system": "phone", "value": "(415) 555-0123", "use": "mobile"}
OTHER_MOBILE = {"system": "phone", "value": "+1 646 555 0188", "use": "mobile"}
EMAIL = {"system": "email", "value": "ana.reyes@example.com"}


def client(**changes) -> dict:
    (event,) = events(resource("Patient", **changes))
    assert event["type"] == "client.upserted"
    return event["data"]["client"]


def test_the_example_patient_becomes_her_client_record():
    (event,) = events(resource("Patient"))
    assert event == {
        "id": "fhir.Patient.pat-ana.1", "type": "client.upserted",
        "occurred_at": "2026-11-02T14:00:00Z",
        "data": {"client": {"id": "pat-ana", "first_name": "Ana", "phone": "+14155550123",
                            "email": "ana.reyes@example.com", "timezone": "America/Chicago",
                            "locale": "es", "channels": {"sms": True, "email": True}}}}


@pytest.mark.parametrize(("telecom", "phone"), [
    ([HOME, MOBILE], "+14155550123"),
    ([HOME], None),  # a home line cannot take SMS
    ([{"system": "phone", "value": "(415) 555-0123"}], None),  # no `use`: not assumed mobile
    ([{"system": "sms", "value": "(415) 555-0123"}], "+14155550123"),
    ([{**MOBILE, "rank": 2}, {**OTHER_MOBILE, "rank": 1}], "+16465550188"),
    ([MOBILE, {**OTHER_MOBILE, "rank": 1}], "+16465550188"),  # ranked before unranked
    ([MOBILE, OTHER_MOBILE], "+14155550123"),  # unranked: the first listed
    ([{**MOBILE, "period": {"end": "2026-10-01"}}, OTHER_MOBILE], "+16465550188"),
    ([{**MOBILE, "period": {"start": "2020-01-01", "end": "2027-01-01"}}], "+14155550123"),
    # Ends on the day of the update (2026-11-02): in use until that day is over.
    ([{**MOBILE, "period": {"end": "2026-11-02"}}], "+14155550123"),
    ([{**MOBILE, "period": {"end": "2026-11-02T13:59:59Z"}}], None),
    # Partial dates: October is over by November; November is not.
    ([{**MOBILE, "period": {"end": "2026-10"}}], None),
    ([{**MOBILE, "period": {"end": "2026-11"}}], "+14155550123"),
    ([{**MOBILE, "period": {"end": "2025"}}], None),
    ([{"system": "phone", "value": "not a number", "use": "mobile"}, OTHER_MOBILE],
     "+16465550188"),
    ([{"system": "phone", "value": "+44 7911 123456", "use": "mobile"}], "+447911123456"),
])
def test_the_preferred_mobile_in_use_is_the_phone(telecom, phone):
    found = client(telecom=[*telecom, EMAIL])
    assert found["phone"] == phone
    assert found["channels"] == {"sms": phone is not None, "email": True}


def test_a_patient_without_a_mobile_is_a_client_by_email_only():
    found = client(telecom=[HOME, EMAIL])
    assert (found["phone"], found["email"]) == (None, "ana.reyes@example.com")
    assert found["channels"] == {"sms": False, "email": True}


def test_an_ended_email_is_an_opt_out_of_email():
    found = client(telecom=[MOBILE, {**EMAIL, "period": {"end": "2026-11-01T00:00:00Z"}}])
    assert (found["email"], found["channels"]) == (None, {"sms": True, "email": False})


def test_a_phone_without_country_code_is_read_in_the_practices_region():
    patient = resource("Patient", telecom=[{"system": "phone", "value": "07911 123456",
                                            "use": "mobile"}])
    (event,) = events(patient, Defaults(zone="Europe/London", phone_region="GB"))
    assert event["data"]["client"]["phone"] == "+447911123456"


@pytest.mark.parametrize(("communication", "locale"), [
    ([{"language": {"coding": [{"code": "es-MX"}]}, "preferred": True}], "es"),
    ([{"language": {"coding": [{"code": "en-US"}]}}], "en"),
    ([{"language": {"coding": [{"code": "fr"}]}}], "en"),
    ([{"language": {"coding": [{"code": "fr"}]}},
      {"language": {"coding": [{"code": "es"}]}}], "es"),
    ([{"language": {"coding": [{"code": "en"}]}},
      {"language": {"coding": [{"code": "es"}]}, "preferred": True}], "es"),
    ([{"language": {"text": "Spanish"}}], "en"),
    (None, "en"),
])
def test_the_language_becomes_one_of_our_locales(communication, locale):
    assert client(communication=communication)["locale"] == locale


@pytest.mark.parametrize(("extension", "zone"), [
    ([{"url": "http://hl7.org/fhir/StructureDefinition/timezone",
       "valueCode": "America/Los_Angeles"}], "America/Los_Angeles"),
    ([{"url": "http://hl7.org/fhir/StructureDefinition/timezone", "valueCode": "Mars/Base"}],
     "America/New_York"),
    ([{"url": "http://example.org/other", "valueCode": "Europe/Paris"}], "America/New_York"),
    (None, "America/New_York"),
])
def test_the_zone_is_the_extensions_or_the_practices(extension, zone):
    assert client(extension=extension)["timezone"] == zone


@pytest.mark.parametrize(("names", "first"), [
    ([{"use": "official", "family": "Reyes", "given": ["Ana", "Sofía"]}], "Ana"),
    # `usual` is FHIR's "known as" (patient-example.json's Peter Chalmers is Jim)
    ([{"use": "official", "given": ["Ana"]}, {"use": "usual", "given": ["Annie"]}], "Annie"),
    ([{"use": "official", "family": "Chalmers", "given": ["Peter", "James"]},
      {"use": "usual", "given": ["Jim"]},
      {"use": "maiden", "family": "Windsor", "given": ["Peter", "James"],
       "period": {"end": "2002"}}], "Jim"),
    ([{"use": "nickname", "given": ["Annie"]}, {"use": "official", "given": ["Ana"]}], "Ana"),
    ([{"use": "old", "given": ["Anita"]}, {"given": ["Ana"]}], "Ana"),
    ([{"text": "Ana Reyes"}], "Ana"),
])
def test_the_client_is_greeted_by_a_given_name(names, first):
    assert client(name=names)["first_name"] == first


@pytest.mark.parametrize(("changes", "why"), [
    ({"name": None}, "no given name (Patient.name): clients are greeted by name"),
    ({"name": [{"use": "maiden", "given": ["Anita"]}]}, "no given name (Patient.name): "
                                                        "clients are greeted by name"),
])
def test_a_patient_nobody_writes_to_is_ignored(changes, why):
    assert ignored(resource("Patient", **changes)) == why


def test_the_event_id_is_the_version_or_else_the_last_update():
    patient = resource("Patient")
    patient["meta"] = {"lastUpdated": "2026-11-02T09:00:00.250-05:00"}
    (event,) = events(patient)
    assert event["id"] == "fhir.Patient.pat-ana.20261102T140000.250000Z"
    assert event["occurred_at"] == "2026-11-02T14:00:00.250000Z"


def test_a_patient_without_last_updated_is_refused_naming_it():
    patient = resource("Patient")
    del patient["meta"]["lastUpdated"]
    with pytest.raises(InvalidEvent) as caught:
        events(patient)
    assert [p.field for p in caught.value.problems] == ["Patient.meta.lastUpdated"]


def test_a_patient_whose_client_our_rules_refuse_is_refused_naming_it():
    # A given name of nothing visible (a zero-width space): no one to greet.
    patient = resource("Patient", name=[{"given": ["\u200b"]}])
    with pytest.raises(InvalidEvent) as caught:
        events(patient)
    (found,) = caught.value.problems
    assert found.field == "Patient.name"
    assert "client.upserted" in found.message and "data.client.first_name" in found.message


@pytest.mark.parametrize("value", ["ana.reyes@", "ana.reyes@example", "not an address"])
def test_a_patient_whose_email_is_malformed_is_still_a_client(value):
    """FHIR takes any string as an email: a typo must not refuse the notification (and
    the Appointment next to it) on every retry. The address is passed over, as a bad
    phone number is."""
    patient = resource("Patient", telecom=[
        {"system": "phone", "value": "(415) 555-0123", "use": "mobile"},
        {"system": "email", "value": value}])
    (event, _) = events(of(patient, resource("Appointment")))
    assert event["data"]["client"]["phone"] == "+14155550123"
    assert event["data"]["client"]["email"] is None
    assert event["data"]["client"]["channels"] == {"sms": True, "email": False}


def test_a_mailto_email_is_read_and_a_bad_one_passed_over_for_the_next():
    assert client(telecom=[
        {"system": "email", "value": "ana@", "rank": 1},
        {"system": "email", "value": "mailto:ana.reyes@example.com", "rank": 2}],
    )["email"] == "ana.reyes@example.com"


@pytest.mark.parametrize("change", [{"deceasedDateTime": "2026-11-25T08:00:00-06:00"},
                                    {"deceasedBoolean": True}, {"active": False}])
def test_a_deceased_or_inactive_patient_is_no_longer_reached(change):
    """A Patient marked deceased (or inactive: merged, left the practice) is upserted
    with every channel off: the refill reminders and follow-ups of their records stop
    going to a deceased patient's phone."""
    patient = resource("Patient", meta={"versionId": "2",
                                        "lastUpdated": "2026-11-25T15:00:00Z"}, **change)
    (event,) = events(patient)
    assert event["type"] == "client.upserted"
    assert event["data"]["client"]["channels"] == {"sms": False, "email": False}
    assert event["data"]["client"]["phone"] == "+14155550123"
