"""What every route answers when Redis fails under it or its client goes away.

Registered on the app once (`install_failure_handlers`), so no route has to catch these
itself, and none answers 500 with a traceback in the log:

- a `StoreError` (Redis unreachable, or refusing a command: out of memory, read-only after
  a failover, loading) is 503 with `Retry-After`, logged as one WARNING line;
- a `PayloadTooLarge` (a body over `web.bodies`' limit) is 413, and the connection is
  closed rather than the rest of the body read and thrown away;
- a `ClientDisconnect` (the client hung up before its body was read, or it was closed for
  being too slow: `web.server`) is one INFO line; nobody is left to answer.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from notifier.errors import PayloadTooLarge, StoreError
from notifier.web.answers import RETRY_AFTER_S, error_answer, unavailable_answer

log = logging.getLogger(__name__)


async def store_failed(request: Request, exc: Exception) -> Response:
    """503 with Retry-After; the one log line names the route and Redis's own words."""
    log.warning("%s %s: 503, Redis unavailable: %s", request.method, request.url.path, exc)
    return unavailable_answer()


async def client_gone(request: Request, exc: Exception) -> Response:
    """The client is gone: one INFO line, and an answer uvicorn drops."""
    log.info("%s %s: the client went away before its request was read",
             request.method, request.url.path)
    return Response(status_code=400)


async def too_large(request: Request, exc: Exception) -> Response:
    log.info("%s %s: 413 %s", request.method, request.url.path, exc)
    return error_answer(413, str(exc), headers={"Connection": "close"})


def install_failure_handlers(app: FastAPI) -> None:
    app.add_exception_handler(PayloadTooLarge, too_large)
    app.add_exception_handler(StoreError, store_failed)
    app.add_exception_handler(ClientDisconnect, client_gone)


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/ErrorAnswer"}}}}


RETRY_AFTER_HEADER = {"Retry-After": {
    "description": f"seconds to wait before retrying ({RETRY_AFTER_S})",
    "schema": {"type": "integer"}}}


def document_failures(schema: dict[str, Any]) -> None:
    """Add to every operation of an OpenAPI `schema` what the handlers above and the
    server (`web.server`) answer whatever the route: 503 with Retry-After (every route
    reads or writes Redis), 408 (a request not read within the deadline; plain text), and
    413 where the operation takes a body. An answer the route documents itself is kept.
    The answers refer to the `ErrorAnswer` schema, which the read API's 401 puts in the
    document's components."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.setdefault("503", _error("Redis unavailable or refusing writes; "
                                               "retry after Retry-After"))
            # Every 503 of the service says when to come back, /healthz's too.
            responses["503"].setdefault("headers", RETRY_AFTER_HEADER)
            responses.setdefault("408", {
                "description": "The request's head and body did not arrive within "
                               "NOTIFIER_WEB_READ_TIMEOUT_S; the connection is closed",
                "content": {"text/plain": {"schema": {"type": "string"}}}})
            if "requestBody" in operation:
                responses.setdefault("413", _error("Body over the route's size limit; "
                                                   "the connection is closed"))
