"""The error answer the event webhook and the read API share: `{error, problems}`."""

from __future__ import annotations

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from notifier.errors import FieldProblem


class ProblemOut(BaseModel):
    field: str
    message: str


class ErrorAnswer(BaseModel):
    error: str
    problems: list[ProblemOut] = []


def error_answer(status: int, error: str, problems: list[FieldProblem] | None = None,
                 headers: dict[str, str] | None = None) -> JSONResponse:
    payload = ErrorAnswer(error=error, problems=[ProblemOut(field=p.field, message=p.message)
                                                 for p in problems or []])
    return JSONResponse(payload.model_dump(), status_code=status, headers=headers)


#: What a client is told to wait before retrying when Redis is away: long enough for a
#: restart or a failover to finish, short enough that a webhook sender's retry soon lands.
RETRY_AFTER_S = 5


def unavailable_answer(error: str = "storage unavailable; retry later") -> JSONResponse:
    """503 with `Retry-After`: Redis could not be reached, or refused the write."""
    return error_answer(503, error, headers={"Retry-After": str(RETRY_AFTER_S)})
