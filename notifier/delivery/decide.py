"""What to do with a notification that is due: the send-time rules, without Redis.

`decide(notification, facts, now)` looks at the stored notification, what has been read
about the world so far (`Facts`) and the time, and answers with one `Decision`:

- `Read(fact)`: a fact the next rule needs is not read yet (the deliverer reads it and asks
  again; a fact is only ever read when a rule gets that far, as few round trips as can be);
- `SendToClient` / `SendToSupport` / `SendDigest`: compose and send, with these records;
- `HoldUntil(due, reason)`: back on the schedule until `due`, not counted as an attempt;
- `FinishAs(state, reason)`: a final state (`expired`, `suppressed`, `failed`, `sent`);
- `UseOtherChannel(reason)`: `suppressed` here, and planned on the client's other channel.

The rules, in order: a delivery report for a send whose answer was lost (it went out);
expiry; an accepted event about it not yet applied; then by recipient.
A client's: their details, quiet hours, a visit nudge no longer wanted, a message about a
booking the client never heard of, the channel closed to them, the video link gone. A
support alert by SMS needs a support phone; a provider digest needs something open.

The deliverer (`delivery.deliverer`) does the reading, the composing and the acting; the
outcome it returns is an `Outcome`.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from notifier.config import Settings
from notifier.delivery.compose import Stored
from notifier.delivery.fallback import closed_reason, needs_opt_out
from notifier.delivery.sms_budget import OverBudget
from notifier.ledger.records import (
    AppointmentRecord,
    ClientRecord,
    PrescriptionRecord,
    ProviderQueueRecord,
    ProviderRecord,
    Record,
    VisitsRecord,
)
from notifier.policy.appointments import Told, told_of_booking
from notifier.policy.common import PLANNED_AFTER_EXPIRY, QUIET_HOURS_PAST_EXPIRY
from notifier.policy.figures import Policy
from notifier.policy.plan import entity_ref
from notifier.policy.timing import hold_for_quiet_hours
from notifier.policy.visits import unwanted_because

#: Nudges to book a visit, checked against the client's bookings when they go out.
VISIT_NUDGES = frozenset({"follow_up", "visit_required"})
#: How long to wait for a client's details when a notification names an unknown client.
WAIT_FOR_CLIENT_S = 60.0
#: How long to wait, again and again, while an accepted event about a notification's subject
#: is not yet applied (applying takes milliseconds; a dead worker's turn, one lease).
WAIT_FOR_EVENTS_S = 1.0
#: Kinds that speak of a booking the client knows: sent only when they were told of it.
ABOUT_A_KNOWN_BOOKING = frozenset({"appointment_updated", "appointment_cancelled"})
NEVER_TOLD = "the client was never told of this booking"
SENT_AS_CONFIRMATION = "sent as a confirmation: the client was never told of the earlier time"
#: The hash field marking a send whose answer was lost (`errors.MaybeSent`): its time,
#: epoch seconds (`lost_answer_hold`, `reported_after_lost_answer`).
MAYBE_SENT_AT = "maybe_sent_at"
REPORTED_AFTER_LOST_ANSWER = "sent: the provider reported it after its answer was lost"
#: While another message about the appointment is being sent, a message that depends on its
#: outcome is put back this long (plus up to as much again, jittered).
WAIT_FOR_SENDING_S = 1.0


class Outcome(StrEnum):
    """What `Deliverer.deliver` did with a notification (compares equal to its value)."""

    # final: the ledger state it was left in
    SENT = "sent"
    FAILED = "failed"
    EXPIRED = "expired"
    SUPPRESSED = "suppressed"
    CANCELLED = "cancelled"
    # back on the schedule: a retry (counted), or a hold (not counted)
    RETRYING = "retrying"
    WAITING = "waiting"
    HELD = "held"
    PACED = "paced"
    #: sent, but Redis would not record it: left `sending` for the recovery
    UNRECORDED = "unrecorded"
    #: Redis failed before it was sent, or while it was put back: left in flight or
    #: `sending`, taken again when its lease runs out
    LEASED = "leased"
    #: its lease ran out and another worker took it over (the sender was paused past it):
    #: not sent, nothing written; left to the one that took it
    TAKEN_OVER = "taken_over"
    #: sent after its lease was lost, when its send was already recorded or it ended
    #: another way meanwhile: recorded as a second send (`sent_again` in the outcomes)
    SENT_AGAIN = "sent_again"
    # not taken (`begin`'s verdict): gone, not due yet, or another worker holds its lease
    MISSING = "missing"
    NOT_DUE = "not_due"
    BUSY = "busy"


FinalState = Literal["sent", "failed", "expired", "suppressed"]
Fact = Literal["unapplied", "records", "told", "opted_out"]


@dataclass(frozen=True)
class Facts:
    """What has been read about the world for one decision; None: not read (yet)."""

    #: whether an accepted event about one of `subjects_of(n)` is not yet applied
    unapplied: bool | None = None
    #: the records of `record_refs(n)` that exist, by ref
    records: Mapping[str, Record] | None = None
    #: whether the client heard of the booking (`told_of`), for `ABOUT_A_KNOWN_BOOKING`
    told: Told | None = None
    #: whether the client's phone replied STOP to our sender
    opted_out: bool | None = None


@dataclass(frozen=True)
class Read:
    """Read `fact` (for `opted_out`: about `phone`) and decide again."""

    fact: Fact
    phone: str = ""


@dataclass(frozen=True)
class SendToClient:
    #: the notification as it goes out (kind and join link as they are now)
    n: Stored
    client: ClientRecord
    provider: ProviderRecord | None
    prescription: PrescriptionRecord | None
    #: for the ledger with the `sent` state
    note: str = ""


@dataclass(frozen=True)
class SendToSupport:
    n: Stored
    provider: ProviderRecord | None


@dataclass(frozen=True)
class SendDigest:
    n: Stored
    provider: ProviderRecord
    queue: ProviderQueueRecord


@dataclass(frozen=True)
class HoldUntil:
    """Back on the schedule at `due`; `outcome` is what `deliver` reports."""

    due: datetime
    reason: str
    outcome: Outcome
    not_an_attempt: bool = True
    #: a send-rate slot reserved for it (epoch seconds), kept across the hold
    slot: float = 0.0
    #: more fields for its hash (`MAYBE_SENT_AT`)
    fields: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class FinishAs:
    state: FinalState
    reason: str
    #: more fields for the ledger entry (a provider code, SMS sizes)
    fields: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class UseOtherChannel:
    """`suppressed` on this channel; the same message planned on the client's other one."""

    client: ClientRecord
    reason: str
    fields: Mapping[str, object] = field(default_factory=dict)


