"""The console's counters of the day, kept a few days each: sends per hour and channel, and
failures per channel and provider code. The Today page reads them
(`notifier.console.today`); `notif_finish.lua` and `notif_delivery.lua` write them, in the
same script as the state they count, so a count is never lost nor doubled.

- `n:{s}:stats:sent:{YYYY-MM-DD}` (`ShardKeys.sent_daily`, one per shard: the scripts count
  a notification's send in its own shard's, and the page sums them): a hash, field
  `{HH}|{channel}` (the UTC hour of the send's `sent_at`) -> sends recorded as the
  notification's own. A send recorded without `sent_at` (found sent after a crash: when it
  left is not known) is not counted here. Expires 3 days after its last count
  (`SENT_KEEP_S`): the last 24 hours need today's and yesterday's.
- `n:{s}:stats:failed:{YYYY-MM-DD}` (`ShardKeys.failed_daily`, one per shard): a hash, field
  `{channel}|{code}` (the provider's error code, "" when none was given) -> notifications
  that failed that day: ended `failed` by a send (`notif_finish.lua`, the day of its
  `sent_at`, else of the call), or reported failed after being sent (`undelivered`,
  `failed`, `bounce`, `dropped`: `notif_delivery.lua`, the day of the report). Each
  notification counts once: a failure report about one already ended `failed` is not
  counted, nor a `failed` end after a failure report. Expires 8 days after its last count
  (`FAILED_KEEP_S`): the page shows the last 7 days.

- `n:stats:refused:{YYYY-MM-DD}`: a hash, field the event's `type` (`unreadable` when the
  body has no known type) -> events refused at the door that UTC day (`POST /v1/events`
  answered 422: signed, but not a valid event). Written by the web (`count_refused`, on its
  asyncio client), not by a script: nothing else is written then. A 401 (bad signature) is
  not counted: anyone can send junk. One key per day, not per shard: no script writes it
  beside another key. Expires 8 days after its last count
  (`REFUSED_KEEP_S`): the page shows the last 7 days.

The first two TTLs are also written in the two scripts (a script takes no value but its KEYS and
ARGV, and their ARGV are laid out already); `tests/ledger/test_daily.py` checks they agree.
The days are UTC days: the keys are named from the epoch, whatever the operator's zone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import redis.asyncio
import redis.asyncio.cluster

from notifier.ledger.shards import ShardKeys

#: `notifier.ledger.notifications.PREFIX` + `stats:`; not imported: that module imports this.
_STATS = "n:stats:"
#: How long a day's sends are kept after its last count, seconds (`notif_finish.lua`).
SENT_KEEP_S = 3 * 86400
#: How long a day's failures are kept after its last count, seconds (both scripts).
FAILED_KEEP_S = 8 * 86400
#: How many days of failures the Today page sums: today and the six before.
FAILED_DAYS = 7
#: Events refused at the door (422) per type, one hash per UTC day (`refused_key`).
REFUSED_DAILY = _STATS + "refused:"
#: How long a day's refusals are kept after its last count, seconds.
REFUSED_KEEP_S = 8 * 86400
#: How many days of refusals the Today page sums: today and the six before.
REFUSED_DAYS = 7
#: The field of a refused event whose body names no known type.
UNREADABLE = "unreadable"


def day_of(instant_s: float) -> date:
    """The UTC day of an instant given in epoch seconds."""
    return datetime.fromtimestamp(instant_s, UTC).date()


#: The refusal counter's field for a FHIR notification refused with 422 (any resource).
FHIR_REFUSED = "FHIR notification"


def refused_key(day: date) -> str:
    """The hash of `day`'s events refused at the door: `n:stats:refused:2026-11-30`."""
    return f"{REFUSED_DAILY}{day.isoformat()}"


async def count_refused(client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster,
                        event_type: str, now: datetime) -> None:
    """Count one event of `event_type` refused at the door at `now` on `client` (a
    `redis.asyncio.Redis` or its cluster client): HINCRBY and EXPIRE in one round trip
    (one key). Raises what the client
    raises (`redis.RedisError`)."""
    key = refused_key(now.astimezone(UTC).date())
    async with client.pipeline(transaction=False) as pipe:
        pipe.hincrby(key, event_type, 1)
        pipe.expire(key, REFUSED_KEEP_S)
        await pipe.execute()


