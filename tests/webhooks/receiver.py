"""A real HTTP receiver of Standard Webhooks, for tests of the webhook dispatcher.

A `ThreadingHTTPServer` on 127.0.0.1 (random port), served from a daemon thread. Each path
is an endpoint of its own (`WebhookReceiver.endpoint`) with its secrets and a script of
responses, given in order, the last one repeated:

    Answer(status=200)                   answer at once (`retry_after` sets Retry-After);
    Hang(seconds=30)                     read the request, then say nothing until `seconds`
                                         pass or the receiver closes, then close the connection;
    Drop()                               close the connection without an answer.

Every request is recorded before it is answered, with the verdict of the reference
`standardwebhooks` implementation for each of its endpoint's secrets; it is answered by the
script whether verified or not (tests assert on `Request.verified`). A path with no endpoint
is recorded too (unverified) and answered 404.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

T = TypeVar("T")

#: How long `close` waits for handlers still running (woken hangs, slow clients) to end.
CLOSE_WAIT_S = 5.0


@dataclass(frozen=True)
class Answer:
    """An HTTP answer; `retry_after` is sent verbatim as Retry-After (seconds or a date)."""

    status: int = 200
    retry_after: str | None = None
    body: bytes = b""


@dataclass(frozen=True)
class Hang:
    """Read the request, then answer nothing for `seconds` (or until the receiver closes),
    then close the connection: a client's read timeout fires first."""

    seconds: float = 30.0


@dataclass(frozen=True)
class Drop:
    """Close the connection without an answer: the client sees the server disconnect."""


Response = Answer | Hang | Drop


@dataclass(frozen=True)
class Request:
    """One request as the receiver got it, and what it answered."""

    method: str
    path: str  # without the query string
    headers: dict[str, str]  # lower-case names
    body: bytes
    received_at_s: float  # time.time() when its body had been read
    matched_secrets: tuple[str, ...]  # the endpoint's secrets whose signature verifies
    payload: Any  # the parsed JSON body when verified (None if it is not JSON), else None
    response: Response

    @property
    def verified(self) -> bool:
        """True when at least one of the endpoint's secrets verifies the request."""
        return bool(self.matched_secrets)


