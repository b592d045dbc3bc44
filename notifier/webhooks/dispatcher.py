"""The senders of delivery-webhook messages: for each endpoint, `max_in_flight` threads of
its own, each claiming one due message at a time, signing it and POSTing it with the
endpoint's short timeout.

Nothing here shares a thread, a queue or a connection with notification delivery (the
worker runs the dispatcher in a process of its own: `notifier.worker.processes`), and
nothing is shared between endpoints: a receiver that hangs holds its own threads for its
own timeout, and its own in-flight bound (`webhook_claim.lua`) keeps it from taking more.

Signing is Standard Webhooks' (https://www.standardwebhooks.com/), with the reference
`standardwebhooks` package: `webhook-id` (the message's, the same on every attempt, so a
receiver dedupes on it), `webhook-timestamp` (the attempt's, so a retry hours later is
within a receiver's 5-minute tolerance), `webhook-signature` (one `v1,` signature per
secret in use: two while a rotation overlaps, space-separated).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

import httpx
from standardwebhooks.webhooks import Webhook

from notifier.errors import StoreError
from notifier.timeutil import utcnow
from notifier.webhooks.retries import DISABLE_AFTER_S, Verdict, judge

if TYPE_CHECKING:
    from notifier.webhooks.endpoints import Endpoint
    from notifier.webhooks.outbox import Message, WebhookOutbox

log = logging.getLogger(__name__)

#: A lease outlives the request's timeout (a hard deadline: `attempt`) by this much,
#: seconds, so that only a sender that died loses its message to another: the time to
#: record the attempt, with room for a slow Redis.
LEASE_MARGIN_S = 10.0
#: The most of an answer's body read (and dropped), bytes: enough for any short answer to
#: end, so that its connection is kept for the next message.
ANSWER_READ_BYTES = 64 * 1024
#: How long a sender with nothing to send waits before it looks again, seconds.
IDLE_S = 0.2
#: How long a sender waits after Redis (or anything else) failed it, seconds.
STORE_BACKOFF_S = 1.0


def _user_agent() -> str:
    try:
        return f"Notifier-Webhooks/{version('notifier')}"
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "Notifier-Webhooks"


USER_AGENT = _user_agent()


def signed_headers(endpoint: Endpoint, message_id: str, body: str,
                   now: datetime) -> dict[str, str]:
    """The headers of one attempt at `now` (pure): content type, user agent, and the
    three Standard Webhooks headers, signed with every secret `endpoint` uses at `now`."""
    signatures = " ".join(Webhook(secret).sign(message_id, now, body)
                          for secret in endpoint.signing_secrets(now))
    return {"content-type": "application/json", "user-agent": USER_AGENT,
            "webhook-id": message_id, "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signatures}


class Deadlines:
    """Cuts requests that outlive their deadline: one daemon thread that, every `tick_s`
    seconds, closes the client of each request past it (a `threading.Timer` per request
    cost the dispatcher a thread per message)."""

    def __init__(self, tick_s: float = 0.1) -> None:
        self.tick_s = tick_s
        #: the process whose thread this is (a forked child has none: `shared_deadlines`)
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._watched: dict[int, tuple[float, httpx.Client, threading.Event]] = {}
        threading.Thread(target=self._run, name="webhooks-deadlines", daemon=True).start()

    @contextmanager
    def watch(self, client: httpx.Client, within_s: float) -> Iterator[threading.Event]:
        """While the block runs, close `client` once `within_s` seconds have passed; yields
        the event set when it did."""
        cut = threading.Event()
        key = id(cut)
        with self._lock:
            self._watched[key] = (time.monotonic() + within_s, client, cut)
        try:
            yield cut
        finally:
            with self._lock:
                self._watched.pop(key, None)

    def _run(self) -> None:
        while True:
            time.sleep(self.tick_s)
            now = time.monotonic()
            with self._lock:
                late = [(k, client, cut) for k, (at, client, cut) in self._watched.items()
                        if at <= now]
                for key, _, _ in late:
                    del self._watched[key]
            for _, client, cut in late:
                cut.set()
                client.close()


_shared: Deadlines | None = None
_shared_lock = threading.Lock()


def shared_deadlines() -> Deadlines:
    """The process's one `Deadlines`, its thread started on first use in this process (a
    child forked by `notifier worker` after its parent used one has no such thread)."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared.pid != os.getpid():
            _shared = Deadlines()
        return _shared