@dataclass(frozen=True)
class DailyCounts:
    """What the Today page shows of the daily counters.

    `sent`: (start of the UTC hour, channel) -> sends, for the 24 hours ending with the
    hour of `now` (hours with no send are absent). `failed`: (channel, code) -> failures
    over the last `FAILED_DAYS` UTC days, `now`'s included ("" code: none given).
    `refused`: event type (or `UNREADABLE`) -> events refused at the door (422) over the
    last `REFUSED_DAYS` UTC days."""

    sent: dict[tuple[datetime, str], int]
    failed: dict[tuple[str, str], int]
    refused: dict[str, int]


def queue_daily(pipe: Any, now: datetime, keys: ShardKeys) -> None:
    """Queue on `pipe` the reads `parse_daily` takes, in this order: each shard's sends of
    `now`'s UTC day and of the day before (2 HGETALLs a shard), then each shard's failures
    of each of the last `FAILED_DAYS` days (`FAILED_DAYS` x S HGETALLs), then the
    refusals of the last `REFUSED_DAYS` days (`REFUSED_DAYS` HGETALLs):
    `daily_replies(keys)` in all."""
    today = now.astimezone(UTC).date()
    for shard in keys.all():
        pipe.hgetall(keys.sent_daily(shard, today))
        pipe.hgetall(keys.sent_daily(shard, today - timedelta(days=1)))
    for back in range(FAILED_DAYS):
        for shard in keys.all():
            pipe.hgetall(keys.failed_daily(shard, today - timedelta(days=back)))
    for back in range(REFUSED_DAYS):
        pipe.hgetall(refused_key(today - timedelta(days=back)))


def daily_replies(keys: ShardKeys) -> int:
    """How many replies `queue_daily` queues for a ledger of `keys.count` shards."""
    return (2 + FAILED_DAYS) * keys.count + REFUSED_DAYS


def parse_daily(replies: list[dict[bytes, bytes]], now: datetime,
                keys: ShardKeys) -> DailyCounts:
    """The `daily_replies(keys)` replies of `queue_daily(pipe, now, keys)` as
    `DailyCounts`, the shards summed. A field that does not parse (written by hand) is
    skipped."""
    today = now.astimezone(UTC).date()
    hour_now = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    first_hour = hour_now - timedelta(hours=23)
    sent_ends = 2 * keys.count
    failed_ends = sent_ends + FAILED_DAYS * keys.count
    sent: dict[tuple[datetime, str], int] = {}
    for n, raw in enumerate(replies[:sent_ends]):
        day = today - timedelta(days=n % 2)
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        for hour, channel, count in _fields(raw.items()):
            if not hour.isdigit():
                continue
            start = midnight + timedelta(hours=int(hour))
            if first_hour <= start <= hour_now:
                sent[(start, channel)] = sent.get((start, channel), 0) + count
    failed: dict[tuple[str, str], int] = {}
    for raw in replies[sent_ends:failed_ends]:
        for channel, code, count in _fields(raw.items()):
            failed[(channel, code)] = failed.get((channel, code), 0) + count
    refused: dict[str, int] = {}
    for raw in replies[failed_ends:failed_ends + REFUSED_DAYS]:
        for key, value in raw.items():
            if value.lstrip(b"-").isdigit():
                event_type = key.decode()
                refused[event_type] = refused.get(event_type, 0) + int(value)
    return DailyCounts(sent=sent, failed=failed, refused=refused)


def _fields(items: Iterable[tuple[bytes, bytes]]) -> Iterable[tuple[str, str, int]]:
    """A counter hash's `{a}|{b}` -> count fields as (a, b, count); others skipped."""
    for key, value in items:
        a, bar, b = key.decode().partition("|")
        if bar and value.lstrip(b"-").isdigit():
            yield a, b, int(value)