Send = SendToClient | SendToSupport | SendDigest
#: A decision that changes the ledger without sending anything.
NoSend = HoldUntil | FinishAs | UseOtherChannel
Decision = Read | Send | NoSend


def decide(n: Stored, facts: Facts, now: datetime, *, policy: Policy, settings: Settings,
           rng: random.Random) -> Decision:
    """The next step for `n` at `now`, given what is known. Draws from `rng` only to jitter
    the wait for another message about the same booking."""
    reported = reported_after_lost_answer(n)
    if reported is not None:
        return reported
    if now >= n.expires_at:
        return FinishAs("expired", expired_because(n, now))
    if facts.unapplied is None:
        return Read("unapplied")
    if facts.unapplied:
        return wait_for_events(now)
    if n.recipient == "client":
        return _for_client(n, facts, now, policy, rng)
    if n.recipient == "support":
        # Support alerts ignore quiet hours; SMS only when a support phone is set.
        if n.channel == "sms" and not settings.support_phone:
            return FinishAs("suppressed", "NOTIFIER_SUPPORT_PHONE is not set")
        if facts.records is None:
            return Read("records")
        provider = facts.records.get(entity_ref("provider", n.params.get("provider_id", "")))
        return SendToSupport(n, provider if isinstance(provider, ProviderRecord) else None)
    if n.recipient == "provider":
        # The digest lists what is open when it is sent; nothing open, no email.
        if facts.records is None:
            return Read("records")
        provider = facts.records.get(entity_ref("provider", n.recipient_id))
        queue = facts.records.get(entity_ref("provider_queue", n.recipient_id))
        if not isinstance(provider, ProviderRecord):
            return FinishAs("suppressed", "unknown provider")
        if not isinstance(queue, ProviderQueueRecord) or not queue.items:
            return FinishAs("suppressed", "nothing open")
        return SendDigest(n, provider, queue)
    return FinishAs("failed", f"no route for recipient {n.recipient}")


