"""What the mappers share: period ends, days of FHIR dateTimes, references, event ids."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from fhir.resources.R4B.patient import Patient

from notifier.intake.fhir.common import Context, day_of, ends_by, event_id, fit, ref_id
from tests.intake.fhir.build import events, resource


@pytest.mark.parametrize(("value", "ends"), [
    ("2026", datetime(2027, 1, 1, tzinfo=UTC)),
    ("2026-11", datetime(2026, 12, 1, tzinfo=UTC)),
    ("2026-12", datetime(2027, 1, 1, tzinfo=UTC)),
    (date(2026, 12, 31), datetime(2027, 1, 1, tzinfo=UTC)),
    (datetime(2026, 11, 2, 9, tzinfo=UTC), datetime(2026, 11, 2, 9, tzinfo=UTC)),
])
def test_a_period_ends_after_the_time_it_names(value, ends):
    assert ends_by(value) == ends


@pytest.mark.parametrize(("value", "day"), [
    (datetime.fromisoformat("2026-11-21T23:30:00-06:00"), date(2026, 11, 21)),
    (date(2026, 11, 21), date(2026, 11, 21)),
    ("2026-11", None),
    (None, None),
])
def test_the_day_a_date_time_names(value, day):
    assert day_of(value) == day


@pytest.mark.parametrize(("reference", "parsed"), [
    ("Patient/pat-ana", ("Patient", "pat-ana")),
    ("https://ehr.example.org/fhir/Patient/pat-ana", ("Patient", "pat-ana")),
    ("Patient/pat-ana/_history/3", ("Patient", "pat-ana")),
    ("#rx-1", None),
    ("urn:uuid:0d3c2b8e-5d0b-4d6c-9a53-3c7e5d0a1f11", None),
    ("", None),
])
def test_literal_references(reference, parsed):
    assert ref_id(reference) == parsed


def test_an_event_id_too_long_for_ours_is_hashed_the_same_every_time():
    long_id = "p" * 64
    patient = Patient.model_validate(resource("Patient", id=long_id,
                                              meta={"versionId": "v" * 64,
                                                    "lastUpdated": "2026-11-02T14:00:00Z"}))
    ctx = Context(where="Patient")
    first = event_id(patient, ctx)
    assert first == event_id(patient, ctx)
    assert first.startswith("fhir.") and len(first) == 5 + 64


def test_a_sources_ids_are_its_own():
    """Under a source, event ids start `fhir~{source}.` and our records' ids
    `{source}~`: `~` is never in a FHIR id, so nothing of the default source collides."""
    ctx = Context(where="Patient", source="ehr-b")
    assert ctx.scoped("pat-ana") == "ehr-b~pat-ana"
    assert Context(where="Patient").scoped("pat-ana") == "pat-ana"
    long = "x" * 64
    assert ctx.scoped(long) == "ehr-b~" + long
    assert fit("a" * 129).startswith("fhir-") and len(fit("a" * 129)) == 69
    assert fit(".starts-with-a-dot") != ".starts-with-a-dot"
    (event,) = events(resource("Patient"), source="ehr-b")
    assert event["id"] == "fhir~ehr-b.Patient.pat-ana.1"
    assert event["data"]["client"]["id"] == "ehr-b~pat-ana"
    appointment = events(resource("Appointment"), source="ehr-b")[0]
    assert appointment["data"]["appointment"]["id"] == "ehr-b~appt-1.ehr-b~pat-ana"
    assert appointment["data"]["appointment"]["provider_id"] == "ehr-b~prac-rivera"
