"""The other channel: when a client cannot be reached on one, the message goes by the other.

Used at send time (the channel is closed to the client, an SMS over budget, a permanent
failure) and when a provider reports a failure later (`web.provider_hooks`, or the repair
job's look-up, `worker.reports`).
"""

from __future__ import annotations

import logging
from datetime import datetime

from notifier.ledger.records import ClientRecord
from notifier.ledger.store import Store
from notifier.policy.plan import entity_ref

log = logging.getLogger(__name__)

#: Twilio's error for a number that replied STOP: it opts the number out here too.
TWILIO_OPTED_OUT = "21610"


def other_channel(channel: str) -> str:
    """The other channel: `email` for `sms`, `sms` for anything else."""
    return "email" if channel == "sms" else "sms"


def closed_reason(channel: str, client: ClientRecord, opted_out: bool) -> str:
    """Why `channel` cannot reach `client` now, or "" when it can; `opted_out` says whether
    the client's phone replied STOP to our sender (only looked at for sms)."""
    c = client.client
    if channel == "sms":
        if not c.channels.sms:
            return "client does not accept sms"
        if not c.phone:
            return "no phone number"
        if opted_out:
            return "client replied STOP"
    elif channel == "email":
        if not c.channels.email:
            return "client does not accept email"
        if not c.email:
            return "no email address"
    return ""


def needs_opt_out(channel: str, client: ClientRecord) -> bool:
    """Whether `closed_reason(channel, client, ...)` depends on the opt-out list: only an
    SMS the client accepts, to a phone they have, does."""
    return channel == "sms" and client.client.channels.sms and bool(client.client.phone)


def closed_now(channel: str, client: ClientRecord, store: Store) -> str:
    """`closed_reason`, reading the opt-out list only when it matters. Raises
    `StoreUnavailable` when Redis cannot be reached."""
    opted_out = needs_opt_out(channel, client) and store.sms_opted_out(str(client.client.phone))
    return closed_reason(channel, client, opted_out)


def use_other_channel(store: Store, notification_id: str, channel: str, client: ClientRecord,
                      why: str, now: datetime) -> bool:
    """When a client cannot be reached on `channel`, the message goes by the other if they
    allow it, unless it is planned there already; returns whether it was added. Raises
    `StoreUnavailable` / `StoreError` from Redis, and `StoreContention` as
    `PlanWriter.write_plan` does."""
    other = other_channel(channel)
    if closed_now(other, client, store):
        return False
    if store.add_on_other_channel(notification_id, other, now, f"instead of {channel}: {why}"):
        log.info("notification %s goes by %s instead", notification_id, other)
        return True
    return False


def carrier_opt_out(store: Store, code: str | None, address: str) -> None:
    """Twilio's 21610 (the carrier says `address` replied STOP) recorded like an inbound
    STOP, whether the send was refused with it or a report said it later."""
    if code == TWILIO_OPTED_OUT and address:
        store.set_sms_opt_out(address, True, "carrier", code)


def after_reported_failure(store: Store, notification_id: str, code: str,
                           now: datetime, address: str = "") -> bool:
    """A failure the provider reported after the send (a status callback, a bounce, or the
    repair job's look-up): Twilio's 21610 opts out the number the message went to
    (`address`, Twilio's `To`; the client's number on record when not given: a number
    changed since is not opted out in its place), and a client's message goes by the other
    channel where they allow it; returns whether it was added there. Nothing for a message
    to staff or an unknown notification. Raises as `use_other_channel` does."""
    fields = store.notification(notification_id)
    if not fields or fields.get("to") != "client":
        return False
    client = store.load_record(entity_ref("client", fields["to_id"]))
    if not isinstance(client, ClientRecord):
        return False
    carrier_opt_out(store, code, address or str(client.client.phone or ""))
    return use_other_channel(store, notification_id, fields["channel"], client,
                             f"{fields['channel']} {fields.get('delivery', 'failed')} ({code})",
                             now)
