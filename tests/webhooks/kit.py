"""Helpers of the webhook tests that run the whole service: endpoints configured for a
`Service` and served by a `WebhookReceiver`, what the receiver got, and what the outbox
recorded of each message."""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

from notifier.webhooks.outbox import due_key, endpoint_key, message_key
from tests.service import Service
from tests.webhooks.receiver import Answer, WebhookReceiver


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def endpoints_env(receiver: WebhookReceiver, *endpoints: dict[str, Any]) -> dict[str, str]:
    """`NOTIFIER_WEBHOOK_ENDPOINTS` for `endpoints`, and the secrets' variables.

    Each endpoint is a dict: `name`, `path` (served by `receiver`, answering `script`,
    default `[Answer(200)]`) or `url` (anything else: nothing is served), optional
    `events` (default `["*"]`), `timeout_s`, `max_in_flight`, `secret` (default a new
    one), `previous` and `previous_until` (a rotation: the old secret and RFC 3339 instant),
    and `verify_with` (the secrets the receiver verifies with; default `[secret]`)."""
    env: dict[str, str] = {}
    tables = []
    for e in endpoints:
        variable = f"NOTIFIER_WEBHOOK_SECRET_{e['name'].upper().replace('-', '_')}"
        secret = e.get("secret") or new_secret()
        env[variable] = secret
        if "previous" in e:
            env[f"{variable}_PREVIOUS"] = e["previous"]
            env[f"{variable}_PREVIOUS_UNTIL"] = e["previous_until"]
        if "path" in e:
            receiver.endpoint(e["path"], secrets=e.get("verify_with", [secret]),
                              script=e.get("script", [Answer(200)]))
        tables.append({"name": e["name"], "url": e.get("url") or receiver.url(e["path"]),
                       "events": e.get("events", ["*"]),
                       **{k: e[k] for k in ("timeout_s", "max_in_flight") if k in e}})
    env["NOTIFIER_WEBHOOK_ENDPOINTS"] = json.dumps(tables)
    return env


def about(receiver: WebhookReceiver, path: str, notification_id: str) -> list[dict[str, Any]]:
    """The verified payloads to `path` about one notification, in the order received."""
    return [p for p in receiver.verified_payloads(path)
            if p["data"].get("notification_id") == notification_id]


def message(service: Service, endpoint: str, message_id: str) -> dict[str, str]:
    """The outbox's hash of one message to `endpoint` ({} when there is none)."""
    raw = service.redis.hgetall(message_key(endpoint, message_id))
    return {k.decode(): v.decode() for k, v in raw.items()}


def due_at_s(service: Service, endpoint: str, message_id: str) -> float | None:
    """When the message's next attempt is due, epoch seconds of the senders' clock (None:
    not waiting for one)."""
    score = service.redis.zscore(due_key(endpoint), message_id)
    return None if score is None else float(score)


def endpoint_health(service: Service, endpoint: str) -> dict[str, str]:
    """The endpoint's counts and health hash (`failing_since`, `disabled_at`, ...)."""
    raw = service.redis.hgetall(endpoint_key(endpoint))
    return {k.decode(): v.decode() for k, v in raw.items()}
