"""Sends awaiting a final delivery report, for the clock's repair job
(`notifier.worker.reports`).

Keys (under `n:`):
- `{s}:awaiting-report` (`ShardKeys.awaiting_report`, one per shard: a send waits in its
  notification's shard, written by the same script as the send): a sorted set of the ids of sends
  through a provider that reports delivery (Twilio, SendGrid; never the outbox) with no
  final report yet, scored by when to look them up (epoch seconds: the send's time plus
  `NOTIFIER_DELIVERY_REPORT_WAIT_S`). `notif_finish.lua` adds a send, `notif_delivery.lua`
  removes it on a final report (or the job's `unknown`). No expiry, and none is needed:
  every member falls due within the wait of its send, and the job then removes it, looked
  up, or dropped because its notification's hash is gone (expired); so it holds at most
  the sends of one wait that had no final report, plus the job's backlog. Readers read
  every shard's in one pipeline.
- `stats:report-lookups`: how the job's look-ups ended, `{outcome}:{channel}` -> count
  (a handful of fields, for `/metrics`; counters, kept like `stats:outcomes`).

Errors: on the ledger's client each Redis call raises `StoreUnavailable` when Redis cannot
be reached or take commands now and `StoreError` when it refuses one; `Reply.get()` raises
a command's own (`notifier.ledger.batch`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis

from notifier.ledger.batch import Batch, Reply
from notifier.ledger.lua import lua_source
from notifier.ledger.notif_fields import with_derived
from notifier.ledger.notifications import (
    PREFIX,
    Schedule,
    epoch,
)
from notifier.ledger.shards import share_out

LOOKUPS = PREFIX + "stats:report-lookups"
CLAIM_LUA = lua_source("report_claim")


@dataclass(frozen=True)
class Awaiting:
    """A send awaiting its report, as the job needs it: its channel (`sms`, `email`) and
    the provider's id for the message (`Receipt.provider_id`: Twilio's SID)."""

    id: str
    channel: str
    receipt: str


@dataclass(frozen=True)
class ReportFigures:
    """For `/metrics`: sends awaiting a report, those of them past their wait (the job's
    backlog), and the job's look-ups by (outcome, channel)."""

    awaiting: int
    overdue: int
    lookups: dict[tuple[str, str], int]


@dataclass
class Settle:
    """What a batch of the job ends with, written in one round trip by `Reports.settle`:
    reports to record (id, status, code), ids to drop (their hash is gone), ids to look up
    again at the next run, and the outcomes to count."""

    record: list[tuple[str, str, str]]
    drop: list[str]
    again: list[str]
    counts: Counter[tuple[str, str]]


