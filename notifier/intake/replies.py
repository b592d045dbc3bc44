"""Replies to our SMS: opt-out and opt-in words, HELP, and our own two keywords.

A reply is read as one word after `normalise`: people write "Opt out", "opt-out", "stop?",
"\u201cSTOP\u201d" or "Stop 🛑" and mean STOP, and Spanish speakers write PARAR or BAJA. The
words are the table `REPLY_WORDS`, the one place they are listed.

`C` confirms the soonest upcoming appointment of any client with the sender's number (a
family may share one phone) and `R` asks support to reschedule it; the answer names whose
appointment it was. Our own keywords never use CANCEL, an opt-out word. The service is not
a chat channel: anything else gets a pointer to the portal. Answers are the templates in
`templates/replies/`, in Spanish for a Spanish word or when the number's clients are
Spanish-speaking.
"""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo

from notifier.config import Settings
from notifier.delivery.render import DEFAULT_LOCALE, Renderer, format_local_datetime
from notifier.delivery.sms_budget import sms_name
from notifier.intake.events import Client
from notifier.ledger.records import AppointmentRecord, ClientRecord, Record, VisitsRecord
from notifier.ledger.store import Store
from notifier.policy.common import for_support
from notifier.policy.plan import Plan, entity_ref
from notifier.webhooks.catalogue import Announcement

log = logging.getLogger(__name__)

Action = Literal["opt_out", "opt_in", "help", "confirm", "reschedule"]
#: The locales a client may have, so every reply exists in each.
LOCALES: tuple[str, ...] = get_args(Client.model_fields["locale"].annotation)
UTC_ZONE = ZoneInfo("UTC")


@dataclass(frozen=True)
class ReplyWord:
    #: As people know it; matched after `normalise`, so "OPTOUT" is also "opt-out" and
    #: "Opt out!", and "SI" is also "Sí".
    word: str
    action: Action
    #: "es" for a Spanish word (the answer is in Spanish); None for a word either language
    #: uses (our Spanish messages say "Responda STOP"): the answer follows the clients.
    locale: str | None = None
    #: One of Twilio's own opt-out keywords: sent exactly (any case, trimmed), Twilio
    #: blocks the number and confirms by itself, and would refuse an answer of ours.
    carrier_confirms: bool = False


#: Every word we act on (CTIA's and Twilio's opt-out list, Spanish equivalents, HELP, and
#: our own C and R). A table test in tests/web/test_provider_hooks.py tries each of them.
REPLY_WORDS: tuple[ReplyWord, ...] = (
    # OPTOUT is also "OPT OUT" and "opt-out": `normalise` drops the space and the hyphen
    # (only the exact OPTOUT is Twilio's, see `carrier_confirmed`).
    *(ReplyWord(w, "opt_out", carrier_confirms=True) for w in (
        "STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT")),
    *(ReplyWord(w, "opt_out", "es") for w in ("ALTO", "PARAR", "CANCELAR", "BAJA")),
    *(ReplyWord(w, "opt_in") for w in ("START", "YES", "UNSTOP")),
    *(ReplyWord(w, "opt_in", "es") for w in ("INICIO", "ALTA", "SI")),
    *(ReplyWord(w, "help") for w in ("HELP", "INFO")),
    ReplyWord("AYUDA", "help", "es"),
    ReplyWord("C", "confirm"),
    ReplyWord("R", "reschedule"),
)

#: The answers (`templates/replies/{name}.{locale}.txt`); start-up renders each one.
REPLY_TEMPLATES = ("opted_out", "opted_in", "help", "confirmed", "reschedule",
                   "no_appointment", "unknown_number", "not_a_chat")


def normalise(body: str) -> str:
    """A reply reduced to its letters and digits, upper case.

    NFKD turns full-width and other compatibility forms into plain letters and splits
    accents off (Í -> I + a combining mark); then only letters and digits are kept, so
    combining marks, variation selectors, zero-width and other invisible characters,
    quotes, punctuation, emoji, hyphens and spaces all go. A sentence stays a sentence
    ("please stop by" is PLEASESTOPBY, not STOP): only a reply that is the word counts.
    """
    kept = (ch for ch in unicodedata.normalize("NFKD", body)
            if unicodedata.category(ch)[0] in "LN")
    return "".join(kept).upper()


#: `REPLY_WORDS` by their normalised form (a test checks no two rows share one).
WORDS = {normalise(w.word): w for w in REPLY_WORDS}


def read_word(body: str) -> ReplyWord | None:
    return WORDS.get(normalise(body))


