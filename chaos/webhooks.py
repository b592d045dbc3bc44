"""The delivery webhooks of every experiment: one endpoint subscribed to every event type,
pointing at a lean receiver the harness runs, and what the outbox made for it, read once
the endpoint has nothing pending (`chaos/tally.py` `tally_webhooks` judges them).

The receiver is a `ThreadingHTTPServer` on 127.0.0.1 in a thread of the harness (HTTP/1.1
keep-alive, so each sender thread of the dispatcher keeps its connection): it verifies
each request with the reference `standardwebhooks` package, keeps its `webhook-id`, its
verdict, and the body's type and subject, and answers 204 at once, verified or not (an
unverified one is counted, and fails the run; refusing it would only have it retried).
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from chaos.tally import Made, Received
from notifier.ledger.shards import ledger_keys
from notifier.timeutil import utcnow
from notifier.webhooks.endpoints import load_endpoints, secret_variable
from notifier.webhooks.outbox import WebhookOutbox, log_key, message_key

#: The endpoint's name (its keys are `n:wh:*:chaos`).
ENDPOINT = "chaos"
#: The endpoint's request timeout, seconds: the receiver is local and answers at once; a
#: sender that died holds its message for this plus the dispatcher's lease margin
#: (`notifier.webhooks.dispatcher.LEASE_MARGIN_S`, 10 s).
TIMEOUT_S = 2.0
#: How long to wait for the endpoint to have nothing pending after an experiment settled,
#: seconds: past a dead sender's lease (`TIMEOUT_S` + 10 s) and the first retry (5 s),
#: several times over.
DRAIN_S = 90.0


def subject_of(event_type: str, data: Any) -> str:
    """What a message is about: a `notification.*` message's notification id; for other
    types, their data but the sequence (JSON, sorted keys), which names the change."""
    if not isinstance(data, dict):
        return ""
    if event_type.startswith("notification."):
        return str(data.get("notification_id", ""))
    return json.dumps({k: v for k, v in data.items() if k != "sequence"}, sort_keys=True)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # every sender connecting at once must not overflow it
    receiver: Receiver


class _Handler(BaseHTTPRequestHandler):
    """204 to every POST once recorded; keep-alive."""

    protocol_version = "HTTP/1.1"
    #: an idle kept-alive connection's thread ends after this long, seconds
    timeout = 60
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.server.receiver.record(body, {k.lower(): v for k, v in self.headers.items()})
        self.send_response_only(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Silent: what was received is the log."""


class Receiver:
    """The receiver, serving from construction until `close` (also a context manager):
    `url` to configure, `env()` the endpoint's settings, `received()` what came."""

    def __init__(self) -> None:
        self.secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        self._webhook = Webhook(self.secret)
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.receiver = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="chaos-webhooks", daemon=True)
        self._thread.start()

    def env(self) -> dict[str, str]:
        """The service's settings for one endpoint, `ENDPOINT`, wanting every event type."""
        return {"NOTIFIER_WEBHOOK_ENDPOINTS": json.dumps([
                    {"name": ENDPOINT, "url": self.url, "events": ["*"],
                     "timeout_s": TIMEOUT_S}]),
                secret_variable(ENDPOINT): self.secret}

    def record(self, body: bytes, headers: dict[str, str]) -> None:
        """Verify and keep one request (`headers` with lower-case names)."""
        try:
            self._webhook.verify(body, headers)
            verified = True
        except (WebhookVerificationError, ValueError):  # ValueError: a malformed header
            verified = False
        try:
            payload = json.loads(body)
            event_type = str(payload["type"])
            subject = subject_of(event_type, payload["data"])
        except (ValueError, TypeError, KeyError):
            event_type, subject, verified = "", "", False
        received = Received(headers.get("webhook-id", ""), event_type, subject, verified)
        with self._lock:
            self._received.append(received)

    def received(self) -> list[Received]:
        """Every request so far, in the order they were read."""
        with self._lock:
            return list(self._received)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def outbox_for(client: redis.Redis, receiver: Receiver, work: Path) -> WebhookOutbox:
    """The service's webhook outbox as its processes see it (endpoints loaded from the
    same settings, by the product's loader)."""
    return WebhookOutbox(client, load_endpoints(receiver.env(), work), ledger_keys(client))


def drain(outbox: WebhookOutbox, timeout_s: float = DRAIN_S) -> tuple[bool, str]:
    """Wait until the outboxes are empty and the endpoint has nothing pending, or
    `timeout_s`; returns whether it drained, and how long it took or what was left."""
    began = time.monotonic()
    while True:
        status = outbox.statuses(utcnow())[0]
        waiting = outbox.waiting()
        took = time.monotonic() - began
        if status.pending == 0 and waiting == 0:
            return True, f"webhooks drained {took:.1f} s after the notifications settled"
        if took > timeout_s:
            return False, (f"webhooks not drained {timeout_s:.0f} s after the notifications "
                           f"settled: {status.pending} pending, {waiting} not fanned out")
        time.sleep(0.1)


def made(outbox: WebhookOutbox) -> list[Made]:
    """Every message the outbox made for `ENDPOINT` (`n:wh:{chaos}:log` ids, each message's hash),
    in the order made."""
    client = outbox.redis
    ids = [i.decode() for i in client.zrange(log_key(ENDPOINT), 0, -1)]
    with client.pipeline(transaction=False) as pipe:
        for i in ids:
            pipe.hmget(message_key(ENDPOINT, i), "type", "body")
        found = pipe.execute()
    messages = []
    for i, (event_type, body) in zip(ids, found, strict=True):
        kind = (event_type or b"").decode()
        data = json.loads(body)["data"] if body else None
        messages.append(Made(i, kind, subject_of(kind, data)))
    return messages
