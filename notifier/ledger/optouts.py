"""SMS opt-outs, per number (so for every client who shares it): set by an opt-out reply
or a carrier's "opted out" error, cleared by an opt-in reply. Key: `n:{0}:sms-optout`
(a set of numbers, `ShardKeys.sms_opt_outs`). A change is announced to delivery webhooks
(`client.opted_out` / `client.opted_in`) in the same script that makes it.

The set is one key in a fixed shard (`shards.OPT_OUTS_SHARD`, 0), and its announcements go
to that shard's outbox. One key, because a number is not an entity: the clients who share
it may be in any shards, and every send reads the set (one SISMEMBER, or one SMISMEMBER
for a batch), which a set per shard would turn into S reads. A fixed shard, because the
script that changes the set must name the outbox it announces in, in the set's slot; the
announcement's `client_ids` name the clients, so no order with their notifications is
lost (the sequence orders the messages of one notification, not of one client). An
opt-out is rare next to the sends that read it, so one shard takes every change.

Errors: on the ledger's client (`notifier.ledger.client`, as `Store` builds every part) each
Redis call raises `StoreUnavailable` when Redis cannot be reached or cannot take commands
now, and `StoreError` when it refuses one (a script error, `WRONGTYPE`); the docstrings
below name only the errors of their own.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import redis

from notifier.ledger.audit_write import AuditWrite
from notifier.ledger.batch import Batch, Reply
from notifier.ledger.lua import lua_source
from notifier.ledger.record_store import RecordStore
from notifier.ledger.shards import OPT_OUTS_SHARD, ShardKeys

OPTOUT_SET_LUA = lua_source("optout_set")


class OptOuts:
    """Which numbers have opted out of SMS."""

    def __init__(self, client: redis.Redis, records: RecordStore, keys: ShardKeys) -> None:
        """`records`: where the clients of a number are found
        (`RecordStore.phone_client_ids`); `keys`: the ledger's shard keys (the set and its
        outbox are in a shard)."""
        # redis-py types its replies as a sync|async union; the client here is sync.
        self.redis: Any = client
        self.records = records
        self.keys = keys
        #: the set of numbers opted out
        self.set_key = keys.sms_opt_outs()
        self._set = client.register_script(OPTOUT_SET_LUA)

    def set_sms_opt_out(self, phone: str, opted_out: bool,
                        source: Literal["reply", "carrier", "operator"] = "reply",
                        code: str | None = None, audit: AuditWrite | None = None) -> bool:
        """Add `phone` (E.164) to the opt-out set, or take it out when `opted_out` is False;
        returns whether that changed it. A change is announced to delivery webhooks with
        the ids of the clients with that number (never the number), how it came (`source`:
        a reply, a carrier's error `code`, or an operator in the console re-enabling SMS
        after the client asked), and `audit`, an operator's entry, appended in the same
        script (not when nothing changed)."""
        ids = self.records.phone_client_ids(phone)
        data = {"client_ids": ids, "channel": "sms", "source": source, "error_code": code}
        keys = [self.set_key, self.keys.webhook_outbox(OPT_OUTS_SHARD),
                self.keys.webhook_seq(OPT_OUTS_SHARD)]
        args = [phone, "1" if opted_out else "0", ids[0] if ids else "",
                json.dumps(data, separators=(",", ":"))]
        if audit is not None:
            # in the set's shard, whatever stream the console named (one slot a script)
            keys.append(self.keys.audit(OPT_OUTS_SHARD))
            args += audit.args()
        return bool(self._set(keys=keys, args=args))

    def sms_opted_out(self, phone: str) -> bool:
        """Whether `phone` has opted out of SMS."""
        return bool(self.redis.sismember(self.set_key, phone))

    def queue_opted_out(self, batch: Batch, phones: list[str]) -> Reply[dict[str, bool]]:
        """`sms_opted_out` of each of `phones`, by phone, in one SMISMEMBER queued on
        `batch`."""
        if not phones:
            return Reply(dict)
        return batch.call("smismember", self.set_key, phones,
                          parse=lambda found: {p: bool(f) for p, f in zip(phones, found,
                                                                        strict=True)})
