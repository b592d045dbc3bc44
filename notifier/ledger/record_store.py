"""Entity records in Redis and the indexes kept beside them: the providers set, the
per-number and per-address sets of clients (inbound SMS name a number, not a client; the
console finds a client by number or address), and each client's entities.

Keys, by shard (`n:{s}:`, `notifier.ledger.shards.ShardKeys`): `rec:{ref}` (entity record
JSON) in the shard of its own ref (a client's in the client's, an appointment's in the
appointment's); `providers` (the ids of the providers whose record is in the shard, so the
clock finds them without scanning the keyspace), `phone-clients:{phone}` and
`email-clients:{email}` (the ids of the shard's clients with that number or address,
`normalised_email`: inbound SMS name a number, not a client; the console finds a client by
number or address), each in the shard of the client; `client-entities:{client id}` (the
refs of the client's appointments, prescriptions, refill requests and messages that are in
the shard: `appointment:a1`), in the shard of the entity. Each index is written with its
record, in the same transaction; readers union the shards' sets in one pipeline;
`reindex_clients` fills the last two for records written before they existed.

Two kinds of record hold what the events of many entities write, so they are kept in
parts (`PARTED_KINDS`), one per shard, each written by the events of its shard and merged
when read: a client's visits (`visits:{client}`: each appointment's entry is in the
appointment's shard) and a provider's queue (`provider_queue:{p}`: each item's entry in
the item's shard). So an event's transaction writes only its own shard's keys.

The record models are in `notifier.ledger.records`. Keys moved to shards in issue 17
(nothing reads the older `n:rec:*`, `n:providers`, `n:phone-clients:*`... keys).

Errors: on the ledger's client (`notifier.ledger.client`, as `Store` builds every part) each
Redis call raises `StoreUnavailable` when Redis cannot be reached or cannot take commands
now, and `StoreError` when it refuses one (a script error, `WRONGTYPE`); the docstrings
below name only the errors of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import redis
from pydantic import BaseModel

from notifier.errors import StoreContention, StoreError
from notifier.ledger.announcements import queue_announcement
from notifier.ledger.batch import Batch, Reply
from notifier.ledger.notifications import PREFIX
from notifier.ledger.records import (
    RECORD_TYPES,
    AppointmentRecord,
    ClientRecord,
    OpenItemRecord,
    PrescriptionRecord,
    ProviderQueueRecord,
    ProviderRecord,
    Record,
    VisitsRecord,
)
from notifier.ledger.shards import ShardKeys, shard_of_entity_id
from notifier.webhooks.catalogue import Announcement

#: Kinds of record kept one part per shard and merged when read (the module's docstring).
PARTED_KINDS = ("visits", "provider_queue")

#: A WATCHed read-modify-write tries at most this many times before `StoreContention`.
MAX_WATCH_TRIES = 50
#: The kinds of record listed in their client's `client-entities` set.
CLIENT_ENTITY_KINDS = ("appointment", "prescription", "refill_request", "message")
#: `reindex_clients` reads this many records per round trip.
REINDEX_BATCH = 500


def kept_in_parts(ref: str) -> bool:
    """Whether `ref`'s record is kept one part per shard (`PARTED_KINDS`)."""
    return ref.split(":", 1)[0] in PARTED_KINDS


def record_keys(keys: ShardKeys, ref: str) -> list[str]:
    """The keys of `ref`'s record: its one key, or a part per shard for `PARTED_KINDS`."""
    if kept_in_parts(ref):
        return [keys.record_part(ref, shard) for shard in keys.all()]
    return [keys.record(ref)]


def all_record_keys(keys: ShardKeys, refs: Sequence[str]) -> list[str]:
    """`record_keys` of each of `refs`, in order: what an MGET read by `raw_records`
    takes."""
    return [key for ref in refs for key in record_keys(keys, ref)]


