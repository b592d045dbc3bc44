"""Realistic FHIR resources for the tests: the visit cycle of `examples/fhir/visit-bundle.json`
(made-up patient and practitioner, shaped after the FHIR R4 specification's examples and
the US Core profiles), copied and changed per test."""

from __future__ import annotations

import copy
import json
from typing import Any

from notifier.config import PROJECT_ROOT
from notifier.intake.fhir import Defaults, MappedResource, map_payload

VISIT_BUNDLE = PROJECT_ROOT / "examples" / "fhir" / "visit-bundle.json"
DEFAULTS = Defaults(zone="America/New_York", phone_region="US")


def bundle() -> dict[str, Any]:
    return json.loads(VISIT_BUNDLE.read_text())


def resource(kind: str, version: str = "1", **changes: Any) -> dict[str, Any]:
    """The example's `kind` resource at `version`, copied, with top-level `changes` (a
    value None removes the element)."""
    for entry in bundle()["entry"]:
        found = entry["resource"]
        if found["resourceType"] == kind and found["meta"]["versionId"] == version:
            found = copy.deepcopy(found)
            for key, value in changes.items():
                if value is None:
                    found.pop(key, None)
                else:
                    found[key] = value
            return found
    raise LookupError(f"no {kind} version {version} in the example")


def of(*resources: dict[str, Any], kind: str = "collection") -> dict[str, Any]:
    """A Bundle of `resources`, each with its fullUrl."""
    return {"resourceType": "Bundle", "type": kind,
            "entry": [{"fullUrl": f"https://ehr.example.org/fhir/{r.get('resourceType')}/{r.get('id')}",
                       "resource": r} for r in resources]}


def mapped(body: dict[str, Any], defaults: Defaults = DEFAULTS, source: str = ""
           ) -> list[MappedResource]:
    return map_payload(json.dumps(body).encode(), defaults, source=source)


def events(body: dict[str, Any], defaults: Defaults = DEFAULTS, source: str = ""
           ) -> list[dict[str, Any]]:
    """Every event a payload becomes, in order."""
    return [event for item in mapped(body, defaults, source) for event in item.events]


def ignored(body: dict[str, Any]) -> str | None:
    """Why the payload's only resource became nothing (None when it became events)."""
    (item,) = mapped(body)
    return item.ignored
