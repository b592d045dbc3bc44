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

    @property
    def failed(self) -> bool:
        """Whether the run broke a promise: a loss, a duplicate outside the windows, a
        permanent failure not recorded, a ledger that disagrees, an unexpected message, or
        one of `problems`."""
        return bool(self.lost or self.dup_outside or self.unrecorded_failure
                    or self.ledger_disagrees or self.unexpected or self.problems)


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