def raw_records(keys: ShardKeys, refs: Sequence[str], values: Sequence[bytes | None]
                ) -> dict[str, bytes]:
    """The stored JSON of those `refs` that have a record, by ref, from `values` (an MGET
    of `all_record_keys(keys, refs)`); a record kept in parts is their merge (its JSON).
    Raises as `parse_record` for a part that no longer parses."""
    found: dict[str, bytes] = {}
    at = 0
    for ref in refs:
        width = len(record_keys(keys, ref))
        parts = [v for v in values[at:at + width] if v is not None]
        at += width
        if not parts:
            continue
        if width == 1:
            found[ref] = parts[0]
        else:
            kind = ref.split(":", 1)[0]
            found[ref] = merge_parts([parse_record(kind, v) for v in parts]
                                     ).model_dump_json().encode()
    return found


def merge_parts(parts: Sequence[Record]) -> Record:
    """One record from its shards' parts (`PARTED_KINDS`, at least one part): a client's
    visits with every part's upcoming visits and the latest completion, a provider's queue
    with every part's items; `updated_at` the latest."""
    first = parts[0]
    updated = max(p.updated_at for p in parts)
    if isinstance(first, VisitsRecord):
        visits = [p for p in parts if isinstance(p, VisitsRecord)]
        completed = [v.last_completed_on for v in visits if v.last_completed_on is not None]
        upcoming = {a: start for v in visits for a, start in v.upcoming.items()}
        return VisitsRecord(updated_at=updated, upcoming=upcoming,
                            last_completed_on=max(completed) if completed else None)
    if isinstance(first, ProviderQueueRecord):
        items = {ref: item for p in parts if isinstance(p, ProviderQueueRecord)
                 for ref, item in p.items.items()}
        return ProviderQueueRecord(updated_at=updated, items=items)
    return first


def part_for(keys: ShardKeys, record: BaseModel, shard: int) -> BaseModel:
    """Shard `shard`'s part of a record kept in parts: the entries of the entities of that
    shard (a visit by its appointment's id, an item by its ref), and the rest of the
    record as it is; any other record as it is."""
    if isinstance(record, VisitsRecord):
        return record.model_copy(update={"upcoming": {
            a: start for a, start in record.upcoming.items()
            if shard_of_entity_id(a, keys.count) == shard}})
    if isinstance(record, ProviderQueueRecord):
        return record.model_copy(update={"items": {
            ref: item for ref, item in record.items.items() if keys.of_ref(ref) == shard}})
    return record


@lru_cache(maxsize=4096)
def parse_record(kind: str, raw: bytes) -> Record:
    """A record from its stored JSON. Cached by the exact bytes: a client's record is read
    for every message they get, and validating it (email addresses, phone numbers, zones)
    costs more than the Redis round trip. Records are frozen, so sharing them is safe.
    Raises KeyError for an unknown kind and pydantic's ValidationError for JSON that does
    not fit the model."""
    return RECORD_TYPES[kind].model_validate_json(raw)


def parse_records(keys: ShardKeys, refs: Sequence[str], values: Sequence[bytes | None]
                  ) -> dict[str, Record]:
    """The records of `refs` from their stored JSON (`values`, an MGET of
    `all_record_keys(keys, refs)`), by ref, parts merged; a ref with no value is left
    out. Raises as `parse_record`."""
    return {ref: parse_record(ref.split(":", 1)[0], raw)
            for ref, raw in raw_records(keys, refs, values).items()}


def legacy_phone_key(phone: str) -> str:
    """The one-client-per-number string older versions wrote (last write won); still read,
    never written, so numbers indexed before the upgrade keep working."""
    return f"{PREFIX}phone:{phone}"


def normalised_email(email: str) -> str:
    """`email` as the per-address index keys it: stripped and lower-cased. The part before
    the @ is case-sensitive by the letter of RFC 5321, but no mail provider in use treats
    it so, and people type addresses in any case: an operator looking up `Ana@Example.com`
    means `ana@example.com`. Two clients whose addresses differ only in case are both
    listed, which is the safe way to be wrong."""
    return email.strip().lower()


