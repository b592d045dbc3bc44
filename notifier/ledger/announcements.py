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
from notifier.ledger.notifications import PREFIX, WEBHOOK_OUTBOX, WEBHOOK_SEQ
from notifier.webhooks.catalogue import Announcement

EMIT_LUA = lua_source("webhook_emit")


#: How long an announcement's `once` key is kept, seconds: a repeated delivery of the same
#: change (Twilio posting one inbound SMS again) comes within minutes, not days.
ONCE_KEPT_S = 7 * 24 * 3600


def once_key(key: str) -> str:
    """The key that marks a change announced (`Announcement.once`), kept `ONCE_KEPT_S`."""
    return f"{PREFIX}wh:once:{key}"


def queue_announcement(pipe: Any, announcement: Announcement) -> None:
    """Queue on `pipe` (the MULTI the change is in) the outbox entry of `announcement`;
    one with a `once` key is recorded only the first time (`webhook_emit.lua`)."""
    keys = [WEBHOOK_OUTBOX, WEBHOOK_SEQ] + ([once_key(announcement.once)]
                                            if announcement.once else [])
    # EVAL of the script's body, as the ledger's pipelines send every script (`client.
    # LedgerPipeline.load_scripts`): no round trip to load it first.
    pipe.eval(script_body(EMIT_LUA), len(keys), *keys, announcement.type,
              announcement.subject, json.dumps(announcement.data, separators=(",", ":")),
              ONCE_KEPT_S)
