"""Building a message from a notification, at send time: pure, given the records.

Contact details and preferences are the client's as they are now (a number changed last
week is the one used); what the message is about (the appointment's times, the invite's
SEQUENCE) was fixed when it was planned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from notifier.config import Settings
from notifier.delivery.channels import Attachment, Message
from notifier.delivery.channels.calendar import Invite, build_invite
from notifier.delivery.render import Renderer, format_day, format_local_datetime, format_local_time
from notifier.delivery.sms_budget import fit, sms_name
from notifier.delivery.sms_text import measure
from notifier.ledger.notif_fields import params_of, with_derived
from notifier.ledger.notifications import from_epoch
from notifier.ledger.records import (
    ClientRecord,
    PrescriptionRecord,
    ProviderQueueRecord,
    ProviderRecord,
)
from notifier.policy.figures import Policy

#: How a message names a provider whose details have not reached us.
UNKNOWN_PROVIDER = {"en": "your provider", "es": "su profesional de salud"}
#: Kinds addressed to the support team or a provider rather than a client.
STAFF_KINDS = frozenset({"support_escalation", "provider_no_show", "provider_digest",
                         "reschedule_request"})
#: Kinds whose email carries a calendar invite, and its METHOD.
INVITE_METHODS = {
    "appointment_confirmation": "REQUEST",
    "appointment_updated": "REQUEST",
    "appointment_cancelled": "CANCEL",
}


@dataclass(frozen=True)
class Stored:
    """A notification's fields as kept in its Redis hash, typed."""

    id: str
    kind: str
    channel: str
    recipient: str
    recipient_id: str
    due_at: datetime
    expires_at: datetime
    params: dict[str, Any]
    attempts: int
    #: a send-rate slot reserved for it, if any
    slot: datetime | None = None
    #: the entity it is about (`appointment:a1`), as indexed in the ledger
    entity: str = ""
    #: when it was planned (None for an entry written before this was recorded)
    created_at: datetime | None = None
    #: when a send of it may have reached its provider, whose answer was lost
    #: (`errors.MaybeSent`; its hash's `maybe_sent_at`), or None
    maybe_sent_at: datetime | None = None
    #: the provider's latest delivery report about it (its hash's `delivery`), or ""
    reported: str = ""

    @classmethod
    def from_fields(cls, notification_id: str, f: dict[str, str]) -> Stored:
        """A notification from its hash's decoded fields (as `Schedule.begin` returns them);
        times as aware UTC datetimes, `kind`, `channel` and `params` read from either hash
        layout (`notif_fields`). Raises KeyError when `kind`, `channel`, `to`, `to_id`,
        `due` or `expires` is missing."""
        f = with_derived(notification_id, f)
        return cls(
            id=notification_id, kind=f["kind"], channel=f["channel"], recipient=f["to"],
            recipient_id=f["to_id"], due_at=from_epoch(f["due"]),
            expires_at=from_epoch(f["expires"]), params=params_of(f),
            attempts=int(f.get("attempts") or 0),
            slot=from_epoch(f["slot"]) if float(f.get("slot") or 0) else None,
            entity=f.get("entity", ""),
            created_at=from_epoch(f["created"]) if f.get("created") else None,
            maybe_sent_at=(from_epoch(f["maybe_sent_at"]) if f.get("maybe_sent_at")
                           else None),
            reported=f.get("delivery", ""),
        )


def client_context(n: Stored, client: ClientRecord, provider: ProviderRecord | None,
                   settings: Settings) -> dict[str, Any]:
    """The template variables of a client message: the practice's details, the provider's
    name (or a stand-in in the client's language), and the params' times and dates written
    in the client's zone and locale (`start_local`, `change_by_local`, `runout_local`, ...).
    """
    c, p = client.client, n.params
    context: dict[str, Any] = {
        "first_name": c.first_name,
        "practice_name": settings.practice_name,
        "practice_phone": settings.practice_phone,
        "practice_url": settings.practice_url,
        "provider_name": provider.provider.name if provider
        else UNKNOWN_PROVIDER.get(c.locale, UNKNOWN_PROVIDER["en"]),
        "join_url": p.get("join_url"),
        "item_kind": str(p.get("item_kind", "")).replace("_", " "),
        "late_fee": bool(p.get("late_fee")),
    }
    if "start" in p:
        start = datetime.fromisoformat(p["start"])
        context["start_local"] = format_local_datetime(start, c.zone, c.locale)
        context["start_time_local"] = format_local_time(start, c.zone, c.locale)
    change_by = p.get("change_by")
    context["change_by_local"] = (
        format_local_datetime(datetime.fromisoformat(change_by), c.zone, c.locale)
        if change_by else None
    )
    for name in ("runout", "book_by"):
        day = p.get(name)
        context[f"{name}_local"] = format_day(date.fromisoformat(day), c.locale) if day else None
    return context


def invite_for(n: Stored, client: ClientRecord, settings: Settings, now: datetime) -> Attachment:
    """The `invite.ics` attachment of a confirmation, update or cancellation email (METHOD
    REQUEST or CANCEL). Raises KeyError when `n.params` lacks `appointment_id`, `start`,
    `end` or `sequence`."""
    method = INVITE_METHODS[n.kind]
    p = n.params
    invite = Invite(
        appointment_id=p["appointment_id"],
        start=datetime.fromisoformat(p["start"]),
        end=datetime.fromisoformat(p["end"]),
        sequence=int(p["sequence"]),
        method=method,  # type: ignore[arg-type]
        organizer_email=settings.from_email,
        organizer_name=settings.practice_name,
        attendee_email=client.client.email or "",
        attendee_name=client.client.first_name,
        summary=f"Appointment with {settings.practice_name}",
        description=f"Questions: {settings.practice_phone}",
        location=p.get("join_url"),
    )
    return Attachment(filename="invite.ics",
                      content_type=f"text/calendar; method={method}",
                      content=build_invite(invite, now))


