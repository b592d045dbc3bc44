"""A notification's message as the console shows it: rendered now, from the params the
ledger stored and the records as they are now, with the very code the deliverer sends
with (`delivery.compose`, after `delivery.decide`'s own substitution of the appointment's
current video link). Pure, given what was read.

The ledger keeps no message bodies (only the params, to keep each hash small and health
information out of Redis longer than needed), so what is shown is what a send now would
carry: the current templates, the client's current name and zone. A message that cannot
be rendered (a retired row, whose content is gone; a client whose details never arrived;
a template error; an SMS over its budget) says why instead.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from notifier.config import Settings
from notifier.delivery.channels import Message
from notifier.delivery.compose import (
    Stored,
    compose_client_message,
    compose_provider_digest,
    compose_support_message,
)
from notifier.delivery.fallback import closed_reason
from notifier.delivery.render import Renderer
from notifier.delivery.sms_budget import SHORT_TOKEN_CHARS, OverBudget, short_url
from notifier.delivery.sms_text import SmsSize
from notifier.errors import TemplateError
from notifier.ledger.records import (
    AppointmentRecord,
    ClientRecord,
    PrescriptionRecord,
    ProviderQueueRecord,
    ProviderRecord,
    Record,
)
from notifier.policy.figures import Policy
from notifier.policy.plan import entity_ref

#: Stands for a short link not made yet (made at the first send that needs one): as long
#: as a real one, so the segment count is the same.
PLACEHOLDER_TOKEN = "S" * SHORT_TOKEN_CHARS


@dataclass(frozen=True)
class Rendered:
    """What the page shows of the message: an SMS's text and size, or an email's subject,
    text, HTML source and calendar invite (the .ics text); or why none could be rendered
    (`problem`)."""

    channel: str = ""
    text: str = ""
    sms: SmsSize | None = None
    subject: str = ""
    html: str = ""
    ics: str = ""
    problem: str = ""
    #: why its channel cannot reach the client now (`delivery.fallback.closed_reason`: no
    #: number, no address, the channel refused), "" when it can; the opt-out list is
    #: shown apart, on the client's page
    closed: str = ""


def stored_of(notification_id: str, fields: dict[str, str]) -> Stored | None:
    """The notification as the deliverer reads it (`Stored.from_fields`), or None when its
    hash no longer holds what a message is made from (a retired row, an unknown id)."""
    if not fields or fields.get("retired"):
        return None
    try:
        return Stored.from_fields(notification_id, fields)
    except (KeyError, ValueError):
        return None


def render_message(n: Stored | None, records: dict[str, Record], settings: Settings,
                   renderer: Renderer, policy: Policy, now: datetime,
                   short_token: str | None = None) -> Rendered:
    """The message of `n` rendered at `now` from `records` (by ref: those
    `delivery.decide.record_refs(n)` names that exist). `short_token`: the appointment's
    short-link token if one was made (else `PLACEHOLDER_TOKEN` stands in). Never raises for
    what a stored notification can hold: the problem is returned instead."""
    if n is None:
        return Rendered(problem="Its content is no longer kept (retired past the retention, "
                                "or never recorded): there is nothing to render.")
    try:
        message = _compose(n, records, settings, renderer, policy, now, short_token)
    except OverBudget as exc:
        return Rendered(channel=n.channel, sms=exc.size,
                        problem=f"Not sendable as SMS: {exc}. The worker sends it by email "
                                "instead.")
    except (TemplateError, KeyError, ValueError, TypeError) as exc:
        return Rendered(channel=n.channel, problem=f"It cannot be rendered now: {exc}")
    if isinstance(message, str):
        return Rendered(channel=n.channel, problem=message)
    ics = next((a.content.decode("utf-8", "replace") for a in message.attachments
                if a.filename.endswith(".ics")), "")
    client = records.get(entity_ref("client", n.recipient_id))
    closed = (closed_reason(n.channel, client, opted_out=False)
              if n.recipient == "client" and isinstance(client, ClientRecord) else "")
    return Rendered(channel=message.channel, text=message.body, sms=message.sms,
                    subject=message.subject or "", html=message.html or "", ics=ics,
                    closed=closed)


def _compose(n: Stored, records: dict[str, Record], settings: Settings, renderer: Renderer,
             policy: Policy, now: datetime, short_token: str | None) -> Message | str:
    def record(kind: str, entity_id: Any, cls: type[Any]) -> Any:
        found = records.get(entity_ref(kind, str(entity_id or "")))
        return found if isinstance(found, cls) else None

    if n.recipient == "support":
        return compose_support_message(n, record("provider", n.params.get("provider_id"),
                                                 ProviderRecord), settings, renderer, now)
    if n.recipient == "provider":
        provider = record("provider", n.recipient_id, ProviderRecord)
        queue = record("provider_queue", n.recipient_id, ProviderQueueRecord)
        if provider is None or queue is None:
            return "The provider or their queue is not on record: there is no digest to show."
        return compose_provider_digest(n, provider, queue, settings, policy, renderer, now)
    client = record("client", n.recipient_id, ClientRecord)
    if client is None:
        return "The client's details are not on record: the message cannot be written."
    appt = record("appointment", n.params.get("appointment_id"), AppointmentRecord)
    if appt is not None:
        # As `delivery.decide` does: the video link is the appointment's as it is now.
        link = appt.appointment.join_url
        n = replace(n, params={**n.params, "join_url": str(link) if link else None})
    appointment_id = n.params.get("appointment_id")
    token = short_token or PLACEHOLDER_TOKEN
    return compose_client_message(
        n, client, record("provider", n.params.get("provider_id"), ProviderRecord),
        settings, renderer, now,
        prescription=record("prescription", n.params.get("prescription_id"),
                            PrescriptionRecord),
        shorten=(lambda: short_url(settings.public_url, token)) if appointment_id else None)
