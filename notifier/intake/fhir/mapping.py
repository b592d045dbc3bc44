"""A FHIR payload mapped to our events: `map_payload(raw, defaults, memory, source)` parses
it (`notifier.intake.fhir.parse`), maps each resource with its type's mapper, and checks
every event it makes as `POST /v1/events` would (`notifier.intake.events.parse_event`), so
what comes out can be stored as an integrator's event is.

References are resolved within the payload (a bundle's other resources by `Type/id` or
`fullUrl`, the newest version when a history holds several; a resource's `contained`),
then through a `Memory` of earlier notifications: the MedicationRequests seen before
(`KnownRequest`, for a dispense or refill Task posted alone) and each prescription's
dispenses, whose order by `whenHandedOver` says how many refills a fill leaves. The
default memory knows only the payload, so the mapping is pure (`notifier fhir map`); the
web's is Redis (`notifier.ledger.fhir_fills`). The requests a payload carries are
returned (`MappedResource.request`) for the caller to remember once the notification is
taken; its dispenses are counted (and those `entered-in-error` uncounted) while mapping.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Protocol

from notifier.errors import FieldProblem, InvalidEvent
from notifier.intake.events import parse_event
from notifier.intake.fhir.appointment import map_appointment
from notifier.intake.fhir.common import Context, Defaults, Ignored, Mapped, ref_id
from notifier.intake.fhir.communication import map_communication
from notifier.intake.fhir.medication import (
    KnownRequest,
    known_request,
    map_dispense,
    map_request,
    prescription_of,
)
from notifier.intake.fhir.parse import Entry, parse
from notifier.intake.fhir.patient import map_patient
from notifier.intake.fhir.practitioner import map_practitioner
from notifier.intake.fhir.task import map_task

Mapper = Callable[[Any, Context, Defaults], Mapped]


class Memory(Protocol):
    """What the mapping knows of earlier notifications (ids are ours: `Context.scoped`)."""

    def count(self, prescription_id: str, dispense_id: str, handed_at: float) -> int:
        """Record the dispense as a fill handed over at `handed_at` (Unix seconds; a new
        version moves it) and return its place (1 = the first fill) among the
        prescription's known fills by (`handed_at`, id)."""

    def void(self, prescription_id: str, dispense_id: str) -> None:
        """Forget the dispense as a fill (entered in error)."""

    def recall(self, prescription_ids: Iterable[str]) -> dict[str, KnownRequest]:
        """The remembered MedicationRequests among `prescription_ids`."""

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
    #: A MedicationRequest's `KnownRequest`, for the caller to remember.
    request: KnownRequest | None = None


class PayloadMemory:
    """A `Memory` knowing only what it is told: the payloads mapped with it, and the
    requests `remember`ed (pure, for `notifier fhir map` and the tests)."""

    def __init__(self) -> None:
        self.fills: dict[str, dict[str, float]] = {}
        self.requests: dict[str, KnownRequest] = {}

    def count(self, prescription_id: str, dispense_id: str, handed_at: float) -> int:
        known = self.fills.setdefault(prescription_id, {})
        known[dispense_id] = handed_at
        return sorted((at, d) for d, at in known.items()).index((handed_at, dispense_id)) + 1

    def void(self, prescription_id: str, dispense_id: str) -> None:
        self.fills.get(prescription_id, {}).pop(dispense_id, None)

    def recall(self, prescription_ids: Iterable[str]) -> dict[str, KnownRequest]:
        return {i: self.requests[i] for i in prescription_ids if i in self.requests}

    def remember(self, requests: Iterable[KnownRequest]) -> None:
        for request in requests:
            self.requests[request.id] = request


def _version(resource: Any) -> tuple[str, int]:
    """A resource version's order: (`meta.lastUpdated` in UTC, a numeric `versionId`)."""
    meta = resource.meta
    if meta is None:
        return "", 0
    at = meta.lastUpdated.astimezone(UTC).isoformat() if meta.lastUpdated else ""
    number = int(meta.versionId) if meta.versionId and str(meta.versionId).isdigit() else 0
    return at, number


def _index(entries: list[Entry]) -> dict[str, Any]:
    """The payload's resources by `Type/id` and by `fullUrl`; of several versions of one
    resource (a history: FHIR lists them newest first), the newest."""
    others: dict[str, Any] = {}
    for entry in entries:
        resource = entry.resource
        if resource is None:
            continue
        keys = [f"{resource.get_resource_type()}/{resource.id}"] if resource.id else []
        keys += [entry.full_url] if entry.full_url else []
        for key in keys:
            if key not in others or _version(resource) > _version(others[key]):
                others[key] = resource
    return others


