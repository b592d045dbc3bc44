"""The notification ledger and schedule in Redis, and the Lua scripts that move state.

A notification is a hash `n:{shard}:notif:{id}` (id = its dedupe key; the shard is its
entity's, `notifier.ledger.shards`) with a `state`; its fields
are laid out to stay in Redis's compact encoding (`notifier.ledger.notif_fields`):

    scheduled ──claim──▶ (in flight, leased) ──begin──▶ sending ──▶ sent ──▶ delivered | failed
        │                                                  └──────▶ failed | expired | suppressed
        └──cancel──▶ cancelled (a later plan with the same id may schedule it again)

Each shard's `n:{shard}:schedule` is a sorted set of its scheduled ids scored by due time
(epoch seconds); its `n:{shard}:inflight` holds its claimed ids scored by lease expiry; a
sweep puts expired leases back. A script is given the keys of one shard.
Each shard's `n:{shard}:awaiting-report` holds its sent ids with no final delivery report
yet, scored by when the repair job looks them up (`notifier.ledger.reports`); its
`n:{shard}:stats:outcomes` and `…:stats:lateness` count what ended there (readers sum the
shards), and a recipient's index is kept per shard too (`ShardKeys.by_recipient`).
Every transition is one Lua script, so two workers, a redelivered message or a replayed
event can never move a notification twice (compare-and-set on `state`).

Errors: on the ledger's client (`notifier.ledger.client`, as `Store` builds every part) each
Redis call raises `StoreUnavailable` when Redis cannot be reached or cannot take commands
now, and `StoreError` when it refuses one (a script error, `WRONGTYPE`); the docstrings
below name only the errors of their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import redis

from notifier.errors import StoreError
from notifier.ledger.audit_write import AuditWrite
from notifier.ledger.batch import Batch, Reply
from notifier.ledger.daily import day_of
from notifier.ledger.lua import lua_source
from notifier.ledger.notif_fields import with_derived
from notifier.ledger.shards import PREFIX as PREFIX  # re-exported: key modules import it here
from notifier.ledger.shards import ShardKeys, share_out
from notifier.timeutil import utcnow

# Per shard (`ShardKeys`): `awaiting_report(s)`, sends through a provider that reports
# delivery, with no final report yet, scored by when the repair job looks them up
# (`notifier.ledger.reports`); `outcomes(s)`, how many notifications ended in each state,
# per channel (`{state}:{channel}` -> count); `lateness(s)`, send lateness (sent_at - due,
# seconds) as cumulative histogram buckets per kind and channel
# (`{kind}:{channel}:{bound}` -> sends at most that late, and `…:count`, `…:sum`);
# `webhook_outbox(s)` and `webhook_seq(s)`, the shard's delivery-webhook outbox and its
# counter (`lua/_webhook_emit.lua`, fanned out by `notifier.webhooks.outbox`).
#: Every state a notification can end in, counted in the outcomes (zero until one happens).
FINAL_STATES = ("sent", "failed", "expired", "suppressed", "cancelled")
#: Counted in the outcomes beside the states: a message that left after its sender had lost
#: the lease, when the notification's own send was already recorded or it ended another
#: way (`notif_finish.lua`). `sent` + `sent_again` is every message that left.
SENT_AGAIN = "sent_again"
#: Upper bounds of the lateness buckets, seconds: on time (a clock tick), a slow batch, a
#: backlog of minutes, of an hour. A reminder later than an hour has missed its point.
LATENESS_BUCKETS_S = (1, 5, 15, 60, 300, 900, 3600)
#: A finished or cancelled notification is kept this long for the read API, then expires:
#: the default of `Schedule(keep_finished_s=…)`, which `NOTIFIER_RETENTION_DAYS` sets.
KEEP_FINISHED_S = 90 * 24 * 3600
#: An entity's index of notifications expires this long after its last add.
ENTITY_INDEX_TTL_S = 180 * 24 * 3600


def read_entity_ids(client: Any, keys: ShardKeys, ref: str) -> Any:
    """Read (or queue on a pipeline) the ids in `ref`'s entity index (`keys.by_entity`:
    a sorted set, every score 0, while Redis can keep it compact, else a set;
    `notif_add.lua` says when), whichever type holds it: `SORT … BY nosort` lists a set's
    and a sorted set's members alike, unsorted, in one command. Returns the ids as bytes
    ([] for no index), or the pipeline."""
    return client.sort(keys.by_entity(ref), by="nosort")


def epoch(instant: datetime) -> float:
    """An aware datetime as epoch seconds (a float), the unit of every score and time field
    in Redis."""
    return instant.timestamp()


def from_epoch(value: str | float) -> datetime:
    """Epoch seconds (a number, or its string as read from Redis) as an aware UTC datetime.
    """
    return datetime.fromtimestamp(float(value), UTC)


# The scripts that move a notification; each documents its KEYS and ARGV at its top.
ADD_LUA = lua_source("notif_add")
CANCEL_ENTITY_LUA = lua_source("notif_cancel_entity")
CANCEL_ONE_LUA = lua_source("notif_cancel")
CLAIM_LUA = lua_source("notif_claim")
SWEEP_LUA = lua_source("notif_sweep")
BEGIN_LUA = lua_source("notif_begin")
FINISH_LUA = lua_source("notif_finish")
RESCHEDULE_LUA = lua_source("notif_reschedule")


#: Delivery reports by how far along they are; a report never replaces a later one.
#: `unknown` is the repair job's (`notifier.worker.reports`): no final report came and the
#: provider could not say; past `sent` and `deferred`, so their late copies leave it, and
#: below the final reports, so a real one arriving later still replaces it. 3.5 fits it in
#: between the ranks that hashes already hold, so nothing stored needs rewriting.
DELIVERY_RANK = {"queued": 1, "accepted": 1, "processed": 1, "sending": 2, "sent": 3,
                 "deferred": 3, "unknown": 3.5, "delivered": 4, "undelivered": 4,
                 "failed": 4, "bounce": 4, "dropped": 4}
#: The rank of a final report: the message arrived or never will.
FINAL_RANK = 4
#: The repair job's verdict when no final report came and the provider cannot say.
UNKNOWN = "unknown"
DELIVERY_LUA = lua_source("notif_delivery")


class Verdict(StrEnum):
    """What `begin` found (compares equal to its value). Every verdict but `OK` and
    `RECOVER` has the value of a `delivery.decide.Outcome`, which `deliver` reports."""

    #: `scheduled` and due: now `sending`, leased to this worker
    OK = "ok"
    #: `sending` with its lease run out (a sender died inside the send): leased again
    RECOVER = "recover"
    #: no such notification (gone, or never added)
    MISSING = "missing"
    #: `scheduled` but not due yet
    NOT_DUE = "not_due"
    #: `sending` under another worker's lease
    BUSY = "busy"
    # already in a final state: nothing to do
    SENT = "sent"
    FAILED = "failed"
    EXPIRED = "expired"
    SUPPRESSED = "suppressed"
    CANCELLED = "cancelled"


class Finished(StrEnum):
    """What `finish` did (compares equal to its value)."""

    #: the final state set (or, for a send after a lost lease, the send recorded as the
    #: notification's own: no other had been)
    FINISHED = "finished"
    #: a send after a lost lease recorded as a second send (`SENT_AGAIN`)
    SENT_AGAIN = "sent_again"
    #: nothing: the notification is not `sending` under this lease (taken over, or ended),
    #: and there is no send to record. Its value is the empty string, so it alone is falsy.
    REFUSED = ""


class Rescheduled(StrEnum):
    """What `reschedule` did (compares equal to its value)."""

    #: back on the schedule at the new due time
    RESCHEDULED = "rescheduled"
    #: superseded while it was being sent: `cancelled` instead
    CANCELLED = "cancelled"
    #: nothing: the notification is not `sending` under this lease (taken over, ended, or
    #: gone). Its value is the empty string, so it alone is falsy.
    NOT_SENDING = ""


@dataclass(frozen=True)
class Begun:
    """The verdict of `begin`, and the notification's fields when it may be sent (empty
    otherwise)."""

    verdict: Verdict
    fields: dict[str, str]

    @property
    def may_send(self) -> bool:
        """Whether the caller may send: the verdict is `OK` or `RECOVER`."""
        return self.verdict in (Verdict.OK, Verdict.RECOVER)

    @property
    def lease(self) -> str:
        """The lease's token, for `finish` and `reschedule`: its end (epoch seconds) as
        `begin` wrote it. KeyError when the caller may not send (no lease)."""
        return self.fields["lease"]


class Schedule:
    """The Lua-backed transitions of notifications; one instance per process."""

    def __init__(self, client: redis.Redis, keep_finished_s: int = KEEP_FINISHED_S,
                 history_s: int = 0, *, keys: ShardKeys) -> None:
        # redis-py types its replies as a sync|async union; the client here is sync.
        self.redis: Any = client
        #: the shard count and the keys built with it (`notifier.ledger.shards`)
        self.keys = keys
        #: where the next `claim` starts among the shards it is given: each call starts
        #: one further, so that under the in-flight cap no shard waits behind the others
        self._claim_turn = 0
        #: the retention, seconds: how long a finished or cancelled notification is kept
        #: whole (the clock then retires it: `notifier.ledger.trimming`)
        self.keep_finished_s = keep_finished_s
        #: how long its content-free row is kept after that, seconds
        self.history_s = history_s
        self.add_script = client.register_script(ADD_LUA)
        self.cancel_script = client.register_script(CANCEL_ENTITY_LUA)
        self._cancel_one = client.register_script(CANCEL_ONE_LUA)
        self._claim = client.register_script(CLAIM_LUA)
        self._sweep = client.register_script(SWEEP_LUA)
        self._begin = client.register_script(BEGIN_LUA)
        self._finish = client.register_script(FINISH_LUA)
        self._reschedule = client.register_script(RESCHEDULE_LUA)
        self._delivery = client.register_script(DELIVERY_LUA)

    @property
    def ended_ttl_s(self) -> int:
        """The expiry set on a notification when it ends, seconds: the retention and the
        history, so that the clock retires it in between; the expiry is the backstop."""
        return self.keep_finished_s + self.history_s

    def cancel_entity(self, pipe: Any, ref: str, ids: list[str],
                      reason: str = "superseded") -> None:
        """Queue on `pipe` the cancel of `ref`'s still-scheduled notifications (those being
        sent are marked `reason`). `ids` are the members of `keys.by_entity(ref)`, read
        after the caller WATCHed it (`PlanWriter.write_targets`), so that an id added meanwhile
        fails the caller's transaction instead of escaping the cancel. They are all in
        `ref`'s shard (an id names its entity), so the script is given one shard's keys."""
        k, shard = self.keys, self.keys.of_ref(ref)
        self.cancel_script(keys=[k.by_entity(ref), k.schedule(shard), k.inflight(shard),
                                 k.outcomes(shard), k.webhook_outbox(shard),
                                 k.webhook_seq(shard),
                                 *(k.notif(i) for i in ids)],
                           args=[reason, self.ended_ttl_s, *ids], client=pipe)

    def cancel_one(self, notification_id: str, reason: str,
                   audit: AuditWrite | None = None) -> bool:
        """Cancel one `scheduled` notification with `reason` (`notif_cancel.lua`: off the
        schedule, counted, noted in its history and announced, at once, and `audit`, an
        operator's entry, appended to the shard's `ShardKeys.audit` stream). Returns True
        when this call cancelled it; False for one in any other state (cancelled already
        included), which is left alone (one `sending` cannot be stopped) and not audited, or
        none."""
        shard = self.keys.of_notification(notification_id)
        keys = [self.keys.notif(notification_id), self.keys.schedule(shard),
                self.keys.inflight(shard), self.keys.outcomes(shard),
                self.keys.webhook_outbox(shard), self.keys.webhook_seq(shard)]
        args: list[str | int] = [notification_id, reason, self.ended_ttl_s]
        if audit is not None:
            # in the shard of the notification it changes, whatever stream the console named
            keys.append(self.keys.audit(shard))
            args += audit.args()
        return bool(self._cancel_one(keys=keys, args=args))

    def claim(self, now: datetime, limit: int, lease_s: float,
              max_inflight: int = 5000, shards: Iterable[int] | None = None) -> list[str]:
        """Move the notifications due by `now` from the schedules of `shards` (default:
        every shard) to in flight, leased until `now + lease_s` (seconds); returns their
        ids, soonest due first within each shard. At most `limit`, and none beyond
        `max_inflight` in flight in all shards at once. Two round trips whatever the
        count: the due and in-flight counts of every shard, then one claim script per
        shard with something due (each atomic in its shard, so two clocks never claim
        one id), given its share of the room. Each call starts one shard further, so a
        backlog held back by the cap is taken from every shard in turn. The cap is
        counted before the claims: clocks claiming other shards at the same moment can
        take it past by what they claim.

        On a cluster a master that does not answer fails only its shards' counts: such a
        shard is counted as nothing due and nothing in flight (the cap bounds the work
        handed out, it guarantees nothing), so the other masters' shards are claimed as
        usual. Raises `StoreUnavailable` or `StoreError` when a claim script fails."""
        held = list(self.keys.all() if shards is None else shards)
        if not held or limit <= 0:
            return []
        with self.redis.pipeline(transaction=False) as pipe:
            for shard in held:
                pipe.zcount(self.keys.schedule(shard), "-inf", epoch(now))
            for shard in self.keys.all():
                pipe.zcard(self.keys.inflight(shard))
            replies = [0 if isinstance(r, Exception) else int(r)
                       for r in pipe.execute(raise_on_error=False)]
        due = dict(zip(held, replies[:len(held)], strict=True))
        inflight = replies[len(held):]
        budget = min(limit, max_inflight - sum(inflight))
        start = self._claim_turn % len(held)
        self._claim_turn += 1
        takes = share_out(((shard, due[shard]) for shard in held[start:] + held[:start]),
                          budget)
        if not takes:
            return []
        with self.redis.pipeline(transaction=False) as pipe:
            for shard, take in takes:
                self._claim(keys=[self.keys.schedule(shard), self.keys.inflight(shard)],
                            args=[epoch(now), take, epoch(now) + lease_s,
                                  inflight[shard] + take], client=pipe)
            claimed = pipe.execute()
        return [i.decode() for ids in claimed for i in ids]

    def next_due(self, shards: Iterable[int] | None = None) -> datetime | None:
        """When the soonest notification scheduled in `shards` (default: every shard)
        falls due (UTC), or None when none is scheduled. One pipeline of each schedule's
        first member: O(S log N)."""
        with self.redis.pipeline(transaction=False) as pipe:
            for shard in self.keys.all() if shards is None else shards:
                pipe.zrange(self.keys.schedule(shard), 0, 0, withscores=True)
            firsts = [first[0][1] for first in pipe.execute() if first]
        return from_epoch(min(firsts)) if firsts else None

    def sweep(self, now: datetime, limit: int = 1000,
              shards: Iterable[int] | None = None) -> list[str]:
        """Put notifications whose in-flight lease ran out by `now` back on the schedule,
        in each of `shards` (default: every shard); returns their ids, at most `limit`
        per shard. One round trip: a script per shard, pipelined."""
        with self.redis.pipeline(transaction=False) as pipe:
            for shard in self.keys.all() if shards is None else shards:
                self._sweep(keys=[self.keys.inflight(shard), self.keys.schedule(shard)],
                            args=[epoch(now), limit], client=pipe)
            swept = pipe.execute()
        return [i.decode() for ids in swept for i in ids]

    def begin(self, notification_id: str, now: datetime, lease_s: float,
              early_s: float = 1.0) -> Begun:
        """`scheduled` (and due within `early_s` seconds) -> `sending`, leased until `now +
        lease_s`, or an expired lease taken over; see `Verdict` for every answer. The fields
        are the hash's, decoded, with `kind` and `channel` (`notif_fields.with_derived`),
        when it may be sent; `Begun.lease` is the lease's token. Raises ValueError for a
        verdict the script does not give."""
        raw = self._begin(keys=self._begin_keys(notification_id),
                          args=[notification_id, epoch(now), epoch(now) + lease_s, early_s])
        return _begun(notification_id, raw)

    def finish(self, notification_id: str, state: str, *, lease: str,
               report_at: Any = None, **fields: Any) -> Finished:
        """`sending` under the lease whose token is `lease` (`Begun.lease`) -> the final
        `state`, with `fields` set on the hash (None stored as ""); counts the outcome, and
        for a send with `sent_at` its lateness. `Finished.REFUSED` (falsy) when the
        notification is not `sending` under that lease (taken over, ended, or gone),
        except for a send (`sent` with `sent_at`): a message that left is always recorded,
        as the notification's send or as a second one (`Finished.SENT_AGAIN`;
        `notif_finish.lua` says which). Idempotent for a send (its `sent_at` recorded).
        `report_at` (epoch seconds, a float; typed Any only so that callers' `**fields` of
        objects still type-check) is given for a send through a provider that reports
        delivery: the send then awaits its report in its shard's `awaiting_report`, looked
        up at that time if no final report came first."""
        keys, args = _finish_call(self.keys, notification_id, state, lease, fields,
                                  self.ended_ttl_s, report_at)
        return Finished(_FINISH_ANSWERS[int(self._finish(keys=keys, args=args))])

    def lease_of(self, batch: Batch, notification_id: str) -> Reply[str | None]:
        """The token of the notification's lease now (None: no lease: not `sending`),
        queued on `batch`: a sender compares it with its own just before the provider's
        call."""
        return batch.call("hget", self.keys.notif(notification_id), "lease",
                          parse=lambda raw: None if raw is None else raw.decode())

    # The same transitions queued on a `Batch`, one script call per notification (each keeps
    # its own compare-and-set), for a worker that delivers many in a few round trips.

    def queue_begin(self, batch: Batch, notification_id: str, now: datetime, lease_s: float,
                    early_s: float = 1.0) -> Reply[Begun]:
        """`begin`, queued on `batch`."""
        return batch.script(self._begin, self._begin_keys(notification_id),
                            [notification_id, epoch(now), epoch(now) + lease_s, early_s],
                            parse=lambda raw: _begun(notification_id, raw))

    def queue_finish(self, batch: Batch, notification_id: str, state: str, *, lease: str,
                     report_at: Any = None, **fields: Any) -> Reply[Finished]:
        """`finish`, queued on `batch`."""
        keys, args = _finish_call(self.keys, notification_id, state, lease, fields,
                                  self.ended_ttl_s, report_at)
        return batch.script(self._finish, keys, args,
                            parse=lambda raw: Finished(_FINISH_ANSWERS[int(raw)]))

    def queue_reschedule(self, batch: Batch, notification_id: str, due: datetime, reason: str,
                         *, lease: str, not_an_attempt: bool, slot: float,
                         recipient: tuple[str, str], fields: Mapping[str, object] | None = None,
                         ) -> Reply[Rescheduled | None]:
        """`reschedule` with its `recipient` given, queued on `batch`; the reply is None when
        that recipient is no longer the notification's (call `reschedule` to read it)."""
        return batch.script(
            self._reschedule,
            self._reschedule_keys(notification_id, recipient),
            [notification_id, epoch(due), reason, "1" if not_an_attempt else "0", *recipient,
             lease, "slot", slot, *_flat(fields)],
            parse=_rescheduled)

    def outcomes(self) -> dict[tuple[str, str], int]:
        """How many notifications ended in each (state, channel), since the data began,
        summed over the shards: one pipeline."""
        with self.redis.pipeline(transaction=False) as pipe:
            for shard in self.keys.all():
                pipe.hgetall(self.keys.outcomes(shard))
            return parse_outcomes(sum_counts(pipe.execute()))

    def reschedule(self, notification_id: str, due: datetime, reason: str, *, lease: str,
                   not_an_attempt: bool = False, slot: float = 0.0,
                   recipient: tuple[str, str] | None = None,
                   fields: Mapping[str, object] | None = None) -> Rescheduled:
        """Back to `scheduled` at `due`, by the holder of the lease whose token is `lease`
        (`Begun.lease`); returns `Rescheduled.RESCHEDULED`, or `CANCELLED` when the
        notification was superseded while it was being sent, or `NOT_SENDING` (falsy, equal
        to "") when it is not `sending` under that lease (taken over, ended, or gone).

        `slot` is a send-rate slot reserved for it; any other reschedule forgets the old
        one, so a batch held overnight is paced again in the morning. `fields` are set on
        the hash too (`maybe_sent_at`: `delivery.decide`). `recipient` is the
        notification's (`to`, `to_id`), which names the by-recipient index it moves in
        (the script is given that key); read from the notification when not given, and
        read again if it does not match. Raises StoreError if it keeps changing.
        """
        key = self.keys.notif(notification_id)
        for _ in range(3):
            if recipient is None:
                to, to_id = self.redis.hmget(key, "to", "to_id")
                if to is None or to_id is None:
                    return Rescheduled.NOT_SENDING  # no notification, so none being sent
                recipient = (to.decode(), to_id.decode())
            result = _rescheduled(self._reschedule(
                keys=self._reschedule_keys(notification_id, recipient),
                args=[notification_id, epoch(due), reason, "1" if not_an_attempt else "0",
                      *recipient, lease, "slot", slot, *_flat(fields)],
            ))
            if result is not None:
                return result
            recipient = None
        raise StoreError(f"notification {notification_id}: its recipient keeps changing")

    def record_delivery(self, notification_id: str, status: str, code: str,
                        now: datetime, message_id: str = "") -> str | None:
        """A provider's word on delivery about its message `message_id` ("": not said);
        never moves backwards (a late `sent` after `delivered` changes nothing), never
        replaces a final one, and a report about another message than the recorded send
        (its `receipt`) changes nothing (`notif_delivery.lua`). A final one (or `unknown`)
        ends the send's wait in its shard's `awaiting_report`. Returns the delivery status on record
        after it ("" for none yet), None for an unknown id."""
        return _on_record(self._delivery(
            keys=_delivery_keys(self.keys, notification_id, now),
            args=_delivery_args(notification_id, status, code, now, message_id)))

    def queue_delivery(self, batch: Batch, notification_id: str, status: str, code: str,
                       now: datetime) -> Reply[str | None]:
        """`record_delivery`, queued on `batch`."""
        return batch.script(self._delivery, _delivery_keys(self.keys, notification_id, now),
                            _delivery_args(notification_id, status, code, now),
                            parse=_on_record)

    def pending_count(self) -> tuple[int, int]:
        """(scheduled, in flight) over every shard: for health and metrics. One pipeline."""
        with self.redis.pipeline(transaction=False) as pipe:
            queue_pending_counts(pipe, self.keys)
            return pending_counts(self.keys, pipe.execute())

    def _begin_keys(self, notification_id: str) -> list[str]:
        """The KEYS of `notif_begin.lua`: the notification's, its shard's."""
        shard = self.keys.of_notification(notification_id)
        return [self.keys.notif(notification_id), self.keys.inflight(shard),
                self.keys.schedule(shard)]

    def _reschedule_keys(self, notification_id: str, recipient: tuple[str, str]) -> list[str]:
        """The KEYS of `notif_reschedule.lua`."""
        shard = self.keys.of_notification(notification_id)
        return [self.keys.notif(notification_id), self.keys.inflight(shard),
                self.keys.schedule(shard), self.keys.outcomes(shard),
                self.keys.by_recipient(shard, *recipient), self.keys.webhook_outbox(shard),
                self.keys.webhook_seq(shard)]


