"""The ledger's side of the console's actions: cancel one notification, send one again,
send an appointment's latest invite again, re-enable SMS for a number. What each may do is
decided by `notifier.console.allowed` (pure); this module reads, asks it, and writes.

Errors: on the ledger's client (`notifier.ledger.client`, as `Store` builds every part) each
Redis call raises `StoreUnavailable` when Redis cannot be reached or cannot take commands
now, and `StoreError` when it refuses one; `StoreContention` as `PlanWriter.write_plan`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from notifier.console.allowed import (
    CANCEL_REASON,
    RESEND_REASON,
    appointment_changed,
    invite_kind,
    invite_refusal,
    refusal,
    resend_expiry,
    resend_id,
    sms_enable_refusal,
)
from notifier.ledger.notif_fields import params_of
from notifier.ledger.notifications import from_epoch, notif_key
from notifier.ledger.records import AppointmentRecord, ClientRecord
from notifier.ledger.store import Store
from notifier.policy.appointments import appointment_params
from notifier.policy.plan import Plan, PlannedNotification, entity_ref

#: How many `.again{n}` ids are tried before giving up (each taken one was sent again
#: already, or is being planned by another operator at the same moment).
MAX_AGAIN = 50


@dataclass(frozen=True)
class Done:
    """What an action did: `ok`, and either the id it planned or changed (`subject`) or
    why it was refused (`refused`, words for the page)."""

    ok: bool
    subject: str = ""
    refused: str = ""


def cancel_notification(store: Store, notification_id: str) -> Done:
    """Cancel a scheduled notification (`Schedule.cancel_one`: announced, off the schedule,
    in one script). Refused, with why, for any other state."""
    found = store.schedule.cancel_one(notification_id, CANCEL_REASON)
    if found == "cancelled":
        return Done(True, notification_id)
    # Read again to say why (the script changed nothing).
    return Done(False, refused=refusal("cancel", store.notification(notification_id)))


def resend_check(store: Store, notification_id: str, now: datetime
                 ) -> tuple[str, dict[str, str]]:
    """(why the notification cannot be sent again at `now`, "" when it can; its fields as
    `Reading.notification` gives them): its state (`allowed.refusal`), and for a message
    about an appointment, the appointment as it is now (`allowed.appointment_changed`)."""
    fields = store.notification(notification_id)
    why = refusal("resend", fields)
    if why:
        return why, fields
    params = params_of(fields)
    if not params.get("appointment_id"):
        return "", fields
    found = store.load_record(entity_ref("appointment", str(params["appointment_id"])))
    return appointment_changed(fields["kind"], params,
                               found if isinstance(found, AppointmentRecord) else None,
                               now), fields


def resend_notification(store: Store, notification_id: str, now: datetime) -> Done:
    """Plan a failed or expired notification again, as a new one due `now`
    (`allowed.resend_id`, `allowed.resend_expiry`); the old one is left as it is. Refused,
    with why, for one in another state, unknown, retired or superseded, or about an
    appointment changed since (`allowed.appointment_changed`)."""
    why, fields = resend_check(store, notification_id, now)
    if why:
        return Done(False, refused=why)
    params = params_of(fields)
    expires = resend_expiry(from_epoch(fields["expires"]), now)
    for n in range(1, MAX_AGAIN + 1):
        new_id = resend_id(notification_id, n)
        if store.redis.exists(notif_key(new_id)):
            continue
        added = store.write_plan(Plan(outcome="applied", add=(PlannedNotification(
            id=new_id, kind=fields["kind"], channel=fields["channel"],  # type: ignore[arg-type]
            recipient=fields["to"], recipient_id=fields["to_id"],  # type: ignore[arg-type]
            entity=fields["entity"], due_at=now, expires_at=expires,
            params=params, reason=RESEND_REASON),)), now)
        if added:
            return Done(True, new_id)
    return Done(False, refused=f"It has been sent again {MAX_AGAIN} times already.")


def invite_check(store: Store, appointment_id: str, now: datetime
                 ) -> tuple[str, AppointmentRecord | None]:
    """(why the appointment's invite cannot be sent again at `now`, "" when it can; its
    record, None for an unknown appointment): two reads, the appointment then its
    client."""
    found = store.load_record(entity_ref("appointment", appointment_id))
    record = found if isinstance(found, AppointmentRecord) else None
    client = None
    if record is not None:
        loaded = store.load_record(entity_ref("client", record.appointment.client_id))
        client = loaded if isinstance(loaded, ClientRecord) else None
    return invite_refusal(record, client, now), record


def resend_invite(store: Store, appointment_id: str, now: datetime,
                  change_window: timedelta) -> Done:
    """Plan the appointment's latest calendar invite again: a new email of the kind that
    carries it (`allowed.invite_kind`) with the appointment as it is now (its SEQUENCE
    among the params, so the .ics updates the event the client has), due `now`, expiring
    at the start, as the confirmation is planned (`policy.appointments`). Its id's
    occasion is `invite{n}.seq{sequence}`. `change_window`: the policy's late-change
    window (a message due before the start minus it says until when a change is free).
    Refused, with why, for a cancelled or started appointment or a client without email.
    """
    ref = entity_ref("appointment", appointment_id)
    why, record = invite_check(store, appointment_id, now)
    if why or record is None:
        return Done(False, refused=why)
    kind = invite_kind(record)
    params = appointment_params(record)
    change_by = record.appointment.start - change_window
    if change_by > now:
        params["change_by"] = change_by.isoformat()
    for n in range(1, MAX_AGAIN + 1):
        new_id = f"{kind}:{appointment_id}:invite{n}.seq{record.sequence}:email"
        if store.redis.exists(notif_key(new_id)):
            continue
        added = store.write_plan(Plan(outcome="applied", add=(PlannedNotification(
            id=new_id, kind=kind, channel="email", recipient="client",
            recipient_id=record.appointment.client_id, entity=ref, due_at=now,
            expires_at=record.appointment.start, params=params,
            reason=RESEND_REASON),)), now)
        if added:
            return Done(True, new_id)
    return Done(False, refused=f"The invite has been sent again {MAX_AGAIN} times already.")


def sms_enable_check(store: Store, client_id: str) -> tuple[str, str]:
    """(why SMS cannot be re-enabled for the client, "" when it can; the client's number,
    "" for none): two reads, the client's record then the opt-out set."""
    found = store.load_record(entity_ref("client", client_id))
    client = found if isinstance(found, ClientRecord) else None
    phone = str(client.client.phone or "") if client is not None else ""
    return sms_enable_refusal(client, bool(phone) and store.sms_opted_out(phone)), phone


def enable_sms(store: Store, client_id: str) -> Done:
    """Take the client's number off the SMS opt-out set (announced as `client.opted_in`,
    source `operator`). Refused, with why, for an unknown client, one without a number,
    or a number not opted out. `subject` is the client's id (never the number)."""
    why, phone = sms_enable_check(store, client_id)
    if why or not phone:
        return Done(False, refused=why)
    if not store.set_sms_opt_out(phone, False, "operator"):
        return Done(False, refused="The number was opted in again meanwhile.")
    return Done(True, client_id)
