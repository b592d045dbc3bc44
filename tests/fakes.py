"""Local HTTP stand-ins for Twilio and SendGrid, for tests that drive the real SDKs.

Each fake is a `ThreadingHTTPServer` on 127.0.0.1 (random port) that records every request
and answers in the provider's wire format. A request is answered by the first that applies:

1. wrong or missing credentials: the provider's 401 (scripted answers are kept for later,
   as the real APIs authenticate before anything else);
2. the next answer scripted for the request's recipient (`FakeTwilio.answer_to`), first in
   first out: unlike `script`, it does not depend on the order parallel requests arrive in;
3. the next scripted answer (`script`), first in first out;
4. the function given to `answer_with`, when it returns an answer;
5. chaos mode (`fail_randomly`): with probability `rate`, a random answer from its list;
6. the provider itself: a validation error when required fields are missing, else success.

Only requests answered by step 6 with success count as sent (`sent_messages`, `sent_mails`),
and those answered by a `Scripted(accepted=True)`: the provider takes the message as in step
6, then sends that answer's delay and nothing else (a read timeout after acceptance).
`delay_randomly` holds every answer back a random while, so parallel requests are answered
out of order, as a real API's are.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import json
import random
import re
import secrets
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit


@dataclass
class Recorded:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    form: dict[str, list[str]]  # parsed application/x-www-form-urlencoded body, else {}
    json: Any  # parsed JSON body, else None


@dataclass
class Scripted:
    """One answer: a dict body is sent as JSON; `delay_s` lets a client's timeout fire first.

    `accepted`: the provider takes the message (step 6 of the module docstring) and answers
    as it would, after `delay_s`: with a delay past the client's timeout, the message went
    out and the client never hears of it."""

    status: int
    body: bytes | dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    accepted: bool = False


def _record(method: str, target: str, headers: dict[str, str], body: bytes) -> Recorded:
    url = urlsplit(target)
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    form: dict[str, list[str]] = {}
    parsed: Any = None
    if content_type == "application/x-www-form-urlencoded":
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    elif content_type == "application/json" or content_type.endswith("+json"):
        with contextlib.suppress(ValueError):
            parsed = json.loads(body)
    return Recorded(method, url.path, parse_qs(url.query, keep_blank_values=True), headers,
                    body, form, parsed)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's backlog of 5 overflows under a burst of parallel sends; the kernel then
    # drops SYNs and a client waits 1 s to retry, long enough to hit a short client timeout.
    request_queue_size = 128
    provider: FakeProvider


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so no idle keep-alive threads outlive a test.
    protocol_version = "HTTP/1.0"
    server: _Server

    def _serve(self) -> None:
        provider = self.server.provider
        headers = {name.lower(): value for name, value in self.headers.items()}
        answer = provider._answer(_record(self.command, self.path, headers, self._read_body()))
        if answer.delay_s > 0 and provider._closing.wait(answer.delay_s):
            return  # the fake is closing: drop the connection unanswered
        body, extra = _encode(answer)
        try:
            self.send_response(answer.status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except ConnectionError:
            pass  # the client gave up (its timeout fired during delay_s)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def _read_body(self) -> bytes:
        # Both SDKs send a Content-Length; neither streams a chunked body.
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the recorded requests are the log."""


def _encode(answer: Scripted) -> tuple[bytes, dict[str, str]]:
    headers = {k: v for k, v in answer.headers.items() if k.lower() != "content-length"}
    if isinstance(answer.body, dict):
        body = json.dumps(answer.body).encode()
        if "content-type" not in {name.lower() for name in headers}:
            headers["Content-Type"] = "application/json"
    else:
        body = answer.body or b""
    headers["Content-Length"] = str(len(body))
    return body, headers


