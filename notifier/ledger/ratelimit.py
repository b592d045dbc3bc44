"""A per-sender send rate shared by every worker through Redis.

Each send reserves the next free slot of its sender (GCRA: the slot is `max(now, next)`,
and `next` moves one interval on). A notification whose slot is in the future goes back on
our schedule due at that slot, with the slot remembered, so it neither spins nor asks again:
a burst of 10,000 is paced at the configured rate instead of being rejected by the carrier.

Errors: on the ledger's client (`notifier.ledger.client`, as the runtime gives the limiters)
each Redis call raises `StoreUnavailable` when Redis cannot be reached or cannot take
commands now, and `StoreError` when it refuses one (a script error, `WRONGTYPE`); the
docstrings below name only the errors of their own.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from notifier.ledger.batch import Batch, Reply
from notifier.ledger.lua import lua_source
from notifier.ledger.notifications import PREFIX

RESERVE_LUA = lua_source("rate_reserve")

#: A slot this close to now counts as now.
SLACK_S = 0.005


class RateLimiter:
    """One sender's rate, `per_s` sends a second (0 or less: no limit), kept in
    `n:rate:{sender}`."""
    def __init__(self, client: Any, sender: str, per_s: float) -> None:
        self.key = f"{PREFIX}rate:{sender}"
        self.interval_s = 1.0 / per_s if per_s > 0 else 0.0
        self._reserve = client.register_script(RESERVE_LUA)

    @property
    def enabled(self) -> bool:
        """Whether a rate is set (`per_s` > 0)."""
        return self.interval_s > 0

    def reserve(self, now: datetime) -> datetime:
        """The instant this send may go out: `now` itself when the slot is now (or no rate
        is set), else the reserved slot as an aware UTC datetime."""
        if not self.enabled:
            return now
        slot = float(self._reserve(keys=[self.key], args=[now.timestamp(), self.interval_s]))
        return _slot(slot, now)

    def queue_reserve(self, batch: Batch, now: datetime) -> Reply[datetime]:
        """`reserve`, queued on `batch`."""
        if not self.enabled:
            return Reply(lambda: now)
        return batch.script(self._reserve, [self.key], [now.timestamp(), self.interval_s],
                            parse=lambda slot: _slot(float(slot), now))


def _slot(slot: float, now: datetime) -> datetime:
    """A reserved slot (epoch seconds) as the instant to send: `now` when it is now."""
    if slot - now.timestamp() <= SLACK_S:
        return now
    return datetime.fromtimestamp(slot, UTC)