def queue_pending_counts(pipe: Any, keys: ShardKeys) -> None:
    """Queue on `pipe` the ZCARDs of every shard's schedule and in-flight set, 2 x S
    replies, for `pending_counts`."""
    for shard in keys.all():
        pipe.zcard(keys.schedule(shard))
        pipe.zcard(keys.inflight(shard))


def pending_counts(keys: ShardKeys, replies: list[Any]) -> tuple[int, int]:
    """(scheduled, in flight) summed from `queue_pending_counts`'s replies, the first
    2 x S of `replies`."""
    counts = [int(r) for r in replies[:2 * keys.count]]
    return sum(counts[0::2]), sum(counts[1::2])


def _begun(notification_id: str, raw: list[bytes]) -> Begun:
    """`notif_begin.lua`'s answer about `notification_id` as a `Begun`, its fields with
    `kind` and `channel` (`notif_fields.with_derived`); ValueError for a verdict the script
    does not give."""
    verdict, rest = Verdict(raw[0].decode()), [v.decode() for v in raw[1:]]
    return Begun(verdict, with_derived(notification_id,
                                       dict(zip(rest[::2], rest[1::2], strict=True))))


#: `notif_finish.lua`'s answers.
_FINISH_ANSWERS = {1: Finished.FINISHED, 2: Finished.SENT_AGAIN, 0: Finished.REFUSED}