class Reports:
    """The index of sends awaiting a report: claims for the job, their facts, the batch's
    writes, the figures."""

    def __init__(self, client: redis.Redis, schedule: Schedule) -> None:
        # redis-py types its replies as a sync|async union; the client here is sync.
        self.redis: Any = client
        self.schedule = schedule
        self._claim = client.register_script(CLAIM_LUA)

    def claim(self, now: datetime, limit: int, claim_s: float) -> list[str]:
        """The ids whose look-up time has come by `now`, at most `limit`, shard by shard
        (oldest first within each); each is due again `claim_s` seconds on, so no other
        run looks it up meanwhile and a run that dies leaves it to a later one
        (`report_claim.lua`, one call per shard with some due, each atomic in its shard).
        Two round trips: every shard's count due, then the claims."""
        keys = self.schedule.keys
        with self.redis.pipeline(transaction=False) as pipe:
            for shard in keys.all():
                pipe.zcount(keys.awaiting_report(shard), "-inf", epoch(now))
            due = [int(n) for n in pipe.execute()]
        takes = share_out(zip(keys.all(), due, strict=True), limit)
        if not takes:
            return []
        with self.redis.pipeline(transaction=False) as pipe:
            for shard, take in takes:
                self._claim(keys=[keys.awaiting_report(shard)],
                            args=[epoch(now), take, epoch(now) + claim_s], client=pipe)
            claimed = pipe.execute()
        return [i.decode() for ids in claimed for i in ids]

    def facts(self, ids: list[str]) -> dict[str, Awaiting | None]:
        """Each id's `Awaiting`, or None when its notification's hash is gone (expired);
        one round trip."""
        with self.redis.pipeline(transaction=False) as pipe:
            for notification_id in ids:
                pipe.hmget(self.schedule.keys.notif(notification_id), "state", "channel",
                           "receipt")
            rows = pipe.execute()
        found: dict[str, Awaiting | None] = {}
        for notification_id, (state, channel, receipt) in zip(ids, rows, strict=True):
            if state is None:
                found[notification_id] = None
                continue
            fields = {"state": state.decode()}
            if channel is not None:
                fields["channel"] = channel.decode()
            found[notification_id] = Awaiting(
                id=notification_id, channel=with_derived(notification_id, fields)["channel"],
                receipt=receipt.decode() if receipt is not None else "")
        return found

    def settle(self, settle: Settle, now: datetime, again_at: datetime
               ) -> dict[str, str | None]:
        """Write a batch's end in one round trip: each report recorded at `now` as a
        provider's would be (`Schedule.record_delivery`: never backwards; a final one or
        `unknown` leaves the index), the dropped ids out of the index, the others due again
        at `again_at` (the next run takes them), the outcomes counted. Returns, per
        recorded id, its delivery status on record after it (None: the notification is
        gone)."""
        batch = Batch(self.redis)
        replies: dict[str, Reply[str | None]] = {
            notification_id: self.schedule.queue_delivery(batch, notification_id, status,
                                                          code, now)
            for notification_id, status, code in settle.record}
        keys = self.schedule.keys
        for shard, ids in keys.by_shard(settle.drop).items():
            batch.call("zrem", keys.awaiting_report(shard), *ids, parse=int)
        due = epoch(again_at)
        for shard, ids in keys.by_shard(settle.again).items():
            # XX: one that a final report took out meanwhile stays out.
            batch.call("execute_command", "ZADD", keys.awaiting_report(shard), "XX",
                       *(x for i in ids for x in (due, i)), parse=int)
        for (outcome, channel), count in settle.counts.items():
            batch.call("hincrby", LOOKUPS, f"{outcome}:{channel}", count, parse=int)
        batch.run()
        return {notification_id: reply.get() for notification_id, reply in replies.items()}

    def look_again(self, ids: list[str], at: datetime) -> None:
        """Put `ids` back in the index, due at `at` (the next run looks them up), whether
        or not a report took them out (each in its shard's index: one round trip)."""
        keys = self.schedule.keys
        with self.redis.pipeline(transaction=False) as pipe:
            for shard, group in keys.by_shard(ids).items():
                pipe.zadd(keys.awaiting_report(shard), dict.fromkeys(group, epoch(at)))
            pipe.execute()

    def figures(self, now: datetime) -> ReportFigures:
        """Sends awaiting a report, those past their wait at `now`, and the look-ups so
        far by (outcome, channel), every shard's summed; one round trip."""
        keys = self.schedule.keys
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(LOOKUPS)
            for shard in keys.all():
                pipe.zcard(keys.awaiting_report(shard))
                pipe.zcount(keys.awaiting_report(shard), "-inf", epoch(now))
            lookups, *counts = pipe.execute()
        return ReportFigures(awaiting=sum(int(n) for n in counts[0::2]),
                             overdue=sum(int(n) for n in counts[1::2]),
                             lookups=parse_lookups(lookups.items()))

    def overdue(self, now: datetime) -> int:
        """How many sends are past their wait at `now` (the clock starts the job when any
        are): every shard's, summed, in one round trip."""
        keys = self.schedule.keys
        with self.redis.pipeline(transaction=False) as pipe:
            for shard in keys.all():
                pipe.zcount(keys.awaiting_report(shard), "-inf", epoch(now))
            return sum(int(n) for n in pipe.execute())


def parse_lookups(raw: Iterable[tuple[bytes, bytes]]) -> dict[tuple[str, str], int]:
    """The LOOKUPS hash as {(outcome, channel): count}."""
    counts: dict[tuple[str, str], int] = {}
    for key, value in raw:
        outcome, _, channel = key.decode().partition(":")
        counts[(outcome, channel)] = int(value)
    return counts
