"""Redis storage of events, entity records and plans; the read side of notifications.

Keys (all under `n:`): `event:{id}` (hash: raw body, status, subject, queue member),
`events:pending` (accepted, not yet applied, scored by arrival; for the clock's sweep),
`rec:{ref}` (entity record JSON), `providers` (the id of every provider with a record, so
the clock finds them without scanning the keyspace), `phone-clients:{phone}` (the ids of
every client with that number), `sms-optout` (opted-out numbers), the per-subject queues
and turns of `notifier.ledger.turns`, and the notification keys of
`notifier.ledger.notifications`.

An event's `status`: `accepted` (stored, waiting for its subject's turn), `held` (a close
waiting for its opening event), then `applied`, `stale` or `ignored`, or `rejected` /
`failed` when it cannot be applied.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import redis
from pydantic import BaseModel

from notifier.errors import StoreContention, StoreError
from notifier.ledger.client import ledger_client
from notifier.ledger.lua import lua_source
from notifier.ledger.notifications import (
    ENTITY_INDEX_TTL_S,
    INFLIGHT,
    KEEP_FINISHED_S,
    LATENESS,
    OUTCOMES,
    PREFIX,
    SCHEDULE,
    Lateness,
    Schedule,
    by_entity_key,
    by_recipient_key,
    epoch,
    from_epoch,
    notif_key,
    parse_lateness,
    parse_outcomes,
)
from notifier.ledger.records import (
    RECORD_TYPES,
    AppointmentRecord,
    ClientRecord,
    ProviderRecord,
    Record,
    VisitsRecord,
)
from notifier.ledger.shortlinks import ShortLinks
from notifier.ledger.turns import HELD_EVENTS, Turns, held_key, queue_key, queue_member, turn_key
from notifier.policy.plan import Plan, PlannedNotification

#: A planner given a stored raw event, a loader of (watched) records and the event's
#: arrival time.
Decide = Callable[[bytes, Callable[[list[str]], dict[str, Record]], datetime], Plan]

PENDING_EVENTS = PREFIX + "events:pending"
#: The id of every provider with a record; written with the record, in its transaction.
PROVIDERS = PREFIX + "providers"
#: Set once `PROVIDERS` holds every provider, including those stored before it existed.
PROVIDERS_INDEXED = PREFIX + "providers:indexed"
SMS_OPT_OUTS = PREFIX + "sms-optout"
UNKNOWN_CALLBACKS = PREFIX + "callbacks:unknown"
#: Delivery reports that mean the message did not arrive.
DELIVERY_FAILURES = frozenset({"undelivered", "failed", "bounce", "dropped"})
#: How long an applied event's id is remembered for duplicate detection.
EVENT_RETENTION_S = 30 * 24 * 3600
#: A WATCHed read-modify-write tries at most this many times before `StoreContention`.
MAX_WATCH_TRIES = 50
#: At most this many notifications per client are returned by the read API.
READ_LIMIT = 200

STORE_EVENT_LUA = lua_source("event_store")


def store_event_call(event_id: str, raw: bytes, now: datetime, subject: str | None,
                     occurred_at: datetime | None
                     ) -> tuple[list[str], list[bytes | str | float]]:
    """The KEYS and ARGV of `STORE_EVENT_LUA` for one event (for `Store.store_event` and the
    web's asyncio twin): the event's hash, the pending index and, with a subject, the
    subject's queue."""
    keys = [event_key(event_id), PENDING_EVENTS]
    args: list[bytes | str | float] = [raw, epoch(now), event_id]
    if subject is not None and occurred_at is not None:
        keys.append(queue_key(subject))
        args += [subject, epoch(occurred_at), queue_member(event_id, now)]
    return keys, args


def event_key(event_id: str) -> str:
    return f"{PREFIX}event:{event_id}"


def record_key(ref: str) -> str:
    return f"{PREFIX}rec:{ref}"


@lru_cache(maxsize=4096)
def parse_record(kind: str, raw: bytes) -> Record:
    """A record from its stored JSON. Cached by the exact bytes: a client's record is read
    for every message they get, and validating it (email addresses, phone numbers, zones)
    costs more than the Redis round trip. Records are frozen, so sharing them is safe."""
    return RECORD_TYPES[kind].model_validate_json(raw)


def legacy_phone_key(phone: str) -> str:
    """The one-client-per-number string older versions wrote (last write won); still read,
    never written, so numbers indexed before the upgrade keep working."""
    return f"{PREFIX}phone:{phone}"


def phone_clients_key(phone: str) -> str:
    """The set of ids of every client with this number: a family may share one phone."""
    return f"{PREFIX}phone-clients:{phone}"


def phone_index_changes(before: Mapping[str, BaseModel], after: Mapping[str, BaseModel]
                        ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(phone, client id) pairs to take out of and put into the per-number sets when the
    records `after` replace `before` (the same refs, as stored until now; a ref missing
    from `before` is a new client). A client whose number changed or went leaves the old
    number's set."""
    leave: list[tuple[str, str]] = []
    join: list[tuple[str, str]] = []
    for ref, record in after.items():
        if not isinstance(record, ClientRecord):
            continue
        old = before.get(ref)
        old_phone = old.client.phone if isinstance(old, ClientRecord) else None
        new_phone = record.client.phone
        if old_phone and old_phone != new_phone:
            leave.append((old_phone, record.client.id))
        if new_phone:
            join.append((new_phone, record.client.id))
    return leave, join


def shown_state(fields: dict[str, str]) -> str:
    """The state the read API shows: delivery reports refine `sent`; `sending` is still
    `scheduled` to the outside."""
    state, delivery = fields["state"], fields.get("delivery", "")
    if state in ("sent", "sending") and delivery == "delivered":
        return "delivered"
    if state in ("sent", "sending") and delivery in DELIVERY_FAILURES:
        return "failed"
    return "scheduled" if state == "sending" else state


def _notification_fields(n: PlannedNotification, now: datetime) -> list[Any]:
    fields = {
        "kind": n.kind, "channel": n.channel, "to": n.recipient, "to_id": n.recipient_id,
        "entity": n.entity, "due": epoch(n.due_at), "expires": epoch(n.expires_at),
        "state": n.state, "reason": n.reason, "params": json.dumps(n.params, sort_keys=True),
        "attempts": 0, "created": epoch(now),
    }
    return [item for pair in fields.items() for item in pair]


@dataclass(frozen=True)
class LedgerFigures:
    """What /metrics reports from Redis, read in one round trip."""

    scheduled: int
    in_flight: int
    events_pending: int
    events_held: int
    #: (state, channel) -> notifications that ended so
    outcomes: dict[tuple[str, str], int]
    #: (kind, channel) -> send lateness
    lateness: dict[tuple[str, str], Lateness]


class TurnLost(StoreError):
    """The caller's turn on a subject ran out and another worker took it: stop applying."""


class NotificationView(BaseModel):
    """A notification as the read API shows it."""

    id: str
    kind: str
    channel: str
    due_at: datetime
    expires_at: datetime
    state: str
    reason: str
    sent_at: datetime | None
    code: str | None
    delivery: str | None = None
    #: an SMS's encoding when it was rendered: GSM-7 or UCS-2
    sms_encoding: str | None = None
    #: the segments it takes, counted as carriers count them
    sms_segments: int | None = None
    #: the segments the provider says it sent (Twilio's num_segments)
    provider_segments: int | None = None


class Store:
    def __init__(self, client: redis.Redis) -> None:
        client = ledger_client(client)  # Redis failures raise StoreUnavailable / StoreError
        # redis-py types its replies as a sync|async union; the client here is sync.
        self.redis: Any = client
        self.schedule = Schedule(client)
        self.turns = Turns(client)
        self.short_links = ShortLinks(client)
        self._store_event = client.register_script(STORE_EVENT_LUA)

    # Events ---------------------------------------------------------------------------
    def store_event(self, event_id: str, raw: bytes, now: datetime, subject: str | None = None,
                    occurred_at: datetime | None = None) -> bool:
        """Store a raw event durably and queue it for its subject (an entity ref, see
        `policy.ordering.subject_ref`); False when this id was accepted before.

        Without `subject` the event is queued by the worker that first applies it (events
        stored by an older version, tests of the store alone).
        """
        keys, args = store_event_call(event_id, raw, now, subject, occurred_at)
        return bool(self._store_event(keys=keys, args=args))

    def event_subject(self, event_id: str) -> tuple[str | None, str | None]:
        """(status, subject ref) of a stored event; (None, None) for an unknown id."""
        status, subject = self.redis.hmget(event_key(event_id), "status", "subject")
        return (status.decode() if status else None, subject.decode() if subject else None)

    def queue_event(self, event_id: str, subject: str, occurred_at: datetime) -> None:
        """Queue a stored event that has no subject yet (stored by an older version)."""
        arrived = self.redis.hget(event_key(event_id), "received_at")
        member = queue_member(event_id, from_epoch(arrived) if arrived else occurred_at)
        with self.redis.pipeline() as pipe:
            pipe.hset(event_key(event_id), mapping={"subject": subject, "member": member,
                                                    "occurred": epoch(occurred_at)})
            pipe.zadd(queue_key(subject), {member: epoch(occurred_at)})
            pipe.execute()

    def event_status(self, event_id: str) -> dict[str, str]:
        raw = self.redis.hgetall(event_key(event_id))
        return {k.decode(): v.decode() for k, v in raw.items()}

    def unapplied_events(self, older_than: datetime, now: datetime,
                         limit: int = 500) -> list[str]:
        """Events accepted before `older_than` and still not applied; each is stamped `now`,
        so it comes up again only after another grace period, not on every sweep."""
        ids = self.redis.zrangebyscore(PENDING_EVENTS, "-inf", epoch(older_than), 0, limit)
        if ids:
            self.redis.zadd(PENDING_EVENTS, {i: epoch(now) for i in ids}, xx=True)
        return [i.decode() for i in ids]

    def count_apply_failure(self, event_id: str) -> int:
        """How many times applying this event failed unexpectedly, this one included."""
        return int(self.redis.hincrby(event_key(event_id), "failures", 1))

    # Records ----------------------------------------------------------------------------
    def load_records(self, refs: list[str], pipe: Any = None) -> dict[str, Record]:
        if not refs:
            return {}
        values = (pipe or self.redis).mget([record_key(r) for r in refs])
        return {ref: parse_record(ref.split(":", 1)[0], value)
                for ref, value in zip(refs, values, strict=True) if value is not None}

    def load_record(self, ref: str) -> Record | None:
        return self.load_records([ref]).get(ref)

    def upcoming_appointments(self, client_id: str, now: datetime) -> list[AppointmentRecord]:
        """The client's booked appointments that have not ended by `now`, soonest first.

        The visits record keeps an appointment until its completion, no-show or
        cancellation arrives, which may be never: one that has ended is past, whatever
        the record still says. Two round trips: the visits record, then the appointments.
        """
        visits = self.load_record(f"visits:{client_id}")
        if not isinstance(visits, VisitsRecord):
            return []
        records = self.load_records([f"appointment:{i}" for i in sorted(visits.upcoming)])
        upcoming = [r for r in records.values()
                    if isinstance(r, AppointmentRecord) and r.appointment.end > now]
        return sorted(upcoming, key=lambda r: (r.appointment.start, r.appointment.id))

    def update_record(self, ref: str, change: Callable[[Record | None], Record | None]) -> bool:
        """Change one record atomically (WATCH, retried on a concurrent write); `change`
        returns the new record, or None to leave it as it is. Raises `StoreContention` when
        concurrent writes win `MAX_WATCH_TRIES` times in a row."""
        key = record_key(ref)
        for _ in range(MAX_WATCH_TRIES):
            with self.redis.pipeline() as pipe:
                try:
                    pipe.watch(key)
                    updated = change(self.load_records([ref], pipe).get(ref))
                    if updated is None:
                        return False
                    pipe.multi()
                    self._set_record(pipe, ref, updated)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue
        raise StoreContention(f"record {ref} changed under every one of "
                              f"{MAX_WATCH_TRIES} tries to update it")

    # Applying plans ------------------------------------------------------------------------
    def apply_event(self, event_id: str, decide: Decide, now: datetime,
                    turn: tuple[str, str] | None = None) -> Plan | None:
        """Apply a stored event exactly once: load, plan, write, all under WATCH.

        `decide(raw, load, arrived_at)` plans, loading the records it needs through `load`,
        which watches them. The writes, the plan's notifications, the event's new status
        and its removal from its subject's queue commit in one MULTI, so a crash leaves
        either nothing or everything; a concurrent change to a watched key replans.

        `turn` is (subject ref, token) of the caller's turn (`notifier.ledger.turns`): the write
        happens only while the turn is still the caller's, else `TurnLost` is raised. A
        `held` plan parks the event beside its subject's queue until the opening arrives;
        an `applied` plan puts the subject's held events back into the queue, after it.
        Returns None when the event was applied before (or is unknown). Raises
        `StoreContention` (nothing written) when a watched key changes under each of
        `MAX_WATCH_TRIES` tries.
        """
        key = event_key(event_id)
        for _ in range(MAX_WATCH_TRIES):
            with self.redis.pipeline() as pipe:
                try:
                    status, raw, subject, member, received, occurred, holder, held = \
                        self._watch_event(pipe, event_id, turn)
                    ref = subject.decode() if subject else None
                    if status != b"accepted" or raw is None:
                        if ref and member:
                            pipe.multi()
                            pipe.zrem(queue_key(ref), member)
                            pipe.execute()
                        return None
                    if turn is not None and holder != turn[1].encode():
                        raise TurnLost(turn[0])
                    if turn is None and ref:
                        pipe.watch(held_key(ref))
                        held = pipe.zrange(held_key(ref), 0, -1, withscores=True)

                    def load(more: list[str], pipe: Any = pipe) -> dict[str, Record]:
                        if more:
                            pipe.watch(*(record_key(r) for r in more))
                        return self.load_records(more, pipe)

                    arrived = from_epoch(received) if received else now
                    plan = decide(raw, load, arrived)
                    before = self._clients_before(plan, pipe)
                    targets = self.cancel_targets(plan, pipe)
                    pipe.multi()
                    if ref and member:
                        pipe.zrem(queue_key(ref), member)
                    pipe.zrem(PENDING_EVENTS, event_id)
                    if plan.outcome == "held":
                        self._hold(pipe, event_id, plan, ref, member, occurred, now)
                    else:
                        self._write_plan(pipe, plan, now, before, targets)
                        pipe.hset(key, mapping={"status": plan.outcome, "reason": plan.reason,
                                                "applied_at": epoch(now)})
                        pipe.expire(key, EVENT_RETENTION_S)
                        if plan.outcome == "applied" and ref and held:
                            self._unhold(pipe, ref, held, now)
                    pipe.execute()
                    return plan
                except redis.WatchError:
                    continue
        raise StoreContention(f"event {event_id}: its keys changed under every one of "
                              f"{MAX_WATCH_TRIES} tries to apply it")

    def _watch_event(self, pipe: Any, event_id: str, turn: tuple[str, str] | None
                     ) -> list[Any]:
        """WATCH the event (and, in a turn, the turn and the subject's held closes), then
        read them in one round trip: the event's fields, the turn's holder, the held
        closes. Reads after the WATCH are checked by it, so they need not share its
        connection."""
        key = event_key(event_id)
        with self.redis.pipeline(transaction=False) as reads:
            reads.hmget(key, "status", "raw", "subject", "member", "received_at", "occurred")
            if turn is None:
                pipe.watch(key)
                return [*reads.execute()[0], None, []]
            pipe.watch(key, turn_key(turn[0]), held_key(turn[0]))
            reads.get(turn_key(turn[0]))
            reads.zrange(held_key(turn[0]), 0, -1, withscores=True)
            fields, holder, held = reads.execute()
        return [*fields, holder, held]

    @staticmethod
    def _hold(pipe: Any, event_id: str, plan: Plan, ref: str | None, member: bytes | None,
              occurred: bytes | None, now: datetime) -> None:
        """Park a close beside its subject's queue until its opening (or the wait's end)."""
        if not ref or not member or plan.held_until is None:
            raise StoreError(f"event {event_id} cannot be held: it has no subject queue")
        pipe.hset(event_key(event_id), mapping={"status": "held", "reason": plan.reason,
                                                "held_at": epoch(now)})
        pipe.zadd(held_key(ref), {member: float(occurred or epoch(now))})
        pipe.zadd(HELD_EVENTS, {event_id: epoch(plan.held_until)})

    @staticmethod
    def _unhold(pipe: Any, ref: str, held: list[tuple[bytes, float]],
                now: datetime) -> None:
        """Put a subject's held events back into its queue (scores are their occurred_at),
        accepted again, so this turn applies them next, in order."""
        pipe.zadd(queue_key(ref), dict(held))
        pipe.delete(held_key(ref))
        ids = [m.decode().split(":", 1)[1] for m, _ in held]
        pipe.zrem(HELD_EVENTS, *ids)
        pipe.zadd(PENDING_EVENTS, {i: epoch(now) for i in ids})
        for i in ids:
            pipe.hset(event_key(i), "status", "accepted")

    def release_expired_holds(self, now: datetime, limit: int = 500) -> list[str]:
        """Held closes whose wait for an opening is over, put back into their subjects'
        queues to be applied as they are; returns their ids (to enqueue)."""
        ids = [i.decode() for i in self.redis.zrangebyscore(HELD_EVENTS, "-inf", epoch(now),
                                                              0, limit)]
        if not ids:
            return []
        with self.redis.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.hmget(event_key(i), "status", "subject", "member", "occurred")
            found = pipe.execute()
        with self.redis.pipeline() as pipe:
            for i, (status, subject, member, occurred) in zip(ids, found, strict=True):
                pipe.zrem(HELD_EVENTS, i)
                if status != b"held" or not subject or not member:
                    continue
                ref = subject.decode()
                pipe.zrem(held_key(ref), member)
                pipe.zadd(queue_key(ref), {member: float(occurred or epoch(now))})
                pipe.zadd(PENDING_EVENTS, {i: epoch(now)})
                pipe.hset(event_key(i), "status", "accepted")
            pipe.execute()
        return [i for i, (status, *_) in zip(ids, found, strict=True) if status == b"held"]

    def reject_event(self, event_id: str, reason: str, now: datetime,
                     status: str = "rejected") -> None:
        """Mark a stored event that cannot be applied (`rejected`: no longer validates;
        `failed`: planning kept failing); it is kept for inspection, never retried, and
        leaves its subject's queue so the subject's later events go on."""
        subject, member = self.redis.hmget(event_key(event_id), "subject", "member")
        with self.redis.pipeline() as pipe:
            pipe.hset(event_key(event_id), mapping={"status": status, "reason": reason,
                                                    "applied_at": epoch(now)})
            pipe.expire(event_key(event_id), EVENT_RETENTION_S)
            pipe.zrem(PENDING_EVENTS, event_id)
            if subject and member:
                pipe.zrem(queue_key(subject.decode()), member)
            pipe.execute()

    def write_plan(self, plan: Plan, now: datetime) -> int:
        """Write a plan not tied to an event (a cron job's), in one transaction; returns how
        many of its notifications were added (the others' ids were planned before).
        An id added to a cancelled entity's index meanwhile writes it again; raises
        `StoreContention` when that happens `MAX_WATCH_TRIES` times in a row."""
        for _ in range(MAX_WATCH_TRIES):
            with self.redis.pipeline() as pipe:
                try:
                    targets = self.cancel_targets(plan, pipe)
                    before = self._clients_before(plan, pipe if pipe.watching else self.redis)
                    pipe.multi()
                    adds = self._write_plan(pipe, plan, now, before, targets)
                    replies = pipe.execute()
                except redis.WatchError:
                    continue
            # Each ADD_LUA reply is 1 (added) or 0 (kept).
            return sum(int(reply) for reply in replies[adds])
        raise StoreContention(f"the entities a plan cancels changed under every one of "
                              f"{MAX_WATCH_TRIES} tries to write it")

    def cancel_targets(self, plan: Plan, pipe: Any) -> dict[str, list[str]]:
        """The notification ids indexed under each entity `plan` cancels, by ref: the
        indexes are WATCHed on `pipe` first, then read in one round trip. The cancel
        script is given each id's key (every key a script touches is in its KEYS), and
        the WATCH fails the transaction when an id is added before it commits."""
        if not plan.cancel:
            return {}
        pipe.watch(*(by_entity_key(ref) for ref in plan.cancel))
        with self.redis.pipeline(transaction=False) as reads:
            for ref in plan.cancel:
                reads.smembers(by_entity_key(ref))
            found = reads.execute()
        return {ref: sorted(i.decode() for i in ids)
                for ref, ids in zip(plan.cancel, found, strict=True)}

    def _clients_before(self, plan: Plan, pipe: Any) -> dict[str, Record]:
        """The stored versions of the client records `plan` writes, read before its MULTI
        (and watched, on a watching pipeline), so `_write_plan` can move a client whose
        number changed out of the old number's set."""
        refs = [ref for ref, record in plan.records.items() if isinstance(record, ClientRecord)]
        if refs and getattr(pipe, "watching", False):
            pipe.watch(*(record_key(r) for r in refs))
        return self.load_records(refs, pipe)

    def _write_plan(self, pipe: Any, plan: Plan, now: datetime,
                    before: Mapping[str, BaseModel] | None = None,
                    targets: Mapping[str, list[str]] | None = None) -> slice:
        """Queue a plan's writes on `pipe`: records, cancels, the adds, then the trimming of
        the recipients' read indexes; returns where the adds' replies are among the
        pipeline's.

        The read index of each recipient the plan adds to loses its entries due more than
        `KEEP_FINISHED_S` before `now` (their notifications have expired or soon will, and
        the read API's window is far shorter): trimmed here, on the write that makes it
        grow, so a read never writes.

        `before`: the stored versions of the plan's client records (`_clients_before`);
        callers whose plans hold no client records may leave it out. `targets`: the ids
        of each entity the plan cancels (`cancel_targets`), required when it cancels."""
        if plan.cancel and (targets is None or not set(plan.cancel) <= set(targets)):
            raise StoreError("a plan that cancels needs the ids it cancels: cancel_targets")
        for ref, record in plan.records.items():
            self._set_record(pipe, ref, record)
        # Inbound SMS name a number; these sets find every client it belongs to.
        leave, join = phone_index_changes(before or {}, plan.records)
        for phone, client_id in leave:
            pipe.srem(phone_clients_key(phone), client_id)
        for phone, client_id in join:
            pipe.sadd(phone_clients_key(phone), client_id)
        for ref in plan.cancel:
            self.schedule.cancel_entity(pipe, ref, (targets or {})[ref])
        first_add = len(pipe)
        for n in plan.add:
            self.schedule.add_script(
                keys=[notif_key(n.id), SCHEDULE, by_recipient_key(n.recipient, n.recipient_id),
                      OUTCOMES, by_entity_key(n.entity)],
                args=[n.id, epoch(n.due_at), ENTITY_INDEX_TTL_S,
                      *_notification_fields(n, now)],
                client=pipe,
            )
        adds = slice(first_add, len(pipe))
        for index in sorted({by_recipient_key(n.recipient, n.recipient_id) for n in plan.add}):
            pipe.zremrangebyscore(index, "-inf", f"({epoch(now) - KEEP_FINISHED_S}")
        return adds

    @staticmethod
    def _set_record(pipe: Any, ref: str, record: BaseModel) -> None:
        """Queue the write of one record on `pipe`, with the indexes kept beside it."""
        pipe.set(record_key(ref), record.model_dump_json())
        if isinstance(record, ProviderRecord):
            pipe.sadd(PROVIDERS, record.provider.id)

    # Providers ---------------------------------------------------------------------------
    def provider_ids(self) -> list[str]:
        """The id of every provider with a record, sorted: read from `PROVIDERS`.

        Data written before that set existed is indexed once: the first call SCANs for
        provider records, adds them to the set and marks it complete, so no later call
        scans (a deployment with no provider yet included)."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(PROVIDERS_INDEXED)
            pipe.smembers(PROVIDERS)
            indexed, members = pipe.execute()
        ids = {m.decode() for m in members}
        if not indexed:
            prefix = record_key("provider:")
            ids |= {key.decode().removeprefix(prefix)
                    for key in self.redis.scan_iter(match=prefix + "*", count=1000)}
            with self.redis.pipeline() as pipe:
                if ids:
                    pipe.sadd(PROVIDERS, *ids)
                pipe.set(PROVIDERS_INDEXED, 1)
                pipe.execute()
        return sorted(ids)

    def providers(self) -> list[ProviderRecord]:
        """Every provider's record, by id."""
        records = self.load_records([f"provider:{i}" for i in self.provider_ids()])
        return [r for r in records.values() if isinstance(r, ProviderRecord)]

    # Reading -----------------------------------------------------------------------------
    def figures(self) -> LedgerFigures:
        """The backlog, the outcomes and the send lateness, for /metrics: one pipeline."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(SCHEDULE)
            pipe.zcard(INFLIGHT)
            pipe.zcard(PENDING_EVENTS)
            pipe.zcard(HELD_EVENTS)
            pipe.hgetall(OUTCOMES)
            pipe.hgetall(LATENESS)
            scheduled, in_flight, pending, held, outcomes, lateness = pipe.execute()
        return LedgerFigures(scheduled=int(scheduled), in_flight=int(in_flight),
                             events_pending=int(pending), events_held=int(held),
                             outcomes=parse_outcomes(outcomes),
                             lateness=parse_lateness(lateness))

    def send_blockers(self, notification_id: str, subjects: list[str]) -> tuple[bool, bool]:
        """(superseded, unapplied) just before a send, in one round trip: whether a plan
        cancelled the notification while it was `sending`, and whether an accepted event
        about any of `subjects` is still unapplied."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hexists(notif_key(notification_id), "superseded")
            if subjects:
                pipe.exists(*(queue_key(r) for r in subjects))
            replies = pipe.execute()
        return bool(replies[0]), len(replies) > 1 and bool(replies[1])

    def notification(self, notification_id: str) -> dict[str, str]:
        raw = self.redis.hgetall(notif_key(notification_id))
        return {k.decode(): v.decode() for k, v in raw.items()}

    def about_entity(self, entity: str) -> dict[str, tuple[str, str] | None]:
        """(recipient, state) of every notification indexed under `entity` by id; None for
        one whose ledger entry has expired. Two round trips: the index, then one pipeline
        of HMGETs."""
        ids = sorted(i.decode() for i in self.redis.smembers(by_entity_key(entity)))
        if not ids:
            return {}
        with self.redis.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.hmget(notif_key(i), "to", "state")
            rows = pipe.execute()
        return {i: (to.decode(), state.decode()) if to is not None and state is not None
                else None
                for i, (to, state) in zip(ids, rows, strict=True)}

    def notifications_for(self, recipient: str, recipient_id: str,
                          since: datetime | None = None) -> list[NotificationView]:
        """A recipient's notifications due from `since` on (all, without it), soonest
        first, at most READ_LIMIT. Reads only: the index is trimmed when written
        (`_write_plan`)."""
        key = by_recipient_key(recipient, recipient_id)
        low = epoch(since) if since is not None else "-inf"
        ids = self.redis.zrangebyscore(key, low, "+inf", 0, READ_LIMIT)
        with self.redis.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.hgetall(notif_key(i.decode()))
            hashes = pipe.execute()
        views = []
        for i, h in zip(ids, hashes, strict=True):
            f = {k.decode(): v.decode() for k, v in h.items()}
            if not f:
                continue
            views.append(NotificationView(
                id=i.decode(), kind=f["kind"], channel=f["channel"],
                due_at=from_epoch(f["due"]), expires_at=from_epoch(f["expires"]),
                state=shown_state(f), reason=f.get("reason", ""),
                sent_at=from_epoch(f["sent_at"]) if f.get("sent_at") else None,
                code=f.get("code") or None, delivery=f.get("delivery") or None,
                sms_encoding=f.get("sms_encoding") or None,
                sms_segments=int(f["sms_segments"]) if f.get("sms_segments") else None,
                provider_segments=(int(f["provider_segments"]) if f.get("provider_segments")
                                   else None),
            ))
        return views

    # SMS opt-outs and inbound numbers -----------------------------------------------------
    def set_sms_opt_out(self, phone: str, opted_out: bool) -> None:
        if opted_out:
            self.redis.sadd(SMS_OPT_OUTS, phone)
        else:
            self.redis.srem(SMS_OPT_OUTS, phone)

    def sms_opted_out(self, phone: str) -> bool:
        return bool(self.redis.sismember(SMS_OPT_OUTS, phone))

    def clients_for_phone(self, phone: str) -> list[ClientRecord]:
        """Every client whose current number is `phone`, by id. Reads the per-number set and
        the string older versions wrote; each candidate's record must still carry the
        number, so an entry left behind by a change (or by the old index) finds no one."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.smembers(phone_clients_key(phone))
            pipe.get(legacy_phone_key(phone))
            members, legacy = pipe.execute()
        ids = {m.decode() for m in members} | ({legacy.decode()} if legacy else set())
        records = self.load_records([f"client:{i}" for i in sorted(ids)])
        return [r for r in records.values()
                if isinstance(r, ClientRecord) and r.client.phone == phone]

    # Delivery reports and fallbacks ------------------------------------------------------
    def record_delivery(self, notification_id: str, status: str, code: str,
                        now: datetime) -> bool:
        """Record a provider's delivery report; an unknown id is kept aside and ignored."""
        if self.schedule.record_delivery(notification_id, status, code, now):
            return True
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.lpush(UNKNOWN_CALLBACKS, json.dumps(
                {"id": notification_id, "status": status, "code": code, "at": epoch(now)}))
            pipe.ltrim(UNKNOWN_CALLBACKS, 0, 999)
            pipe.execute()
        return False

    def add_on_other_channel(self, notification_id: str, channel: str, now: datetime,
                             reason: str) -> bool:
        """Plan the same notification on `channel`, due now, unless it is planned there
        already (its dedupe key is the sibling's, so this happens at most once)."""
        f = self.notification(notification_id)
        if not f or f.get("superseded"):
            return False
        sibling = notification_id.rsplit(":", 1)[0] + ":" + channel
        if self.redis.exists(notif_key(sibling)):
            return False
        self.write_plan(Plan(outcome="applied", add=(PlannedNotification(
            id=sibling, kind=f["kind"], channel=channel,  # type: ignore[arg-type]
            recipient=f["to"], recipient_id=f["to_id"],  # type: ignore[arg-type]
            entity=f["entity"], due_at=now, expires_at=from_epoch(f["expires"]),
            params=json.loads(f.get("params") or "{}"), reason=reason),)), now)
        return True
