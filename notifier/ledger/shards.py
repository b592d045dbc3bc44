"""The ledger's partition into shards: which shard a notification is in, and the keys of
a shard (issue 17: the ledger on Redis Cluster).

Partition by entity; the slot unit is the shard. The scripts move a notification between
the schedule and the in-flight set atomically with its hash (`notif_claim.lua`,
`notif_begin.lua`, `notif_finish.lua`…), so a notification's hash must share a hash slot
with the schedule it is on: the hash tag is the *shard* number, not a client id, and a
shard's keys are all in one slot:

    n:{7}:schedule          scheduled ids by due time (epoch seconds)
    n:{7}:inflight          claimed ids by lease end
    n:{7}:notif:{id}        a notification's hash
    n:{7}:by-entity:{ref}   the ids planned about entity `ref`
    n:{7}:clock             the clock lease on the shard (`notifier.ledger.shard_leases`)

A notification belongs to the shard of its entity: the appointment, prescription, refill
request or message it is about, the provider for a digest, the client for a client-level
notice. Every notification id has the form `{kind}:{entity_id}:{occasion}:{channel}`,
`entity_id` being the id part of its entity ref (`policy/common.py` `for_client` and
`for_support`, `policy/digest.py`, the console's copies `….again{n}` and invites sent
again `…:invite{n}.seq{s}:email`, fallbacks on another channel in `ledger/deliveries.py`),
and ids never hold ':' or '{' (intake's `Id` pattern). So an id locates its own shard with
no lookup: shard = CRC16 of the entity id part mod the shard count (`redis.crc.key_slot`,
the CRC Redis Cluster itself uses). That is why entity beats client as the partition:
delivery reports, the read API and the console's links carry only notification ids, and a
partition by client would need a lookup of the owner on every one of them. A plan's
cancel of an entity (its index and its ids) stays in one shard for the same reason.

The tag comes right after the prefix: Redis hashes the first `{…}` of a key, and the
prefix `n:` holds none, so an id with braces (none passes intake, but a key is built from
whatever it is given) cannot take a notification's key to another slot.

How the count reaches the key builders: a `ShardKeys` (the count, and the keys built
with it) is made once by `Store` from `NOTIFIER_LEDGER_SHARDS` and held by `Schedule`;
every part that builds these keys is given it. Not a module-level count set at start-up:
tests run stores with 16, 4 and 1 shards in one process, and a process-wide setting
would leak from one into the next (or into a thread of another test still running).

The count is part of the data (a notification's key names its shard), so it is written
once, `n:shards` SET NX, and a process whose setting differs refuses to start
(`check_shards`, at start-up): with another count it would look for every notification
in the wrong place.

Events, turns and records are in shards too (`notifier.ledger.events`, `.turns`,
`.record_store`): an event, its subject's queue, turn and held closes in the subject's
shard (an event without a subject in its id's: `of_event`), a record in its own
entity's, a client's visits and a provider's queue one part per shard, the clients'
and providers' indexes one set per shard; so applying an event is one shard's
transaction, and what spans shards is read across them.

Not sharded yet (a later step of issue 17 tags them): `n:stats:*` (outcomes, lateness,
the daily counts), `n:wh:outbox` and `n:wh:seq`, `n:awaiting-report`,
`n:by-recipient:*`, `n:audit`; the scripts above still name them beside a shard's keys,
which one Redis takes and a cluster would refuse.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from redis.crc import key_slot

from notifier.errors import ConfigError

#: Key prefix of every key Notifier writes.
PREFIX = "n:"
#: Shards by default: a 3-master cluster spreads 16 evenly enough, and one Redis pays only
#: 16 small sorted sets for it.
DEFAULT_SHARDS = 16
#: The most shards `NOTIFIER_LEDGER_SHARDS` takes: the clock reads every shard's schedule
#: in one pipeline, so the count bounds a tick's reads.
MAX_SHARDS = 1024
#: The shard count the ledger was written with (`check_shards`).
SHARDS_KEY = PREFIX + "shards"


def entity_id_of_notification(notification_id: str) -> str:
    """The entity id part of `{kind}:{entity_id}:{occasion}:{channel}`; an id without
    that form (tests write a few, `n01`) is its own entity."""
    parts = notification_id.split(":", 2)
    return parts[1] if len(parts) > 1 else notification_id


def shard_of_entity_id(entity_id: str, shards: int) -> int:
    """The shard (0 .. `shards` - 1) of an entity's notifications: CRC16 of its id, as
    Redis Cluster computes it, mod `shards`."""
    return key_slot(entity_id.encode()) % shards


def shard_of_ref(ref: str, shards: int) -> int:
    """The shard of entity `ref` (`appointment:a1` -> the shard of `a1`)."""
    return shard_of_entity_id(ref.split(":", 1)[-1], shards)


def shard_of_notification(notification_id: str, shards: int) -> int:
    """The shard of a notification: its entity's, read from its id (no lookup)."""
    return shard_of_entity_id(entity_id_of_notification(notification_id), shards)


