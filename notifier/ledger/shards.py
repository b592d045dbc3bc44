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
    n:{7}:wh:outbox         the shard's delivery-webhook outbox, `wh:seq` its counter

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

Also per shard, written by the scripts beside a notification's keys and read across the
shards (one pipeline, summed or merged):

    n:{7}:stats:outcomes               final states per state and channel
    n:{7}:stats:lateness               send lateness per kind and channel
    n:{7}:stats:sent:{day}             a day's sends per hour and channel
    n:{7}:stats:failed:{day}           a day's failures per channel and code
    n:{7}:awaiting-report              sends awaiting a final delivery report
    n:{7}:by-recipient:{to}:{to_id}    the recipient's notifications in the shard
    n:{7}:audit                        operators' actions on the shard's notifications
    n:{7}:wh:outbox, n:{7}:wh:seq      the shard's delivery-webhook outbox and counter:
                                       a message's `data.sequence` is counter x S + shard
                                       (`announced_sequence`)

So every notification script's keys are one shard's. Events, turns and records are in
shards too (`notifier.ledger.events`, `.turns`, `.record_store`): an event, its subject's
queue, turn and held closes in the subject's shard (an event without a subject in its
id's: `of_event`), a record in its own entity's, a client's visits and a provider's queue
one part per shard, the clients' and providers' indexes one set per shard; so applying an
event is one shard's transaction, and what spans shards is read across them. What an
event adds is named after its subject; the one effect on another entity, a refill request
cancelling its prescription's reminders, is that shard's own transaction, committed first
(`notifier.ledger.plans`, `PlanWriter._cancel_elsewhere`). Each shard's mark
(`notifier.ledger.shard_marks`) tells a shard that lost its data from a new one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
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
#: The shard of the SMS opt-out set and of its announcements (`notifier.ledger.optouts`).
OPT_OUTS_SHARD = 0
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

    def webhook_outbox(self, shard: int) -> str:
        """A shard's delivery-webhook outbox: a list of the changes to announce, written by
        the script (or transaction) that makes each change (`lua/_webhook_emit.lua`)."""
        return self.tag(shard) + "wh:outbox"

    def webhook_seq(self, shard: int) -> str:
        """A shard's outbox counter: an entry holds its value n, announced as
        `announced_sequence(n, shard)`."""
        return self.tag(shard) + "wh:seq"

    def webhook_once(self, shard: int, key: str) -> str:
        """The key marking a change announced once (`Announcement.once`), in the shard of
        the announcement it guards."""
        return f"{self.tag(shard)}wh:once:{key}"

    def announced_sequence(self, counter: int, shard: int) -> int:
        """The `data.sequence` of the entry numbered `counter` in `shard`'s outbox:
        counter x S + shard. Unique across shards (it names its shard mod S) and growing
        with every entry of one shard, so with every change of one notification (all of
        them are in its shard)."""
        return counter * self.count + shard

    def sms_opt_outs(self) -> str:
        """The numbers opted out of SMS, one set in shard `OPT_OUTS_SHARD` (why there:
        `notifier.ledger.optouts`)."""
        return self.tag(OPT_OUTS_SHARD) + "sms-optout"

    def of_subject(self, subject_id: str) -> int:
        """The shard of an announcement about `subject_id` (an appointment, a client, an
        event): `shard_of_entity_id` of it, so an announcement about an entity is in the
        shard of the entity's notifications and records."""
        return shard_of_entity_id(subject_id, self.count)

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

    def outcomes(self, shard: int) -> str:
        """A shard's count of final states: `{state}:{channel}` -> notifications (readers
        sum the shards)."""
        return self.tag(shard) + "stats:outcomes"

    def lateness(self, shard: int) -> str:
        """A shard's send-lateness histogram (`notifications.LATENESS_BUCKETS_S`)."""
        return self.tag(shard) + "stats:lateness"

    def sent_daily(self, shard: int, day: date) -> str:
        """A shard's sends of UTC `day` per hour and channel (`notifier.ledger.daily`):
        `n:{7}:stats:sent:2026-11-30`."""
        return f"{self.tag(shard)}stats:sent:{day.isoformat()}"

    def failed_daily(self, shard: int, day: date) -> str:
        """A shard's failures of UTC `day` per channel and code: `n:{7}:stats:failed:…`."""
        return f"{self.tag(shard)}stats:failed:{day.isoformat()}"

    def awaiting_report(self, shard: int) -> str:
        """A shard's sends awaiting a final delivery report, by look-up time
        (`notifier.ledger.reports`)."""
        return self.tag(shard) + "awaiting-report"

    def by_recipient(self, shard: int, recipient: str, recipient_id: str) -> str:
        """A recipient's notifications in one shard, by due time (epoch seconds): the read
        API merges the shards' (`recipient_indexes`)."""
        return f"{self.tag(shard)}by-recipient:{recipient}:{recipient_id}"

    def recipient_index_of(self, notification_id: str, recipient: str,
                           recipient_id: str) -> str:
        """The recipient index a notification joins: its recipient's, in its shard."""
        return self.by_recipient(self.of_notification(notification_id), recipient,
                                 recipient_id)

    def recipient_indexes(self, recipient: str, recipient_id: str) -> list[str]:
        """A recipient's index in every shard, in shard order."""
        return [self.by_recipient(s, recipient, recipient_id) for s in self.all()]

    def audit(self, shard: int) -> str:
        """A shard's stream of operators' actions on what the shard holds: an action's
        entry is written in the script of its change, so in its shard. Page views and
        sign-ins stay in the global `n:audit` (`notifier.console.audit`, which merges
        them). A script of a fixed shard (opt-outs) passes that shard's."""
        return self.tag(shard) + "audit"

    def audit_streams(self) -> list[str]:
        """Every shard's audit stream, in shard order."""
        return [self.audit(s) for s in self.all()]

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