def _handed(value: Any) -> float | None:
    """`whenHandedOver` in Unix seconds (a day: its midnight UTC); None when partial."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp()
    return None


def _fills(entries: list[Entry], contexts: list[Context], memory: Memory
           ) -> dict[int, dict[str, int]]:
    """For each completed dispense (by entry index): its place among its prescription's
    fills. The newest version of each dispense in the payload decides whether it counts
    (`completed`) or stops counting (`entered-in-error`); a dispense without an id (which
    is refused) does neither."""
    newest: dict[tuple[str, str], tuple[Any, Context]] = {}
    numbers: dict[tuple[str, str], list[int]] = {}
    for number, (entry, ctx) in enumerate(zip(entries, contexts, strict=True)):
        resource = entry.resource
        if (resource is None or resource.get_resource_type() != "MedicationDispense"
                or not resource.id):
            continue
        found = prescription_of(resource, ctx)
        if found is None:
            continue
        key = (found[0], ctx.own(resource))
        numbers.setdefault(key, []).append(number)
        if key not in newest or _version(resource) >= _version(newest[key][0]):
            newest[key] = (resource, ctx)
    counted: list[tuple[float, str, str]] = []
    for (prescription, dispense_id), (resource, _) in newest.items():
        handed = _handed(resource.whenHandedOver)
        if resource.status == "entered-in-error":
            memory.void(prescription, dispense_id)
        elif resource.status == "completed" and handed is not None:
            counted.append((handed, dispense_id, prescription))
    fills: dict[int, dict[str, int]] = {}
    for handed, dispense_id, prescription in sorted(counted):
        place = memory.count(prescription, dispense_id, handed)
        for number in numbers[(prescription, dispense_id)]:
            fills[number] = {prescription: place}
    return fills


def _remembered(entries: list[Entry], contexts: list[Context], memory: Memory
                ) -> dict[str, KnownRequest]:
    """The remembered requests the payload's dispenses and Tasks name but do not carry."""
    wanted: set[str] = set()
    for entry, ctx in zip(entries, contexts, strict=True):
        resource = entry.resource
        if resource is None:
            continue
        kind = resource.get_resource_type()
        if kind == "MedicationDispense":
            found = prescription_of(resource, ctx)
            if found is not None and found[1] is None:
                wanted.add(found[0])
        elif kind == "Task" and resource.focus is not None:
            parsed = ref_id(resource.focus.reference)
            if (parsed is not None and parsed[0] == "MedicationRequest"
                    and ctx.resolve(resource.focus.reference) is None):
                wanted.add(ctx.scoped(parsed[1]))
    return memory.recall(sorted(wanted)) if wanted else {}


#: The FHIR element an event's field is read from, where one element is (by our field's
#: path less `data.`); a problem of another field is named by the whole resource.
ELEMENTS = {
    "appointment.start": "start", "appointment.end": "end",
    "appointment.join_url": "extension", "client.first_name": "name",
    "client.timezone": "extension", "provider.name": "name", "provider.email": "telecom",
    "provider.phone": "telecom", "provider.timezone": "extension",
    "prescription.filled_on": "whenHandedOver", "prescription.days_supply": "daysSupply",
}


def _checked(events: list[dict[str, Any]], where: str) -> list[FieldProblem]:
    """Problems of the events a resource became, by our event rules, named by the FHIR
    element they come from (`ELEMENTS`), else by the resource."""
    problems: list[FieldProblem] = []
    for event in events:
        try:
            parse_event(json.dumps(event))
        except InvalidEvent as exc:
            for p in exc.problems:
                element = ELEMENTS.get(p.field.removeprefix("data."))
                problems.append(FieldProblem(
                    f"{where}.{element}" if element else where,
                    f"becomes a {event['type']} event we refuse: {p.field}: {p.message}"))
    return problems


def map_payload(raw: bytes | str, defaults: Defaults, memory: Memory | None = None,
                source: str = "") -> list[MappedResource]:
    """What each resource of a FHIR payload becomes, in payload order; `memory` (by default
    a `PayloadMemory`: see the module docstring) counts fills and recalls requests;
    `source` names the EHR it came from ("" for the default one; `Context.source`). Raises
    `InvalidEvent` naming (by FHIRPath) every element of every resource that is malformed,
    lacks `id` or `meta.lastUpdated`, or makes an event our rules refuse."""
    entries = parse(raw)
    memory = memory if memory is not None else PayloadMemory()
    others = _index(entries)
    contexts = [Context(where=entry.where, others=others, source=source) for entry in entries]
    fills = _fills(entries, contexts, memory)
    requests = _remembered(entries, contexts, memory)
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
        ctx = Context(where=entry.where, others=others, fills=fills.get(number, {}),
                      source=source, requests=requests)
        try:
            mapped = MAPPERS[resource.get_resource_type()](resource, ctx, defaults)
            known = (known_request(resource, ctx)
                     if resource.get_resource_type() == "MedicationRequest" else None)
        except InvalidEvent as exc:
            problems += exc.problems
            continue
        if isinstance(mapped, Ignored):
            outcomes.append(MappedResource(entry.label, entry.where, ignored=mapped.reason,
                                           request=known))
            continue
        problems += _checked(mapped, entry.where)
        outcomes.append(MappedResource(entry.label, entry.where, events=mapped, request=known))
    if problems:
        raise InvalidEvent(problems)
    return outcomes
