"""Entity records in Redis and the indexes kept beside them: the providers set, the
per-number and per-address sets of clients (inbound SMS name a number, not a client; the
console finds a client by number or address), and each client's entities.

Keys (all under `n:`): `rec:{ref}` (entity record JSON), `providers` (the id of every
provider with a record, so the clock finds them without scanning the keyspace),
`phone-clients:{phone}` (the ids of every client with that number), `email-clients:{email}`
(the ids of every client with that address, `normalised_email`), `client-entities:{client
id}` (the refs of the client's appointments, prescriptions, refill requests and messages:
`appointment:a1`). Each index is written with its record, in the same transaction;
`reindex_clients` fills the last two for records written before they existed. The record
models are in `notifier.ledger.records`.

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

from notifier.errors import StoreContention
from notifier.ledger.announcements import queue_announcement
from notifier.ledger.batch import Batch, Reply
from notifier.ledger.notifications import PREFIX
from notifier.ledger.records import (
    RECORD_TYPES,
    AppointmentRecord,
    ClientRecord,
    OpenItemRecord,
    PrescriptionRecord,
    ProviderRecord,
    Record,
)
from notifier.ledger.shards import ShardKeys
from notifier.webhooks.catalogue import Announcement

#: The id of every provider with a record; written with the record, in its transaction.
PROVIDERS = PREFIX + "providers"
#: Set once `PROVIDERS` holds every provider, including those stored before it existed.
PROVIDERS_INDEXED = PREFIX + "providers:indexed"
#: A WATCHed read-modify-write tries at most this many times before `StoreContention`.
MAX_WATCH_TRIES = 50
#: The kinds of record listed in their client's `client-entities` set.
CLIENT_ENTITY_KINDS = ("appointment", "prescription", "refill_request", "message")
#: `reindex_clients` reads this many records per round trip.
REINDEX_BATCH = 500


def record_key(ref: str) -> str:
    """The key of an entity record's JSON: `n:rec:{ref}`."""
    return f"{PREFIX}rec:{ref}"


@lru_cache(maxsize=4096)
def parse_record(kind: str, raw: bytes) -> Record:
    """A record from its stored JSON. Cached by the exact bytes: a client's record is read
    for every message they get, and validating it (email addresses, phone numbers, zones)
    costs more than the Redis round trip. Records are frozen, so sharing them is safe.
    Raises KeyError for an unknown kind and pydantic's ValidationError for JSON that does
    not fit the model."""
    return RECORD_TYPES[kind].model_validate_json(raw)


def parse_records(refs: list[str], values: list[bytes | None]) -> dict[str, Record]:
    """The records of `refs` from their stored JSON (`values`, as an MGET of their keys
    returns them), by ref; a ref with no value is left out. Raises as `parse_record`."""
    return {ref: parse_record(ref.split(":", 1)[0], value)
            for ref, value in zip(refs, values, strict=True) if value is not None}


def legacy_phone_key(phone: str) -> str:
    """The one-client-per-number string older versions wrote (last write won); still read,
    never written, so numbers indexed before the upgrade keep working."""
    return f"{PREFIX}phone:{phone}"


def phone_clients_key(phone: str) -> str:
    """The set of ids of every client with this number: a family may share one phone."""
    return f"{PREFIX}phone-clients:{phone}"


def email_clients_key(email: str) -> str:
    """The set of ids of every client with this address (`normalised_email`)."""
    return f"{PREFIX}email-clients:{normalised_email(email)}"


def client_entities_key(client_id: str) -> str:
    """The set of the refs of a client's appointments, prescriptions, refill requests and
    messages (`appointment:a1`)."""
    return f"{PREFIX}client-entities:{client_id}"


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


def set_record(pipe: Any, ref: str, record: BaseModel) -> None:
    """Queue the write of one record on `pipe`, with the indexes kept beside it."""
    pipe.set(record_key(ref), record.model_dump_json())
    if isinstance(record, ProviderRecord):
        pipe.sadd(PROVIDERS, record.provider.id)
    # The console's client page lists these; a ref stays when its record names another
    # client later (the reader checks), and is never removed, like the record itself.
    client_id = client_of(record)
    if client_id and ref.split(":", 1)[0] in CLIENT_ENTITY_KINDS:
        pipe.sadd(client_entities_key(client_id), ref)


def write_records(pipe: Any, records: Mapping[str, BaseModel],
                  before: Mapping[str, BaseModel]) -> None:
    """Queue the writes of `records` on `pipe`, and move their clients between the
    per-number and per-address sets: `before` holds the stored versions of the client
    records among them (`PlanWriter.write_targets`), so a client whose number or address
    changed leaves the old set."""
    for ref, record in records.items():
        set_record(pipe, ref, record)
    # Inbound SMS name a number; these sets find every client it belongs to.
    leave, join = phone_index_changes(before, records)
    for phone, client_id in leave:
        pipe.srem(phone_clients_key(phone), client_id)
    for phone, client_id in join:
        pipe.sadd(phone_clients_key(phone), client_id)
    # The console finds a client by address.
    leave, join = email_index_changes(before, records)
    for email, client_id in leave:
        pipe.srem(email_clients_key(email), client_id)
    for email, client_id in join:
        pipe.sadd(email_clients_key(email), client_id)