def share_out(counts: Iterable[tuple[int, int]], budget: int) -> list[tuple[int, int]]:
    """`(shard, take)` for each of `counts` (`(shard, how many are waiting)`, in the order
    to serve them) that gets something, each taking what it has until `budget` is spent:
    how a claim over several shards splits its limit."""
    takes: list[tuple[int, int]] = []
    for shard, count in counts:
        take = min(count, budget)
        if take > 0:
            takes.append((shard, take))
            budget -= take
    return takes


#: Keys only a ledger written before shards holds (their families moved under a shard's
#: tag): a Redis with any of them is refused, not read as empty (`check_shards`).
PRE_SHARD_KEYS = ("n:schedule", "n:inflight", "n:events:pending", "n:wh:outbox")
PRE_SHARD_PREFIXES = ("n:notif:", "n:event:", "n:rec:", "n:by-entity:", "n:by-recipient:")
#: How many keys `check_shards` looks at for them: a ledger that held anything has records
#: (never expired), so one is found in the first pages of a SCAN.
PRE_SHARD_SCAN = 100_000


def pre_shard_keys(client: Any, limit: int = PRE_SHARD_SCAN) -> list[str]:
    """Keys (at most a few) of a ledger written before shards, among the first `limit`
    keys of a SCAN and `PRE_SHARD_KEYS`; [] for none."""
    with client.pipeline(transaction=False) as pipe:
        for key in PRE_SHARD_KEYS:
            pipe.exists(key)
        found = [k for k, n in zip(PRE_SHARD_KEYS, pipe.execute(), strict=True) if n]
    for i, key in enumerate(client.scan_iter(match="n:[a-z]*", count=1000)):
        if i >= limit or len(found) >= 3:
            break
        text = key.decode() if isinstance(key, bytes) else str(key)
        if text.startswith(PRE_SHARD_PREFIXES):
            found.append(text)
    return found


def check_shards(client: Any, shards: int) -> int:
    """At start-up: record `shards` as the ledger's count if none is (SET NX on
    `SHARDS_KEY`), and refuse one that differs from the count recorded. Returns the
    count. The first time (no count recorded), also refuse a Redis holding a ledger
    written before shards (`pre_shard_keys`): this version would read it as empty, so
    events posted again would send what was sent, and the reminders it holds would never
    go. Raises ConfigError naming both counts, or the old keys found; the ledger's errors
    as its client raises them (`StoreUnavailable`)."""
    if client.get(SHARDS_KEY) is None:
        old = pre_shard_keys(client)
        if old:
            raise ConfigError(
                f"this Redis holds a ledger written before shards ({', '.join(old)}), "
                "which this version does not read (nothing is migrated; issue 17): start "
                "on an empty Redis (for `notifier dev`, remove var/redis/)")
    with client.pipeline(transaction=False) as pipe:
        pipe.set(SHARDS_KEY, shards, nx=True)
        pipe.get(SHARDS_KEY)
        _, stored = pipe.execute()
    if int(stored) != shards:
        raise count_mismatch(shards, int(stored))
    return shards


def count_mismatch(shards: int, stored: int) -> ConfigError:
    """The error of a process set to `shards` on a ledger written with `stored`."""
    return ConfigError(
        f"NOTIFIER_LEDGER_SHARDS: {shards}, but the ledger in Redis was written with "
        f"{stored} shards (the count is part of every notification's key): set it back "
        f"to {stored}")


def ledger_keys(client: Any) -> ShardKeys:
    """The `ShardKeys` of the ledger in Redis, at the count it records (`DEFAULT_SHARDS`
    when none is recorded yet): for tools that look at a running service's ledger from
    outside (the chaos and benchmark suites, tests). One round trip."""
    stored = client.get(SHARDS_KEY)
    return ShardKeys(int(stored) if stored is not None else DEFAULT_SHARDS)