class FakeProvider:
    """ThreadingHTTPServer on 127.0.0.1, random port, served from a daemon thread."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._lock = threading.Condition()
        self._scripted: deque[Scripted] = deque()
        self._chaos: tuple[float, random.Random, list[Scripted]] | None = None
        self._decide: Callable[[Recorded], Scripted | None] | None = None
        self._jitter: tuple[float, random.Random] | None = None
        self._closing = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.provider = self
        host, port = self._server.server_address[:2]
        self.url = f"http://{host!s}:{port}"
        # A short poll interval keeps close() quick; the default 0.5 s would add up over a suite.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name=f"{type(self).__name__}:{port}", daemon=True)
        self._thread.start()

    def script(self, *answers: Scripted) -> None:
        """Queue answers, used first in first out before chaos mode and the default.

        They go to requests in the order those arrive, which with parallel senders is not
        the order the sends were started in: to answer one number, use `FakeTwilio.answer_to`.
        """
        with self._lock:
            self._scripted.extend(answers)

    def fail_randomly(self, rate: float, rng: random.Random, answers: list[Scripted]) -> None:
        """Answer each request with a random failure from `answers` with probability `rate`.

        A rate of 0 turns it off; a rate outside [0, 1], or no answers, raises ValueError.
        """
        if not 0 <= rate <= 1:
            raise ValueError(f"rate must be within [0, 1], got {rate}")
        if rate and not answers:
            raise ValueError("answers must not be empty when rate > 0")
        with self._lock:
            self._chaos = (rate, rng, list(answers)) if rate else None

    def answer_with(self, decide: Callable[[Recorded], Scripted | None] | None) -> None:
        """Answer each request with `decide(request)` when it returns an answer (None: the
        next step); called under the fake's lock, in the order requests arrive, so it may
        count them. None turns it off."""
        with self._lock:
            self._decide = decide

    def delay_randomly(self, max_s: float, rng: random.Random) -> None:
        """Delay every answer by a further uniform 0 to `max_s` seconds; 0 turns it off."""
        if max_s < 0:
            raise ValueError(f"max_s must not be negative, got {max_s}")
        with self._lock:
            self._jitter = (max_s, rng) if max_s else None

    def wait_for_requests(self, n: int, timeout_s: float = 10) -> list[Recorded]:
        """All requests so far, once there are at least `n`; raises TimeoutError otherwise."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self.requests) >= n, timeout=timeout_s):
                raise TimeoutError(f"{len(self.requests)} of {n} requests after {timeout_s} s")
            return list(self.requests)

    def close(self) -> None:
        """Stop serving; delayed answers still pending are dropped. Safe to call twice."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _answer(self, request: Recorded) -> Scripted:
        with self._lock:
            self.requests.append(request)
            self._lock.notify_all()
            answer = self._choose(request)
            if answer.accepted:
                answer = dataclasses.replace(self._default(request), delay_s=answer.delay_s)
            if self._jitter:
                max_s, rng = self._jitter
                answer = dataclasses.replace(answer,
                                             delay_s=answer.delay_s + rng.uniform(0, max_s))
            return answer

    def _choose(self, request: Recorded) -> Scripted:
        if not self._authorized(request):
            return self._unauthorized()
        for_recipient = self._scripted_for(request)
        if for_recipient is not None:
            return for_recipient
        if self._scripted:
            return self._scripted.popleft()
        decided = self._decide(request) if self._decide else None
        if decided is not None:
            return decided
        if self._chaos:
            rate, rng, answers = self._chaos
            if rng.random() < rate:
                return rng.choice(answers)
        return self._default(request)

    def _scripted_for(self, request: Recorded) -> Scripted | None:
        """The next answer scripted for this request's recipient, if any (none here)."""
        return None

    def _authorized(self, request: Recorded) -> bool:
        return True

    def _unauthorized(self) -> Scripted:
        return Scripted(401)

    def _default(self, request: Recorded) -> Scripted:
        return Scripted(404)


_TWILIO_MESSAGES = re.compile(r"/2010-04-01/Accounts/[^/]+/Messages\.json")
_TWILIO_MESSAGE = re.compile(r"/2010-04-01/Accounts/[^/]+/Messages/([^/.]+)\.json")
_TWILIO_ACCOUNT = re.compile(r"/2010-04-01/Accounts/([^/.]+)")

#: Messages Twilio sends with its error codes, used when `FakeTwilio.error` is given none.
TWILIO_MESSAGES = {
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    20500: "Internal Server Error",
    21211: "Invalid 'To' Phone Number",
    21602: "Message body is required.",
    21603: "A 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    21610: "Attempt to send to unsubscribed recipient",
    21614: "'To' number is not a valid mobile number",
}

