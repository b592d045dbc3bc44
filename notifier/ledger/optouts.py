"""SMS opt-outs, per number (so for every client who shares it): set by an opt-out reply
or a carrier's "opted out" error, cleared by an opt-in reply. Key (under `n:`):
`sms-optout` (a set of numbers)."""

from __future__ import annotations

from typing import Any

import redis

from notifier.ledger.notifications import PREFIX

SMS_OPT_OUTS = PREFIX + "sms-optout"


class OptOuts:
    """Which numbers have opted out of SMS."""

    def __init__(self, client: redis.Redis) -> None:
        # redis-py types its replies as a sync|async union; the client here is sync.
        self.redis: Any = client

    def set_sms_opt_out(self, phone: str, opted_out: bool) -> None:
        if opted_out:
            self.redis.sadd(SMS_OPT_OUTS, phone)
        else:
            self.redis.srem(SMS_OPT_OUTS, phone)

    def sms_opted_out(self, phone: str) -> bool:
        return bool(self.redis.sismember(SMS_OPT_OUTS, phone))