def _index_changes(before: Mapping[str, BaseModel], after: Mapping[str, BaseModel],
                   value_of: Callable[[ClientRecord], str | None]
                   ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(value, client id) pairs to take out of and put into a per-value index of clients
    when the records `after` replace `before`: see `phone_index_changes`."""
    leave: list[tuple[str, str]] = []
    join: list[tuple[str, str]] = []
    for ref, record in after.items():
        if not isinstance(record, ClientRecord):
            continue
        old = before.get(ref)
        old_value = value_of(old) if isinstance(old, ClientRecord) else None
        new_value = value_of(record)
        if old_value and old_value != new_value:
            leave.append((old_value, record.client.id))
        if new_value:
            join.append((new_value, record.client.id))
    return leave, join


def phone_index_changes(before: Mapping[str, BaseModel], after: Mapping[str, BaseModel]
                        ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(phone, client id) pairs to take out of and put into the per-number sets when the
    records `after` replace `before` (the same refs, as stored until now; a ref missing
    from `before` is a new client). A client whose number changed or went leaves the old
    number's set."""
    return _index_changes(before, after, lambda r: r.client.phone)


def email_index_changes(before: Mapping[str, BaseModel], after: Mapping[str, BaseModel]
                        ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(normalised email, client id) pairs to take out of and put into the per-address
    sets, as `phone_index_changes` does for numbers: a client whose address changed (other
    than in case) or went leaves the old address's set."""
    return _index_changes(before, after, lambda r: normalised_email(r.client.email)
                          if r.client.email else None)


def client_of(record: BaseModel) -> str | None:
    """The id of the client an appointment, prescription, refill request or message
    belongs to; None for other records and for a tombstone that never named one."""
    if isinstance(record, AppointmentRecord):
        return record.appointment.client_id
    if isinstance(record, PrescriptionRecord):
        return record.prescription.client_id
    if isinstance(record, OpenItemRecord):
        return record.client_id
    return None


def set_record(pipe: Any, keys: ShardKeys, ref: str, record: BaseModel,
               shard: int | None = None) -> None:
    """Queue the write of one record on `pipe`, with the indexes kept beside it, all in
    the record's shard; a record kept in parts writes the part of `shard` (the writing
    event's shard; None: the ref's own)."""
    own = keys.of_ref(ref)
    if kept_in_parts(ref):
        at = own if shard is None else shard
        pipe.set(keys.record_part(ref, at), part_for(keys, record, at).model_dump_json())
    else:
        pipe.set(keys.record(ref), record.model_dump_json())
    if isinstance(record, ProviderRecord):
        pipe.sadd(keys.providers(own), record.provider.id)
    # The console's client page lists these; a ref stays when its record names another
    # client later (the reader checks), and is never removed, like the record itself.
    client_id = client_of(record)
    if client_id and ref.split(":", 1)[0] in CLIENT_ENTITY_KINDS:
        pipe.sadd(keys.client_entities(own, client_id), ref)


def write_records(pipe: Any, keys: ShardKeys, records: Mapping[str, BaseModel],
                  before: Mapping[str, BaseModel], shard: int | None = None) -> None:
    """Queue the writes of `records` on `pipe` (`set_record`; `shard`: the writing
    event's), and move their clients between the per-number and per-address sets (in
    the client's shard): `before` holds the stored versions of the client records among
    them (`PlanWriter.write_targets`), so a client whose number or address changed
    leaves the old set."""
    for ref, record in records.items():
        set_record(pipe, keys, ref, record, shard)

    def at(client_id: str) -> int:
        return keys.of_ref(f"client:{client_id}")

    # Inbound SMS name a number; these sets find every client it belongs to.
    leave, join = phone_index_changes(before, records)
    for phone, client_id in leave:
        pipe.srem(keys.phone_clients(at(client_id), phone), client_id)
    for phone, client_id in join:
        pipe.sadd(keys.phone_clients(at(client_id), phone), client_id)
    # The console finds a client by address.
    leave, join = email_index_changes(before, records)
    for email, client_id in leave:
        pipe.srem(keys.email_clients(at(client_id), email), client_id)
    for email, client_id in join:
        pipe.sadd(keys.email_clients(at(client_id), email), client_id)


class RecordStore:
    """Reading and writing entity records; finding providers and the clients of a number."""

    def __init__(self, client: redis.Redis, keys: ShardKeys) -> None:
        """`keys`: the ledger's shard keys (records, their indexes and a record's
        announcements are in shards)."""
        # redis-py types its replies as a sync|async union; the client here is sync.
        self.redis: Any = client
        self.keys = keys

    def load_records(self, refs: list[str], pipe: Any = None) -> dict[str, Record]:
        """The stored records of `refs` (`client:c1`), by ref; a ref with no record is left
        out, a record kept in parts is merged. Read in one MGET (split per slot on a
        cluster), on `pipe` when given (a WATCHing pipeline reads at once: its refs must
        then be of one shard). A record that no longer parses raises as `parse_record`
        says."""
        if not refs:
            return {}
        values = (pipe or self.redis).mget(all_record_keys(self.keys, refs))
        return parse_records(self.keys, refs, values)

    def queue_raw_records(self, batch: Batch, refs: list[str]) -> Reply[dict[str, bytes]]:
        """The stored JSON of those `refs` that have a record, by ref (a record kept in
        parts, merged), in one MGET queued on `batch`; `parse_record(kind, raw)` makes each
        a record (parsed one by one, so a record that no longer parses fails only what
        needs it)."""
        if not refs:
            return Reply(dict)
        return batch.call("mget", all_record_keys(self.keys, refs),
                          parse=lambda values: raw_records(self.keys, refs, values))

    def load_record(self, ref: str) -> Record | None:
        """The stored record of `ref`, or None when there is none."""
        return self.load_records([ref]).get(ref)

    def update_record(self, ref: str, change: Callable[[Record | None], Record | None],
                      announce: Sequence[Announcement] = ()) -> bool:
        """Change one record atomically (WATCH, retried on a concurrent write); `change`
        returns the new record, or None to leave it as it is. When it changes, `announce`
        is written to the delivery-webhook outbox in the same transaction. Returns whether
        it changed. Raises `StoreContention` when concurrent writes win `MAX_WATCH_TRIES`
        times in a row, `StoreError` for a kind kept in parts (no one key to watch)."""
        if kept_in_parts(ref):
            raise StoreError(f"record {ref} is kept in parts: written by events only")
        key = self.keys.record(ref)
        for _ in range(MAX_WATCH_TRIES):
            with self.redis.pipeline() as pipe:
                try:
                    pipe.watch(key)
                    updated = change(self.load_records([ref], pipe).get(ref))
                    if updated is None:
                        return False
                    pipe.multi()
                    set_record(pipe, self.keys, ref, updated)
                    for announcement in announce:
                        # In the shard of `ref` (its subject's, for a reply about it):
                        # one slot with the record once records are sharded.
                        queue_announcement(pipe, self.keys, announcement,
                                           self.keys.of_ref(ref))
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue
        raise StoreContention(f"record {ref} changed under every one of "
                              f"{MAX_WATCH_TRIES} tries to update it")

    def _members(self, key_of: Callable[[int], str]) -> set[str]:
        """The union of a per-shard set over every shard (`key_of(shard)`), one round
        trip."""
        with self.redis.pipeline(transaction=False) as pipe:
            for shard in self.keys.all():
                pipe.smembers(key_of(shard))
            return {m.decode() for found in pipe.execute() for m in found}

    def provider_ids(self) -> list[str]:
        """The id of every provider with a record, sorted: the shards' `providers` sets,
        in one round trip."""
        return sorted(self._members(self.keys.providers))

    def providers(self) -> list[ProviderRecord]:
        """Every provider's record, by id."""
        records = self.load_records([f"provider:{i}" for i in self.provider_ids()])
        return [r for r in records.values() if isinstance(r, ProviderRecord)]

    def phone_client_ids(self, phone: str) -> list[str]:
        """The ids in every shard's set of clients with number `phone`, sorted (one round
        trip); an id whose record no longer has the number may be among them."""
        return sorted(self._members(lambda s: self.keys.phone_clients(s, phone)))

    def clients_for_phone(self, phone: str) -> list[ClientRecord]:
        """Every client whose current number is `phone`, by id. Reads the per-number sets
        of every shard and the string older versions wrote; each candidate's record must
        still carry the number, so an entry left behind by a change (or by the old index)
        finds no one."""
        with self.redis.pipeline(transaction=False) as pipe:
            for shard in self.keys.all():
                pipe.smembers(self.keys.phone_clients(shard, phone))
            pipe.get(legacy_phone_key(phone))
            *members, legacy = pipe.execute()
        ids = ({m.decode() for found in members for m in found}
               | ({legacy.decode()} if legacy else set()))
        records = self.load_records([f"client:{i}" for i in sorted(ids)])
        return [r for r in records.values()
                if isinstance(r, ClientRecord) and r.client.phone == phone]

    def clients_for_email(self, email: str) -> list[ClientRecord]:
        """Every client whose current address is `email` once normalised
        (`normalised_email`), by id; a record that no longer carries it is left out."""
        wanted = normalised_email(email)
        ids = sorted(self._members(lambda s: self.keys.email_clients(s, wanted)))
        records = self.load_records([f"client:{i}" for i in ids])
        return [r for r in records.values() if isinstance(r, ClientRecord)
                and r.client.email is not None and normalised_email(r.client.email) == wanted]

    def client_entity_refs(self, client_ids: list[str]) -> dict[str, list[str]]:
        """The refs listed in each client's `client-entities` sets (every shard's), sorted,
        by client id, in one round trip. A ref may name a record that now belongs to
        another client (an appointment moved): the caller checks `client_of`."""
        if not client_ids:
            return {}
        batch = Batch(self.redis)
        replies = {c: self.queue_client_entity_refs(batch, c) for c in client_ids}
        batch.run()
        return {c: reply.get() for c, reply in replies.items()}

    def queue_client_entity_refs(self, batch: Batch, client_id: str) -> Reply[list[str]]:
        """The refs of every shard's `client-entities` set of `client_id`, sorted, queued
        on `batch` (a SMEMBERS per shard)."""
        found: list[Reply[set[str]]] = [
            batch.call("smembers", self.keys.client_entities(shard, client_id),
                       parse=lambda members: {m.decode() for m in members})
            for shard in self.keys.all()]
        return Reply(lambda: sorted(set().union(*(f.get() for f in found))))

    def reindex_clients(self, batch: int = REINDEX_BATCH) -> tuple[int, int, int]:
        """Fill the per-address sets and the client-entities sets from the records stored
        (those written before the sets existed): one SCAN of every shard's records, each
        `batch` of matching keys read in one MGET and indexed in one pipeline. It only
        adds, so running it again (or beside live writes) changes nothing. Returns
        (clients with an address indexed, entities indexed, records skipped because they
        no longer parse)."""
        wanted = ("client", *CLIENT_ENTITY_KINDS)
        totals = [0, 0, 0]
        refs: list[str] = []
        for key in self.redis.scan_iter(match=PREFIX + "{*}:rec:*", count=1000):
            ref = key.decode().split(":rec:", 1)[1]
            if ref.split(":", 1)[0] in wanted:
                refs.append(ref)
            if len(refs) >= batch:
                self._index_clients(refs, totals)
                refs = []
        if refs:
            self._index_clients(refs, totals)
        return totals[0], totals[1], totals[2]

    def _index_clients(self, refs: list[str], totals: list[int]) -> None:
        """`reindex_clients` of one batch of refs: one MGET, one pipeline of SADDs; adds
        to `totals` (clients, entities, unreadable)."""
        raws = self.redis.mget([self.keys.record(r) for r in refs])
        with self.redis.pipeline(transaction=False) as pipe:
            for ref, raw in zip(refs, raws, strict=True):
                if raw is None:  # deleted since the SCAN saw it
                    continue
                try:
                    record = parse_record(ref.split(":", 1)[0], raw)
                except ValueError:  # pydantic's ValidationError is a ValueError
                    totals[2] += 1
                    continue
                if isinstance(record, ClientRecord) and record.client.email:
                    pipe.sadd(self.keys.email_clients(
                        self.keys.of_ref(ref), normalised_email(record.client.email)),
                        record.client.id)
                    totals[0] += 1
                elif (client_id := client_of(record)) is not None:
                    pipe.sadd(self.keys.client_entities(self.keys.of_ref(ref), client_id),
                              ref)
                    totals[1] += 1
            pipe.execute()
