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


def error_answer(status: int, error: str, problems: list[FieldProblem] | None = None
                 ) -> JSONResponse:
    payload = ErrorAnswer(error=error, problems=[ProblemOut(field=p.field, message=p.message)
                                                 for p in problems or []])
    return JSONResponse(payload.model_dump(), status_code=status)