def _for_client(n: Stored, facts: Facts, now: datetime, policy: Policy,
                rng: random.Random) -> Decision:
    """Checks against the client as they are now."""
    if facts.records is None:
        return Read("records")
    records = facts.records
    client = records.get(entity_ref("client", n.recipient_id))
    if not isinstance(client, ClientRecord):
        due = now + timedelta(seconds=WAIT_FOR_CLIENT_S)
        if due >= n.expires_at:
            return FinishAs("suppressed", "client details never arrived")
        return HoldUntil(due, "waiting for client details", Outcome.WAITING)
    held = hold_for_quiet_hours(now, client.client.zone, policy.quiet_hours)
    if held > now:
        if held >= n.expires_at:
            return FinishAs("expired", QUIET_HOURS_PAST_EXPIRY)
        return HoldUntil(held, "quiet hours", Outcome.HELD)
    if n.kind in VISIT_NUDGES:
        visits = records.get(entity_ref("visits", n.recipient_id))
        unwanted = unwanted_because(n.kind, visits if isinstance(visits, VisitsRecord)
                                    else None, now, n.expires_at)
        if unwanted:
            return FinishAs("suppressed", unwanted)
    note = ""
    if n.kind in ABOUT_A_KNOWN_BOOKING:
        # Before the channel checks: nothing about a booking the client never heard of
        # goes out, on this channel or the other.
        if facts.told is None:
            return Read("told")
        if facts.told == "wait":
            due = now + timedelta(seconds=WAIT_FOR_SENDING_S * (1 + rng.random()))
            return HoldUntil(due, "waiting for another message about this appointment to be "
                             "sent", Outcome.WAITING)
        if facts.told == "never":
            if n.kind == "appointment_cancelled":
                return FinishAs("suppressed", NEVER_TOLD)
            # A reschedule of a booking never announced announces the new time.
            n, note = replace(n, kind="appointment_confirmation"), SENT_AS_CONFIRMATION
    if needs_opt_out(n.channel, client) and facts.opted_out is None:
        return Read("opted_out", phone=str(client.client.phone))
    closed = closed_reason(n.channel, client, bool(facts.opted_out))
    if closed:
        return UseOtherChannel(client, closed)
    appt = records.get(entity_ref("appointment", n.params.get("appointment_id", "")))
    if isinstance(appt, AppointmentRecord):
        # The video link is the appointment's as it is now: one changed without a
        # reschedule must not send the client to the old room.
        join_url = str(appt.appointment.join_url) if appt.appointment.join_url else None
        if n.kind == "appointment_join_link" and join_url is None:
            return FinishAs("suppressed", "the visit no longer has a video link")
        n = replace(n, params={**n.params, "join_url": join_url})
    provider = records.get(entity_ref("provider", n.params.get("provider_id", "")))
    rx = records.get(entity_ref("prescription", n.params.get("prescription_id", "")))
    return SendToClient(n, client, provider if isinstance(provider, ProviderRecord) else None,
                        rx if isinstance(rx, PrescriptionRecord) else None, note)


def over_budget(exc: OverBudget, client: ClientRecord) -> UseOtherChannel:
    """The last step of the budget rule: an SMS that cannot fit is not sent as SMS at all,
    but by email instead."""
    return UseOtherChannel(client, f"over the SMS budget: {exc}",
                           {"sms_encoding": exc.size.encoding, "sms_segments": exc.size.segments})


def lost_answer_hold(retry: HoldUntil | FinishAs, report_wait_s: float | None,
                     sent_at: datetime) -> HoldUntil | FinishAs:
    """The retry after a send whose answer was lost (`errors.MaybeSent`), tried at
    `sent_at`: when a delivery report can tell whether it went out (`report_wait_s` not
    None; the retry's due time was computed with at least that wait), marked with
    `MAYBE_SENT_AT`, so the next attempt looks for a report first
    (`reported_after_lost_answer`). Otherwise, and when the retry gave up (expiry, max
    attempts), `retry` as it is."""
    if report_wait_s is None or not isinstance(retry, HoldUntil):
        return retry
    return replace(retry, reason=retry.reason + "; waiting for a delivery report first",
                   fields={MAYBE_SENT_AT: sent_at.timestamp()})


