"""A FHIR payload mapped to our events: `map_payload(raw, defaults)` parses it
(`notifier.intake.fhir.parse`), maps each resource with its type's mapper, and checks every
event it makes as `POST /v1/events` would (`notifier.intake.events.parse_event`), so what
comes out can be stored as an integrator's event is.

References are resolved within the payload (a bundle's other resources by `Type/id` or
`fullUrl`, a resource's `contained`). A dispense's fill number comes from a `FillCounter`
called for each completed dispense in `whenHandedOver` order: by default one counting the
payload's own dispenses, so the mapping is pure (`notifier fhir map`); the web's counts
every dispense seen before too (`notifier.ledger.fhir_fills`), so a dispense sent alone
still counts the refills before it. A dispense arriving before an earlier one is counted
in arrival order (its event, being older, is stale anyway).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from notifier.errors import FieldProblem, InvalidEvent
from notifier.intake.events import parse_event
from notifier.intake.fhir.appointment import map_appointment
from notifier.intake.fhir.common import Context, Defaults, Ignored, Mapped
from notifier.intake.fhir.communication import map_communication
from notifier.intake.fhir.medication import authorizing, map_dispense, map_request, request_key
from notifier.intake.fhir.parse import Entry, parse
from notifier.intake.fhir.patient import map_patient
from notifier.intake.fhir.practitioner import map_practitioner
from notifier.intake.fhir.task import map_task

Mapper = Callable[[Any, Context, Defaults], Mapped]
#: (`MedicationRequest/{id}`, dispense id) -> how many distinct dispenses of that request
#: are known, this one included.
FillCounter = Callable[[str, str], int]

#: The mapper of each resource type we take (`parse.MAPPED_TYPES` names the same).
MAPPERS: dict[str, Mapper] = {
    "Patient": map_patient,
    "Practitioner": map_practitioner,
    "Appointment": map_appointment,
    "MedicationRequest": map_request,
    "MedicationDispense": map_dispense,
    "Task": map_task,
    "Communication": map_communication,
}


@dataclass(frozen=True)
class MappedResource:
    """What one resource of the payload became: `label` (`Appointment/a1`), `where` (its
    FHIRPath root), `events` (our events, JSON-ready) or `ignored` (why none)."""

    label: str
    where: str
    events: list[dict[str, Any]] = field(default_factory=list)
    ignored: str | None = None


def _index(entries: list[Entry]) -> dict[str, Any]:
    """The payload's resources by `Type/id` and by `fullUrl`."""
    others: dict[str, Any] = {}
    for entry in entries:
        if entry.resource is None:
            continue
        if entry.resource.id:
            others[f"{entry.resource.get_resource_type()}/{entry.resource.id}"] = entry.resource
        if entry.full_url:
            others[entry.full_url] = entry.resource
    return others


def _handed(value: Any) -> str:
    """A sort key for `whenHandedOver`: an instant in UTC, a day, a partial date, or ""."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return str(value.isoformat() if isinstance(value, date) else value or "")


def payload_fills() -> FillCounter:
    """A `FillCounter` knowing only the dispenses it is called with."""
    seen: dict[str, set[str]] = {}

    def count(request: str, dispense_id: str) -> int:
        seen.setdefault(request, set()).add(dispense_id)
        return len(seen[request])

    return count


def _fills(entries: list[Entry], others: dict[str, Any], count: FillCounter
           ) -> dict[int, dict[str, int]]:
    """For each completed dispense (by entry index): its request's fill count so far."""
    dispenses: list[tuple[str, int, str, str]] = []
    for number, entry in enumerate(entries):
        resource = entry.resource
        if (resource is None or resource.get_resource_type() != "MedicationDispense"
                or resource.status != "completed"):
            continue
        request = authorizing(resource, Context(where=entry.where, others=others))
        if request is not None and request.id:
            # Two versions of one dispense in a history are one fill.
            dispenses.append((_handed(resource.whenHandedOver), number,
                              request_key(request), resource.id or str(number)))
    return {number: {key: count(key, dispense_id)}
            for _, number, key, dispense_id in sorted(dispenses)}


def _checked(events: list[dict[str, Any]], where: str) -> list[FieldProblem]:
    """Problems of the events a resource became, by our event rules, named under it."""
    problems: list[FieldProblem] = []
    for event in events:
        try:
            parse_event(json.dumps(event))
        except InvalidEvent as exc:
            problems += [FieldProblem(where, f"becomes a {event['type']} event we refuse: "
                                             f"{p.field}: {p.message}")
                         for p in exc.problems]
    return problems


def map_payload(raw: bytes | str, defaults: Defaults, count_fill: FillCounter | None = None
                ) -> list[MappedResource]:
    """What each resource of a FHIR payload becomes, in payload order (fills counted by
    `count_fill`, by default `payload_fills()`: see the module docstring); raises
    `InvalidEvent` naming (by FHIRPath) every element of every resource that is malformed,
    lacks `id` or `meta.lastUpdated`, or makes an event our rules refuse."""
    entries = parse(raw)
    others = _index(entries)
    fills = _fills(entries, others, count_fill or payload_fills())
    outcomes: list[MappedResource] = []
    problems: list[FieldProblem] = []
    for number, entry in enumerate(entries):
        resource = entry.resource
        if resource is None:
            outcomes.append(MappedResource(entry.label, entry.where, ignored=entry.ignored))
            continue
        if not resource.id:
            problems.append(FieldProblem(f"{entry.where}.id", "required: events are named by "
                                         "the resource's id (a FHIR server sets it)"))
            continue
        ctx = Context(where=entry.where, others=others, fills=fills.get(number, {}))
        try:
            mapped = MAPPERS[resource.get_resource_type()](resource, ctx, defaults)
        except InvalidEvent as exc:
            problems += exc.problems
            continue
        if isinstance(mapped, Ignored):
            outcomes.append(MappedResource(entry.label, entry.where, ignored=mapped.reason))
            continue
        problems += _checked(mapped, entry.where)
        outcomes.append(MappedResource(entry.label, entry.where, events=mapped))
    if problems:
        raise InvalidEvent(problems)
    return outcomes