def _finish_call(keys: ShardKeys, notification_id: str, state: str, lease: str,
                 fields: dict[str, Any], keep_s: int, report_at: float | None,
                 ) -> tuple[list[str], list[Any]]:
    """The KEYS and ARGV of `notif_finish.lua` (a None field is stored as "")."""
    flat: list[Any] = []
    for name, value in fields.items():
        flat += [name, "" if value is None else value]
    # The day counted in (`notifier.ledger.daily`): the send's, else the call's (`finish`
    # takes no `now`; a failure counted in the day it was recorded is what the page wants).
    day = day_of(float(fields.get("sent_at") or utcnow().timestamp()))
    shard = keys.of_notification(notification_id)
    return ([keys.notif(notification_id), keys.inflight(shard), keys.outcomes(shard),
             keys.lateness(shard), keys.schedule(shard), keys.awaiting_report(shard),
             keys.webhook_outbox(shard), keys.webhook_seq(shard), keys.sent_daily(shard, day),
             keys.failed_daily(shard, day)],
            [notification_id, state, keep_s,
             ",".join(str(b) for b in LATENESS_BUCKETS_S), lease,
             "" if report_at is None else report_at, *flat])


def _flat(fields: Mapping[str, object] | None) -> list[Any]:
    """`fields` as the field/value pairs a script takes after its other ARGV."""
    return [x for pair in (fields or {}).items() for x in pair]


