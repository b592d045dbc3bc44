"""What the FHIR mappers share: the `Ignored` answer, the practice's `Defaults`, the
`Context` a resource is mapped in (its bundle's other resources, for references), event
ids and instants, references and extensions read.

An event made from a FHIR resource is named by the resource: `fhir.{type}.{id}.{version}`
(the version `meta.versionId`, else `meta.lastUpdated` in UTC as `20261120T150000.123Z`),
with a suffix when one resource becomes several events (`.{patient id}` for a group
appointment). A notification posted under a source's own path (`/fhir/r4/{source}/notify`,
several EHRs connected) names its events `fhir~{source}.{type}.{id}.{version}` and our
records (clients, providers, appointments, prescriptions...) `{source}~{id}`: `~` is in our
ids' alphabet but never in a FHIR id (`[A-Za-z0-9-.]`), so two EHRs' `Patient/123` are two
clients, and no FHIR id of the default source can look like a sourced one. An id too long
for ours (128) becomes a hash of it (`fit`). So a resent version is the same event id (a
duplicate), a new version a new event, and an older version arriving late is `stale` by
its `occurred_at`, which is `meta.lastUpdated` (a stored FHIR resource always has one;
without it a resource is refused naming `meta.lastUpdated`, since nothing else says when
the change happened).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from notifier.errors import FieldProblem, InvalidEvent

if TYPE_CHECKING:
    from notifier.policy.figures import Policy


@dataclass(frozen=True)
class Ignored:
    """A resource accepted but turned into no event: an unsupported status or type, or a
    valid FHIR resource lacking what our events need. `reason` says which, for people."""

    reason: str


#: What a mapper returns: our events (JSON-ready dicts, as `POST /v1/events` takes them),
#: or why there are none.
Mapped = list[dict[str, Any]] | Ignored


@dataclass(frozen=True)
class Defaults:
    """What the practice decides where a resource says nothing: `zone` (IANA) for a
    client or provider without the timezone extension; `phone_region` (ISO 3166 alpha-2)
    for phone numbers written without a country code; `video_extensions`: extension URLs
    (on Appointment) whose `valueUrl`/`valueUri`/`valueString` is the video link, looked
    at after the R5 `virtualService` backport extension."""

    zone: str = "America/New_York"
    phone_region: str = "US"
    video_extensions: tuple[str, ...] = ()

    @classmethod
    def of_policy(cls, policy: Policy, video_extensions: tuple[str, ...] = ()) -> Defaults:
        """The practice's zone (`[practice] timezone`) and, for phone numbers, the country
        whose holidays it keeps (`response_window.holiday_country`): the same country;
        `video_extensions` from the settings (NOTIFIER_FHIR_VIDEO_EXTENSIONS)."""
        return cls(zone=policy.practice_zone.key,
                   phone_region=policy.response_window.holiday_country,
                   video_extensions=video_extensions)


@dataclass(frozen=True)
class Context:
    """Where a resource is mapped: `where` is its FHIRPath root for problems (`Patient`, or
    `Bundle.entry[2].resource`), `others` the payload's resources by `Type/id` and by
    `fullUrl` (a transaction bundle refers by `urn:uuid:`), so a dispense finds its
    MedicationRequest, and `fills` the dispense's place (1 = the first fill) among its
    prescription's known fills, by our prescription id."""

    where: str
    others: Mapping[str, Any] = field(default_factory=dict)
    fills: Mapping[str, int] = field(default_factory=dict)
    #: The source the payload was posted under ("" for `/fhir/r4/notify`).
    source: str = ""
    #: MedicationRequests remembered from earlier notifications (`KnownRequest`s of
    #: `notifier.intake.fhir.medication`), by our prescription id.
    requests: Mapping[str, Any] = field(default_factory=dict)

    def scoped(self, fhir_id: str) -> str:
        """Our id for a FHIR id of this payload's source (see the module docstring)."""
        return fit(f"{self.source}~{fhir_id}" if self.source else fhir_id)

    def own(self, resource: Any) -> str:
        """Our id for `resource` itself (a Patient's client id, a Task's request id)."""
        return self.scoped(str(resource.id))

    def path(self, element: str) -> str:
        """The FHIRPath of `element` (`participant[0].actor`) of the resource."""
        return f"{self.where}.{element}" if element else self.where

    def resolve(self, reference: str | None) -> Any | None:
        """The resource `reference` names, from the resource's own `contained` (`#id`,
        looked up by the caller) or the payload; None when it is not there."""
        if not reference:
            return None
        if reference in self.others:
            return self.others[reference]
        parsed = ref_id(reference)
        return self.others.get(f"{parsed[0]}/{parsed[1]}") if parsed else None


