"""Building a message from a notification, at send time: pure, given the records.

Contact details and preferences are the client's as they are now (a number changed last
week is the one used); what the message is about (the appointment's times, the invite's
SEQUENCE) was fixed when it was planned.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from notifier.channels import Attachment, Message
from notifier.channels.calendar import Invite, build_invite
from notifier.config import Settings
from notifier.records import ClientRecord, ProviderRecord
from notifier.render import Renderer, format_local_datetime, format_local_time
from notifier.schedule import from_epoch

#: SMS carry at most this much of a first name, so every body stays within two segments.
SMS_NAME_CHARS = 20
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

    @classmethod
    def from_fields(cls, notification_id: str, f: dict[str, str]) -> Stored:
        return cls(
            id=notification_id, kind=f["kind"], channel=f["channel"], recipient=f["to"],
            recipient_id=f["to_id"], due_at=from_epoch(f["due"]),
            expires_at=from_epoch(f["expires"]), params=json.loads(f.get("params") or "{}"),
            attempts=int(f.get("attempts") or 0),
        )


def client_context(n: Stored, client: ClientRecord, provider: ProviderRecord | None,
                   settings: Settings) -> dict[str, Any]:
    c, p = client.client, n.params
    context: dict[str, Any] = {
        "first_name": c.first_name,
        "practice_name": settings.practice_name,
        "practice_phone": settings.practice_phone,
        "practice_url": settings.practice_url,
        "provider_name": provider.provider.name if provider else "your provider",
        "join_url": p.get("join_url"),
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
    return context


def invite_for(n: Stored, client: ClientRecord, settings: Settings, now: datetime) -> Attachment:
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
                           settings: Settings, renderer: Renderer, now: datetime) -> Message:
    """The message for a client notification on its channel (address checked by caller)."""
    c = client.client
    context = client_context(n, client, provider, settings)
    if n.channel == "sms":
        # A long name must not push a message past two segments.
        context["first_name"] = c.first_name[:SMS_NAME_CHARS]
        body = renderer.sms(n.kind, c.locale, context)
        return Message(notification_id=n.id, kind=n.kind, channel="sms", to=c.phone or "",
                       body=body, due_at=n.due_at, expires_at=n.expires_at)
    email = renderer.email(n.kind, c.locale, context)
    attachments = (invite_for(n, client, settings, now),) if n.kind in INVITE_METHODS else ()
    return Message(notification_id=n.id, kind=n.kind, channel="email", to=c.email or "",
                   subject=email.subject, body=email.text, html=email.html,
                   attachments=attachments, due_at=n.due_at, expires_at=n.expires_at)
