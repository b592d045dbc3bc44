"""`notifier send-event`: events read from JSON files, signed as an integrator signs them
and posted to the service; `sign_event` signs for the tests and benchmarks too."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from notifier.cli.common import dev_secret, invocation
from notifier.config import Settings
from notifier.errors import UsageError
from notifier.intake.json_body import repeated_keys


def sign_event(secret: str, body: bytes, event_id: str, now: datetime) -> dict[str, str]:
    """The Standard Webhooks headers for `body`, signed as `POST /v1/events` verifies them."""
    from notifier.web.signatures import sign_webhook

    timestamp = int(now.timestamp())
    return {"webhook-id": event_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign_webhook(secret, event_id, timestamp, body),
            "content-type": "application/json"}


def read_events(path: str) -> list[dict[str, Any]]:
    """The events of a file (one event, or a JSON list of them), each an object with an
    `id`: the id is also the `webhook-id` the signature covers, so without it the service
    could only refuse the event."""
    try:
        text = Path(path).read_text()
        loaded = json.loads(text)
        repeated = repeated_keys(text)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it ({exc.strerror}): check the path") from None
    except ValueError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc}): a file holds one event or a "
                         "JSON list of them") from None
    if repeated:
        # json.loads keeps the last copy; sending that would sign something other than the
        # file, and the service refuses a repeated key anyway.
        raise UsageError(f"{path}: {', '.join(repeated)}: given more than once in its "
                         "object; give each key once")
    events = loaded if isinstance(loaded, list) else [loaded]
    if not events:
        raise UsageError(f"{path}: an empty list: a file holds one event or a JSON list of "
                         "them")
    for number, event in enumerate(events, start=1):
        where = f"{path}: event {number}" if isinstance(loaded, list) else path
        if not isinstance(event, dict):
            raise UsageError(f"{where}: not a JSON object: an event is an object with id, "
                             "type, occurred_at and data")
        if not isinstance(event.get("id"), str) or not event["id"].strip():
            raise UsageError(f"{where}: no \"id\": every event needs a unique string id "
                             "(it is also the webhook-id it is signed with)")
    return events


def cmd_send_event(args: argparse.Namespace, settings: Settings) -> None:
    import httpx

    settings = dev_secret(settings, "webhook_secret")
    secret = settings.require_webhook_secret()
    base = (args.url or settings.public_url).rstrip("/")
    target = urlsplit(base)
    if target.scheme not in ("http", "https") or not target.hostname:
        raise UsageError(f"--url {base!r} is not an http(s) URL: pass the service's base URL, "
                         "such as http://127.0.0.1:8000")
    url = base + "/v1/events"
    # Every file is read and checked before anything is sent: a mistake in the third file
    # does not leave the first two half-sent.
    batches = [read_events(path) for path in args.files]
    failed = False
    for event in (event for batch in batches for event in batch):
        body = json.dumps(event).encode()
        headers = sign_event(secret, body, event["id"], datetime.now(UTC))
        try:
            answer = httpx.post(url, content=body, headers=headers, timeout=10)
        except httpx.HTTPError as exc:
            raise UsageError(f"nothing answers at {base} ({exc or type(exc).__name__}): "
                             f"start it (make run, or {invocation()} dev), or pass --url") \
                from None
        print(f"{event['id']} {event.get('type')}: {answer.status_code} {answer.text}")
        failed = failed or answer.status_code >= 400
    if failed:
        sys.exit(1)
