"""Calendar invites (.ics) built with `icalendar`: pure data in, bytes out.

One stable UID per appointment; SEQUENCE raised on every change so calendar clients replace
the event instead of adding a second one; UTC times; no clinical detail anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from icalendar import Calendar, Event, vCalAddress, vText

Method = Literal["REQUEST", "CANCEL"]


@dataclass(frozen=True)
class Invite:
    appointment_id: str
    start: datetime
    end: datetime
    sequence: int
    method: Method
    organizer_email: str
    organizer_name: str
    attendee_email: str
    attendee_name: str
    summary: str
    description: str
    location: str | None = None


def invite_uid(appointment_id: str, organizer_email: str) -> str:
    """Stable across every change of the appointment, unique to it."""
    domain = organizer_email.rpartition("@")[2] or "notifier.local"
    return f"appointment-{appointment_id}@{domain}"


def build_invite(invite: Invite, stamp: datetime) -> bytes:
    """The .ics file for `invite`; `stamp` (DTSTAMP) is when it is sent."""
    cal = Calendar()
    cal.add("prodid", "-//Notifier//Appointment invites//EN")
    cal.add("version", "2.0")
    cal.add("method", invite.method)
    event = Event()
    event.add("uid", invite_uid(invite.appointment_id, invite.organizer_email))
    event.add("sequence", invite.sequence)
    event.add("dtstamp", stamp.astimezone(UTC))
    event.add("dtstart", invite.start.astimezone(UTC))
    event.add("dtend", invite.end.astimezone(UTC))
    event.add("summary", invite.summary)
    event.add("description", invite.description)
    if invite.location:
        event.add("location", invite.location)
    event.add("status", "CANCELLED" if invite.method == "CANCEL" else "CONFIRMED")
    organizer = vCalAddress(f"mailto:{invite.organizer_email}")
    organizer.params["cn"] = vText(invite.organizer_name)
    event.add("organizer", organizer)
    attendee = vCalAddress(f"mailto:{invite.attendee_email}")
    attendee.params["cn"] = vText(invite.attendee_name)
    attendee.params["role"] = vText("REQ-PARTICIPANT")
    attendee.params["rsvp"] = vText("FALSE")
    event.add("attendee", attendee)
    cal.add_component(event)
    return bytes(cal.to_ical())
