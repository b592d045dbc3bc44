"""Applying a plan: a stored event's, exactly once under WATCH (`PlanWriter.apply_event`),
or one not tied to an event (`PlanWriter.write_plan`, a cron job's). A plan's records,
cancels and notifications, the event's new status and its leaving its subject's queue
commit in one MULTI.

Errors: on the ledger's client (`notifier.ledger.client`, as `Store` builds every part) each
Redis call raises `StoreUnavailable` when Redis cannot be reached or cannot take commands
now, and `StoreError` when it refuses one (a script error, `WRONGTYPE`); the docstrings
below name only the errors of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

import redis
from pydantic import BaseModel

from notifier.errors import StoreContention, StoreError, TurnLost
from notifier.ledger.announcements import queue_announcement
from notifier.ledger.audit_write import AuditWrite
from notifier.ledger.events import find_event, hold, settle, unhold
from notifier.ledger.notif_fields import planned_fields
from notifier.ledger.notifications import (
    ENTITY_INDEX_TTL_S,
    Schedule,
    epoch,
    from_epoch,
    read_entity_ids,
)
from notifier.ledger.record_store import (
    MAX_WATCH_TRIES,
    RecordStore,
    all_record_keys,
    kept_in_parts,
    parse_records,
    write_records,
)
from notifier.ledger.records import ClientRecord, Record
from notifier.policy.plan import Plan

#: A planner given a stored raw event, a loader of (watched) records and the event's
#: arrival time.
Decide = Callable[[bytes, Callable[[list[str]], dict[str, Record]], datetime], Plan]


class PlanWriter:
    """Writes plans: their records, cancels and notifications, in one transaction."""

    def __init__(self, client: redis.Redis, schedule: Schedule, records: RecordStore) -> None:
        # redis-py types its replies as a sync|async union; the client here is sync.
        self.redis: Any = client
        self.schedule = schedule
        self.records = records

    def apply_event(self, event_id: str, decide: Decide, now: datetime,
                    turn: tuple[str, str] | None = None) -> Plan | None:
        """Apply a stored event exactly once: load, plan, write, all under WATCH.

        `decide(raw, load, arrived_at)` plans, loading the records it needs through `load`,
        which watches those of the event's shard (`_watch_records`). The writes, the
        plan's notifications, the event's new status and its removal from its subject's
        queue commit in one MULTI, all in the event's shard (its subject's), so a crash
        leaves either nothing or everything; a concurrent change to a watched key
        replans.

        `turn` is (subject ref, token) of the caller's turn (`notifier.ledger.turns`): the write
        happens only while the turn is still the caller's, else `TurnLost` is raised. A
        `held` plan parks the event beside its subject's queue until the opening arrives;
        an `applied` plan puts the subject's held events back into the queue, after it.
        Returns None when the event was applied before (or is unknown). Raises
        `StoreContention` (nothing written) when a watched key changes under each of
        `MAX_WATCH_TRIES` tries.
        """
        k = self.schedule.keys
        # The event is in its subject's shard: in a turn, the turn's; else found by id.
        shard = (k.of_ref(turn[0]) if turn is not None
                 else find_event(self.redis, k, event_id)[0])
        if shard is None:
            return None
        key = k.event(shard, event_id)
        for _ in range(MAX_WATCH_TRIES):
            with self.redis.pipeline() as pipe:
                try:
                    status, raw, subject, member, received, occurred, holder, held = \
                        self._watch_event(pipe, key, turn)
                    ref = subject.decode() if subject else None
                    if status != b"accepted" or raw is None:
                        if ref and member:
                            pipe.multi()
                            pipe.zrem(k.subject_queue(ref), member)
                            pipe.execute()
                        return None
                    if turn is not None and holder != turn[1].encode():
                        raise TurnLost(turn[0])
                    if turn is None and ref:
                        with self.redis.pipeline(transaction=False) as reads:
                            reads.zrange(k.held(ref), 0, -1, withscores=True)
                            held, = pipe.watch_and_read([k.held(ref)], reads)
                    # Every record read in this try, watched: None for one not stored.
                    known: dict[str, Record | None] = {}

                    def load(more: list[str], pipe: Any = pipe,
                             known: dict[str, Record | None] = known) -> dict[str, Record]:
                        found = self._watch_records(pipe, more, shard)
                        known.update({r: found.get(r) for r in more})
                        return found

                    arrived = from_epoch(received) if received else now
                    plan = decide(raw, load, arrived)
                    own = self._cancel_elsewhere(plan, shard, now)
                    before, targets = self.write_targets(own, pipe, known, shard)
                    pipe.multi()
                    if ref and member:
                        pipe.zrem(k.subject_queue(ref), member)
                    pipe.zrem(k.events_pending(shard), event_id)
                    if plan.outcome == "held":
                        hold(pipe, k, event_id, plan, ref, member, occurred, now)
                    else:
                        self._write_plan(pipe, own, now, before, targets, shard=shard)
                        settle(pipe, key, plan, now, subject, received, occurred)
                        if plan.outcome == "applied" and ref and held:
                            unhold(pipe, k, ref, held, now)
                    pipe.execute()
                    return plan
                except redis.WatchError:
                    continue
        raise StoreContention(f"event {event_id}: its keys changed under every one of "
                              f"{MAX_WATCH_TRIES} tries to apply it")

    def _cancel_elsewhere(self, plan: Plan, shard: int, now: datetime) -> Plan:
        """Cancel the entities `plan` cancels outside the event's `shard`, and write its
        whole records of other shards (a refill request's `refill_asked`, beside its
        prescription), in one transaction per shard (`write_plan`), and return the rest
        of the plan: what the event's transaction writes, all in `shard`. Raises
        `StoreError` (nothing written) when the plan adds a notification outside `shard`:
        a planner names what it adds after its event's subject
        (`follow_up:{appointment}:…`), so that every add commits with the event.

        Why a cancel may go first, apart: a refill request is its own entity (its window,
        its alerts, in its shard) but stops the reminders of its prescription, another
        entity in another shard, and Redis Cluster takes one slot per transaction. The
        cancel commits *before* the event's transaction, so a crash between the two
        leaves the event unapplied: it is applied again (the clock's sweep of unapplied
        events, `notifier.ledger.events`) and cancels again, which changes nothing more.
        A cancel ahead of a transaction that then fails under WATCH is planned again on
        the retry, from the same event. An event applied already is never planned (its
        status is not `accepted`), so a redelivered message cannot cancel reminders of a
        later fill. What remains is the moment between the two: a reminder due in the
        very milliseconds between them may still go out, as it would have a moment
        before the request arrived. On one Redis the same split runs, so both deployments
        run the same code (one more round trip for such an event)."""
        k = self.schedule.keys
        strays = [n.id for n in plan.add if k.of_notification(n.id) != shard]
        if strays:
            raise StoreError(f"a plan adds {', '.join(strays)} outside its event's shard "
                             f"{shard}: name what an event adds after its subject")
        elsewhere = [ref for ref in plan.cancel if k.of_ref(ref) != shard]
        # Whole records of another shard go with its cancel (a refill request's
        # `refill_asked` with its prescription's); parts of a record kept in parts are
        # the event's shard's own (`write_records`).
        moved = {ref: record for ref, record in plan.records.items()
                 if k.of_ref(ref) != shard and not kept_in_parts(ref)}
        for target in sorted({k.of_ref(ref) for ref in [*elsewhere, *moved]}):
            self.write_plan(Plan(
                outcome="applied", cancel=tuple(r for r in elsewhere if k.of_ref(r) == target),
                records={r: v for r, v in moved.items() if k.of_ref(r) == target}), now)
        if not elsewhere and not moved:
            return plan
        return replace(plan, cancel=tuple(r for r in plan.cancel if r not in elsewhere),
                       records={r: v for r, v in plan.records.items() if r not in moved})

    def _watch_event(self, pipe: Any, key: str, turn: tuple[str, str] | None
                     ) -> list[Any]:
        """WATCH the event's hash `key` (and, in a turn, the turn and the subject's held
        closes, all in the subject's shard) and read them, in one round trip: the event's
        fields, the turn's holder, the held closes."""
        k = self.schedule.keys
        with self.redis.pipeline(transaction=False) as reads:
            reads.hmget(key, "status", "raw", "subject", "member", "received_at", "occurred")
            if turn is None:
                fields, = pipe.watch_and_read([key], reads)
                return [*fields, None, []]
            reads.get(k.turn(turn[0]))
            reads.zrange(k.held(turn[0]), 0, -1, withscores=True)
            fields, holder, held = pipe.watch_and_read(
                [key, k.turn(turn[0]), k.held(turn[0])], reads)
        return [*fields, holder, held]

    def _watch_records(self, pipe: Any, refs: list[str], shard: int | None = None
                       ) -> dict[str, Record]:
        """The stored records of `refs`, by ref (one with none is left out; one kept in
        parts, merged): the keys of `shard` (every key when None) WATCHed and read on
        `pipe` in one round trip, the others read without WATCH on the ledger's client in
        one more (`_read_split`)."""
        if not refs:
            return {}
        keys = all_record_keys(self.schedule.keys, refs)
        values = self._read_split(pipe, keys, shard, lambda reads, own: reads.mget(own))
        return parse_records(self.schedule.keys, refs, [values[k] for k in keys])

    def _read_split(self, pipe: Any, keys: list[str], shard: int | None,
                    read: Callable[[Any, list[str]], None]) -> dict[str, Any]:
        """MGET `keys`, by key: those of `shard` (all when None) WATCHed on `pipe`, the
        others read on the ledger's client, not WATCHed.

        Why not every key WATCHed: a transaction is on one slot (Redis Cluster refuses
        a WATCH or MULTI across slots, and the cluster client raises `CrossSlot` before
        sending one), and an event's transaction is on its subject's shard. The records
        of other shards it reads, a client's record for an appointment's event, a
        provider's, the other shards' parts of a client's visits or a provider's queue,
        are read as they are at the read. What is lost is the retry when one of those
        changes between the read and the commit (milliseconds): the plan then rests on
        the client's previous number, zone or preferences. The send path covers it: each
        send reads the client again (number, opt-out, channels, zone for quiet hours,
        `notifier.delivery.facts`), so what goes out follows the current record; and the
        records this event writes are its own shard's (a record kept in parts writes only
        its shard's part), so no other shard's write is overwritten. On one Redis the
        same split is kept, so both run the same code (one more round trip when an event
        reads another shard's record)."""
        k = self.schedule.keys
        own = [key for key in keys if shard is None or key.startswith(k.tag(shard))]
        others = [key for key in keys if key not in set(own)]
        found: dict[str, Any] = {}
        if own:
            with self.redis.pipeline(transaction=False) as reads:
                read(reads, own)
                values, = pipe.watch_and_read(own, reads)
            found.update(zip(own, values, strict=True))
        if others:
            found.update(zip(others, self.redis.mget(others), strict=True))
        return found

    def write_plan(self, plan: Plan, now: datetime, audit: AuditWrite | None = None) -> int:
        """Write a plan not tied to an event (a cron job's, an operator's), in one
        transaction per shard it adds in (`_by_shard`); returns how many of its
        notifications were added (the others' ids were planned before). `audit`: an
        operator's entry, appended by the script that adds the plan's first notification
        when it adds it (`_audit.lua`), so a plan the ledger kept out (planned already) is
        not audited. An id added to a cancelled entity's index meanwhile writes it again;
        raises `StoreContention` when that happens `MAX_WATCH_TRIES` times in a row, and
        `StoreError` for an `audit` with a plan that adds nothing or in several shards,
        and as `_by_shard`."""
        if audit is not None and not plan.add:
            raise StoreError("an audited plan must add a notification: its add is audited")
        parts = self._by_shard(plan)
        if len(parts) > 1:
            if audit is not None:
                raise StoreError("an audited plan must be one shard's: its first add is "
                                 "audited")
            return sum(self._write_one_shard(part, now) for part in parts)
        return self._write_one_shard(plan, now, audit)

    def _by_shard(self, plan: Plan) -> list[Plan]:
        """`plan` as one plan per shard of what it adds, when it only adds (a provider
        digest names every provider, each in its own shard); else `[plan]`, which must be
        one shard's. Each part is its own transaction: every add is idempotent (its id is
        its dedupe key), so a part written again after a failure adds only what was
        missing. Raises `StoreError` for a plan with records, cancels or announcements
        across shards, which no caller writes and no transaction could."""
        k = self.schedule.keys
        shards = ({k.of_notification(n.id) for n in plan.add}
                  | {k.of_ref(ref) for ref in plan.cancel}
                  | {k.of_ref(ref) for ref in plan.records if not kept_in_parts(ref)})
        if len(shards) <= 1:
            return [plan]
        if plan.cancel or plan.records or plan.announce:
            raise StoreError(f"a plan with records, cancels or announcements must be one "
                             f"shard's; this one spans shards {sorted(shards)}")
        return [replace(plan, add=tuple(n for n in plan.add
                                        if k.of_notification(n.id) == shard))
                for shard in sorted(shards)]

    def _write_one_shard(self, plan: Plan, now: datetime,
                         audit: AuditWrite | None = None) -> int:
        """`write_plan` of one shard's plan, in one transaction."""
        for _ in range(MAX_WATCH_TRIES):
            with self.redis.pipeline() as pipe:
                try:
                    before, targets = self.write_targets(plan, pipe)
                    pipe.multi()
                    adds = self._write_plan(pipe, plan, now, before, targets, audit)
                    replies = pipe.execute()
                except redis.WatchError:
                    continue
            # Each ADD_LUA reply is 1 (added) or 0 (kept).
            return sum(int(reply) for reply in replies[adds])
        raise StoreContention(f"the entities a plan cancels changed under every one of "
                              f"{MAX_WATCH_TRIES} tries to write it")

    def write_targets(self, plan: Plan, pipe: Any,
                      known: Mapping[str, Record | None] | None = None,
                      shard: int | None = None
                      ) -> tuple[dict[str, Record], dict[str, list[str]]]:
        """What writing `plan` must read first, WATCHed on `pipe` and read in one round
        trip: (the stored versions of its client records, by ref, for `write_records`,
        which moves a client whose number changed between the per-number sets; the ids
        indexed under each entity it cancels, by ref, for the cancel script, which is
        given each id's key since every key a script touches is in its KEYS). The WATCH
        fails the transaction when a client record changes or an id is added to a
        cancelled entity before it commits.

        `known`: records already read and WATCHed on `pipe` (None for one not stored),
        which are not read again. `shard`: the event's, whose keys alone are WATCHed
        (`_read_split`; None: every key, for a plan not tied to an event); the entities
        a plan cancels are its subject, in that shard. Returns ({}, {}) without a round
        trip when there is nothing to read."""
        known = known or {}
        clients = [ref for ref, record in plan.records.items()
                   if isinstance(record, ClientRecord)]
        unread = [ref for ref in clients if ref not in known]
        before = {ref: record for ref in clients
                  if (record := known.get(ref)) is not None}
        if not unread and not plan.cancel:
            return before, {}
        k = self.schedule.keys
        record_keys = all_record_keys(k, unread)
        own = [key for key in record_keys if shard is None or key.startswith(k.tag(shard))]
        others = [key for key in record_keys if key not in set(own)]
        watched = own + [k.by_entity(r) for r in plan.cancel]
        replies: list[Any] = []
        if watched:
            with self.redis.pipeline(transaction=False) as reads:
                if own:
                    reads.mget(own)
                for ref in plan.cancel:
                    read_entity_ids(reads, k, ref)
                replies = pipe.watch_and_read(watched, reads)
        values = dict(zip(own, replies.pop(0), strict=True)) if own else {}
        if others:  # another shard's client record: not WATCHed (`_read_split`)
            values.update(zip(others, self.redis.mget(others), strict=True))
        if unread:
            before.update(parse_records(k, unread, [values[key] for key in record_keys]))
        targets = {ref: sorted(i.decode() for i in ids)
                   for ref, ids in zip(plan.cancel, replies, strict=True)}
        return before, targets

    def _write_plan(self, pipe: Any, plan: Plan, now: datetime,
                    before: Mapping[str, BaseModel] | None = None,
                    targets: Mapping[str, list[str]] | None = None,
                    audit: AuditWrite | None = None, shard: int | None = None) -> slice:
        """Queue a plan's writes on `pipe`: records, cancels, the adds; returns where the
        adds' replies are among the pipeline's. The indexes the adds join are trimmed by
        the clock (`notifier.ledger.trimming`), not here: an entry past the retention
        must stay until its notification is retired.

        `before`: the stored versions of the plan's client records (`write_targets`);
        callers whose plans hold no client records may leave it out. `targets`: the ids
        of each entity the plan cancels (`write_targets`), required when it cancels.
        `audit`: an entry the first add appends when it adds (`write_plan`). `shard`: the
        event's, whose part of a record kept in parts is written (`write_records`)."""
        if plan.cancel and (targets is None or not set(plan.cancel) <= set(targets)):
            raise StoreError("a plan that cancels needs the ids it cancels: write_targets")
        write_records(pipe, self.schedule.keys, plan.records, before or {}, shard)
        for ref in plan.cancel:
            self.schedule.cancel_entity(pipe, ref, (targets or {})[ref])
        k = self.schedule.keys
        # A plan's announcements go to the shard of what it adds when it adds (an R reply's
        # support alert is about the client, its announcement about the appointment): the
        # transaction is then one shard's; else to their subjects' shards.
        announce_in = k.of_ref(plan.add[0].entity) if plan.add else None
        for announcement in plan.announce:
            queue_announcement(pipe, k, announcement, announce_in)
        first_add = len(pipe)
        for i, n in enumerate(plan.add):
            shard = k.of_notification(n.id)
            if shard != k.of_ref(n.entity):
                # One script call gets one shard's keys (`notifier.ledger.shards`): an id
                # that does not name its entity would be in another slot than its index.
                raise StoreError(f"notification {n.id} does not name its entity {n.entity}")
            keys = [k.notif(n.id), k.schedule(shard),
                    k.by_recipient(shard, n.recipient, n.recipient_id),
                    k.outcomes(shard), k.webhook_outbox(shard), k.webhook_seq(shard),
                    k.by_entity(n.entity)]
            args: list[str | float] = [n.id, epoch(n.due_at), ENTITY_INDEX_TTL_S,
                                       self.schedule.ended_ttl_s]
            if audit is not None and i == 0:
                # in the shard of the notification it adds (`ShardKeys.audit`)
                keys.append(k.audit(shard))
                args += ["1", *audit.args()]
            else:
                args.append("0")
            self.schedule.add_script(keys=keys, args=[*args, *planned_fields(n, now)],
                                     client=pipe)
        return slice(first_add, len(pipe))
