"""SMS opt-outs, per number (so for every client who shares it): set by an opt-out reply
or a carrier's "opted out" error, cleared by an opt-in reply. Key (under `n:`):
`sms-optout` (a set of numbers).

Errors: on the ledger's client (`notifier.ledger.client`, as `Store` builds every part) each
Redis call raises `StoreUnavailable` when Redis cannot be reached or cannot take commands
now, and `StoreError` when it refuses one (a script error, `WRONGTYPE`); the docstrings
below name only the errors of their own.
"""

from __future__ import annotations

from typing import Any

import redis

from notifier.ledger.batch import Batch, Reply
from notifier.ledger.notifications import PREFIX

SMS_OPT_OUTS = PREFIX + "sms-optout"


class OptOuts:
    """Which numbers have opted out of SMS."""

    def __init__(self, client: redis.Redis) -> None:
        # redis-py types its replies as a sync|async union; the client here is sync.
        self.redis: Any = client

    def set_sms_opt_out(self, phone: str, opted_out: bool) -> None:
        """Add `phone` (E.164) to the opt-out set, or take it out when `opted_out` is False.
        """
        if opted_out:
            self.redis.sadd(SMS_OPT_OUTS, phone)
        else:
            self.redis.srem(SMS_OPT_OUTS, phone)

    def sms_opted_out(self, phone: str) -> bool:
        """Whether `phone` has opted out of SMS."""
        return bool(self.redis.sismember(SMS_OPT_OUTS, phone))

    def queue_opted_out(self, batch: Batch, phones: list[str]) -> Reply[dict[str, bool]]:
        """`sms_opted_out` of each of `phones`, by phone, in one SMISMEMBER queued on
        `batch`."""
        if not phones:
            return Reply(dict)
        return batch.call("smismember", SMS_OPT_OUTS, phones,
                          parse=lambda found: {p: bool(f) for p, f in zip(phones, found,
                                                                        strict=True)})
