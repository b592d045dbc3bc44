"""Changes made by Python code (not by a notification's script) that delivery webhooks
announce: an opt-out, a reply, a rejected event. Each is queued in the transaction that
makes the change (`queue_announcement`), so it is in the webhook outbox exactly when the
change is in Redis: the outbox pattern (`lua/_webhook_emit.lua` says how an entry looks;
`notifier.webhooks.outbox` fans it out).
"""

from __future__ import annotations

import json
from typing import Any

from notifier.ledger.client import script_body
from notifier.ledger.lua import lua_source
from notifier.ledger.notifications import WEBHOOK_OUTBOX, WEBHOOK_SEQ
from notifier.webhooks.catalogue import Announcement

EMIT_LUA = lua_source("webhook_emit")


def queue_announcement(pipe: Any, announcement: Announcement) -> None:
    """Queue on `pipe` (the MULTI the change is in) the outbox entry of `announcement`."""
    # EVAL of the script's body, as the ledger's pipelines send every script (`client.
    # LedgerPipeline.load_scripts`): no round trip to load it first.
    pipe.eval(script_body(EMIT_LUA), 2, WEBHOOK_OUTBOX, WEBHOOK_SEQ, announcement.type,
              announcement.subject, json.dumps(announcement.data, separators=(",", ":")))