def carrier_confirmed(body: str, word: ReplyWord) -> bool:
    """Whether Twilio itself took `body` as an opt-out (its keywords, exactly): then it has
    confirmed it and our answer would be refused. Any other spelling ("Stop 🛑", "opt-out",
    PARAR) reaches only us, and the confirmation is ours to send."""
    return word.carrier_confirms and body.strip().upper() == word.word


def reply_locale(word: ReplyWord | None, clients: list[ClientRecord]) -> str:
    """The language of our answer: a Spanish word's, else the one all the number's clients
    share, else English."""
    if word is not None and word.locale is not None:
        return word.locale
    locales = {c.client.locale for c in clients}
    return locales.pop() if len(locales) == 1 else DEFAULT_LOCALE


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


def soonest(candidates: list[tuple[ClientRecord, AppointmentRecord]]
            ) -> tuple[ClientRecord, AppointmentRecord] | None:
    """The appointment a C or R from a shared number is about: the soonest of any of its
    clients (by start, then client id, so a tie always picks the same one)."""
    if not candidates:
        return None
    return min(candidates, key=lambda c: (c[1].appointment.start, c[0].client.id))


def reply_to_sms(store: Store, settings: Settings, renderer: Renderer, sender: str, body: str,
                 message_sid: str, now: datetime) -> str | None:
    """Act on an inbound SMS; the text to answer with, or None for no answer."""
    word = read_word(body)
    clients = store.clients_for_phone(sender)
    locale = reply_locale(word, clients)
    context: dict[str, Any] = {"practice_name": settings.practice_name,
                               "practice_phone": settings.practice_phone,
                               "practice_url": settings.practice_url}

    def answer(name: str, **more: Any) -> str:
        return renderer.reply(name, locale, {**context, **more})

    if word is None:
        return answer("not_a_chat")
    if word.action == "opt_out":
        # Per number, so for every client who shares it.
        store.set_sms_opt_out(sender, True, "reply")
        log.info("inbound %s: opted out", message_sid)
        return None if carrier_confirmed(body, word) else answer("opted_out")
    if word.action == "opt_in":
        store.set_sms_opt_out(sender, False, "reply")
        return answer("opted_in")
    if word.action == "help":
        return answer("help")
    if not clients:
        return answer("unknown_number")
    found = soonest([(client, appt) for client in clients
                     if (appt := next_appointment(store, client, now)) is not None])
    if found is None:
        return answer("no_appointment")
    client, appt = found
    # The same rule as a notification's SMS: only basic GSM-7 letters of a name (an emoji
    # there would make the whole reply UCS-2).
    about = {"first_name": sms_name(client.client.first_name),
             "start_local": format_local_datetime(appt.appointment.start, client.client.zone,
                                                  locale)}
    ids = {"appointment_id": appt.appointment.id, "client_id": client.client.id,
           "provider_id": appt.appointment.provider_id}
    if word.action == "confirm":
        confirm(store, appt.appointment.id, now, Announcement(
            "appointment.confirmed", appt.appointment.id, {**ids, "source": "sms_reply"}))
        return answer("confirmed", **about)
    store.write_plan(Plan(outcome="applied", add=tuple(for_support(
        kind="reschedule_request", entity=entity_ref("client", client.client.id),
        occasion=message_sid or now.strftime("%Y%m%dT%H%M%S"), due_at=now,
        params={"client_id": client.client.id, "appointment_id": appt.appointment.id,
                "provider_id": appt.appointment.provider_id,
                "start": appt.appointment.start.isoformat()})),
        announce=(Announcement("appointment.reschedule_requested", appt.appointment.id,
                               {**ids, "source": "sms_reply"},
                               once=f"reschedule:{message_sid}" if message_sid else ""),)),
        now)
    return answer("reschedule", **about)


def check_reply_templates(renderer: Renderer, settings: Settings, now: datetime) -> None:
    """Render every answer in every locale, so a missing or broken reply template stops
    start-up instead of failing the first client who writes (raises TemplateError)."""
    sample = {"practice_name": settings.practice_name, "practice_phone": settings.practice_phone,
              "practice_url": settings.practice_url, "first_name": "Ana"}
    for name in REPLY_TEMPLATES:
        for locale in LOCALES:
            renderer.reply(name, locale, {
                **sample, "start_local": format_local_datetime(now, UTC_ZONE, locale)})


def confirm(store: Store, appointment_id: str, now: datetime,
            announcement: Announcement) -> None:
    """Record the appointment confirmed at `now` (the first confirmation only), and
    announce it in the same transaction."""
    def change(record: Record | None) -> Record | None:
        if isinstance(record, AppointmentRecord) and record.confirmed_at is None:
            return record.model_copy(update={"confirmed_at": now})
        return None

    store.update_record(entity_ref("appointment", appointment_id), change, (announcement,))
