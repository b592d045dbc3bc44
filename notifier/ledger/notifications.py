"""The notification ledger and schedule in Redis, and the Lua scripts that move state.

A notification is a hash `n:notif:{id}` (id = its dedupe key) with a `state`:

    scheduled ──claim──▶ (in flight, leased) ──begin──▶ sending ──▶ sent ──▶ delivered | failed
        │                                                  └──────▶ failed | expired | suppressed
        └──cancel──▶ cancelled (a later plan with the same id may schedule it again)

`n:schedule` is a sorted set of scheduled ids scored by due time (epoch seconds).
`n:inflight` holds claimed ids scored by lease expiry; a sweep puts expired leases back.
Every transition is one Lua script, so two workers, a redelivered message or a replayed
event can never move a notification twice (compare-and-set on `state`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

#: Key prefix of every key Notifier writes.
PREFIX = "n:"
SCHEDULE = PREFIX + "schedule"
INFLIGHT = PREFIX + "inflight"
#: How many notifications ended in each state, per channel: `{state}:{channel}` -> count.
OUTCOMES = PREFIX + "stats:outcomes"
#: Send lateness (sent_at - due, seconds) as cumulative histogram buckets per kind and
#: channel: `{kind}:{channel}:{bound}` -> sends at most that late, and `…:count`, `…:sum`.
LATENESS = PREFIX + "stats:lateness"
#: Every state a notification can end in, counted in OUTCOMES (zero until one happens).
FINAL_STATES = ("sent", "failed", "expired", "suppressed", "cancelled")
#: Upper bounds of the lateness buckets, seconds: on time (a clock tick), a slow batch, a
#: backlog of minutes, of an hour. A reminder later than an hour has missed its point.
LATENESS_BUCKETS_S = (1, 5, 15, 60, 300, 900, 3600)
#: A finished or cancelled notification is kept this long for the read API, then expires.
KEEP_FINISHED_S = 90 * 24 * 3600


def notif_key(notification_id: str) -> str:
    return f"{PREFIX}notif:{notification_id}"


def by_recipient_key(recipient: str, recipient_id: str) -> str:
    """Index of one recipient's notifications by due time (the read API's source)."""
    return f"{PREFIX}by-recipient:{recipient}:{recipient_id}"


def by_entity_key(ref: str) -> str:
    return f"{PREFIX}by-entity:{ref}"


def epoch(instant: datetime) -> float:
    return instant.timestamp()


def from_epoch(value: str | float) -> datetime:
    return datetime.fromtimestamp(float(value), UTC)


# Add a planned notification unless one with this id exists in any state but `cancelled`:
# the first plan wins, so replays and duplicate events add nothing. One planned `expired` or
# `suppressed` has ended already, and is counted in the outcomes (KEYS[4]) like any other.
# KEYS[5...] are the entity indexes.
ADD_LUA = """
local state = redis.call('HGET', KEYS[1], 'state')
if state and state ~= 'cancelled' then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
local planned = redis.call('HGET', KEYS[1], 'state')
if planned == 'scheduled' then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
else
  redis.call('HINCRBY', KEYS[4], planned .. ':' .. redis.call('HGET', KEYS[1], 'channel'), 1)
end
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
for i = 5, #KEYS do
  redis.call('SADD', KEYS[i], ARGV[1])
  redis.call('EXPIRE', KEYS[i], {index_ttl})
end
return 1
""".replace("{index_ttl}", str(180 * 24 * 3600))

# Cancel every still-scheduled notification about one entity, counting each in the
# outcomes (KEYS[4]).
# One being sent right now cannot be stopped, but it is marked `superseded`: if its send
# fails and would be retried, it is cancelled instead, and a failure report later never
# moves it to the other channel.
CANCEL_ENTITY_LUA = """
local cancelled = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[1] .. id
  local state = redis.call('HGET', key, 'state')
  if state == 'scheduled' then
    redis.call('HSET', key, 'state', 'cancelled', 'reason', ARGV[2])
    redis.call('EXPIRE', key, ARGV[3])
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
    redis.call('HINCRBY', KEYS[4], 'cancelled:' .. redis.call('HGET', key, 'channel'), 1)
    cancelled = cancelled + 1
  elseif state == 'sending' or state == 'sent' then
    redis.call('HSET', key, 'superseded', ARGV[2])
  end