def problem(ctx: Context, element: str, message: str) -> InvalidEvent:
    """The error a resource FHIR accepts but we cannot read is raised as, naming it."""
    return InvalidEvent([FieldProblem(ctx.path(element), message)])


#: `Type/id`, perhaps absolute (`https://ehr.example/fhir/Patient/1`) or versioned
#: (`Patient/1/_history/2`): FHIR's own reference grammar, less the version.
_REFERENCE = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


def ref_id(reference: str | None) -> tuple[str, str] | None:
    """(type, id) of a literal reference, None for one that is not `Type/id` (a contained
    `#x`, an `urn:uuid:`, which `Context.resolve` answers through the payload)."""
    if not reference:
        return None
    match = _REFERENCE.search(reference)
    return (match.group(1), match.group(2)) if match else None


def ref_of(ctx: Context, reference: Any, resource_type: str) -> str | None:
    """Our id (`Context.scoped`) of the `resource_type` a Reference element points at,
    literally or through the payload (`urn:uuid:`); None when it points at something
    else."""
    if reference is None or not reference.reference:
        return None
    parsed = ref_id(reference.reference)
    if parsed is None:
        target = ctx.resolve(reference.reference)
        if target is None or target.id is None:
            return None
        parsed = (target.get_resource_type(), target.id)
    return ctx.scoped(parsed[1]) if parsed[0] == resource_type else None


def updated_at(resource: Any, ctx: Context) -> datetime:
    """`meta.lastUpdated`, aware; raises `InvalidEvent` naming it when absent."""
    meta = resource.meta
    if meta is None or meta.lastUpdated is None:
        raise problem(ctx, "meta.lastUpdated", "required here: it is when the change "
                      "happened (a FHIR server sets it on every stored resource)")
    return meta.lastUpdated  # type: ignore[no-any-return]


def instant(value: datetime) -> str:
    """An aware datetime as our events write instants: RFC 3339 in UTC."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


#: Our ids (`notifier.intake.events.Id`): 1-128 of a safe alphabet, a letter or digit first.
_OUR_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,127}")


def fit(name: str, prefix: str = "fhir-") -> str:
    """`name` when it is one of our ids, else `prefix` and its SHA-256 (the same name
    always gives the same id)."""
    if _OUR_ID.fullmatch(name):
        return name
    return prefix + hashlib.sha256(name.encode()).hexdigest()


def event_id(resource: Any, ctx: Context, suffix: str = "") -> str:
    """The event id a resource version becomes (see the module docstring); a hash of it
    when the id and version are too long for our ids."""
    meta = resource.meta
    version = meta.versionId if meta is not None and meta.versionId else None
    if version is None:
        version = updated_at(resource, ctx).astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    root = f"fhir~{ctx.source}" if ctx.source else "fhir"
    name = f"{root}.{resource.get_resource_type()}.{resource.id}.{version}"
    name += f".{suffix}" if suffix else ""
    return fit(name, "fhir.")


def envelope(resource: Any, ctx: Context, event_type: str, data: dict[str, Any],
             suffix: str = "") -> dict[str, Any]:
    """One of our events, named and timed by `resource`."""
    return {"id": event_id(resource, ctx, suffix), "type": event_type,
            "occurred_at": instant(updated_at(resource, ctx)), "data": data}


def extension_values(extensions: Iterable[Any] | None, url: str) -> list[tuple[int, Any]]:
    """(index, extension) of each extension with `url`, in order."""
    return [(i, ext) for i, ext in enumerate(extensions or ()) if ext.url == url]


def day_of(value: Any) -> date | None:
    """The calendar day a FHIR `dateTime` names, as written (its own offset's day); None
    for a partial one (`2026`, `2026-11`: fhir.resources keeps those as strings)."""
    if isinstance(value, datetime):
        return value.date()
    return value if isinstance(value, date) else None


def ends_by(value: Any) -> datetime:
    """The first instant after a FHIR `dateTime` used as a period's end, aware: a day's
    end is the next midnight UTC, a partial `2026-11` the first of December, `2026` the
    next new year (close enough to say whether a contact point is still in use)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC) + timedelta(days=1)
    year, _, month = str(value).partition("-")
    if not month:
        return datetime(int(year) + 1, 1, 1, tzinfo=UTC)
    after = int(month) + 1
    return datetime(int(year) + after // 13, (after - 1) % 12 + 1, 1, tzinfo=UTC)


def codes(concept: Any) -> list[str]:
    """The codes of a CodeableConcept (none for None)."""
    if concept is None:
        return []
    return [coding.code for coding in concept.coding or () if coding.code]


def concept_text(concept: Any) -> str | None:
    """What a CodeableConcept says to people: its text, else its first display."""
    if concept is None:
        return None
    if concept.text:
        return str(concept.text)
    for coding in concept.coding or ():
        if coding.display:
            return str(coding.display)
    return None