@dataclass(frozen=True)
class ShardKeys:
    """The keys of the sharded families for a ledger of `count` shards. ValueError for a
    count outside 1..MAX_SHARDS."""

    count: int = DEFAULT_SHARDS

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise ValueError(f"shards: 1..{MAX_SHARDS}, got {self.count}")

    def all(self) -> range:
        """Every shard number."""
        return range(self.count)

    def tag(self, shard: int) -> str:
        """The prefix of a shard's keys, `n:{7}:`."""
        return f"{PREFIX}{{{shard}}}:"

    def schedule(self, shard: int) -> str:
        """A shard's schedule: ids by due time (epoch seconds)."""
        return self.tag(shard) + "schedule"

    def inflight(self, shard: int) -> str:
        """A shard's claimed ids, by lease end (epoch seconds)."""
        return self.tag(shard) + "inflight"

    def clock_lease(self, shard: int) -> str:
        """The clock lease on a shard: the holding clock's token, with an expiry."""
        return self.tag(shard) + "clock"

    def of_notification(self, notification_id: str) -> int:
        """`shard_of_notification` at this count."""
        return shard_of_notification(notification_id, self.count)

    def of_ref(self, ref: str) -> int:
        """`shard_of_ref` at this count."""
        return shard_of_ref(ref, self.count)

    def notif(self, notification_id: str) -> str:
        """A notification's hash, in its entity's shard."""
        return f"{self.tag(self.of_notification(notification_id))}notif:{notification_id}"

    def by_entity(self, ref: str) -> str:
        """The ids of the notifications planned about entity `ref`, in its shard."""
        return f"{self.tag(self.of_ref(ref))}by-entity:{ref}"

    # Events and turns (`notifier.ledger.events`, `notifier.ledger.turns`): an event is in
    # its subject's shard, so applying it (event, queue, turn, held closes) is one slot.
    def of_event(self, event_id: str, subject: str | None) -> int:
        """The shard of an event: its subject's (an entity ref); an event stored without
        a subject is in the shard of its own id."""
        return self.of_ref(subject) if subject else shard_of_entity_id(event_id, self.count)

    def event(self, shard: int, event_id: str) -> str:
        """A stored event's hash, `n:{s}:event:{id}`, in shard `shard` (`of_event`)."""
        return f"{self.tag(shard)}event:{event_id}"

    def events_pending(self, shard: int) -> str:
        """A shard's accepted, unapplied events, by arrival (epoch seconds)."""
        return self.tag(shard) + "events:pending"

    def events_held(self, shard: int) -> str:
        """A shard's held closes, by the end of their wait (epoch seconds)."""
        return self.tag(shard) + "events:held"

    def events_set_aside(self, shard: int) -> str:
        """A shard's count of events set aside (`rejected` / `failed` -> count)."""
        return self.tag(shard) + "stats:events-set-aside"

    def subject_queue(self, ref: str) -> str:
        """A subject's queue of unapplied events, in the subject's shard."""
        return f"{self.tag(self.of_ref(ref))}subject-queue:{ref}"

    def held(self, ref: str) -> str:
        """A subject's held closes, in the subject's shard."""
        return f"{self.tag(self.of_ref(ref))}held:{ref}"

    def turn(self, ref: str) -> str:
        """The token of the worker whose turn it is on subject `ref`, in its shard."""
        return f"{self.tag(self.of_ref(ref))}turn:{ref}"

    def turns(self, shard: int) -> str:
        """A shard's subjects whose turn is taken, by lease end (epoch seconds)."""
        return self.tag(shard) + "turns"

    # Records and their indexes (`notifier.ledger.record_store`).
    def record(self, ref: str) -> str:
        """An entity's record, `n:{s}:rec:{ref}`, in the entity's own shard."""
        return f"{self.tag(self.of_ref(ref))}rec:{ref}"

    def record_part(self, ref: str, shard: int) -> str:
        """Shard `shard`'s part of a record kept in parts (`record_store.PARTED_KINDS`: a
        client's visits, a provider's queue), written by the events of that shard."""
        return f"{self.tag(shard)}rec:{ref}"

    def providers(self, shard: int) -> str:
        """The ids of the providers whose record is in `shard`."""
        return self.tag(shard) + "providers"

    def phone_clients(self, shard: int, phone: str) -> str:
        """The ids of the clients of `shard` with this number."""
        return f"{self.tag(shard)}phone-clients:{phone}"

    def email_clients(self, shard: int, email: str) -> str:
        """The ids of the clients of `shard` with this (normalised) address."""
        return f"{self.tag(shard)}email-clients:{email}"

    def client_entities(self, shard: int, client_id: str) -> str:
        """The refs of a client's entities that are in `shard`."""
        return f"{self.tag(shard)}client-entities:{client_id}"

    def refs_by_shard(self, refs: Iterable[str]) -> dict[int, list[str]]:
        """Entity `refs` grouped by shard, each group in the order given."""
        groups: dict[int, list[str]] = {}
        for ref in refs:
            groups.setdefault(self.of_ref(ref), []).append(ref)
        return groups

    def by_shard(self, notification_ids: Iterable[str]) -> dict[int, list[str]]:
        """`notification_ids` grouped by shard, each group in the order given."""
        groups: dict[int, list[str]] = {}
        for i in notification_ids:
            groups.setdefault(self.of_notification(i), []).append(i)
        return groups


def check_shards(client: Any, shards: int) -> int:
    """At start-up: record `shards` as the ledger's count if none is (SET NX on
    `SHARDS_KEY`), and refuse one that differs from the count recorded. Returns the
    count. Raises ConfigError naming both counts; the ledger's errors as its client
    raises them (`StoreUnavailable`)."""
    with client.pipeline(transaction=False) as pipe:
        pipe.set(SHARDS_KEY, shards, nx=True)
        pipe.get(SHARDS_KEY)
        _, stored = pipe.execute()
    if int(stored) != shards:
        raise ConfigError(
            f"NOTIFIER_LEDGER_SHARDS: {shards}, but the ledger in Redis was written with "
            f"{int(stored)} shards (the count is part of every notification's key): set "
            f"it back to {int(stored)}")
    return shards


def ledger_keys(client: Any) -> ShardKeys:
    """The `ShardKeys` of the ledger in Redis, at the count it records (`DEFAULT_SHARDS`
    when none is recorded yet): for tools that look at a running service's ledger from
    outside (the chaos and benchmark suites, tests). One round trip."""
    stored = client.get(SHARDS_KEY)
    return ShardKeys(int(stored) if stored is not None else DEFAULT_SHARDS)
