"""The per-message work of a peer's task: what our deliverer does for one notification
once the ledger has let it go, without the ledger. It renders the same Jinja template
(our `Renderer`, same kind, channel and context) and appends the same kind of line to an
outbox (our `Outbox`), whose `sent_at` and `due_at` give the lateness exactly as ours do.

Not done here, because a plain task queue has no such state: the compare-and-set on the
notification's state, re-reading the client's record and opt-out, quiet hours, expiry,
the outcome counters. That difference is what the comparison is about.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from notifier.config import Settings
from notifier.delivery.channels import Message
from notifier.delivery.channels.outbox import Outbox
from notifier.delivery.render import Renderer
from notifier.delivery.sms_text import measure

#: Where a peer's worker writes: set by the benchmark in the worker's environment.
OUTBOX_ENV = "BENCH_PEER_OUTBOX"
SUPPORT_PHONE = "+14155550100"


@cache
def _tools() -> tuple[Settings, Renderer, Outbox]:
    settings = Settings.from_env({}, dotenv=Path("/nonexistent"))
    return settings, Renderer(Path(settings.templates_dir)), \
        Outbox(Path(os.environ[OUTBOX_ENV]))


def deliver(task: dict[str, Any]) -> None:
    """Render and append one notification given as `workload.PeerTask` fields (a dict,
    as a task queue carries it). Raises KeyError when a field is missing."""
    settings, renderer, outbox = _tools()
    now = datetime.now(UTC)
    p = task["params"]
    context: dict[str, Any] = {
        "practice_name": settings.practice_name, "practice_phone": settings.practice_phone,
        "practice_url": settings.practice_url, "first_name": "Ana",
        "provider_name": f"Dr. {p['provider_id'][-1]}", "provider_id": p["provider_id"],
        "client_id": p["client_id"], "item_kind": p["item_kind"], "item_id": p["item_id"],
        "age_h": int((now - datetime.fromisoformat(p["opened_at"])).total_seconds() // 3600),
    }
    kind, channel = task["kind"], task["channel"]
    due = datetime.fromtimestamp(task["due"], UTC)
    if task["recipient"] == "support":
        to = SUPPORT_PHONE if channel == "sms" else settings.support_email
    else:
        to = "+14155550123" if channel == "sms" else "c@example.com"
    if channel == "sms":
        body = renderer.sms(kind, "en", context)
        message = Message(notification_id=task["id"], kind=kind, channel="sms", to=to,
                          body=body, due_at=due, sms=measure(body))
    else:
        email = renderer.email(kind, "en", context)
        message = Message(notification_id=task["id"], kind=kind, channel="email", to=to,
                          subject=email.subject, body=email.text, html=email.html,
                          due_at=due)
    outbox.send(message, now)
