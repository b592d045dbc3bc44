"""How a notification's fields are laid out in its Redis hash, and read back.

Every value is kept short so that Redis stores the hash in its compact encoding (a
`ziplist` on Redis 6, a `listpack` on Redis 7) rather than a hashtable, which costs about
three times the memory. Redis keeps a hash compact while each of its values is at most
`hash-max-ziplist-value` / `hash-max-listpack-value` bytes (64 by default) and it has at
most 128 fields; one longer value converts it for good. So, when planned:

- each param is a field of its own rather than the whole params as one JSON value (200
  bytes for a reminder), named by how its value is kept: `t.{name}` a UTC time in ISO
  form (`2026-12-09T18:00:00+00:00`) as epoch seconds, when that gives back the very same
  text; `s.{name}` any other string, as it is; `p.{name}` anything else, as JSON (`0`,
  `true`). A param that is None is left out (every reader `.get`s params, which reads it
  the same);
- `reason` when empty and `attempts` when 0 are left out (the scripts' HINCRBY starts
  from 0, and readers default them);
- `kind` and `channel` are left out when the id says them: a dedupe key is
  `{kind}:{entity id}:{occasion}:{channel}` (`policy.plan.PlannedNotification`), so they
  are its first and last parts (`with_derived` puts them back, and the scripts take them
  from the id the same way);
- times (`due`, `expires`) are epoch seconds, a whole second written as an integer
  (`1797008400`, not `1797008400.0`): Redis keeps an integer-looking value in 1 to 9
  bytes instead of its text. `created` is kept to the whole second (rounded down): it
  only tells a notification planned after its expiry from one reached late.

A string or JSON param longer than 64 bytes (a meeting link with a passcode, a
231-character Teams link) is cut into pieces of at most 64 bytes, whole characters each:
the first under its own field, the others under `{field}#1`, `{field}#2`, ... Other
values can still grow past 64 bytes once the notification is under way (a long failure
`reason`): that hash then becomes a hashtable, correct but larger, and rarely pending.

Hashes written before this layout hold `params` as one JSON value, `reason` and
`attempts` always; `params_of` and `logical` read both layouts, so a notification
planned by an older version is delivered and reported the same.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from notifier.policy.plan import PlannedNotification

#: Prefixes of the fields holding one param each: a UTC time as epoch seconds, a string,
#: anything else as JSON (`t.start`, `s.appointment_id`, `p.sequence`).
TIME_PARAM, STR_PARAM, JSON_PARAM = "t.", "s.", "p."
PARAM_PREFIXES = (TIME_PARAM, STR_PARAM, JSON_PARAM)
#: The field holding every param as one JSON object, in hashes written before these.
LEGACY_PARAMS = "params"
#: The longest value Redis keeps in a compact hash by default (`hash-max-listpack-value`,
#: `hash-max-ziplist-value`); a longer param is cut into pieces of at most this.
VALUE_BYTES = 64
#: Separates a param's field from the number of one of its further pieces (`s.join_url#1`).
PIECE = "#"


def brief_number(value: float) -> int | float:
    """`value` unchanged, but as an int when it is a whole number (Redis stores an
    integer-looking value as an integer: 1 to 9 bytes instead of its text)."""
    return int(value) if value.is_integer() else value


def planned_fields(n: PlannedNotification, now: datetime) -> list[Any]:
    """The hash of a notification planned at `now`, as a flat [field, value, ...] list for
    HSET. See the module docstring for what is left out and why."""
    fields: dict[str, Any] = {
        "to": n.recipient, "to_id": n.recipient_id, "entity": n.entity,
        "due": brief_number(n.due_at.timestamp()),
        "expires": brief_number(n.expires_at.timestamp()), "state": n.state,
        "created": math.floor(now.timestamp()),
    }
    derived = _derived(n.id)
    if derived.get("kind") != n.kind:
        fields["kind"] = n.kind
    if derived.get("channel") != n.channel:
        fields["channel"] = n.channel
    if n.reason:
        fields["reason"] = n.reason
    for name, value in sorted(n.params.items()):
        if value is not None:
            fields.update(param_fields(name, value))
    return [item for pair in fields.items() for item in pair]


def _derived(notification_id: str) -> dict[str, str]:
    """`kind` and `channel` as a dedupe key says them: its first and last parts, as the
    scripts take them (`string.match(id, '^[^:]*')`, `'[^:]*$'`); {} for an id of one
    part."""
    first, sep, rest = notification_id.partition(":")
    return {"kind": first, "channel": rest.rpartition(":")[2]} if sep else {}


def with_derived(notification_id: str, fields: dict[str, str]) -> dict[str, str]:
    """A notification's decoded hash fields with `kind` and `channel` put back from its id
    where they were left out (see the module docstring); {} stays {}."""
    if not fields or ("kind" in fields and "channel" in fields):
        return fields
    return {**_derived(notification_id), **fields}


def param_fields(name: str, value: Any) -> list[tuple[str, str | int | float]]:
    """The (field, value) pairs that keep one param (not None) in the hash: one, or one
    per piece of a text longer than `VALUE_BYTES`. Raises ValueError for a name holding
    `PIECE`, which would be read back as a piece of another param."""
    if PIECE in name:
        raise ValueError(f"param name {name!r}: {PIECE!r} marks a param's pieces")
    if isinstance(value, str):
        instant = _utc_instant(value)
        if instant is not None and _utc_text(instant) == value:
            return [(TIME_PARAM + name, brief_number(instant))]
        field, text = STR_PARAM + name, value
    else:
        field, text = JSON_PARAM + name, json.dumps(value, separators=(",", ":"))
    pieces = _pieces(text)
    return [(field if i == 0 else f"{field}{PIECE}{i}", piece)
            for i, piece in enumerate(pieces)]


def _pieces(text: str) -> list[str]:
    """`text` cut into pieces of at most `VALUE_BYTES` bytes of UTF-8, whole characters
    each (each piece is read back as text on its own); [""] for ""."""
    pieces: list[str] = []
    piece: list[str] = []
    size = 0
    for char in text:
        width = len(char.encode())
        if size + width > VALUE_BYTES:
            pieces.append("".join(piece))
            piece, size = [], 0
        piece.append(char)
        size += width
    pieces.append("".join(piece))
    return pieces


def _utc_instant(text: str) -> float | None:
    """Epoch seconds of an ISO time with a UTC offset, else None."""
    if not text[:1].isdigit() or len(text) < 20:
        return None
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        return None
    if instant.utcoffset() != timedelta(0):
        return None
    return instant.timestamp()


def _utc_text(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()


def params_of(fields: dict[str, str]) -> dict[str, Any]:
    """The params of a notification from its hash's decoded fields, in either layout (one
    field per param, perhaps in pieces, or an older hash's `params` JSON). Raises
    ValueError for a `p.` or `params` value that is not JSON, a `t.` value that is not a
    number, or a piece number that is not one."""
    params: dict[str, Any] = json.loads(fields.get(LEGACY_PARAMS) or "{}")
    pieces: dict[str, dict[int, str]] = {}
    for name, value in fields.items():
        if name[:2] in PARAM_PREFIXES:
            field, _, number = name.partition(PIECE)
            pieces.setdefault(field, {})[int(number or 0)] = value
    for field, parts in pieces.items():
        prefix, param, text = field[:2], field[2:], "".join(parts[i] for i in sorted(parts))
        if prefix == STR_PARAM:
            params[param] = text
        elif prefix == TIME_PARAM:
            params[param] = _utc_text(float(text))
        else:
            params[param] = json.loads(text)
    return params


def logical(notification_id: str, fields: dict[str, str]) -> dict[str, str]:
    """A notification's decoded hash fields as callers know them, whichever layout wrote
    it: `kind` and `channel` always, `params` as one JSON object (sorted keys), `reason`
    "" and `attempts` "0" when absent. {} stays {} (no such notification). Raises
    ValueError as `params_of` does."""
    if not fields:
        return {}
    shown = {k: v for k, v in with_derived(notification_id, fields).items()
             if k[:2] not in PARAM_PREFIXES}
    shown[LEGACY_PARAMS] = json.dumps(params_of(fields), sort_keys=True)
    shown.setdefault("reason", "")
    shown.setdefault("attempts", "0")
    return shown
