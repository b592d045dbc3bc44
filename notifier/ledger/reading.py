"""Reading the ledger: one notification, a recipient's notifications as the read API shows
them, an entity's, a client's upcoming appointments, what stands in a send's way, and the
figures /metrics reports. Reads only: nothing here writes.

Errors: on the ledger's client (`notifier.ledger.client`, as `Store` builds every part) each
Redis call raises `StoreUnavailable` when Redis cannot be reached or cannot take commands
now, and `StoreError` when it refuses one (a script error, `WRONGTYPE`); the docstrings
below name only the errors of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
from pydantic import BaseModel, ConfigDict

from notifier.ledger.batch import Batch, Reply
from notifier.ledger.deliveries import DELIVERY_FAILURES
from notifier.ledger.notif_fields import logical, with_derived
from notifier.ledger.notifications import (
    Lateness,
    epoch,
    from_epoch,
    parse_lateness,
    parse_outcomes,
    pending_counts,
    queue_pending_counts,
    read_entity_ids,
    sum_counts,
)
from notifier.ledger.record_store import RecordStore
from notifier.ledger.records import AppointmentRecord, VisitsRecord
from notifier.ledger.shards import ShardKeys

#: At most this many notifications per client are returned by the read API.
READ_LIMIT = 200


def shown_state(fields: dict[str, str]) -> str:
    """The state the read API shows: delivery reports refine `sent`; `sending` is still
    `scheduled` to the outside."""
    state, delivery = fields["state"], fields.get("delivery", "")
    if state in ("sent", "sending") and delivery == "delivered":
        return "delivered"
    if state in ("sent", "sending") and delivery in DELIVERY_FAILURES:
        return "failed"
    return "scheduled" if state == "sending" else state



class NotificationRow(BaseModel):
    """A notification as the read API shows it (`notifier.web.views.NotificationView` is
    its HTTP shape: the same fields, under the name the API documents)."""

    model_config = ConfigDict(frozen=True)

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


@dataclass(frozen=True)
class LedgerFigures:
    """What /metrics reports from Redis, read in one round trip."""

    scheduled: int
    in_flight: int
    events_pending: int
    events_held: int
    #: status (`rejected`, `failed`) -> accepted events set aside so, never applied
    events_set_aside: dict[str, int]
    #: (state, channel) -> notifications that ended so
    outcomes: dict[tuple[str, str], int]
    #: (kind, channel) -> send lateness
    lateness: dict[tuple[str, str], Lateness]



class Reading:
    """The ledger's reads, for the read API, the sender and /metrics."""

    def __init__(self, client: redis.Redis, records: RecordStore, keys: ShardKeys) -> None:
        # redis-py types its replies as a sync|async union; the client here is sync.
        self.redis: Any = client
        self.records = records
        #: the shard count and the keys built with it (`notifier.ledger.shards`)
        self.keys = keys

    def figures(self) -> LedgerFigures:
        """The backlog, the outcomes and the send lateness (every shard's, summed), for
        /metrics: one pipeline."""
        count = self.keys.count
        with self.redis.pipeline(transaction=False) as pipe:
            queue_pending_counts(pipe, self.keys)
            for shard in self.keys.all():
                pipe.hgetall(self.keys.outcomes(shard))
            for shard in self.keys.all():
                pipe.hgetall(self.keys.lateness(shard))
            # The events' sets and set-aside counts are per shard: summed.
            for shard in self.keys.all():
                pipe.zcard(self.keys.events_pending(shard))
                pipe.zcard(self.keys.events_held(shard))
                pipe.hgetall(self.keys.events_set_aside(shard))
            replies = pipe.execute()
        scheduled, in_flight = pending_counts(self.keys, replies)
        outcomes = sum_counts(replies[2 * count:3 * count])
        lateness = sum_counts(replies[3 * count:4 * count])
        per_shard = replies[4 * count:]
        set_aside: dict[str, int] = {}
        for counts in per_shard[2::3]:
            for k, v in counts.items():
                set_aside[k.decode()] = set_aside.get(k.decode(), 0) + int(v)
        return LedgerFigures(scheduled=int(scheduled), in_flight=int(in_flight),
                             events_pending=sum(per_shard[0::3]),
                             events_held=sum(per_shard[1::3]),
                             events_set_aside=set_aside,
                             outcomes=parse_outcomes(outcomes),
                             lateness=parse_lateness(lateness))

    def send_blockers(self, notification_id: str, subjects: list[str]) -> tuple[bool, bool]:
        """(superseded, unapplied) just before a send, in one round trip: whether a plan
        cancelled the notification while it was `sending`, and whether an accepted event
        about any of `subjects` is still unapplied."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hexists(self.keys.notif(notification_id), "superseded")
            # One EXISTS per shard among the subjects (a command's keys share a slot).
            for group in self.keys.refs_by_shard(subjects).values():
                pipe.exists(*(self.keys.subject_queue(r) for r in group))
            replies = pipe.execute()
        return bool(replies[0]), any(replies[1:])

    def queue_send_blockers(self, batch: Batch, notification_id: str, subjects: list[str]
                            ) -> Reply[tuple[bool, bool]]:
        """`send_blockers`, queued on `batch`."""
        superseded = batch.call("hexists", self.keys.notif(notification_id), "superseded",
                                parse=bool)
        groups = self.keys.refs_by_shard(subjects).values()
        exists = [batch.call("exists", *(self.keys.subject_queue(r) for r in group),
                             parse=bool) for group in groups]
        unapplied = Reply(lambda: any(e.get() for e in exists))
        return Reply(lambda: (superseded.get(), unapplied.get()))

    def notification(self, notification_id: str) -> dict[str, str]:
        """Every field of the notification's hash, decoded (`state`, `kind`, `channel`,
        `to`, `to_id`, `entity`, `params` as JSON, `due` and `expires` in epoch seconds,
        `reason`, `attempts`), whichever layout stored it (`notif_fields.logical`); {}
        for an unknown or expired id."""
        raw = self.redis.hgetall(self.keys.notif(notification_id))
        return logical(notification_id, {k.decode(): v.decode() for k, v in raw.items()})

    def about_entity(self, entity: str) -> dict[str, tuple[str, str] | None]:
        """(recipient, state) of every notification indexed under `entity` by id; None for
        one whose ledger entry has expired. Two round trips: the index, then one pipeline
        of HMGETs."""
        return self.about_entities([entity])[entity]

    def about_entities(self, entities: list[str]) -> dict[str, dict[str, tuple[str, str] | None]]:
        """`about_entity` of each of `entities`, by entity, in two round trips for all (the
        indexes, then every notification's HMGET)."""
        entities = list(dict.fromkeys(entities))
        if not entities:
            return {}
        with self.redis.pipeline(transaction=False) as pipe:
            for entity in entities:
                read_entity_ids(pipe, self.keys, entity)
            members = pipe.execute()
        ids = {e: sorted(i.decode() for i in m) for e, m in zip(entities, members, strict=True)}
        every = sorted({i for found in ids.values() for i in found})
        rows: dict[str, tuple[str, str] | None] = {}
        if every:
            with self.redis.pipeline(transaction=False) as pipe:
                for i in every:
                    pipe.hmget(self.keys.notif(i), "to", "state")
                for i, (to, state) in zip(every, pipe.execute(), strict=True):
                    rows[i] = ((to.decode(), state.decode())
                               if to is not None and state is not None else None)
        return {e: {i: rows[i] for i in found} for e, found in ids.items()}

    def notifications_for(self, recipient: str, recipient_id: str,
                          since: datetime | None = None) -> list[NotificationRow]:
        """A recipient's notifications due from `since` on (all, without it), soonest
        first (by due time, then id, as one sorted set would order them), at most
        READ_LIMIT. Two round trips: the recipient's index in every shard (each the
        READ_LIMIT soonest), merged, then the notifications. Reads only: the clock trims
        the indexes (`notifier.ledger.trimming`)."""
        low = epoch(since) if since is not None else "-inf"
        with self.redis.pipeline(transaction=False) as pipe:
            for key in self.keys.recipient_indexes(recipient, recipient_id):
                pipe.zrangebyscore(key, low, "+inf", 0, READ_LIMIT, withscores=True)
            found = [(score, i) for rows in pipe.execute() for i, score in rows]
        ids = [i for _, i in sorted(found)[:READ_LIMIT]]
        with self.redis.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.hgetall(self.keys.notif(i.decode()))
            hashes = pipe.execute()
        views = []
        for i, h in zip(ids, hashes, strict=True):
            f = with_derived(i.decode(), {k.decode(): v.decode() for k, v in h.items()})
            if not f:
                continue
            views.append(NotificationRow(
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

    def upcoming_appointments(self, client_id: str, now: datetime) -> list[AppointmentRecord]:
        """The client's booked appointments that have not ended by `now`, soonest first.

        The visits record keeps an appointment until its completion, no-show or
        cancellation arrives, which may be never: one that has ended is past, whatever
        the record still says. Two round trips: the visits record, then the appointments.
        """
        visits = self.records.load_record(f"visits:{client_id}")
        if not isinstance(visits, VisitsRecord):
            return []
        records = self.records.load_records(
            [f"appointment:{i}" for i in sorted(visits.upcoming)])
        upcoming = [r for r in records.values()
                    if isinstance(r, AppointmentRecord) and r.appointment.end > now]
        return sorted(upcoming, key=lambda r: (r.appointment.start, r.appointment.id))