def _delivery_keys(keys: ShardKeys, notification_id: str, now: datetime) -> list[str]:
    """The KEYS of `notif_delivery.lua`: a failure is counted in `now`'s day."""
    shard = keys.of_notification(notification_id)
    return [keys.notif(notification_id), keys.awaiting_report(shard),
            keys.webhook_outbox(shard), keys.webhook_seq(shard),
            keys.failed_daily(shard, day_of(epoch(now)))]


def _delivery_args(notification_id: str, status: str, code: str, now: datetime,
                   message_id: str = "") -> list[Any]:
    """The ARGV of `notif_delivery.lua`: an unknown status ranks 0 (it replaces nothing)."""
    rank = DELIVERY_RANK.get(status, 0)
    settles = rank >= FINAL_RANK or status == UNKNOWN
    return [status, rank, code, epoch(now), notification_id, "1" if settles else "0",
            message_id]


def _on_record(raw: Any) -> str | None:
    """`notif_delivery.lua`'s answer: the delivery status on record, None for 0 (unknown)."""
    return raw.decode() if isinstance(raw, bytes) else None if raw == 0 else str(raw)


def _rescheduled(raw: Any) -> Rescheduled | None:
    """`notif_reschedule.lua`'s answer; None for -2 (the recipient given is not the
    notification's)."""
    result = int(raw)
    if result == -2:
        return None
    return {1: Rescheduled.RESCHEDULED, -1: Rescheduled.CANCELLED}.get(
        result, Rescheduled.NOT_SENDING)


