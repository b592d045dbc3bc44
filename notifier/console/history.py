"""A notification's history as its hash keeps it, read back: pure.

The scripts that change a notification's state append an entry each (`_webhook_emit.lua`,
`note_history`): fields `h1`, `h2`, ... and `hn` the number of changes, each value
"{epoch seconds} {state} {note}" cut to at most 64 bytes. At most `HISTORY_MAX` are
kept: past that the newest replaces the last (`left_out` says how many are missing). A
delivery report's state is `report:{status}` (its note the provider's code). The planned
state is no entry: the hash's `created` says when it was planned. Hashes written before
the history was kept, and retired rows (`index_trim.lua` drops it), have no entry at all.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime

from notifier.ledger.notifications import from_epoch

#: The prefix of a delivery report's entry (`report:delivered`).
REPORT = "report:"
#: Entries a hash keeps (`HISTORY_MAX` of `_webhook_emit.lua`; a test checks they agree).
HISTORY_MAX = 16


def left_out(fields: dict[str, str]) -> int:
    """How many changes of the notification its history does not hold: those between
    the first `HISTORY_MAX` - 1 entries and the latest, once there were more (`hn`, the
    number of changes, past `HISTORY_MAX`); 0 for a whole history or none."""
    count = fields.get("hn", "")
    return max(0, int(count) - HISTORY_MAX) if count.isdigit() else 0


@dataclass(frozen=True)
class HistoryEntry:
    """One step: when (UTC), what (a state, or a delivery report's status), and its note
    (a reason, an attempt's number, a provider's code; "" for none)."""

    at: datetime
    state: str
    note: str
    #: whether it is a provider's delivery report rather than a state change
    report: bool = False


def parse_history(fields: dict[str, str]) -> list[HistoryEntry]:
    """The entries of a notification's decoded hash `fields`, oldest first (by their number:
    the order the scripts wrote them), preceded by `planned` at `created` (epoch seconds)
    when the hash says when it was planned. An entry that does not read (no time, a time
    that is not a number) is skipped rather than failing the page; a hash with no history
    (older versions, retired rows) gives only `planned`, or []."""
    entries: list[HistoryEntry] = []
    if fields.get("created"):
        with contextlib.suppress(ValueError, OverflowError, OSError):
            entries.append(HistoryEntry(from_epoch(fields["created"]), "planned", ""))
    numbered = sorted((int(name[1:]), value) for name, value in fields.items()
                      if name[:1] == "h" and name[1:].isdigit())
    for _, value in numbered:
        stamp, _, rest = value.partition(" ")
        state, _, note = rest.partition(" ")
        try:
            at = from_epoch(stamp)
        except (ValueError, OverflowError, OSError):
            continue
        if not state:
            continue
        report = state.startswith(REPORT)
        entries.append(HistoryEntry(at, state.removeprefix(REPORT) if report else state,
                                    note, report))
    return entries
