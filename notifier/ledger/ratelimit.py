"""A per-sender send rate shared by every worker through Redis.

Each send reserves the next free slot of its sender (GCRA: the slot is `max(now, next)`,
and `next` moves one interval on). A notification whose slot is in the future goes back on
our schedule due at that slot, with the slot remembered, so it neither spins nor asks again:
a burst of 10,000 is paced at the configured rate instead of being rejected by the carrier.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from notifier.ledger.lua import lua_source
from notifier.ledger.notifications import PREFIX

RESERVE_LUA = lua_source("rate_reserve")

#: A slot this close to now counts as now.
SLACK_S = 0.005


class RateLimiter:
    def __init__(self, client: Any, sender: str, per_s: float) -> None:
        self.key = f"{PREFIX}rate:{sender}"
        self.interval_s = 1.0 / per_s if per_s > 0 else 0.0
        self._reserve = client.register_script(RESERVE_LUA)

    @property
    def enabled(self) -> bool:
        return self.interval_s > 0

    def reserve(self, now: datetime) -> datetime:
        """The instant this send may go out: now, or a slot reserved later."""
        if not self.enabled:
            return now
        slot = float(self._reserve(keys=[self.key], args=[now.timestamp(), self.interval_s]))
        if slot - now.timestamp() <= SLACK_S:
            return now
        return datetime.fromtimestamp(slot, UTC)