def attempt(client: httpx.Client, endpoint: Endpoint, message_id: str, body: str,
            attempts_before: int, now: datetime, signed_at: datetime | None = None,
            deadlines: Deadlines | None = None) -> tuple[Verdict, int | None]:
    """POST one message once, signed at `signed_at` (default `now`); its verdict at `now`
    (`retries.judge`) and the status answered (None: no answer). Never raises for what
    the network, the receiver or its URL does.

    The whole request, connecting to the answer's status and headers, has the endpoint's
    `timeout_s`: past it `client` is closed (by `deadlines`; default the process's), which
    cuts a receiver that trickles its answer a byte at a time (httpx's own timeouts are
    per read), and the caller makes a new client (`client.is_closed`). Of the answer's body
    at most `ANSWER_READ_BYTES` are read, and dropped: its status says all, and a receiver
    streaming an endless one must not fill our memory."""
    headers = signed_headers(endpoint, message_id, body, signed_at or now)
    with (deadlines or shared_deadlines()).watch(client, endpoint.timeout_s) as cut:
        try:
            with client.stream("POST", endpoint.url, content=body.encode(), headers=headers,
                               timeout=_timeout(endpoint)) as answer:
                status, retry_after = answer.status_code, answer.headers.get("retry-after")
                # A short answer is read to its end, so that its connection serves the next
                # message (one left unread is closed); a long one is left, and closed.
                read = 0
                for chunk in answer.iter_raw():
                    read += len(chunk)
                    if read > ANSWER_READ_BYTES:
                        break
        except httpx.TimeoutException as exc:
            return judge(None, attempts_before, now,
                         error=f"timeout: {type(exc).__name__}"), None
        except httpx.HTTPError as exc:
            error = (f"timeout: no answer within {endpoint.timeout_s:g} s" if cut.is_set()
                     else f"no answer: {type(exc).__name__}")
            return judge(None, attempts_before, now, error=error), None
        except (httpx.InvalidURL, UnicodeError, ValueError) as exc:  # start-up refuses it
            return Verdict("failed", why=f"cannot send to this URL: {type(exc).__name__}"), None
    return judge(status, attempts_before, now, retry_after), status


def _timeout(endpoint: Endpoint) -> httpx.Timeout:
    """httpx's timeouts, each phase's at most the endpoint's; connecting at most 5 s."""
    return httpx.Timeout(endpoint.timeout_s, connect=min(5.0, endpoint.timeout_s))


