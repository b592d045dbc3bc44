"""What an experiment's copies and ledger say, pure: sent, lost, and each duplicate sorted
into the windows README "At most one send per notification" documents, or outside them.

A duplicate is a copy of a notification's message beyond the first written. It is in a
window when:

- **1, a stall in the send**: the ledger counts it (`sent_again` on the notification's
  hash), and it was written after another copy although stamped before it: its worker took
  the last look and stamped it, stalled (SIGSTOP) past its lease while another worker took
  the notification over and sent it, then resumed and wrote it. (A second send stamped
  after the other copy would have begun after its lease was lost: outside.) Through a
  stand-in, which sees only when each arrives, a copy the ledger counts is taken as this
  window (or window 2, clocks that disagree), as the README allows.
- **3, answer lost**: a provider accepted an earlier copy and its answer never came back
  (the read timed out), so the retry sent it again; the ledger cannot know of it.
- **3, killed**: an earlier copy reached a provider stand-in at most `KILLED_WITHIN_S`
  before a worker was SIGKILLed: the process may have died between the provider's answer
  and recording it. Only for a provider: the outbox answers `already_sent` exactly, so a
  killed worker's send is found, never repeated.

Any other copy is outside the windows, and fails the run.

Delivery webhooks (`tally_webhooks`): every change the ledger shows a notification went
through (planned `scheduled`, its final state, a final delivery report) and every message
the outbox made must have been received, verified, at least once (else **lost**); no
change may come under two `webhook-id`s (**two ids**: announced twice); the same id
received again is at-least-once delivery, counted (**resent**), not a failure. A message
that fails verification fails the run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bench.common import percentile

#: Seconds between a copy leaving and a SIGKILL that may have kept it from being recorded:
#: the documented window is the provider's answer plus one round trip (well under a
#: millisecond); a second allows for the stand-in's and the harness's own timing.
KILLED_WITHIN_S = 1.0
#: Ledger states that end a notification.
SENT_STATES = frozenset({"sent", "delivered"})
#: A notification's final states, each announced as `notification.{state}`
#: (`notifier.ledger.notifications.FINAL_STATES`).
FINAL_STATES = frozenset({"sent", "failed", "suppressed", "expired", "cancelled"})
#: The message a final delivery report on a sent notification announces
#: (`_webhook_emit.lua` DELIVERY_EVENTS).
REPORTED = {"delivered": "notification.delivered", "undelivered": "notification.failed",
            "failed": "notification.failed", "bounce": "notification.failed",
            "dropped": "notification.failed"}


@dataclass(frozen=True)
class Copy:
    """One message that left: `at` epoch seconds (the outbox's `sent_at`, stamped at the
    send's last look, or when the stand-in received it); `answer_lost`: the stand-in
    accepted it and held its answer past the client's timeout; `late_write`: written after
    another copy stamped later than this one."""

    at: float
    answer_lost: bool = False
    late_write: bool = False


@dataclass(frozen=True)
class Seen:
    """One notification at the end of a run: its copies, in the order they were written
    (the outbox) or arrived (a stand-in); its ledger `state`, `sent_again` count and
    `attempts`; whether a stand-in refused it permanently."""

    copies: tuple[Copy, ...]
    state: str
    sent_again: int = 0
    refused: bool = False
    attempts: int = 1
    #: the ledger's `reason` (why it is where it is)
    reason: str = ""

    def describe(self) -> str:
        """What the ledger and the copies say, for a failure's example."""
        return (f"{self.state}, {self.attempts} attempts, {len(self.copies)} copies, "
                f"{self.sent_again} recorded again" + (", refused" if self.refused else "")
                + (f": {self.reason}" if self.reason else ""))


@dataclass(frozen=True)
class Received:
    """One webhook request as the receiver got it: its `webhook-id`, the body's type and
    subject (`chaos.webhooks.subject_of`), whether its signature verified."""

    webhook_id: str
    type: str
    subject: str
    verified: bool = True


@dataclass(frozen=True)
class Made:
    """One message the outbox made for the endpoint (`n:wh:{endpoint}:log`): its id (`webhook-id`),
    type and subject."""

    webhook_id: str
    type: str
    subject: str


@dataclass
class Webhooks:
    """An experiment's delivery webhooks: messages `made` by the outbox, distinct ids
    `received` verified, receipts of an id already received (`resent`), changes never
    received (`lost`), changes received under more than one id (`two_ids`), requests
    that failed verification (`unverified`); example changes behind each failure."""

    made: int = 0
    received: int = 0
    resent: int = 0
    lost: int = 0
    two_ids: int = 0
    unverified: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return bool(self.lost or self.two_ids or self.unverified)


@dataclass
class Row:
    """One experiment's line of the table. Counts are notifications, except the duplicates
    (extra copies). `expected_failed`: refused permanently by a stand-in and `failed` in the
    ledger, as they must be; `unrecorded_failure`: refused permanently, not `failed`;
    `ledger_disagrees`: a notification whose message left while the ledger does not say
    `sent` (or that the ledger says `sent` while nothing left)."""

    experiment: str
    expected: int
    sent: int
    expected_failed: int
    dup_in_window: int
    dup_outside: int
    lost: int
    lateness_p99_s: float
    wall_s: float = 0.0
    unexpected: int = 0
    unrecorded_failure: int = 0
    ledger_disagrees: int = 0
    #: notifications tried more than once (taken over after a lost lease, or retried):
    #: how many the faults reached
    retried: int = 0
    windows: dict[str, int] = field(default_factory=dict)
    #: ids behind any failure, at most a few of each kind, each with what the ledger says
    examples: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: what else the experiment found broken (an event refused, a slow answer)
    problems: list[str] = field(default_factory=list)
    #: what became of the delivery webhooks (`tally_webhooks`)
    webhooks: Webhooks = field(default_factory=Webhooks)

    @property
    def failed(self) -> bool:
        """Whether the run broke a promise: a loss, a duplicate outside the windows, a
        permanent failure not recorded, a ledger that disagrees, an unexpected message, a
        webhook lost, announced under two ids or unverified, or one of `problems`."""
        return bool(self.lost or self.dup_outside or self.unrecorded_failure
                    or self.ledger_disagrees or self.unexpected or self.problems
                    or self.webhooks.failed)


def _why_again(earlier: Sequence[Copy], again: Copy, recorded_left: int, provider: bool,
               kills: Sequence[float]) -> str | None:
    """Which window lets the copy `again` go after `earlier`, or None."""
    if recorded_left > 0 and (provider or again.late_write):
        return "1 stalled in the send"
    if any(c.answer_lost for c in earlier):
        return "3 answer lost"
    if provider and any(0 <= k - c.at <= KILLED_WITHIN_S for c in earlier for k in kills):
        return "3 killed"
    return None


def tally(experiment: str, due: Mapping[str, float], seen: Mapping[str, Seen], *,
          provider: bool = False, kills: Sequence[float] = ()) -> Row:
    """The row for `experiment`: `due` maps each expected notification id to its due time
    (epoch seconds), `seen` what became of every notification that left or is in the
    ledger; `provider`: sent through the stand-ins (else the outbox); `kills`: when workers
    were SIGKILLed (epoch seconds)."""
    windows: dict[str, int] = {}
    examples: dict[str, list[str]] = {}
    lateness: list[float] = []
    sent = failed_ok = lost = unrecorded = disagrees = outside = retried = 0

    def example(kind: str, notification_id: str) -> None:
        ids = examples.setdefault(kind, [])
        if len(ids) < 5:
            s = seen.get(notification_id)
            ids.append(notification_id + (f" ({s.describe()})" if s else ""))

    for notification_id, due_at in due.items():
        s = seen.get(notification_id, Seen((), "unknown"))
        copies = s.copies
        retried += s.attempts > 1
        if copies:
            sent += 1
            lateness.append(min(c.at for c in copies) - due_at)
        if s.refused:
            if s.state == "failed":
                failed_ok += 1
            else:
                unrecorded += 1
                example("unrecorded failure", notification_id)
        elif not copies:
            lost += 1
            example("lost", notification_id)
        if not s.refused and bool(copies) != (s.state in SENT_STATES):
            disagrees += 1
            example("ledger disagrees", notification_id)
        recorded_left = s.sent_again
        for i in range(1, len(copies)):
            why = _why_again(copies[:i], copies[i], recorded_left, provider, kills)
            if why is None:
                outside += 1
                example("duplicate outside", notification_id)
                continue
            recorded_left -= why == "1 stalled in the send"
            windows[why] = windows.get(why, 0) + 1
    unexpected = [i for i, s in seen.items() if i not in due and s.copies]
    for notification_id in unexpected[:5]:
        example("unexpected", notification_id)
    return Row(experiment=experiment, expected=len(due), sent=sent,
               expected_failed=failed_ok, dup_in_window=sum(windows.values()),
               dup_outside=outside, lost=lost,
               lateness_p99_s=percentile(sorted(lateness), 0.99), unexpected=len(unexpected),
               unrecorded_failure=unrecorded, ledger_disagrees=disagrees, retried=retried,
               windows=windows,
               examples=examples)


def owed_webhooks(fields: Mapping[str, str]) -> set[str]:
    """The messages a notification's ledger hash (`logical` fields) says were announced:
    `notification.scheduled` unless it was planned already ended (`expired` or
    `suppressed` with no attempt), its final state, a final delivery report's."""
    state = fields.get("state", "")
    if not state:
        return set()
    owed = set()
    if not (state in ("expired", "suppressed") and fields.get("attempts", "0") == "0"):
        owed.add("notification.scheduled")
    if state in FINAL_STATES:
        owed.add(f"notification.{state}")
    if state == "sent" and fields.get("delivery", "") in REPORTED:
        owed.add(REPORTED[fields["delivery"]])
    return owed


def tally_webhooks(ledger: Mapping[str, Mapping[str, str]], made: Sequence[Made],
                   received: Sequence[Received]) -> Webhooks:
    """What became of the webhooks: `ledger` maps each notification id to check to its
    hash's fields (`owed_webhooks`), `made` is what the outbox made for the endpoint,
    `received` every request the receiver got. A change is (subject, type): lost when the
    ledger owes it or the outbox made it and no verified request brought it; under two
    ids when the messages made or received for it have more than one `webhook-id`."""
    verified = [r for r in received if r.verified]
    got = {(r.subject, r.type) for r in verified}
    ids = {r.webhook_id for r in verified}
    lost = {(i, t) for i, fields in ledger.items() for t in owed_webhooks(fields)} | {
        (m.subject, m.type) for m in made}
    lost -= got
    # Made or received: a change the outbox made twice is announced twice, received or not.
    named: dict[tuple[str, str], set[str]] = {}
    for subject, kind, webhook_id in [(m.subject, m.type, m.webhook_id) for m in made] + [
            (r.subject, r.type, r.webhook_id) for r in verified]:
        named.setdefault((subject, kind), set()).add(webhook_id)
    twice = {change: sorted(i) for change, i in named.items() if len(i) > 1}
    examples: dict[str, list[str]] = {}
    if lost:
        examples["webhook lost"] = [f"{t} {s}" for s, t in sorted(lost)[:5]]
    if twice:
        examples["webhook under two ids"] = [f"{t} {s}: {i}" for (s, t), i
                                             in sorted(twice.items())[:5]]
    bad = [r for r in received if not r.verified]
    if bad:
        examples["webhook unverified"] = [f"{r.webhook_id} {r.type} {r.subject}"
                                          for r in bad[:5]]
    return Webhooks(made=len(made), received=len(ids), resent=len(verified) - len(ids),
                    lost=len(lost), two_ids=len(twice), unverified=len(bad),
                    examples=examples)
