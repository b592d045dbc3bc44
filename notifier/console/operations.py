"""The console's actions on the ledger: cancel one notification, send one again,
send an appointment's latest invite again, re-enable SMS for a number. What each may do is
decided by `notifier.console.allowed` (pure); this module reads, asks it, and writes.

Errors: on the ledger's client (`notifier.ledger.client`, as `Store` builds every part) each
Redis call raises `StoreUnavailable` when Redis cannot be reached or cannot take commands
now, and `StoreError` when it refuses one; `StoreContention` as `PlanWriter.write_plan`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from notifier.console.allowed import (
    CANCEL_REASON,
    RESEND_REASON,
    appointment_changed,
    invite_kind,
    invite_refusal,
    next_copy,
    pending_refusal,
    refusal,
    resend_expiry,
    resend_id,
    sms_enable_refusal,
)
from notifier.ledger.audit_write import AuditWrite
from notifier.ledger.notif_fields import params_of
from notifier.ledger.notifications import from_epoch
from notifier.ledger.records import AppointmentRecord, ClientRecord
from notifier.ledger.store import Store
from notifier.policy.appointments import appointment_params
from notifier.policy.plan import Plan, PlannedNotification, entity_ref

#: The audit entry of an action that plans a new notification, given the id it takes.
AuditOf = Callable[[str], AuditWrite]

#: How many copies of one notification (or invites of one appointment at one SEQUENCE)
#: may be sent again: `.again{n}` / `invite{n}`, n = 1..MAX_AGAIN.
MAX_AGAIN = 50


@dataclass(frozen=True)
class Done:
    """What an action did: `ok`, and either the id it planned or changed (`subject`) or
    why it was refused (`refused`, words for the page)."""

    ok: bool
    subject: str = ""
    refused: str = ""
    #: for one refused because a copy sent again earlier is still to go out: its id
    pending: str = ""


def cancel_notification(store: Store, notification_id: str,
                        audit: AuditWrite | None = None) -> Done:
    """Cancel a scheduled notification (`Schedule.cancel_one`: announced, off the schedule,
    `audit` appended, in one script). Refused, with why, for any other state: one
    cancelled already (by a first click, another operator or the system) too, so it is
    neither answered as done nor audited again."""
    if store.schedule.cancel_one(notification_id, CANCEL_REASON, audit):
        return Done(True, notification_id)
    # Read again to say why (the script changed nothing).
    return Done(False, refused=refusal("cancel", store.notification(notification_id)))


def copy_states(store: Store, ids: list[str]) -> list[tuple[str, str]]:
    """`(id, raw state)` of each of `ids`, "" for one not kept: one round trip."""
    with store.redis.pipeline(transaction=False) as pipe:
        for copy_id in ids:
            pipe.hget(store.keys.notif(copy_id), "state")
        states = pipe.execute()
    return [(copy_id, state.decode() if isinstance(state, bytes) else str(state or ""))
            for copy_id, state in zip(ids, states, strict=True)]


@dataclass(frozen=True)
class Check:
    """Whether a notification (or an appointment's invite) may be sent again now: `why`
    not ("" when it may), `pending` the id of a copy sent again earlier and still to go
    out ("" for none; `why` says so), `next_id` the id the next copy takes."""

    why: str
    fields: dict[str, str]
    pending: str = ""
    next_id: str = ""


def resend_check(store: Store, notification_id: str, now: datetime) -> Check:
    """Whether the notification may be sent again at `now`, with its fields as
    `Reading.notification` gives them: its state (`allowed.refusal`), for a message about
    an appointment the appointment as it is now (`allowed.appointment_changed`), and no
    copy sent again earlier still to go out (`allowed.next_copy`)."""
    fields = store.notification(notification_id)
    why = refusal("resend", fields)
    if why:
        return Check(why, fields)
    params = params_of(fields)
    if params.get("appointment_id"):
        found = store.load_record(entity_ref("appointment", str(params["appointment_id"])))
        why = appointment_changed(fields["kind"], params,
                                  found if isinstance(found, AppointmentRecord) else None,
                                  now)
        if why:
            return Check(why, fields)
    pending, n = next_copy(copy_states(
        store, [resend_id(notification_id, i) for i in range(1, MAX_AGAIN + 1)]))
    if pending:
        return Check(pending_refusal(pending), fields, pending)
    if n > MAX_AGAIN:
        return Check(f"It has been sent again {MAX_AGAIN} times already.", fields)
    return Check("", fields, next_id=resend_id(notification_id, n))


def resend_notification(store: Store, notification_id: str, now: datetime,
                        audit: AuditOf | None = None) -> Done:
    """Plan a failed or expired notification again, as a new one due `now`
    (`allowed.resend_id`, `allowed.resend_expiry`); the old one is left as it is. Refused,
    with why, for one in another state, unknown, retired or superseded, about an
    appointment changed since (`allowed.appointment_changed`), or while a copy sent again
    earlier is still to go out. Two calls at the same moment plan the same id
    (`Check.next_id`): the ledger keeps the first (`notif_add.lua`), the other is refused
    as pending. `audit(new id)`: the entry appended with the add, in one script."""
    check = resend_check(store, notification_id, now)
    if check.why:
        return Done(False, refused=check.why, pending=check.pending)
    fields = check.fields
    added = store.write_plan(Plan(outcome="applied", add=(PlannedNotification(
        id=check.next_id, kind=fields["kind"], channel=fields["channel"],  # type: ignore[arg-type]
        recipient=fields["to"], recipient_id=fields["to_id"],  # type: ignore[arg-type]
        entity=fields["entity"], due_at=now,
        expires_at=resend_expiry(from_epoch(fields["expires"]), now),
        params=params_of(fields), reason=RESEND_REASON),)), now,
        audit(check.next_id) if audit else None)
    if not added:
        return Done(False, refused=pending_refusal(check.next_id), pending=check.next_id)
    return Done(True, check.next_id)


def invite_id(kind: str, appointment_id: str, n: int, sequence: int) -> str:
    """The id of the `n`th (1, 2, ...) invite sent again of an appointment at `sequence`:
    its occasion `invite{n}.seq{sequence}`, `kind` as `allowed.invite_kind` says."""
    return f"{kind}:{appointment_id}:invite{n}.seq{sequence}:email"


@dataclass(frozen=True)
class InviteCheck:
    """Whether an appointment's invite may be sent again now: `why` not ("" when it may),
    the appointment's record (None for an unknown one), `pending` the id of an invite
    sent again earlier and still to go out ("" for none; `why` says so), `next_id` the id
    the next one takes."""

    why: str
    record: AppointmentRecord | None
    pending: str = ""
    next_id: str = ""


def invite_check(store: Store, appointment_id: str, now: datetime) -> InviteCheck:
    """Whether the appointment's invite may be sent again at `now`: the appointment then
    its client (`allowed.invite_refusal`), then the invites sent again at its current
    SEQUENCE (`allowed.next_copy`; one sent again at an earlier SEQUENCE was cancelled
    with the change, unless it was being sent)."""
    found = store.load_record(entity_ref("appointment", appointment_id))
    record = found if isinstance(found, AppointmentRecord) else None
    client = None
    if record is not None:
        loaded = store.load_record(entity_ref("client", record.appointment.client_id))
        client = loaded if isinstance(loaded, ClientRecord) else None
    why = invite_refusal(record, client, now)
    if why or record is None:
        return InviteCheck(why, record)
    kind = invite_kind(record)
    pending, n = next_copy(copy_states(store, [
        invite_id(kind, appointment_id, i, record.sequence) for i in range(1, MAX_AGAIN + 1)]))
    if pending:
        return InviteCheck(pending_refusal(pending, "The invite"), record, pending)
    if n > MAX_AGAIN:
        return InviteCheck(f"The invite has been sent again {MAX_AGAIN} times already.",
                           record)
    return InviteCheck("", record, next_id=invite_id(kind, appointment_id, n,
                                                     record.sequence))


def resend_invite(store: Store, appointment_id: str, now: datetime,
                  change_window: timedelta, check: InviteCheck | None = None,
                  audit: AuditOf | None = None) -> Done:
    """Plan the appointment's latest calendar invite again: a new email of the kind that
    carries it (`allowed.invite_kind`) with the appointment as it is now (its SEQUENCE
    among the params, so the .ics updates the event the client has), due `now`, expiring
    at the start, as the confirmation is planned (`policy.appointments`), with the id
    `invite_check` gives (`invite_id`). `change_window`: the policy's late-change window
    (a message due before the start minus it says until when a change is free). Refused,
    with why, for a cancelled or started appointment, a client without email, or while an
    invite sent again earlier is still to go out (two calls at the same moment plan the
    same id: the ledger keeps the first). `check`: `invite_check` of the appointment at
    `now` when the caller has just made it (read again otherwise). `audit(new id)`: the
    entry appended with the add, in one script.
    """
    check = check or invite_check(store, appointment_id, now)
    record = check.record
    if check.why or record is None:
        return Done(False, refused=check.why, pending=check.pending)
    params = appointment_params(record)
    change_by = record.appointment.start - change_window
    if change_by > now:
        params["change_by"] = change_by.isoformat()
    added = store.write_plan(Plan(outcome="applied", add=(PlannedNotification(
        id=check.next_id, kind=invite_kind(record), channel="email", recipient="client",
        recipient_id=record.appointment.client_id,
        entity=entity_ref("appointment", appointment_id), due_at=now,
        expires_at=record.appointment.start, params=params, reason=RESEND_REASON),)), now,
        audit(check.next_id) if audit else None)
    if not added:
        return Done(False, refused=pending_refusal(check.next_id, "The invite"),
                    pending=check.next_id)
    return Done(True, check.next_id)


def sms_enable_check(store: Store, client_id: str) -> tuple[str, str]:
    """(why SMS cannot be re-enabled for the client, "" when it can; the client's number,
    "" for none): two reads, the client's record then the opt-out set."""
    found = store.load_record(entity_ref("client", client_id))
    client = found if isinstance(found, ClientRecord) else None
    phone = str(client.client.phone or "") if client is not None else ""
    return sms_enable_refusal(client, bool(phone) and store.sms_opted_out(phone)), phone


def enable_sms(store: Store, client_id: str, audit: AuditWrite | None = None) -> Done:
    """Take the client's number off the SMS opt-out set (announced as `client.opted_in`,
    source `operator`, and `audit` appended, in one script). Refused, with why, for an
    unknown client, one without a number, or a number not opted out. `subject` is the
    client's id (never the number)."""
    why, phone = sms_enable_check(store, client_id)
    if why or not phone:
        return Done(False, refused=why)
    if not store.set_sms_opt_out(phone, False, "operator", audit=audit):
        return Done(False, refused="The number was opted in again meanwhile.")
    return Done(True, client_id)