class Dispatcher:
    """Sends every endpoint's due messages until stopped; one per process that sends.

    `now`: the clock of the schedule (what is due, when to retry, when an endpoint has
    failed for 5 days); injected, tests move it past a retry's delay or the 5-day window
    instead of waiting. Signatures always carry the real time (`timeutil.utcnow`), which
    receivers check against their own clocks. `transport`: httpx's, for tests that need
    one (None: the network)."""

    def __init__(self, outbox: WebhookOutbox, *, now: Callable[[], datetime] = utcnow,
                 idle_s: float = IDLE_S, disable_after_s: float = DISABLE_AFTER_S,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.outbox = outbox
        self.now = now
        self.idle_s = idle_s
        self.disable_after_s = disable_after_s
        self.transport = transport

    def serve(self, stop: threading.Event) -> None:
        """Send until `stop` is set, then wait for the requests in hand (each bounded by
        its endpoint's timeout). Returns at once when no endpoint is configured. Says
        first (a warning) which endpoints no longer configured still have messages
        pending: nothing sends them."""
        try:
            for name, pending in self.outbox.unconfigured().items():
                log.warning("webhooks: endpoint %s is no longer configured and has %d messages "
                            "pending, which nothing sends: configure it again under that "
                            "name, or delete its keys (n:wh:{%s}:*)", name, pending, name)
        except StoreError:
            log.warning("webhooks: Redis unavailable; could not look for endpoints removed")
        threads = [threading.Thread(target=self.run_sender, args=(endpoint, stop),
                                    name=f"webhooks-{endpoint.name}-{n}", daemon=True)
                   for endpoint in self.outbox.endpoints
                   for n in range(endpoint.max_in_flight)]
        for thread in threads:
            thread.start()
        if threads:
            log.info("webhooks: sending to %d endpoints with %d threads",
                     len(self.outbox.endpoints), len(threads))
        for thread in threads:
            thread.join()

    def run_sender(self, endpoint: Endpoint, stop: threading.Event) -> None:
        """One sender thread of `endpoint`: claim one message, send it, record the
        attempt; wait `idle_s` when none is due."""
        client = self._client()
        redis_down = False
        try:
            while not stop.is_set():
                if client.is_closed:  # an attempt's deadline closed it
                    client = self._client()
                try:
                    sent = self.send_due(client, endpoint)
                except StoreError as exc:
                    # Said once an outage, not every second by every thread (found by QA).
                    if not redis_down:
                        log.warning("webhooks %s: Redis unavailable (%s); trying again every "
                                    "%g s", endpoint.name, exc, STORE_BACKOFF_S)
                    redis_down = True
                    stop.wait(STORE_BACKOFF_S)
                    continue
                except Exception:
                    # A bug must not silently cost the endpoint a sender for good: the
                    # message in hand comes back when its lease runs out.
                    log.exception("webhooks %s: sending failed; going on", endpoint.name)
                    stop.wait(STORE_BACKOFF_S)
                    continue
                if redis_down:
                    log.info("webhooks %s: Redis answers again", endpoint.name)
                    redis_down = False
                if not sent:
                    stop.wait(self.idle_s)
        finally:
            client.close()

    def _client(self) -> httpx.Client:
        """A sender thread's own HTTP client: its connections are reused between its
        messages, redirects are not followed (Standard Webhooks' senders do not)."""
        return httpx.Client(transport=self.transport, follow_redirects=False)

    def send_due(self, client: httpx.Client, endpoint: Endpoint) -> int:
        """Claim and send at most one of `endpoint`'s due messages; how many were sent."""
        claimed = self.outbox.claim(endpoint, self.now(),
                                    lease_s=endpoint.timeout_s + LEASE_MARGIN_S)
        for message in claimed:
            self.send(client, endpoint, message)
        return len(claimed)

    def send(self, client: httpx.Client, endpoint: Endpoint, message: Message) -> Verdict:
        """One attempt at `message`, recorded; the verdict."""
        verdict, status = attempt(client, endpoint, message.id, message.body,
                                  message.attempts, self.now(), signed_at=utcnow(),
                                  deadlines=shared_deadlines())
        recorded = self.outbox.finish(endpoint, message.id, verdict.outcome, self.now(),
                                      next_at=verdict.next_at, status=status,
                                      error=verdict.why, disable_after_s=self.disable_after_s)
        if verdict.outcome == "delivered":
            log.debug("webhooks %s: %s delivered", endpoint.name, message.id)
        else:
            log.info("webhooks %s: %s %s (%s)", endpoint.name, message.id, verdict.outcome,
                     verdict.why)
        if recorded == 2:
            log.error("webhooks %s: endpoint disabled: failing (no answer, 429 or 5xx) for "
                      "%.0f days with no success; fix it, then `notifier webhooks replay "
                      "--endpoint %s --since ...`",
                      endpoint.name, self.disable_after_s / 86400, endpoint.name)
        return verdict
