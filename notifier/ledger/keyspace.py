"""Every family of keys Notifier (and dramatiq, under its namespace) writes in Redis: how
each expires, or why it need not and what keeps it bounded.

`tests/end_to_end/test_key_expiry.py` runs a realistic flow (events applied, held and
cancelled, messages sent, replies, a digest, the clock's trimming), then SCANs the whole
keyspace: a key matching no family fails it, and so does a key without an expiry in a
family that promises one. The README's key table says the same, in short.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase


@dataclass(frozen=True)
class KeyFamily:
    """Keys matching `pattern` (a glob). `expires`: how they expire ("" when they never
    do); `bounded_by`: what keeps the family (or one key of it) from growing for ever."""

    pattern: str
    expires: str
    bounded_by: str


#: dramatiq's namespace on Redis, which `notifier.worker.actors.build_broker` gives it.
BROKER_NAMESPACE = "notifier-dq"
_DQ = BROKER_NAMESPACE

#: In the order a key is matched: the first family whose pattern matches names it.
KEY_FAMILIES: tuple[KeyFamily, ...] = (
    # The sharded families (`notifier.ledger.shards`), `n:{shard}:…`.
    KeyFamily("n:{*}:notif:*", "when it ends: the retention, plus the history",
              "pending ones by their shard's schedule; the clock retires an ended one to a "
              "content-free row at the retention"),
    KeyFamily("n:{*}:schedule", "", "one per shard: scheduled notifications, each leaves "
              "when claimed or cancelled"),
    KeyFamily("n:{*}:inflight", "", "one per shard: claimed notifications, at most 5,000 in "
              "all shards (the clock's cap)"),
    KeyFamily("n:{*}:by-entity:*", "180 days after its last add",
              "the clock trims ids gone or retired"),
    KeyFamily("n:{*}:clock", "the clock's shard lease (5 s) unless renewed", ""),
    KeyFamily("n:{*}:wh:outbox", "", "one per shard: changes to announce to delivery "
              "webhooks; the clock fans out each of its shards' outboxes, up to 2,000 "
              "entries a tick (200 while claiming a burst)"),
    KeyFamily("n:{*}:wh:seq", "", "one counter per shard"),
    KeyFamily("n:{*}:wh:once:*", "7 days", ""),
    KeyFamily("n:clocks", "twice the shard lease after the last clock's beat",
              "one entry per live clock"),
    KeyFamily("n:shards", "", "one number: the shard count the ledger was written with"),
    KeyFamily("n:{*}:mark", "", "one per shard: that the shard holds the ledger's data "
              "(`ledger.shard_marks`)"),
    KeyFamily("n:{*}:awaiting-report", "", "one per shard: messages sent through Twilio "
              "or SendGrid with no final delivery report: each leaves on one, or when the "
              "clock's repair job looks it up after the wait (or drops it, its "
              "notification gone)"),
    KeyFamily("n:{*}:by-recipient:*", "the latest due time in it, plus the retention and the "
              "history", "the clock trims ids gone, or ended and past the retention"),
    # Before `n:{*}:stats:*`: the first family that matches names a key.
    KeyFamily("n:{*}:stats:sent:*", "3 days after its day's last send counted",
              "one hash per shard and UTC day, a field per hour and channel "
              "(`ledger.daily`)"),
    KeyFamily("n:{*}:stats:failed:*", "8 days after its day's last failure counted",
              "one hash per shard and UTC day, a field per channel and provider code"),
    KeyFamily("n:{*}:stats:*", "", "one per shard: counters, a field per state and "
              "channel, per kind, channel and lateness bucket"),
    KeyFamily("n:{*}:audit", "", "one per shard: operators' actions on its "
              "notifications: each XADD trims those older than NOTIFIER_CONSOLE_AUDIT_DAYS"),
    KeyFamily("n:stats:refused:*", "8 days after its day's last refusal counted",
              "one hash per UTC day, a field per event type refused at the door (422)"),
    KeyFamily("n:stats:*", "", "counters: a few fields each (report look-ups, events "
              "applied)"),
    # Events, turns and held closes, in their subject's shard.
    KeyFamily("n:{*}:event:*", "30 days once applied (or stale, ignored, rejected, failed)",
              "unapplied ones by their shard's `events:pending`, held ones by the 24-hour "
              "wait"),
    KeyFamily("n:{*}:events:*", "", "one each per shard: events accepted and not applied "
              "yet, or held (at most 24 hours)"),
    KeyFamily("n:{*}:held:*", "", "a subject's held closes (at most 24 hours)"),
    KeyFamily("n:{*}:subject-queue:*", "", "a subject's unapplied events; deleted when "
              "empty"),
    KeyFamily("n:{*}:turn:*", "the lease", ""),
    KeyFamily("n:{*}:turns", "", "one per shard: subjects whose turn is taken; swept when "
              "the lease runs out"),
    KeyFamily("n:{*}:rec:*", "", "one record per entity the integrator sent: what makes a "
              "late event stale and what the rules read; it grows with the practice "
              "(a few hundred bytes per appointment), not with time"),
    KeyFamily("n:{*}:providers", "", "one per shard: one id per provider of the shard"),
    KeyFamily("n:{*}:phone-clients:*", "", "one set per number in use; a client leaves it "
              "when its number changes, and an empty set is no key"),
    KeyFamily("n:phone:*", "", "written by older versions only"),
    KeyFamily("n:{*}:email-clients:*", "", "one set per address in use (lower-cased); a client "
              "leaves it when its address changes, and an empty set is no key"),
    KeyFamily("n:{*}:client-entities:*", "", "one set per client and shard: the refs of its "
              "appointments, prescriptions, refill requests and messages, never removed; "
              "it grows with the records of `n:rec:*` it names (with the practice), not "
              "with time"),
    KeyFamily("n:{0}:sms-optout", "", "one entry per opted-out number: an opt-out holds until "
              "the number opts back in"),
    KeyFamily("n:rate:*", "a day", ""),
    KeyFamily("n:short:*", "90 days after the link was last made", ""),
    KeyFamily("n:short-for:*", "90 days after the link was last made", ""),
    KeyFamily("n:fhir-fills:*", "400 days after its MedicationRequest's last dispense", ""),
    KeyFamily("n:fhir-rx:*", "400 days after its MedicationRequest was last posted", ""),
    KeyFamily("n:callbacks:unknown", "", "the last 1,000 reports about unknown ids"),
    KeyFamily("n:job:*", "3 days (a cron fire); the repair job's turn: 10 minutes while a run "
              "is queued, a minute from a run's start, 110 s while it runs", ""),
    KeyFamily("n:wh:{*}:msg:*", "14 days after the message was made", ""),
    KeyFamily("n:wh:{*}:due", "", "an endpoint's pending messages: each ends within the "
              "27.6 hours of the retry schedule, or waits while the endpoint is disabled "
              "and is dropped when claimed after its 14 days"),
    KeyFamily("n:wh:{*}:inflight", "", "at most an endpoint's `max_in_flight`"),
    KeyFamily("n:wh:{*}:pending", "", "an endpoint's pending messages; the clock trims "
              "those past 14 days"),
    KeyFamily("n:wh:{*}:log", "", "an endpoint's messages of the last 14 days; the clock "
              "trims older ones"),
    KeyFamily("n:wh:{*}:ep", "", "one per endpoint configured: its counts and health"),
    KeyFamily("n:audit", "", "the console's page views and sign-ins: each XADD trims those "
              "older than NOTIFIER_CONSOLE_AUDIT_DAYS (six years by default)"),
    KeyFamily("n:console:signed-out:*", "12 hours: when the session would have ended", ""),
    KeyFamily("n:console:limits:*", "15 minutes: the sign-in throttle's window", ""),
    KeyFamily(f"{_DQ}:__heartbeats__", "", "one entry per live worker (dramatiq's "
              "maintenance drops the dead)"),
    KeyFamily(f"{_DQ}:__acks__.*", "", "a worker's messages in hand; a dead worker's go "
              "back to their queue (dramatiq's maintenance)"),
    KeyFamily(f"{_DQ}:*.XQ*", "", "dead-lettered messages, purged by dramatiq after 7 "
              "days (`dead_message_ttl`)"),
    KeyFamily(f"{_DQ}:*", "", "queued and delayed messages, deleted when acknowledged"),
)


def family_of(key: str) -> KeyFamily | None:
    """The family `key` belongs to, or None for a key no family names."""
    return next((f for f in KEY_FAMILIES if fnmatchcase(key, f.pattern)), None)