end
return cancelled
"""

# Claim up to ARGV[2] ids due by ARGV[1]: move them from the schedule to the in-flight set
# with a lease until ARGV[3]. Atomic, so two clocks never claim the same id. At most
# ARGV[4] ids are in flight at once: a burst is fed to the workers as they keep up, so no
# lease runs out while its message still waits in the queue.
CLAIM_LUA = """
local room = tonumber(ARGV[4]) - redis.call('ZCARD', KEYS[2])
if room <= 0 then return {} end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0,
                       math.min(room, tonumber(ARGV[2])))
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], ARGV[3], id)
end
return ids
"""

# Put ids whose lease expired by ARGV[1] back on the schedule, due at once: their claimer
# died between claim and send, or its message was lost.
SWEEP_LUA = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], ARGV[1], id)
end
return ids
"""

# Begin sending: `scheduled` and due -> `sending` with a lease (off the schedule, in case a
# redelivered message got here before the clock claimed it again). A notification found in
# `sending` whose lease has run out belongs to a sender that died inside the send; it is
# handed back as `recover`. Returns {verdict, fields...}.
BEGIN_LUA = """
local key = KEYS[1]
local state = redis.call('HGET', key, 'state')
local now = tonumber(ARGV[2])
if not state then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return {'missing'}
end
local verdict
if state == 'scheduled' then
  if tonumber(redis.call('HGET', key, 'due')) > now + tonumber(ARGV[4]) then
    return {'not_due'}
  end
  verdict = 'ok'
elseif state == 'sending' then
  if tonumber(redis.call('HGET', key, 'lease') or '0') > now then return {'busy'} end
  verdict = 'recover'
else
  redis.call('ZREM', KEYS[2], ARGV[1])
  return {state}
end
redis.call('HSET', key, 'state', 'sending', 'lease', ARGV[3])
redis.call('HINCRBY', key, 'attempts', 1)
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
local out = {verdict}
for _, v in ipairs(redis.call('HGETALL', key)) do out[#out + 1] = v end
return out
"""

# Finish: `sending` -> a final state (sent, failed, expired, suppressed), fields set.
# The cluster-wide count of outcomes (KEYS[3], by state and channel) feeds /metrics, and so
# does a send's lateness (KEYS[4]): sent_at minus the due time it was sent for (after quiet
# hours, pacing or a retry moved it, so what it measures is how far the workers lag), into
# cumulative buckets. A send recorded without `sent_at` (one found sent after a crash) has
# no known lateness and is not observed.
FINISH_LUA = """
if redis.call('HGET', KEYS[1], 'state') ~= 'sending' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], unpack(ARGV, 4))
redis.call('HDEL', KEYS[1], 'lease')
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[1])
local channel = redis.call('HGET', KEYS[1], 'channel')
redis.call('HINCRBY', KEYS[3], ARGV[2] .. ':' .. channel, 1)
local sent_at = tonumber(redis.call('HGET', KEYS[1], 'sent_at') or '')
if ARGV[2] == 'sent' and sent_at then
  local late = math.max(0, sent_at - tonumber(redis.call('HGET', KEYS[1], 'due')))
  local series = redis.call('HGET', KEYS[1], 'kind') .. ':' .. channel .. ':'
  for _, bound in ipairs({{buckets}}) do
    if late <= bound then redis.call('HINCRBY', KEYS[4], series .. bound, 1) end
  end
  redis.call('HINCRBY', KEYS[4], series .. 'count', 1)
  redis.call('HINCRBYFLOAT', KEYS[4], series .. 'sum', tostring(late))
end
return 1
""".replace("{buckets}", ", ".join(str(b) for b in LATENESS_BUCKETS_S))

