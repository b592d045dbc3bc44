"""uvicorn's HTTP protocol with a deadline for reading each request.

uvicorn bounds the idle time between requests (`timeout_keep_alive`) but not the time a
client takes to send one: a connection that sends its headers or its body a byte at a time
is held for as long as the client likes, and so are the memory and the slot it takes
(uvicorn issue #157, "--timeout-request-start / --timeout-request-complete", open since
2018). An ASGI middleware cannot help with headers: the app is called only once they are
complete. So the deadline lives here, in a subclass of uvicorn's httptools protocol (the
one uvicorn picks, httptools being a dependency):

- a request's head and body must have arrived within `read_timeout_s` of the connection
  opening (its first request) or of the request's first byte (the next ones: the idle time
  before them is uvicorn's keep-alive timeout);
- otherwise the client gets 408 (unless an answer has started) and the connection is
  closed; the app, if it was waiting for the body, sees the client gone
  (`web.failures.client_gone`). One INFO line.

Over uvicorn's connection cap (`limit_concurrency`) it answers 503 and closes; the answer
here also says when to come back (`Retry-After`, `CAP_RETRY_AFTER_S`), as every other 503
of the service does: an integrator's client that honours it spreads its retries instead of
hammering a full server.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

TIMED_OUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
             b"content-length: 16\r\nconnection: close\r\n\r\nrequest too slow")


#: Retry-After of the 503 over the connection cap, in seconds: connections are held for at
#: most the read deadline, so a slot is usually free again within a second or two.
CAP_RETRY_AFTER_S = 1
FULL_BODY = b"server busy, retry after 1 s"


async def over_the_cap(scope: Any, receive: Any, send: Any) -> None:
    """uvicorn's `service_unavailable`, with Retry-After."""
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(FULL_BODY)).encode()),
        (b"retry-after", str(CAP_RETRY_AFTER_S).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": FULL_BODY, "more_body": False})


def deadline_protocol(read_timeout_s: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol, closing a connection whose request (head and body)
    is not read within `read_timeout_s` seconds; give it to `uvicorn.Config(http=...)`."""

    class RequestDeadline(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            if self._deadline is None:
                self._deadline = self.loop.call_later(read_timeout_s, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def _start_asgi_task(self, cycle: Any, app: Any) -> None:
            # uvicorn picks its own `service_unavailable` over the cap (no Retry-After);
            # every request, pipelined or not, starts here.
            super()._start_asgi_task(cycle, over_the_cap if app is service_unavailable
                                     else app)

        def _too_slow(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            cycle = self.cycle
            log.info("closed a connection whose request was not read within %g s",
                     read_timeout_s)
            if cycle is None or not cycle.response_started:
                self.transport.write(TIMED_OUT)
            if cycle is not None and not cycle.response_complete:
                # As `connection_lost` will: the app's receive says the client is gone, and
                # whatever it answers is dropped rather than written after the 408.
                cycle.disconnected = True
                cycle.message_event.set()
            self.transport.close()

    return RequestDeadline
