"""Changes made by Python code (not by a notification's script) that delivery webhooks
announce: an opt-out, a reply, a rejected event. Each is queued in the transaction that
makes the change (`queue_announcement`), so it is in the webhook outbox exactly when the
change is in Redis: the outbox pattern (`lua/_webhook_emit.lua` says how an entry looks;
`notifier.webhooks.outbox` fans it out).

An announcement goes to the outbox of its subject's shard (`ShardKeys.of_subject`: an
appointment's confirmation to the shard of the appointment's notifications and records),
so it is in one slot with the change it announces, the transaction's other keys.
"""

from __future__ import annotations

import json
from typing import Any

from notifier.ledger.client import script_body
from notifier.ledger.lua import lua_source
from notifier.ledger.shards import ShardKeys
from notifier.webhooks.catalogue import Announcement

EMIT_LUA = lua_source("webhook_emit")


#: How long an announcement's `once` key is kept, seconds: a repeated delivery of the same
#: change (Twilio posting one inbound SMS again) comes within minutes, not days.
ONCE_KEPT_S = 7 * 24 * 3600


def announcement_keys(keys: ShardKeys, announcement: Announcement,
                      shard: int | None = None) -> list[str]:
    """The KEYS of `webhook_emit.lua` for `announcement`: the outbox and counter of
    `shard` (default: its subject's, `ShardKeys.of_subject`), and its `once` key there."""
    s = keys.of_subject(announcement.subject) if shard is None else shard
    return [keys.webhook_outbox(s), keys.webhook_seq(s)] + (
        [keys.webhook_once(s, announcement.once)] if announcement.once else [])


def queue_announcement(pipe: Any, keys: ShardKeys, announcement: Announcement,
                       shard: int | None = None) -> None:
    """Queue on `pipe` (the MULTI the change is in) the outbox entry of `announcement`,
    in `shard`'s outbox (default: its subject's); one with a `once` key is recorded only
    the first time (`webhook_emit.lua`)."""
    names = announcement_keys(keys, announcement, shard)
    # EVAL of the script's body, as the ledger's pipelines send every script (`client.
    # LedgerPipeline.load_scripts`): no round trip to load it first.
    pipe.eval(script_body(EMIT_LUA), len(names), *names, announcement.type,
              announcement.subject, json.dumps(announcement.data, separators=(",", ":")),
              ONCE_KEPT_S)
