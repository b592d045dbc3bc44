"""What the console's actions may do, decided from what the ledger holds: pure.

- Send again now: for a notification that failed (sending failed, or the provider
  reported it undelivered) or expired, and is not retired (a retired row has no content to
  send). A NEW notification is planned (the old one is kept as it ended): its id is the
  old one's with the occasion suffixed `.again{n}` (`resend_id`), due now, and it expires
  at the old expiry when that is still at least `MIN_LEFT` away, else `RESEND_VALID` from
  now: the operator asked for it now, so it is worth sending within a few hours, not
  tomorrow. The worker sends it as any other, so quiet hours, opt-outs and the channel's
  rules still apply.
  Refused, too, for one superseded by a later change of what it is about, and for a
  message about an appointment that changed since it was planned (`appointment_changed`):
  it would give the old time, or speak of a visit that is over or cancelled.
- Cancel: only a `scheduled` notification (also one the clock has claimed but no worker
  has begun); one `sending` is being sent right now and cannot be stopped.
  Refused, too, while a copy sent again earlier is still to go out (`PENDING_STATES`):
  a confirmation form posted twice (a double click, Back and Confirm) must send once.
  The next copy's `n` is one past the last copy kept (`next_copy`), so two posts at the
  same moment plan the same id and the ledger's dedupe (`notif_add.lua`) keeps one.
- Re-enable SMS: only for a client whose number is opted out; the reason is required,
  plain text as the intake takes it (`intake.text.plain_text`: no controls, no bidi
  overrides), since it is kept in the audit log.
- Resend the latest invite: only for a booked appointment that has not started, to a
  client with an email address, and no invite sent again earlier still to go out (the
  same rule as for a copy).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from notifier.intake.text import plain_text
from notifier.ledger.reading import shown_state
from notifier.ledger.records import AppointmentRecord, ClientRecord

#: The shown states (`reading.shown_state`) a notification can be sent again from.
RESEND_STATES = frozenset({"failed", "expired"})
#: A notification sent again keeps its own expiry only if at least this much is left...
MIN_LEFT = timedelta(minutes=15)
#: ...else it expires this long after the operator asked.
RESEND_VALID = timedelta(hours=4)
#: Marks a notification sent again, in its id's occasion: `{occasion}.again{n}`.
AGAIN = ".again"
#: The reason a notification sent again is planned with.
RESEND_REASON = "sent again from the console"
#: The reason recorded on a notification cancelled in the console (the operator is in
#: the audit log, not in the ledger).
CANCEL_REASON = "cancelled in the console"
#: The raw states of a notification still to go out: a copy sent again earlier in one of
#: them refuses another one.
PENDING_STATES = frozenset({"scheduled", "sending"})
#: The longest reason an operator may give for re-enabling SMS, characters.
MAX_REASON_CHARS = 200


def allowed_actions(fields: dict[str, str]) -> frozenset[str]:
    """The actions a notification allows, from its decoded hash (`Reading.notification`):
    `resend` and/or `cancel`; none for an unknown ({}) or retired one."""
    if not fields or fields.get("retired") or "state" not in fields:
        return frozenset()
    allowed = set()
    if shown_state(fields) in RESEND_STATES and not fields.get("superseded"):
        allowed.add("resend")
    if fields["state"] == "scheduled":
        allowed.add("cancel")
    return frozenset(allowed)


def refusal(action: str, fields: dict[str, str]) -> str:
    """Why `action` (`resend`, `cancel`) is refused for the notification of `fields`, in
    words for the page; "" when it is allowed."""
    if action in allowed_actions(fields):
        return ""
    if not fields:
        return "There is no such notification (never planned, or no longer kept)."
    if fields.get("retired"):
        return "This notification is past the retention: its content is no longer kept."
    state = shown_state(fields)
    if action == "resend" and fields.get("superseded"):
        return ("A later change of what it is about replaced it "
                f"({fields['superseded']}): sending it again would say what is no longer "
                "true.")
    if action == "cancel":
        if fields.get("state") == "sending":
            return "This notification is being sent right now and cannot be stopped."
        return f"Only a scheduled notification can be cancelled; this one is {state}."
    return f"Only a failed or expired notification can be sent again; this one is {state}."


def appointment_changed(kind: str, params: dict[str, Any],
                        appointment: AppointmentRecord | None, now: datetime) -> str:
    """Why a message of `kind` with `params` can no longer be sent again as it was planned,
    given its appointment as it is now (None: not on record); "" when it can, or when it
    is about no appointment. A cancellation notice wants the appointment still cancelled
    at the same SEQUENCE; any other message wants it booked, at the same SEQUENCE (not
    moved since), and not over by `now`."""
    if not params.get("appointment_id"):
        return ""
    if appointment is None:
        return "Its appointment is no longer on record."
    wanted = "cancelled" if kind == "appointment_cancelled" else "scheduled"
    if appointment.status != wanted:
        return (f"Its appointment is {appointment.status} now: the message no longer "
                "says what is true.")
    if params.get("sequence") is not None and int(params["sequence"]) != appointment.sequence:
        return ("Its appointment was changed since it was planned: the message would give "
                "the old details. Resend the latest invite from the client's page instead.")
    if wanted == "scheduled" and appointment.appointment.end <= now:
        return "Its appointment is over: the message would be of no use now."
    return ""


def resend_id(notification_id: str, n: int) -> str:
    """The id of the `n`th (1, 2, ...) notification sent again from `notification_id`: its
    occasion suffixed (`{kind}:{entity}:{occasion}.again{n}:{channel}`, the dedupe key's
    shape: `policy.plan.PlannedNotification`), so kind and channel still read from it. An
    id that is itself a resend is suffixed again from its original (`.again2`, not
    `.again1.again1`)."""
    rest, _, channel = notification_id.rpartition(":")
    base, marker, number = rest.rpartition(AGAIN)
    if marker and number.isdigit():
        rest = base
    return f"{rest}{AGAIN}{n}:{channel}"


def next_copy(copies: Sequence[tuple[str, str]]) -> tuple[str, int]:
    """From the copies sent again so far of one notification (or of one appointment's
    invite), `(id, raw state)` for n = 1, 2, ... in order, the state "" for an id not (or
    no longer) kept: (the id of a copy still to go out (`PENDING_STATES`), "" for none;
    the `n` the next copy takes: one past the last one kept)."""
    pending = next((i for i, state in copies if state in PENDING_STATES), "")
    last = max((n for n, (_, state) in enumerate(copies, 1) if state), default=0)
    return pending, last + 1


def pending_refusal(copy_id: str, what: str = "It") -> str:
    """Why `what` (the notification, the invite) is not sent again while `copy_id`, sent
    again earlier, is still to go out."""
    return f"{what} was already planned again as {copy_id}, not sent yet."


def resend_expiry(old_expires: datetime, now: datetime) -> datetime:
    """When a notification sent again at `now` expires: its old expiry when at least
    `MIN_LEFT` is left before it, else `RESEND_VALID` from now."""
    return old_expires if old_expires - now >= MIN_LEFT else now + RESEND_VALID


def reason_error(reason: str) -> str:
    """What is wrong with an operator's reason (required, at most `MAX_REASON_CHARS`
    characters once trimmed, plain text as `intake.text.plain_text` wants it: it is kept
    in the audit log, where a control character (NUL, ESC) or a bidirectional override
    would garble or disguise what a reader sees); "" when it will do."""
    text = reason.strip()
    if not text:
        return "Say why: the reason is required."
    if len(text) > MAX_REASON_CHARS:
        return f"Keep the reason to {MAX_REASON_CHARS} characters or fewer."
    try:
        kept = audited_reason(text)
    except ValueError as error:
        return f"The reason {error}; type it again without it."
    # Only invisible format characters (removed): nothing is said.
    return "" if kept else "Say why: the reason is required."


def audited_reason(reason: str) -> str:
    """The reason as the audit keeps it: its whitespace (line breaks typed in the box
    among it) collapsed to single spaces, then `intake.text.plain_text` (invisible format
    characters removed). Raises ValueError, naming the character, for a refused one."""
    return plain_text(" ".join(reason.split()))


def sms_enable_refusal(client: ClientRecord | None, opted_out: bool) -> str:
    """Why SMS cannot be re-enabled for `client`; "" when it can (its number is opted
    out)."""
    if client is None:
        return "There is no such client."
    if not client.client.phone:
        return "This client has no phone number on record."
    if not opted_out:
        return "This client's number is not opted out of SMS: there is nothing to re-enable."
    return ""


def invite_refusal(appointment: AppointmentRecord | None, client: ClientRecord | None,
                   now: datetime) -> str:
    """Why the latest invite of `appointment` cannot be sent again at `now`; "" when it
    can (booked, not started, its client has an email address)."""
    if appointment is None:
        return "There is no such appointment."
    if appointment.status != "scheduled":
        return f"This appointment is {appointment.status}: there is no invite to send."
    if appointment.appointment.start <= now:
        return "This appointment has already started: an invite would be no use now."
    if client is None:
        return "The client's details have not reached us: there is no address to send to."
    if not client.client.email:
        return "This client has no email address: invites go by email."
    return ""


def invite_kind(appointment: AppointmentRecord) -> str:
    """The kind that carries the appointment's invite as it is now: the confirmation's
    (METHOD REQUEST) while it was never moved, the update's once it was (its SEQUENCE
    above 0 says so; `policy.appointments`)."""
    return "appointment_updated" if appointment.sequence > 0 else "appointment_confirmation"