class RecordStore:
    """Reading and writing entity records; finding providers and the clients of a number."""

    def __init__(self, client: redis.Redis, keys: ShardKeys) -> None:
        """`keys`: the ledger's shard keys (a record's announcements go to a shard's
        outbox)."""
        # redis-py types its replies as a sync|async union; the client here is sync.
        self.redis: Any = client
        self.keys = keys

    def load_records(self, refs: list[str], pipe: Any = None) -> dict[str, Record]:
        """The stored records of `refs` (`client:c1`), by ref; a ref with no record is left
        out. Read in one MGET, on `pipe` when given (a WATCHing pipeline reads at once). A
        record that no longer parses raises as `parse_record` says."""
        if not refs:
            return {}
        return parse_records(refs, (pipe or self.redis).mget([record_key(r) for r in refs]))

    def queue_raw_records(self, batch: Batch, refs: list[str]) -> Reply[dict[str, bytes]]:
        """The stored JSON of those `refs` that have a record, by ref, in one MGET queued on
        `batch`; `parse_record(kind, raw)` makes each a record (parsed one by one, so a
        record that no longer parses fails only what needs it)."""
        if not refs:
            return Reply(dict)

        def found(values: list[bytes | None]) -> dict[str, bytes]:
            return {ref: value for ref, value in zip(refs, values, strict=True)
                    if value is not None}

        return batch.call("mget", [record_key(r) for r in refs], parse=found)

    def load_record(self, ref: str) -> Record | None:
        """The stored record of `ref`, or None when there is none."""
        return self.load_records([ref]).get(ref)

    def update_record(self, ref: str, change: Callable[[Record | None], Record | None],
                      announce: Sequence[Announcement] = ()) -> bool:
        """Change one record atomically (WATCH, retried on a concurrent write); `change`
        returns the new record, or None to leave it as it is. When it changes, `announce`
        is written to the delivery-webhook outbox in the same transaction. Returns whether
        it changed. Raises `StoreContention` when concurrent writes win `MAX_WATCH_TRIES`
        times in a row."""
        key = record_key(ref)
        for _ in range(MAX_WATCH_TRIES):
            with self.redis.pipeline() as pipe:
                try:
                    pipe.watch(key)
                    updated = change(self.load_records([ref], pipe).get(ref))
                    if updated is None:
                        return False
                    pipe.multi()
                    set_record(pipe, ref, updated)
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


    def clients_for_email(self, email: str) -> list[ClientRecord]:
        """Every client whose current address is `email` once normalised
        (`normalised_email`), by id; a record that no longer carries it is left out."""
        wanted = normalised_email(email)
        ids = sorted(m.decode() for m in self.redis.smembers(email_clients_key(wanted)))
        records = self.load_records([f"client:{i}" for i in ids])
        return [r for r in records.values() if isinstance(r, ClientRecord)
                and r.client.email is not None and normalised_email(r.client.email) == wanted]

    def client_entity_refs(self, client_ids: list[str]) -> dict[str, list[str]]:
        """The refs listed in each client's `client-entities` set, sorted, by client id, in
        one round trip. A ref may name a record that now belongs to another client (an
        appointment moved): the caller checks `client_of`."""
        if not client_ids:
            return {}
        with self.redis.pipeline(transaction=False) as pipe:
            for client_id in client_ids:
                pipe.smembers(client_entities_key(client_id))
            members = pipe.execute()
        return {c: sorted(m.decode() for m in found)
                for c, found in zip(client_ids, members, strict=True)}

    def reindex_clients(self, batch: int = REINDEX_BATCH) -> tuple[int, int, int]:
        """Fill the per-address sets and the client-entities sets from the records stored
        (those written before the sets existed): one SCAN of `n:rec:*`, each `batch` of
        matching keys read in one MGET and indexed in one pipeline. It only adds, so
        running it again (or beside live writes) changes nothing. Returns (clients with an
        address indexed, entities indexed, records skipped because they no longer
        parse)."""
        prefix = record_key("")
        wanted = ("client", *CLIENT_ENTITY_KINDS)
        totals = [0, 0, 0]
        refs: list[str] = []
        for key in self.redis.scan_iter(match=prefix + "*", count=1000):
            ref = key.decode().removeprefix(prefix)
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
        raws = self.redis.mget([record_key(r) for r in refs])
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
                    pipe.sadd(email_clients_key(record.client.email), record.client.id)
                    totals[0] += 1
                elif (client_id := client_of(record)) is not None:
                    pipe.sadd(client_entities_key(client_id), ref)
                    totals[1] += 1
            pipe.execute()
