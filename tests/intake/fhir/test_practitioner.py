"""Practitioner -> provider.upserted."""

from __future__ import annotations

import pytest

from tests.intake.fhir.build import events, ignored, resource

WORK_EMAIL = {"system": "email", "value": "lena.rivera@example.org", "use": "work"}


def test_the_example_practitioner_becomes_the_provider():
    (event,) = events(resource("Practitioner"))
    assert event == {
        "id": "fhir.Practitioner.prac-rivera.1", "type": "provider.upserted",
        "occurred_at": "2026-11-02T14:00:00Z",
        "data": {"provider": {"id": "prac-rivera", "name": "Dr. Lena Rivera",
                              "email": "lena.rivera@example.org", "phone": "+13125550100",
                              "timezone": "America/New_York"}}}


@pytest.mark.parametrize(("names", "name"), [
    ([{"text": "Dr Lena Rivera, MD"}], "Dr Lena Rivera, MD"),
    ([{"family": "Rivera", "given": ["Lena", "M."]}], "Lena M. Rivera"),
    ([{"use": "old", "family": "Smith"}, {"use": "official", "family": "Rivera",
                                          "prefix": ["Dr."]}], "Dr. Rivera"),
])
def test_the_name_clients_read(names, name):
    (event,) = events(resource("Practitioner", name=names))
    assert event["data"]["provider"]["name"] == name


@pytest.mark.parametrize(("telecom", "email", "phone"), [
    ([{"system": "email", "value": "lena@home.example", "use": "home"}, WORK_EMAIL],
     "lena.rivera@example.org", None),
    ([{"system": "email", "value": "lena@home.example", "use": "home"}],
     "lena@home.example", None),
    ([WORK_EMAIL, {"system": "phone", "value": "(312) 555-0199", "use": "home"}],
     "lena.rivera@example.org", None),
    ([WORK_EMAIL, {"system": "phone", "value": "(415) 555-0123", "use": "mobile"}],
     "lena.rivera@example.org", "+14155550123"),
])
def test_email_and_phone(telecom, email, phone):
    (event,) = events(resource("Practitioner", telecom=telecom))
    assert (event["data"]["provider"]["email"], event["data"]["provider"]["phone"]) == (
        email, phone)


@pytest.mark.parametrize(("changes", "why"), [
    ({"telecom": [{"system": "phone", "value": "(312) 555-0100", "use": "work"}]},
     "no email (Practitioner.telecom): a provider's digest goes by email"),
    ({"name": None}, "no name (Practitioner.name): clients are told who they see"),
    ({"active": False}, "an inactive Practitioner"),
])
def test_a_practitioner_we_cannot_use_is_ignored(changes, why):
    assert ignored(resource("Practitioner", **changes)) == why