def compose_client_message(n: Stored, client: ClientRecord, provider: ProviderRecord | None,
                           settings: Settings, renderer: Renderer, now: datetime, *,
                           prescription: PrescriptionRecord | None = None,
                           shorten: Callable[[], str] | None = None) -> Message:
    """The message for a client notification on its channel (the caller has checked the
    address). The medication is named in email only when the practice
    allows it, and never in SMS.

    An SMS is fitted to its budget (`sms_budget.fit`; `shorten()` gives a short link to stand
    in for a video link too long to fit); `sms_budget.OverBudget` when it cannot be. A
    template that is missing or fails to render raises `TemplateError`."""
    c = client.client
    context = client_context(n, client, provider, settings)
    channel = n.channel
    context["medication"] = None
    if channel == "email" and settings.email_shows_medication and prescription is not None:
        context["medication"] = prescription.prescription.medication
    if channel == "sms":
        # Personal data must not push a message past its budget (emoji, other scripts).
        context["first_name"] = sms_name(c.first_name)
        fitted = fit(f"{n.kind}.{c.locale}",
                     lambda ctx: renderer.sms(n.kind, c.locale, ctx), context, shorten)
        return Message(notification_id=n.id, kind=n.kind, channel="sms", to=c.phone or "",
                       body=fitted.body, due_at=n.due_at, expires_at=n.expires_at,
                       sms=fitted.size, fallback=fitted.fallback)
    email = renderer.email(n.kind, c.locale, context)
    attachments = (invite_for(n, client, settings, now),) if n.kind in INVITE_METHODS else ()
    return Message(notification_id=n.id, kind=n.kind, channel="email", to=c.email or "",
                   subject=email.subject, body=email.text, html=email.html,
                   attachments=attachments, due_at=n.due_at, expires_at=n.expires_at)


def _hours(delta: timedelta) -> int:
    return int(delta.total_seconds() // 3600)


def _staff_message(n: Stored, to: str, context: dict[str, Any], renderer: Renderer) -> Message:
    """Support and provider messages: English, no quiet hours, ids rather than names."""
    if n.channel == "sms":
        body = renderer.sms(n.kind, "en", context)
        return Message(notification_id=n.id, kind=n.kind, channel="sms", to=to, body=body,
                       due_at=n.due_at, sms=measure(body))
    email = renderer.email(n.kind, "en", context)
    return Message(notification_id=n.id, kind=n.kind, channel="email", to=to,
                   subject=email.subject, body=email.text, html=email.html, due_at=n.due_at)


def compose_support_message(n: Stored, provider: ProviderRecord | None, settings: Settings,
                            renderer: Renderer, now: datetime) -> Message:
    """An alert to the support team: which client (by id), which provider, what, how old.
    Raises `TemplateError` when its template is missing or fails to render."""
    p = n.params
    context: dict[str, Any] = {
        "practice_name": settings.practice_name,
        "provider_name": provider.provider.name if provider else p.get("provider_id"),
        "provider_id": p.get("provider_id"), "client_id": p.get("client_id"),
        "item_kind": str(p.get("item_kind", "")).replace("_", " "),
        "item_id": p.get("item_id"), "appointment_id": p.get("appointment_id"),
        "start_utc": p.get("start"),
    }
    if p.get("opened_at"):
        context["age_h"] = _hours(now - datetime.fromisoformat(p["opened_at"]))
    to = settings.support_phone if n.channel == "sms" else settings.support_email
    return _staff_message(n, to or "", context, renderer)


def greeting(local: datetime) -> str:
    """The greeting that fits the hour where the reader is: a digest run by hand (or a cron
    set to another hour) is not always read in the morning. In the small hours none of the
    three fits, so it is a plain hello."""
    if 5 <= local.hour < 12:
        return "Good morning"
    if 12 <= local.hour < 18:
        return "Good afternoon"
    if local.hour >= 18:
        return "Good evening"
    return "Hello"


@dataclass(frozen=True)
class DigestLine:
    kind: str
    client_id: str
    age_h: int
    left_h: int
    overdue: bool


def compose_provider_digest(n: Stored, provider: ProviderRecord, queue: ProviderQueueRecord,
                            settings: Settings, policy: Policy, renderer: Renderer,
                            now: datetime) -> Message:
    """The provider's open items, oldest first, with age and time left before escalation.
    Ages and times left are in whole hours. Raises `TemplateError` when its template is
    missing or fails to render."""
    items = sorted(queue.items.values(), key=lambda item: item.opened_at)
    lines = [DigestLine(kind=item.kind.replace("_", " "), client_id=item.client_id,
                        age_h=_hours(now - item.opened_at),
                        left_h=max(0, _hours(item.escalates_at - now)),
                        overdue=item.escalates_at <= now)
             for item in items]
    shown = lines[:policy.digest_max_items]
    zone = provider.provider.zone
    local = now.astimezone(zone)
    # The list is as of the moment it is written; its date and time say so, in the
    # provider's zone, and the items carry their own ages.
    context = {"provider_name": provider.provider.name, "practice_name": settings.practice_name,
               "items": shown, "more": len(lines) - len(shown), "count": len(lines),
               "overdue": sum(line.overdue for line in lines),
               "greeting": greeting(local),
               "as_of": f"{format_day(local.date(), 'en')}, {format_local_time(now, zone, 'en')}"}
    return _staff_message(n, provider.provider.email, context, renderer)