# Put back: `sending` -> `scheduled` at a later due time (retry, quiet hours, waiting).
# ARGV[5] = '1' when this was no attempt at all (a rate-limit slot), so it is not counted;
# further ARGV are field/value pairs to set. One superseded meanwhile is `cancelled`
# instead, and counted in the outcomes (KEYS[4]).
RESCHEDULE_LUA = """
if redis.call('HGET', KEYS[1], 'state') ~= 'sending' then return 0 end
local superseded = redis.call('HGET', KEYS[1], 'superseded')
if superseded then
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'reason', superseded)
  redis.call('HDEL', KEYS[1], 'lease')
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('HINCRBY', KEYS[4], 'cancelled:' .. redis.call('HGET', KEYS[1], 'channel'), 1)
  return -1
end
redis.call('HSET', KEYS[1], 'state', 'scheduled', 'due', ARGV[2], 'reason', ARGV[3])
if ARGV[5] == '1' then redis.call('HINCRBY', KEYS[1], 'attempts', -1) end
if #ARGV > 5 then redis.call('HSET', KEYS[1], unpack(ARGV, 6)) end
redis.call('HDEL', KEYS[1], 'lease')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
local to = redis.call('HGET', KEYS[1], 'to') .. ':' .. redis.call('HGET', KEYS[1], 'to_id')
redis.call('ZADD', ARGV[4] .. to, ARGV[2], ARGV[1])
return 1
"""


#: Delivery reports by how far along they are; a report never replaces a later one.
DELIVERY_RANK = {"queued": 1, "accepted": 1, "processed": 1, "sending": 2, "sent": 3,
                 "deferred": 3, "delivered": 4, "undelivered": 4, "failed": 4, "bounce": 4,
                 "dropped": 4}

# Record a delivery report in its own fields, beside `state`: a report arriving before the
# send is recorded (callbacks race the provider's HTTP answer) is kept, and `finish` later
# leaves it alone.
DELIVERY_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local rank = tonumber(redis.call('HGET', KEYS[1], 'delivery_rank') or '0')
if tonumber(ARGV[2]) >= rank then
  redis.call('HSET', KEYS[1], 'delivery', ARGV[1], 'delivery_rank', ARGV[2],
             'delivery_at', ARGV[4])
  if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'code', ARGV[3]) end
end
return 1
"""


@dataclass(frozen=True)
class Begun:
    """The verdict of `begin`, and the notification's fields when it may be sent."""

    verdict: str
    fields: dict[str, str]

    @property
    def may_send(self) -> bool:
        return self.verdict in ("ok", "recover")


