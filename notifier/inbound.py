"""Replies to our SMS: opt-out and opt-in words, HELP, and our own two keywords.

`C` confirms the client's next appointment and `R` asks support to reschedule it; our own
keywords never use CANCEL, an opt-out word. The service is not a chat channel: anything
else gets a pointer to the portal.
"""

from __future__ import annotations

import logging
from datetime import datetime

from notifier.config import Settings
from notifier.policy.common import for_support
from notifier.policy.plan import Plan, entity_ref
from notifier.records import AppointmentRecord, ClientRecord, Record, VisitsRecord
from notifier.render import format_local_datetime
from notifier.store import Store

log = logging.getLogger(__name__)

#: SPEC rule 5 / carrier practice: any of these alone, in any letter case.
OPT_OUT_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE",
                           "OPTOUT"})
OPT_IN_WORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})
CONFIRM, RESCHEDULE = "C", "R"


def keyword(body: str) -> str:
    """The reply as a keyword: trimmed, upper case, trailing punctuation dropped."""
    return body.strip().rstrip(".!").strip().upper()


def next_appointment(store: Store, client: ClientRecord, now: datetime
                     ) -> AppointmentRecord | None:
    visits = store.load_record(entity_ref("visits", client.client.id))
    if not isinstance(visits, VisitsRecord):
        return None
    ahead = sorted((start, appt_id) for appt_id, start in visits.upcoming.items() if start > now)
    for _, appt_id in ahead:
        record = store.load_record(entity_ref("appointment", appt_id))
        if isinstance(record, AppointmentRecord) and record.status == "scheduled":
            return record
    return None


def reply_to_sms(store: Store, settings: Settings, sender: str, body: str, message_sid: str,
                 now: datetime) -> str | None:
    """Act on an inbound SMS; the text to answer with, or None for no answer."""
    word = keyword(body)
    if word in OPT_OUT_WORDS:
        store.set_sms_opt_out(sender, True)
        log.info("inbound %s: opted out", message_sid)
        return None  # the carrier sends the opt-out confirmation; ours would be refused
    if word in OPT_IN_WORDS:
        store.set_sms_opt_out(sender, False)
        return (f"{settings.practice_name}: you will get our texts again. "
                "Reply STOP to opt out.")
    if word in HELP_WORDS:
        return (f"{settings.practice_name}: appointment and refill reminders. Help: "
                f"{settings.practice_phone} or {settings.practice_url}. Reply STOP to opt out. "
                "Msg & data rates may apply.")
    # Still one client per number here (the first by id); see the shared-phone change.
    clients = store.clients_for_phone(sender)
    client = clients[0] if clients else None
    if word in (CONFIRM, RESCHEDULE):
        if client is None:
            return (f"{settings.practice_name}: we could not match this number. "
                    f"Please call {settings.practice_phone}.")
        appt = next_appointment(store, client, now)
        if appt is None:
            return (f"{settings.practice_name}: we found no upcoming appointment. "
                    f"Questions: {settings.practice_phone}.")
        when = format_local_datetime(appt.appointment.start, client.client.zone,
                                     client.client.locale)
        if word == CONFIRM:
            confirm(store, appt.appointment.id, now)
            return f"{settings.practice_name}: thank you, your appointment on {when} is confirmed."
        store.write_plan(Plan(outcome="applied", add=tuple(for_support(
            kind="reschedule_request", entity=entity_ref("client", client.client.id),
            occasion=message_sid or now.strftime("%Y%m%dT%H%M%S"), due_at=now,
            params={"client_id": client.client.id, "appointment_id": appt.appointment.id,
                    "provider_id": appt.appointment.provider_id,
                    "start": appt.appointment.start.isoformat()})),
            ), now)
        return (f"{settings.practice_name}: thank you, our support team will contact you to "
                f"find a new time for your appointment on {when}.")
    return (f"{settings.practice_name}: this number cannot take messages. To reach your "
            f"provider, use the portal: {settings.practice_url}. In an emergency call 911.")


def confirm(store: Store, appointment_id: str, now: datetime) -> None:
    def change(record: Record | None) -> Record | None:
        if isinstance(record, AppointmentRecord) and record.confirmed_at is None:
            return record.model_copy(update={"confirmed_at": now})
        return None

    store.update_record(entity_ref("appointment", appointment_id), change)