class Endpoint:
    """One path's secrets and script; the script may be replaced while serving."""

    def __init__(self, path: str, secrets: Sequence[str], script: Sequence[Response]) -> None:
        # Built here so a malformed secret fails in the test, not in a handler thread.
        self._verifiers = [(secret, Webhook(secret)) for secret in secrets]
        self.path = path
        self._lock = threading.Lock()
        self._script: list[Response] = []
        self._next = 0
        self.set_script(script)

    def set_script(self, script: Sequence[Response]) -> None:
        """Answer the next requests with `script` from its start; ValueError if empty."""
        if not script:
            raise ValueError(f"empty script for {self.path}")
        with self._lock:
            self._script, self._next = list(script), 0

    def _take(self) -> Response:
        with self._lock:
            response = self._script[min(self._next, len(self._script) - 1)]
            self._next += 1
            return response

    def _verify(self, body: bytes, headers: dict[str, str]) -> tuple[tuple[str, ...], Any]:
        matched = []
        for secret, webhook in self._verifiers:
            try:
                webhook.verify(body, headers, json_parse=False)
            except (WebhookVerificationError, ValueError):  # ValueError: malformed header
                continue
            matched.append(secret)
        try:
            payload = json.loads(body) if matched else None
        except ValueError:
            payload = None
        return tuple(matched), payload


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # a burst of parallel sends must not overflow the backlog
    receiver: WebhookReceiver


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so no idle keep-alive thread outlives a test.
    protocol_version = "HTTP/1.0"
    timeout = 10  # socket reads: a client stalling mid-request does not hold a thread forever
    server: _Server

    def _serve(self) -> None:
        receiver = self.server.receiver
        with receiver._lock:
            receiver._in_flight += 1
        try:
            self._answer(receiver)
        finally:
            with receiver._lock:
                receiver._in_flight -= 1
                receiver._lock.notify_all()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def _answer(self, receiver: WebhookReceiver) -> None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        response = receiver._record(self.command, urlsplit(self.path).path, headers, body)
        if isinstance(response, Hang):
            receiver._closing.wait(response.seconds)
        if not isinstance(response, Answer):
            self.close_connection = True
            return  # nothing written: the server closes the socket unanswered
        try:
            self.send_response(response.status)
            if response.retry_after is not None:
                self.send_header("Retry-After", response.retry_after)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            self.wfile.write(response.body)
        except ConnectionError:
            pass  # the client gave up first

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the recorded requests are the log."""


class WebhookReceiver:
    """The receiver, serving from construction until `close` (also a context manager)."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._endpoints: dict[str, Endpoint] = {}
        self._requests: list[Request] = []
        self._in_flight = 0
        self._closing = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.receiver = self
        host, port = self._server.server_address[:2]
        self.base_url = f"http://{host!s}:{port}"
        # A short poll interval keeps close() quick; the default 0.5 s adds up over a suite.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name=f"WebhookReceiver:{port}", daemon=True)
        self._thread.start()

    def endpoint(self, path: str, secrets: Sequence[str] = (),
                 script: Sequence[Response] = (Answer(200),)) -> Endpoint:
        """Serve `path` (e.g. "/hooks/a") with these secrets (whsec_...) and script,
        replacing any endpoint already there. ValueError for a path not starting with "/"."""
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/', got {path!r}")
        endpoint = Endpoint(path, secrets, script)
        with self._lock:
            self._endpoints[path] = endpoint
        return endpoint

    def set_script(self, path: str, script: Sequence[Response]) -> None:
        """Replace the script of `path`'s endpoint (KeyError if none), e.g. to revive it."""
        with self._lock:
            endpoint = self._endpoints[path]
        endpoint.set_script(script)

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def received(self, path: str | None = None) -> list[Request]:
        """Requests to `path` (all paths when None), in the order they were read."""
        with self._lock:
            return [r for r in self._requests if path is None or r.path == path]

    def verified_payloads(self, path: str) -> list[Any]:
        """The payloads of the verified requests to `path`, in order (retries included)."""
        return [r.payload for r in self.received(path) if r.verified]

    def wait_for(self, predicate: Callable[[], T], timeout_s: float = 10.0,
                 what: str = "") -> T:
        """Poll `predicate` until it returns a truthy value, returned; woken early by each
        new request. AssertionError after `timeout_s`, listing what was received."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"not true after {timeout_s} s: {what or predicate!r}; received: "
                    f"{self._summary() or 'nothing'}")
            with self._lock:
                self._lock.wait(min(remaining, 0.05))

    def close(self) -> None:
        """Stop serving and wake hanging handlers, waiting up to CLOSE_WAIT_S for them to
        end. Safe to call twice."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        with self._lock:
            self._lock.wait_for(lambda: self._in_flight == 0, timeout=CLOSE_WAIT_S)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _record(self, method: str, path: str, headers: dict[str, str],
                body: bytes) -> Response:
        received_at_s = time.time()
        with self._lock:
            endpoint = self._endpoints.get(path)
        matched, payload = endpoint._verify(body, headers) if endpoint else ((), None)
        with self._lock:  # one lock for both: the script's order is the recorded order
            response = endpoint._take() if endpoint else Answer(404)
            self._requests.append(Request(method, path, headers, body, received_at_s, matched,
                                          payload, response))
            self._lock.notify_all()
        return response

    def _summary(self) -> str:
        with self._lock:
            requests = list(self._requests)
        return ", ".join(f"{r.method} {r.path} -> {r.response}"
                         f" {'verified' if r.verified else 'unverified'}" for r in requests)