class Schedule:
    """The Lua-backed transitions of notifications; one instance per process."""

    def __init__(self, client: redis.Redis) -> None:
        # redis-py types its replies as a sync|async union; the client here is sync.
        self.redis: Any = client
        self.add_script = client.register_script(ADD_LUA)
        self.cancel_script = client.register_script(CANCEL_ENTITY_LUA)
        self._claim = client.register_script(CLAIM_LUA)
        self._sweep = client.register_script(SWEEP_LUA)
        self._begin = client.register_script(BEGIN_LUA)
        self._finish = client.register_script(FINISH_LUA)
        self._reschedule = client.register_script(RESCHEDULE_LUA)
        self._delivery = client.register_script(DELIVERY_LUA)

    def claim(self, now: datetime, limit: int, lease_s: float,
              max_inflight: int = 5000) -> list[str]:
        ids = self._claim(keys=[SCHEDULE, INFLIGHT],
                          args=[epoch(now), limit, epoch(now) + lease_s, max_inflight])
        return [i.decode() for i in ids]

    def sweep(self, now: datetime, limit: int = 1000) -> list[str]:
        ids = self._sweep(keys=[INFLIGHT, SCHEDULE], args=[epoch(now), limit])
        return [i.decode() for i in ids]

    def begin(self, notification_id: str, now: datetime, lease_s: float,
              early_s: float = 1.0) -> Begun:
        raw = self._begin(keys=[notif_key(notification_id), INFLIGHT, SCHEDULE],
                          args=[notification_id, epoch(now), epoch(now) + lease_s, early_s])
        verdict, rest = raw[0].decode(), [v.decode() for v in raw[1:]]
        return Begun(verdict, dict(zip(rest[::2], rest[1::2], strict=True)))

    def finish(self, notification_id: str, state: str, **fields: Any) -> bool:
        flat: list[Any] = []
        for name, value in fields.items():
            flat += [name, "" if value is None else value]
        return bool(self._finish(keys=[notif_key(notification_id), INFLIGHT, OUTCOMES,
                                       LATENESS],
                                 args=[notification_id, state, KEEP_FINISHED_S, *flat]))

    def outcomes(self) -> dict[tuple[str, str], int]:
        """How many notifications ended in each (state, channel), since the data began."""
        return parse_outcomes(self.redis.hgetall(OUTCOMES))

    def reschedule(self, notification_id: str, due: datetime, reason: str, *,
                   not_an_attempt: bool = False, slot: float = 0.0) -> str:
        """Back to `scheduled` at `due`; returns "rescheduled", or "cancelled" when the
        notification was superseded while it was being sent, or "" when not `sending`.

        `slot` is a send-rate slot reserved for it; any other reschedule forgets the old
        one, so a batch held overnight is paced again in the morning.
        """
        result = self._reschedule(
            keys=[notif_key(notification_id), INFLIGHT, SCHEDULE, OUTCOMES],
            args=[notification_id, epoch(due), reason, PREFIX + "by-recipient:",
                  "1" if not_an_attempt else "0", "slot", slot],
        )
        return {1: "rescheduled", -1: "cancelled"}.get(int(result), "")

    def record_delivery(self, notification_id: str, status: str, code: str,
                        now: datetime) -> bool:
        """A provider's word on delivery; never moves backwards (a late `sent` after
        `delivered` changes nothing). False for an unknown id."""
        return bool(self._delivery(keys=[notif_key(notification_id)],
                                   args=[status, DELIVERY_RANK.get(status, 0), code,
                                         epoch(now)]))

    def pending_count(self) -> tuple[int, int]:
        """(scheduled, in flight): for health and metrics."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(SCHEDULE)
            pipe.zcard(INFLIGHT)
            scheduled, inflight = pipe.execute()
        return int(scheduled), int(inflight)


@dataclass(frozen=True)
class Lateness:
    """One (kind, channel)'s send lateness: cumulative counts per bucket bound (seconds),
    how many sends, and their total lateness."""

    buckets: tuple[tuple[float, int], ...]
    count: int
    total_s: float


def parse_outcomes(raw: dict[bytes, bytes]) -> dict[tuple[str, str], int]:
    """The OUTCOMES hash as {(state, channel): count}."""
    return {tuple(k.decode().split(":", 1)): int(v)  # type: ignore[misc]
            for k, v in raw.items()}


def parse_lateness(raw: dict[bytes, bytes]) -> dict[tuple[str, str], Lateness]:
    """The LATENESS hash as {(kind, channel): Lateness}; a bucket no send fell in yet has
    no field, and counts zero."""
    fields: dict[tuple[str, str], dict[str, str]] = {}
    for key, value in raw.items():
        kind, channel, name = key.decode().rsplit(":", 2)
        fields.setdefault((kind, channel), {})[name] = value.decode()
    return {series: Lateness(
        buckets=tuple((float(b), int(f.get(str(b), 0))) for b in LATENESS_BUCKETS_S),
        count=int(f.get("count", 0)), total_s=float(f.get("sum", 0.0)))
        for series, f in sorted(fields.items())}