@dataclass(frozen=True)
class Lateness:
    """One (kind, channel)'s send lateness: cumulative counts per bucket bound (seconds),
    how many sends, and their total lateness."""

    buckets: tuple[tuple[float, int], ...]
    count: int
    total_s: float


def sum_counts(raws: Iterable[dict[bytes, bytes]]) -> dict[bytes, bytes]:
    """Counter hashes of several shards (HGETALL replies) as one: each field's values
    added, as integers while every one is an integer, else as floats (a lateness `sum`,
    written by HINCRBYFLOAT). Raises ValueError for a value that is no number."""
    totals: dict[bytes, int | float] = {}
    for raw in raws:
        for field, value in raw.items():
            number: int | float = int(value) if value.lstrip(b"-").isdigit() else float(value)
            totals[field] = totals.get(field, 0) + number
    return {field: str(total).encode() for field, total in totals.items()}


def parse_outcomes(raw: dict[bytes, bytes]) -> dict[tuple[str, str], int]:
    """An outcomes hash (`ShardKeys.outcomes`, or the shards' `sum_counts`) as
    {(state, channel): count}."""
    return {tuple(k.decode().split(":", 1)): int(v)  # type: ignore[misc]
            for k, v in raw.items()}


def parse_lateness(raw: dict[bytes, bytes]) -> dict[tuple[str, str], Lateness]:
    """A lateness hash (`ShardKeys.lateness`, or the shards' `sum_counts`) as
    {(kind, channel): Lateness}; a bucket no send fell in yet has
    no field, and counts zero."""
    fields: dict[tuple[str, str], dict[str, str]] = {}
    for key, value in raw.items():
        kind, channel, name = key.decode().rsplit(":", 2)
        fields.setdefault((kind, channel), {})[name] = value.decode()
    return {series: Lateness(
        buckets=tuple((float(b), int(f.get(str(b), 0))) for b in LATENESS_BUCKETS_S),
        count=int(f.get("count", 0)), total_s=float(f.get("sum", 0.0)))
        for series, f in sorted(fields.items())}
