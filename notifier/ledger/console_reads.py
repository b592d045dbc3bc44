"""What the console's notification page reads from the ledger, in two round trips: the
notification's hash, then (one pipeline) the records its message is made from and its
appointment's short-link token. Reads only.

Errors: on the ledger's client each Redis call raises `StoreUnavailable` when Redis cannot
be reached or cannot take commands now, and `StoreError` when it refuses one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from notifier.delivery.compose import Stored
from notifier.delivery.decide import record_refs
from notifier.ledger.notif_fields import logical
from notifier.ledger.record_store import all_record_keys, parse_record, raw_records
from notifier.ledger.records import Record
from notifier.ledger.shortlinks import appointment_key
from notifier.ledger.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NotificationRead:
    """A notification's decoded hash as callers know it (`notif_fields.logical`: {} for an
    unknown id; `h1`.., `hn` its history among them), the records its message needs that
    exist (by ref; one that no longer parses is left out, with a warning), and its
    appointment's short-link token (None: not made yet, or no appointment)."""

    fields: dict[str, str]
    records: dict[str, Record] = field(default_factory=dict)
    short_token: str | None = None


def read_notification(store: Store, notification_id: str) -> NotificationRead:
    """Read what the notification page shows of `notification_id`; a row no message can be
    made from (retired, unknown: `Stored.from_fields` fails) reads no records."""
    raw = store.redis.hgetall(store.keys.notif(notification_id))
    fields = logical(notification_id, {k.decode(): v.decode() for k, v in raw.items()})
    stored = None
    if fields and not fields.get("retired"):
        try:
            stored = Stored.from_fields(notification_id, fields)
        except (KeyError, ValueError):
            stored = None
    if stored is None:
        return NotificationRead(fields)
    refs = record_refs(stored)
    appointment_id = stored.params.get("appointment_id")
    with store.redis.pipeline(transaction=False) as pipe:
        pipe.mget(all_record_keys(store.keys, refs))
        pipe.get(appointment_key(str(appointment_id or "")))
        values, token = pipe.execute()
    records: dict[str, Record] = {}
    try:
        found = raw_records(store.keys, refs, values)
    except Exception:  # a part of a record that no longer parses: the parted ones missing
        log.warning("a record's part does not parse; the console shows the message "
                    "without the records of %s", ", ".join(refs))
        found = {}
    for ref, value in found.items():
        try:
            records[ref] = parse_record(ref.split(":", 1)[0], value)
        except Exception:  # a record that no longer parses: shown as missing
            log.warning("record %s does not parse; the console shows the message without it",
                        ref)
    return NotificationRead(fields, records,
                            token.decode() if token and appointment_id else None)
