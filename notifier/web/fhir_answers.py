"""The answers of the FHIR intake (`notifier.web.fhir`): what became of each resource
(`FhirAnswer`, JSON), and the same in FHIR's own shapes for a FHIR client that reads the
answer as a resource (HAPI FHIR): an OperationOutcome (`as_outcome`) or a
`transaction-response` Bundle (`as_bundle`), and an error as an OperationOutcome of
severity `error` (`in_fhir`). Pure."""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException


class FhirEventAnswer(BaseModel):
    id: str
    type: str
    status: Literal["accepted", "duplicate"]


class FhirResourceAnswer(BaseModel):
    #: `Type/id` (just `Type` for a resource without an id)
    resource: str
    status: Literal["mapped", "ignored"]
    #: why an ignored resource became no event
    reason: str | None
    events: list[FhirEventAnswer]


class FhirAnswer(BaseModel):
    """What became of each resource of a notification, in its order."""

    resources: list[FhirResourceAnswer]


class FhirIssue(BaseModel):
    severity: Literal["information"]
    code: Literal["informational"]
    #: `Patient/pat-ana: mapped: client.upserted fhir.Patient.pat-ana.1 accepted`
    diagnostics: str


class FhirOutcome(BaseModel):
    """A FHIR update's or deletion's answer, as a FHIR client reads one: HAPI FHIR parses
    a 2xx answer's JSON as a resource and counts a delivery whose answer is none as
    failed. One issue per resource, saying what `FhirAnswer` says."""

    resourceType: Literal["OperationOutcome"]
    issue: list[FhirIssue]


class FhirJSONResponse(JSONResponse):
    media_type = "application/fhir+json"


def _issue(resource: dict[str, Any]) -> dict[str, Any]:
    said = "; ".join(f"{e['type']} {e['id']} {e['status']}" for e in resource["events"])
    text = f"{resource['resource']}: {resource['status']}"
    text += f": {resource['reason']}" if resource["reason"] else ""
    text += f": {said}" if said else ""
    return {"severity": "information", "code": "informational", "diagnostics": text}


def as_outcome(answer: dict[str, Any]) -> dict[str, Any]:
    """A `FhirAnswer` as a `FhirOutcome` (an OperationOutcome needs an issue: a payload
    of no resource has one saying so)."""
    issues = [_issue(resource) for resource in answer["resources"]] or [
        {"severity": "information", "code": "informational",
         "diagnostics": "no resource in the notification"}]
    return {"resourceType": "OperationOutcome", "issue": issues}


#: The answer to a Bundle entry that is the notification's own status (the Backport IG's
#: first entry), read and skipped.
_STATUS_READ = {"severity": "information", "code": "informational",
                "diagnostics": "the notification's status (Parameters/SubscriptionStatus): "
                               "read, nothing to map"}


def entry_number(where: str) -> int | None:
    """The entry index of a FHIRPath root `Bundle.entry[3].resource` (3); None for a
    resource posted alone."""
    match = re.match(r"Bundle\.entry\[(\d+)\]", where)
    return int(match.group(1)) if match else None


def as_bundle(answer: dict[str, Any], wheres: list[str], entry_count: int) -> dict[str, Any]:
    """A `FhirAnswer` as a FHIR `transaction-response` Bundle: what HAPI FHIR's client
    parses the answer to a Bundle it posts as (a topic-based notification, or a payload
    search). One entry per entry posted (`entry_count`), in its order, as FHIR requires:
    each resource's outcome (`wheres`: each answered resource's FHIRPath root, in the
    answer's order), and the notification's status entry, skipped, said to be read."""
    outcomes = {entry_number(where): _issue(resource)
                for resource, where in zip(answer["resources"], wheres, strict=True)}
    return {"resourceType": "Bundle", "type": "transaction-response", "entry": [
        {"response": {"status": "200 OK", "outcome": {
            "resourceType": "OperationOutcome", "issue": [outcomes.get(number, _STATUS_READ)]}}}
        for number in range(max(entry_count, len(outcomes)))]}


def wants_fhir(accept: str) -> bool:
    """Whether an `Accept` header asks for FHIR JSON and not plain JSON (a FHIR client's,
    such as HAPI's `application/fhir+json;q=1.0, application/json+fhir;q=0.9`)."""
    media = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    return (any(m in ("application/fhir+json", "application/json+fhir") for m in media)
            and not any(m in ("application/json", "*/*", "application/*") for m in media))


#: The OperationOutcome issue code (FHIR R4's IssueType value set) of each error we answer.
ISSUE_TYPES = {401: "security", 404: "not-found", 405: "not-supported", 413: "too-long",
               415: "not-supported", 422: "invalid", 503: "transient"}
#: The headers an error's answer keeps when it is put in FHIR's shape.
_KEPT_HEADERS = ("retry-after", "connection")


def error_outcome(status: int, answer: dict[str, Any]) -> dict[str, Any]:
    """An error answer (`web.answers.ErrorAnswer`: `{error, problems}`) as an
    OperationOutcome: one issue saying the error, then one per problem with the element's
    FHIRPath in `expression`, each of severity `error` and the code of `ISSUE_TYPES`
    (`processing` for a status not in it)."""
    code = ISSUE_TYPES.get(status, "processing")
    issues = [{"severity": "error", "code": code, "diagnostics": answer["error"]}]
    issues += [{"severity": "error", "code": code, "diagnostics": problem["message"],
                "expression": [problem["field"]]} for problem in answer.get("problems", [])]
    return {"resourceType": "OperationOutcome", "issue": issues}


def in_fhir(response: Response) -> Response:
    """`response` as a FHIR client reads it: an error (4xx, 5xx, our JSON `ErrorAnswer`)
    becomes `error_outcome`'s OperationOutcome with the same status, `Retry-After` and
    `Connection`; any other answer is returned as it is."""
    if response.status_code < 400:
        return response
    answer = json.loads(bytes(response.body))
    headers = {k: v for k, v in response.headers.items() if k.lower() in _KEPT_HEADERS}
    return FhirJSONResponse(error_outcome(response.status_code, answer),
                            status_code=response.status_code, headers=headers)


async def fhir_http_error(request: Any, exc: HTTPException) -> Response:
    """The answer to an HTTP error (404, 405: a method or path no FHIR route has) under
    `/fhir/`: an OperationOutcome, as a FHIR client reads one (`error_outcome`), with the
    error's status and headers (`Allow` of a 405)."""
    detail = exc.detail if isinstance(exc.detail, str) else "not found"
    headers = dict(exc.headers or {})
    return FhirJSONResponse(error_outcome(exc.status_code, {"error": detail}),
                            status_code=exc.status_code, headers=headers)
