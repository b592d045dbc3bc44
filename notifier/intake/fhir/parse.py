"""A FHIR R4 payload read: bytes -> the resources it carries, validated by `fhir.resources`'
R4B models (R4B is R4 plus the backported Subscription resources; every R4 resource we map
reads the same).

`parse(raw)` takes what a FHIR server posts for a Subscription (`rest-hook`): one resource,
or a `Bundle` of type `history`, `transaction`, `collection`, `searchset` or (R4B's
own) `subscription-notification`. The Subscriptions Backport IG's notification is a
`history` (R4) or `subscription-notification` (R4B) Bundle whose first entry is a
`Parameters` (R4) or `SubscriptionStatus` (R4B) describing the notification: skipped.
JSON nested deeper than `MAX_DEPTH` is refused before validation (FHIR resources are a few
levels deep; fhir.resources' validation recurses per level and would overflow the stack).
Entries without a resource (a deletion in a history, an `id-only` notification) and
resources of types we do not map are returned as `Entry`s with an `ignored` reason and are
not validated (a bad Observation must not refuse the Appointment next to it). Every
resource we map is validated; all problems of the payload are raised together as one
`InvalidEvent`, each named by its FHIRPath (`Appointment.participant[0].actor.reference`,
or `Bundle.entry[2].resource.participant[0].actor.reference` inside a bundle).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from notifier.errors import FieldProblem, InvalidEvent
from notifier.intake.json_body import load_object

#: The resource types a mapper exists for (`notifier.intake.fhir.mapping`).
MAPPED_TYPES = frozenset({"Patient", "Practitioner", "Appointment", "MedicationRequest",
                          "MedicationDispense", "Task", "Communication"})
BUNDLE_TYPES = ("history", "transaction", "collection", "searchset",
                "subscription-notification")
#: The deepest JSON taken: arrays and objects within each other (a Bundle's contained
#: resource's extension's extension is about 10).
MAX_DEPTH = 64
#: The Backport IG's first entry, describing the notification rather than a change.
NOTIFICATION_STATUS = ("Parameters", "SubscriptionStatus")


@dataclass(frozen=True)
class Entry:
    """One resource of a payload. `where`: its FHIRPath root; `resource`: the validated
    model (None when ignored); `full_url`: the bundle entry's `fullUrl`; `ignored`: why
    nothing is made of it, or None; `label`: `Type/id` for people (`Type` without an id)."""

    where: str
    label: str
    resource: Any | None = None
    full_url: str | None = None
    ignored: str | None = None


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def fhirpath(root: str, loc: Sequence[int | str]) -> str:
    """pydantic's error location as FHIRPath: `("participant", 0, "actor")` under
    `Appointment` is `Appointment.participant[0].actor`. Parts that are not element names
    (pydantic's names of union members and validators) are left out."""
    path = root
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _NAME.fullmatch(part):
            path += f".{part}"
        elif part.isdigit():
            path += f"[{part}]"
    return path


def _problems(exc: ValidationError, root: str) -> list[FieldProblem]:
    return [FieldProblem(fhirpath(root, error["loc"]), error["msg"])
            for error in exc.errors(include_url=False)]


def _validate(body: dict[str, Any], root: str) -> tuple[Any, list[FieldProblem]]:
    """The model of a resource of a mapped type, or the problems naming its elements."""
    model = get_fhir_model_class(body["resourceType"])
    try:
        return model.model_validate(body), []
    except ValidationError as exc:
        return None, _problems(exc, root)
    except (KeyError, ValueError, TypeError) as exc:
        # fhir.resources raises KeyError for a contained resource of an unknown type.
        return None, [FieldProblem(root, f"not a valid {body['resourceType']}: {exc!r}")]


def _label(body: dict[str, Any]) -> str:
    kind = str(body.get("resourceType"))
    return f"{kind}/{body['id']}" if isinstance(body.get("id"), str) else kind


def _resource(body: Any, root: str) -> tuple[Entry | None, list[FieldProblem]]:
    if not isinstance(body, dict):
        return None, [FieldProblem(root, "must be a JSON object (a FHIR resource)")]
    kind = body.get("resourceType")
    if not isinstance(kind, str) or not kind:
        return None, [FieldProblem(f"{root}.resourceType".lstrip("."),
                                   "required: the resource's type (a string)")]
    if kind not in MAPPED_TYPES:
        return Entry(where=root, label=_label(body),
                     ignored=f"{kind} is not a resource type we map"), []
    model, problems = _validate(body, root)
    return Entry(where=root, label=_label(body), resource=model), problems


def _bundle(body: dict[str, Any]) -> tuple[list[Entry], list[FieldProblem]]:
    raw_entries = body.get("entry") or []
    if not isinstance(raw_entries, list):
        return [], [FieldProblem("Bundle.entry", "must be a JSON array")]
    # The bundle's own elements are checked without its resources, which are checked one
    # by one below: an unsupported type must not be validated, nor refuse the rest.
    shell = {**body, "entry": [{k: v for k, v in entry.items() if k != "resource"}
                               if isinstance(entry, dict) else entry
                               for entry in raw_entries]}
    problems: list[FieldProblem] = []
    try:
        get_fhir_model_class("Bundle").model_validate(shell)
    except ValidationError as exc:
        problems += _problems(exc, "Bundle")
    if body.get("type") not in BUNDLE_TYPES:
        problems.append(FieldProblem("Bundle.type", f"must be one of {', '.join(BUNDLE_TYPES)}"
                                     f" (a Subscription notification or a batch of changes)"))
    if problems:
        return [], problems
    entries: list[Entry] = []
    for number, raw in enumerate(raw_entries):
        root = f"Bundle.entry[{number}].resource"
        resource = raw.get("resource")
        full_url = raw.get("fullUrl")
        if resource is None:
            method = (raw.get("request") or {}).get("method")
            why = ("a deletion: nothing is sent for it" if method == "DELETE"
                   else "no resource (an id-only notification): subscribe with "
                        "full-resource content")
            entries.append(Entry(where=root, label=str(full_url or root), full_url=full_url,
                                 ignored=why))
            continue
        if (number == 0 and body["type"] in ("history", "subscription-notification")
                and isinstance(resource, dict)
                and resource.get("resourceType") in NOTIFICATION_STATUS):
            continue  # the notification's own status, not a change
        entry, found = _resource(resource, root)
        problems += found
        if entry is not None:
            entries.append(Entry(where=entry.where, label=entry.label, resource=entry.resource,
                                 full_url=full_url, ignored=entry.ignored))
    return entries, problems


def _depth(node: Any) -> int:
    """How deep arrays and objects nest in `node` (a scalar: 0), without recursion."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        value, level = stack.pop()
        children = (value.values() if isinstance(value, dict)
                    else value if isinstance(value, list) else None)
        if children is None:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            break
        stack.extend((child, level + 1) for child in children)
    return deepest


def load_fhir(raw: bytes | str) -> dict[str, Any]:
    """A FHIR JSON body's object; raises `InvalidEvent` for what is not JSON (`body`), a
    key given twice (named by its FHIRPath under the resource: `Patient.telecom`), or
    nesting deeper than `MAX_DEPTH` (`body`)."""
    try:
        _, body = load_object(raw)
    except InvalidEvent as exc:
        root = _root_of(raw)
        raise InvalidEvent([FieldProblem(fhirpath(root, p.field.split(".")).lstrip(".")
                                         if p.field != "body" else "body", p.message)
                            for p in exc.problems]) from None
    if _depth(body) > MAX_DEPTH:
        raise InvalidEvent([FieldProblem("body", f"nested deeper than {MAX_DEPTH} arrays "
                                                 "and objects: no FHIR resource is")])
    return body


def _root_of(raw: bytes | str) -> str:
    """The FHIRPath root of a body our strict parser refused (its `resourceType` read by
    a lenient parse), "" when unknown."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return ""
    kind = body.get("resourceType") if isinstance(body, dict) else None
    return kind if isinstance(kind, str) and _NAME.fullmatch(kind) else ""


def parse(raw: bytes | str) -> list[Entry]:
    """The resources of a FHIR JSON payload, in order; raises `InvalidEvent` naming each
    bad element by its FHIRPath (JSON errors as `notifier.intake.json_body` names them)."""
    body = load_fhir(raw)
    if body.get("resourceType") == "Bundle":
        entries, problems = _bundle(body)
    else:
        kind = body.get("resourceType")
        entry, problems = _resource(body, kind if isinstance(kind, str) and kind else "")
        entries = [entry] if entry is not None else []
    if problems:
        raise InvalidEvent(problems)
    return entries