def reported_after_lost_answer(n: Stored) -> FinishAs | None:
    """`sent` (at the lost answer's time, so counted once and in the lateness) when a send
    of `n` whose answer was lost (`n.maybe_sent_at`) has since been reported on by the
    provider (any status: a report names only a message it took); None otherwise, and the
    message is sent again (a missed reminder is the worse failure)."""
    if n.maybe_sent_at is None or not n.reported:
        return None
    return FinishAs("sent", REPORTED_AFTER_LOST_ANSWER,
                    {"sent_at": n.maybe_sent_at.timestamp()})


def wait_for_events(now: datetime) -> HoldUntil:
    """An event about it was accepted (202) and is not applied yet: it may cancel or
    change this message, so nothing goes out ahead of what is already known."""
    return HoldUntil(now + timedelta(seconds=WAIT_FOR_EVENTS_S),
                     "waiting for an accepted event about it to be applied", Outcome.WAITING)


def last_look(superseded: bool, unapplied: bool, now: datetime) -> HoldUntil | None:
    """Just before the provider's call: rendering and pacing take time, and an event about
    it may have been accepted, or applied and superseded it, meanwhile."""
    if superseded:
        return HoldUntil(now, "superseded while being prepared", Outcome.CANCELLED,
                         not_an_attempt=False)
    if unapplied:
        return wait_for_events(now)
    return None


def paced(n: Stored, slot: datetime, now: datetime) -> HoldUntil | FinishAs | None:
    """The send held for its sender's next free slot (`slot`, reserved once), if not now."""
    if slot <= now:
        return None
    if slot >= n.expires_at:
        return FinishAs("expired", "the send rate could not fit it in before it expired")
    return HoldUntil(slot, "paced by the send rate", Outcome.PACED, slot=slot.timestamp())


def record_refs(n: Stored) -> list[str]:
    """The records the rules and the message of `n` need, read in one round trip."""
    if n.recipient == "client":
        refs = [entity_ref("client", n.recipient_id)]
        for kind, key in (("provider", "provider_id"), ("prescription", "prescription_id"),
                          ("appointment", "appointment_id")):
            if n.params.get(key):
                refs.append(entity_ref(kind, n.params[key]))
        if n.kind in VISIT_NUDGES:
            refs.append(entity_ref("visits", n.recipient_id))
        return refs
    if n.recipient == "support":
        return [entity_ref("provider", n.params.get("provider_id", ""))]
    if n.recipient == "provider":
        return [entity_ref("provider", n.recipient_id),
                entity_ref("provider_queue", n.recipient_id)]
    return []


def told_of(n: Stored, about: Mapping[str, tuple[str, str] | None]) -> Told:
    """Whether the client heard of this booking, from `about`: (recipient, state) of every
    notification indexed under the appointment (`Store.about_entity`), None for one whose
    entry expired. Only other client notifications count: the same message on another
    channel decides the same way (and two of them being sent at once must not wait for
    each other)."""
    message = n.id.rsplit(":", 1)[0]
    states: Iterable[str | None] = (
        entry[1] if entry is not None else None
        for other, entry in about.items()
        if other.rsplit(":", 1)[0] != message and (entry is None or entry[0] == "client"))
    return told_of_booking(states)


def subjects_of(n: Stored) -> list[str]:
    """The subjects (see `policy.ordering`) whose unapplied events could change `n`: what it
    is about, the appointment or prescription it names, and its client."""
    refs = [n.entity] if n.entity else []
    for kind, key in (("appointment", "appointment_id"), ("prescription", "prescription_id")):
        if n.params.get(key):
            refs.append(entity_ref(kind, n.params[key]))
    if n.recipient == "client":
        refs.append(entity_ref("client", n.recipient_id))
    return list(dict.fromkeys(refs))


def expired_because(n: Stored, now: datetime) -> str:
    """Why `n` is past its expiry when a worker takes it at `now`: it was planned that way
    (an event applied after the moment it was about), or the workers reached it late (none
    running, or a backlog); the lateness says how late."""
    if n.created_at is not None and n.created_at >= n.expires_at:
        return PLANNED_AFTER_EXPIRY
    return (f"the workers reached it only after its expiry, "
            f"{_duration(now - n.due_at)} after it was due")


def _duration(span: timedelta) -> str:
    """A span as a person reads it: `40 s`, `12 min`, `3 h 5 min`, `2 days 4 h`."""
    seconds = max(0, int(span.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} day{'s' if days != 1 else ''}" + (f" {hours} h" if hours else "")
    if hours:
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    return f"{minutes} min" if minutes else f"{seconds} s"