# GSM 03.38 basic alphabet and its escape-prefixed extension (two septets each), kept apart
# from notifier.delivery.render on purpose: the fake counts segments as Twilio does, not as we do.
_GSM7 = frozenset("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
                  "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
_GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")


#: Some of what Twilio's Smart Encoding replaces by a GSM-7 look-alike before it counts and
#: sends (its documented table is longer; these are the ones people type).
_SMART_ENCODING = {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-",
                   "\u2014": "-", "\u2026": "...", "\u00a0": " ", "\u200b": ""}


def _smart_encoded(body: str) -> str:
    return "".join(_SMART_ENCODING.get(ch, ch) for ch in body)


def _segments(body: str) -> int:
    if all(ch in _GSM7 or ch in _GSM7_EXTENSION for ch in body):
        units, single, multi = sum(1 + (ch in _GSM7_EXTENSION) for ch in body), 160, 153
    else:
        units, single, multi = len(body.encode("utf-16-le")) // 2, 70, 67
    return 1 if units <= single else -(-units // multi)


class FakeTwilio(FakeProvider):
    """Twilio's Messages API: POST /2010-04-01/Accounts/{AccountSid}/Messages.json, and
    GET /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json.

    Requires HTTP basic auth with `account_sid`:`auth_token`, and the path's AccountSid to be
    `account_sid`. A POST is answered 201 with a Message resource echoing the request;
    missing To, From (or MessagingServiceSid) or Body (or MediaUrl, ContentSid) get Twilio's
    400 errors. A GET is answered with the Message resource it created, with the status and
    error code a test set (`set_status`), or Twilio's 404 (error 20404) for a SID it never
    gave.
    """

    def __init__(self, account_sid: str = "AC" + "0" * 32, auth_token: str = "test-token"):
        self.account_sid = account_sid
        self._authorization = "Basic " + base64.b64encode(
            f"{account_sid}:{auth_token}".encode()).decode()
        self._sent: list[dict[str, str]] = []
        self._by_recipient: dict[str, deque[Scripted]] = {}
        self._messages: dict[str, dict[str, Any]] = {}
        super().__init__()

    def set_status(self, sid: str, status: str, error_code: int | None = None) -> None:
        """What a GET of message `sid` says from now on: `status` ("delivered",
        "undelivered"...) and `error_code`, as Twilio updates them when carriers report.
        KeyError for a SID this fake never gave."""
        with self._lock:
            message = self._messages[sid]
            message.update(status=status, error_code=error_code,
                           date_updated=format_datetime(datetime.now(UTC)))

    def answer_to(self, to: str, *answers: Scripted) -> None:
        """Queue answers for the requests whose To is `to`, first in first out, before any
        `script`ed ones; once they are used up that number is answered as usual."""
        with self._lock:
            self._by_recipient.setdefault(to, deque()).extend(answers)

    @staticmethod
    def error(code: int, status: int = 400, message: str | None = None,
              retry_after_s: int | str | None = None) -> Scripted:
        """Twilio's error JSON; the message defaults to Twilio's own for known codes. A
        `retry_after_s` string goes into Retry-After as it is (an HTTP-date)."""
        body = {"code": code, "message": message or TWILIO_MESSAGES.get(code, f"Error {code}"),
                "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status}
        headers = {"Twilio-Request-Id": "RQ" + uuid.uuid4().hex}
        if retry_after_s is not None:
            headers["Retry-After"] = str(retry_after_s)
        return Scripted(status, body, headers)

    def sent_messages(self) -> list[dict[str, str]]:
        """Form fields (first value of each) of the Messages.json POSTs answered 201."""
        with self._lock:
            return list(self._sent)

    def _scripted_for(self, request: Recorded) -> Scripted | None:
        queue = self._by_recipient.get(request.form.get("To", [""])[0])
        return queue.popleft() if queue else None

    def _authorized(self, request: Recorded) -> bool:
        account = _TWILIO_ACCOUNT.match(request.path)
        return (request.headers.get("authorization") == self._authorization
                and (account is None or account[1] == self.account_sid))

    def _unauthorized(self) -> Scripted:
        answer = self.error(20003, 401)
        answer.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
        return answer

    def _default(self, request: Recorded) -> Scripted:
        fetched = _TWILIO_MESSAGE.fullmatch(request.path)
        if request.method == "GET" and fetched and fetched[1] in self._messages:
            return Scripted(200, dict(self._messages[fetched[1]]),
                            {"Twilio-Request-Id": "RQ" + uuid.uuid4().hex})
        if request.method != "POST" or not _TWILIO_MESSAGES.fullmatch(request.path):
            return self.error(20404, 404, f"The requested resource {request.path} was not found")
        fields = {name: values[0] for name, values in request.form.items()}
        if not fields.get("To"):
            return self.error(21604)
        if not (fields.get("From") or fields.get("MessagingServiceSid")):
            return self.error(21603)
        if not (fields.get("Body") or fields.get("MediaUrl") or fields.get("ContentSid")):
            return self.error(21602)
        self._sent.append(fields)
        message = self._message(fields, len(request.form.get("MediaUrl", [])))
        self._messages[message["sid"]] = message
        return Scripted(201, dict(message), {"Twilio-Request-Id": "RQ" + uuid.uuid4().hex})

    def _message(self, fields: dict[str, str], num_media: int) -> dict[str, Any]:
        sid, now = "SM" + uuid.uuid4().hex, format_datetime(datetime.now(UTC))
        body = fields.get("Body", "")
        if fields.get("SmartEncoded", "").lower() == "true":
            body = _smart_encoded(body)
        base = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}"
        return {
            "account_sid": self.account_sid, "api_version": "2010-04-01",
            "body": body, "date_created": now, "date_sent": None,
            "date_updated": now, "direction": "outbound-api", "error_code": None,
            "error_message": None, "from": fields.get("From"),
            "messaging_service_sid": fields.get("MessagingServiceSid"),
            "num_media": str(num_media), "num_segments": str(_segments(body)),
            "price": None, "price_unit": "USD", "sid": sid,
            # Twilio says "accepted" while a Messaging Service still has to pick the sender.
            "status": "queued" if fields.get("From") else "accepted",
            "subresource_uris": {"media": f"{base}/Media.json"}, "to": fields["To"],
            "uri": f"{base}.json",
        }


#: SendGrid's answer to a wrong or missing API key.
SENDGRID_UNAUTHORIZED = "The provided authorization grant is invalid, expired, or revoked"
_SENDGRID_MESSAGES = {400: "Bad Request", 401: SENDGRID_UNAUTHORIZED, 403: "access forbidden",
                      404: "resource not found", 413: "payload too large",
                      429: "too many requests", 500: "internal server error",
                      503: "service unavailable"}


class FakeSendGrid(FakeProvider):
    """SendGrid's v3 Mail Send: POST /v3/mail/send, JSON, `Authorization: Bearer <api_key>`.

    Answers 202 with an empty body and an X-Message-Id; bodies missing what SendGrid requires
    (from, personalizations with a to, subject, content or template_id, base64 attachments
    with filenames) get SendGrid's 400 listing every problem.
    """

    def __init__(self, api_key: str = "SG.test-key"):
        self._authorization = f"Bearer {api_key}"
        self._sent: list[dict[str, Any]] = []
        super().__init__()

    @staticmethod
    def error(status: int, message: str | None = None, field: str | None = None,
              retry_after_s: int | str | None = None) -> Scripted:
        """SendGrid's error JSON; the message defaults to SendGrid's own for common statuses.
        A `retry_after_s` string goes into Retry-After as it is (an HTTP-date)."""
        return _sendgrid_errors(status, [(message or _SENDGRID_MESSAGES.get(status, "error"),
                                          field)], retry_after_s)

    def sent_mails(self) -> list[dict[str, Any]]:
        """JSON bodies of the sends answered 202."""
        with self._lock:
            return list(self._sent)

    def _authorized(self, request: Recorded) -> bool:
        return request.headers.get("authorization") == self._authorization

    def _unauthorized(self) -> Scripted:
        return self.error(401)

    def _default(self, request: Recorded) -> Scripted:
        if request.method != "POST" or request.path != "/v3/mail/send":
            return self.error(404)
        if not isinstance(request.json, dict):
            return self.error(400, "Bad Request")
        problems = _mail_problems(request.json)
        if problems:
            return _sendgrid_errors(400, problems, None)
        self._sent.append(request.json)
        return Scripted(202, None, {"X-Message-Id": secrets.token_urlsafe(16)})


def _sendgrid_errors(status: int, problems: list[tuple[str, str | None]],
                     retry_after_s: int | str | None) -> Scripted:
    body = {"errors": [{"message": message, "field": field, "help": None}
                       for message, field in problems]}
    headers = {} if retry_after_s is None else {"Retry-After": str(retry_after_s)}
    return Scripted(status, body, headers)


def _mail_problems(mail: dict[str, Any]) -> list[tuple[str, str | None]]:
    """What SendGrid rejects in a Mail Send body, as (message, field) pairs."""
    problems: list[tuple[str, str | None]] = []
    if not isinstance(mail.get("from"), dict) or not mail["from"].get("email"):
        problems.append(("The from object must be provided for every email send.", "from"))
    personalizations = mail.get("personalizations") or []
    if not personalizations:
        problems.append(("The personalizations field is required and must have at least one "
                         "personalization.", "personalizations"))
    for i, personalization in enumerate(personalizations):
        if not personalization.get("to"):
            problems.append(("The to array is required for all personalization objects.",
                             f"personalizations.{i}.to"))
    templated = bool(mail.get("template_id"))
    if not (templated or mail.get("subject")
            or (personalizations and all(p.get("subject") for p in personalizations))):
        problems.append(("The subject is required.", "subject"))
    if not (templated or mail.get("content")):
        problems.append(("Unless a valid template_id is provided, the content parameter is "
                         "required.", "content"))
    for i, attachment in enumerate(mail.get("attachments") or []):
        try:
            base64.b64decode(attachment.get("content", ""), validate=True)
        except (binascii.Error, ValueError):
            problems.append(("The attachment content must be base64 encoded.",
                             f"attachments.{i}.content"))
        if not attachment.get("filename"):
            problems.append(("The attachment filename parameter is required.",
                             f"attachments.{i}.filename"))
    return problems
