"""Delivering one notification: the send-time checks, the channel call, the ledger update.

For each claimed id: `begin` (compare-and-set `scheduled -> sending`, with a lease), then
expiry, recipient, quiet hours and channel checks against the records as they are now
(and, for an update or cancellation, whether the client ever heard of the booking),
then the send, then `finish`. A retryable failure puts the notification back on our own
schedule with backoff (never into dramatiq's delay queue); a permanent one records
`failed` with the provider's code.

The one window for a duplicate is a process dying inside `channel.send`: the notification
stays `sending`, its lease runs out, and the next attempt asks the channel whether the
message went out (`already_sent`); a channel that cannot tell is sent again (at least
once beats never for a reminder).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import redis

from notifier.config import Settings
from notifier.delivery.channels import Channel, Message
from notifier.delivery.compose import (
    Stored,
    compose_client_message,
    compose_provider_digest,
    compose_support_message,
)
from notifier.delivery.fallback import closed_now, use_other_channel
from notifier.delivery.render import Renderer
from notifier.delivery.retry import GiveUp, next_attempt
from notifier.delivery.sms_budget import OverBudget, short_url
from notifier.errors import PermanentError, RetryableError, StoreError, TemplateError
from notifier.ledger.ratelimit import RateLimiter
from notifier.ledger.records import (
    AppointmentRecord,
    ClientRecord,
    PrescriptionRecord,
    ProviderQueueRecord,
    ProviderRecord,
    VisitsRecord,
)
from notifier.ledger.store import Store
from notifier.policy.appointments import Told, told_of_booking
from notifier.policy.common import PLANNED_AFTER_EXPIRY, QUIET_HOURS_PAST_EXPIRY
from notifier.policy.figures import Policy
from notifier.policy.plan import entity_ref
from notifier.policy.timing import hold_for_quiet_hours
from notifier.policy.visits import unwanted_because

log = logging.getLogger(__name__)


class SentButUnrecorded(StoreError):
    """The provider took the message but Redis would not record it."""

#: A message ready to send with a note for the ledger, or the outcome already recorded.
Prepared = tuple[Message, str] | str

#: Recording a send that went out is retried this often (a Redis failover takes moments).
RECORD_TRIES = 4
RECORD_PAUSE_S = 0.25
#: Nudges to book a visit, checked against the client's bookings when they go out.
VISIT_NUDGES = frozenset({"follow_up", "visit_required"})
#: Twilio's error for a number that replied STOP to our sender.
TWILIO_OPTED_OUT = "21610"
#: How long to wait for a client's details when a notification names an unknown client.
WAIT_FOR_CLIENT_S = 60.0
#: How long to wait, again and again, while an accepted event about a notification's subject
#: is not yet applied (applying takes milliseconds; a dead worker's turn, one lease).
WAIT_FOR_EVENTS_S = 1.0
#: Kinds that speak of a booking the client knows: sent only when they were told of it.
ABOUT_A_KNOWN_BOOKING = frozenset({"appointment_updated", "appointment_cancelled"})
NEVER_TOLD = "the client was never told of this booking"
SENT_AS_CONFIRMATION = "sent as a confirmation: the client was never told of the earlier time"
#: While another message about the appointment is being sent, a message that depends on its
#: outcome is put back this long (plus up to as much again, jittered).
WAIT_FOR_SENDING_S = 1.0


@dataclass
class Deliverer:
    store: Store
    channels: dict[str, Channel]
    renderer: Renderer
    settings: Settings
    policy: Policy
    limiters: dict[str, RateLimiter] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)

    def deliver(self, notification_id: str, now: datetime) -> str:
        """Take one claimed notification as far as it can go now; returns its outcome."""
        begun = self.store.schedule.begin(notification_id, now, self.settings.lease_s)
        if not begun.may_send:
            return begun.verdict
        n = Stored.from_fields(notification_id, begun.fields)
        try:
            return self._deliver(n, now, recovering=begun.verdict == "recover")
        except SentButUnrecorded:
            # Never retry a message that went out: it stays `sending`, its lease runs out,
            # and the recovery asks the channel before anything is sent again.
            log.exception("notification %s was sent but could not be recorded", n.id)
            return "unrecorded"
        except Exception:
            # A bug must not lose the notification: put it back to be tried again later,
            # until max_attempts gives up on it.
            log.exception("delivering %s failed unexpectedly", n.id)
            return self._retry(n, now, "internal error", None)

    def _finish(self, n: Stored, state: str, reason: str, now: datetime, **fields: object) -> str:
        self.store.schedule.finish(n.id, state, reason=reason, **fields)
        log.info("notification %s %s %s", n.id, state, reason)
        return state

    def _retry(self, n: Stored, now: datetime, reason: str, retry_after_s: float | None) -> str:
        due = next_attempt(n.attempts, reason, retry_after_s, n.expires_at, now, self.rng,
                           max_attempts=self.settings.max_attempts,
                           base_s=self.settings.retry_base_s)
        if isinstance(due, GiveUp):
            return self._finish(n, "failed", due.reason, now)
        return self._later(n, due, f"retrying: {reason}", "retrying")

    def _later(self, n: Stored, due: datetime, reason: str, outcome: str, *,
               not_an_attempt: bool = False, slot: float = 0.0) -> str:
        """Put the notification back on the schedule, unless it was superseded meanwhile."""
        result = self.store.schedule.reschedule(n.id, due, reason,
                                                not_an_attempt=not_an_attempt, slot=slot)
        if result == "cancelled":
            log.info("notification %s superseded while it was being sent", n.id)
            return "cancelled"
        return outcome

    def _deliver(self, n: Stored, now: datetime, recovering: bool) -> str:
        if now >= n.expires_at:
            return self._finish(n, "expired", expired_because(n, now), now)
        if self.store.turns.unapplied_about(subjects_of(n)):
            return self._wait_for_events(n, now)
        prepare = {"client": self._prepare_client, "support": self._prepare_support,
                   "provider": self._prepare_provider}.get(n.recipient)
        if prepare is None:
            return self._finish(n, "failed", f"no route for recipient {n.recipient}", now)
        try:
            prepared = prepare(n, now)
        except TemplateError as exc:
            return self._finish(n, "failed", f"template: {exc}", now)
        if isinstance(prepared, str):
            return prepared
        message, note = prepared
        channel = self.channels[message.channel]
        if recovering and channel.already_sent(message):
            return self._finish(n, "sent", "sent before a crash", now)
        paced = self._pace(n, message.channel, now)
        if paced:
            return paced
        # A last look just before the provider's call: rendering and pacing take time, and
        # an event about it may have been accepted, or applied and superseded it, meanwhile.
        superseded, unapplied = self.store.send_blockers(n.id, subjects_of(n))
        if superseded:
            return self._later(n, now, "superseded while being prepared", "cancelled")
        if unapplied:
            return self._wait_for_events(n, now)
        try:
            receipt = channel.send(message, now)
        except PermanentError as exc:
            outcome = self._finish(n, "failed", str(exc), now, code=exc.code)
            if n.recipient == "client":
                self._after_permanent_failure(n, message.to, exc, now)
            return outcome
        except RetryableError as exc:
            return self._retry(n, now, f"{exc.code or 'error'}: {exc}", exc.retry_after_s)
        sizes: dict[str, object] = {}
        if message.sms is not None:
            sizes = {"sms_encoding": message.sms.encoding, "sms_segments": message.sms.segments,
                     "provider_segments": receipt.segments}
        for attempt in range(RECORD_TRIES):
            try:
                return self._finish(n, "sent", note, now, sent_at=receipt.sent_at.timestamp(),
                                    receipt=receipt.provider_id, **sizes)
            except redis.RedisError as exc:
                if attempt == RECORD_TRIES - 1:
                    raise SentButUnrecorded(n.id) from exc
                time.sleep(RECORD_PAUSE_S * (attempt + 1))
        raise AssertionError("unreachable")

    def _wait_for_events(self, n: Stored, now: datetime) -> str:
        """An event about it was accepted (202) and is not applied yet: it may cancel or
        change this message, so nothing goes out ahead of what is already known."""
        return self._later(n, now + timedelta(seconds=WAIT_FOR_EVENTS_S),
                           "waiting for an accepted event about it to be applied", "waiting",
                           not_an_attempt=True)

    def _pace(self, n: Stored, channel: str, now: datetime) -> str | None:
        """Hold the send for its sender's next free slot, reserved once per notification."""
        limiter = self.limiters.get(channel)
        if limiter is None or not limiter.enabled or (n.slot and n.slot <= now):
            return None
        slot = limiter.reserve(now)
        if slot <= now:
            return None
        if slot >= n.expires_at:
            return self._finish(n, "expired", "the send rate could not fit it in before "
                                "it expired", now)
        return self._later(n, slot, "paced by the send rate", "paced", not_an_attempt=True,
                           slot=slot.timestamp())

    def _after_permanent_failure(self, n: Stored, address: str, exc: PermanentError,
                                 now: datetime) -> None:
        if exc.code == TWILIO_OPTED_OUT:
            # The carrier says this number replied STOP: record it like an inbound STOP.
            self.store.set_sms_opt_out(address, True)
        client = self.store.load_record(entity_ref("client", n.recipient_id))
        if isinstance(client, ClientRecord):
            self._use_other_channel(n, client, f"{n.channel} failed ({exc.code})", now)

    def _prepare_client(self, n: Stored, now: datetime) -> Prepared:
        """Checks against the client as they are now, then the message (or an outcome)."""
        refs = [entity_ref("client", n.recipient_id)]
        for kind, key in (("provider", "provider_id"), ("prescription", "prescription_id"),
                          ("appointment", "appointment_id")):
            if n.params.get(key):
                refs.append(entity_ref(kind, n.params[key]))
        records = self.store.load_records(refs)
        client = records.get(refs[0])
        if not isinstance(client, ClientRecord):
            due = now + timedelta(seconds=WAIT_FOR_CLIENT_S)
            if due >= n.expires_at:
                return self._finish(n, "suppressed", "client details never arrived", now)
            return self._later(n, due, "waiting for client details", "waiting",
                               not_an_attempt=True)
        held = hold_for_quiet_hours(now, client.client.zone, self.policy.quiet_hours)
        if held > now:
            if held >= n.expires_at:
                return self._finish(n, "expired", QUIET_HOURS_PAST_EXPIRY, now)
            return self._later(n, held, "quiet hours", "held", not_an_attempt=True)
        if n.kind in VISIT_NUDGES:
            visits = self.store.load_record(entity_ref("visits", n.recipient_id))
            unwanted = unwanted_because(n.kind, visits if isinstance(visits, VisitsRecord)
                                        else None, now, n.expires_at)
            if unwanted:
                return self._finish(n, "suppressed", unwanted, now)
        note = ""
        if n.kind in ABOUT_A_KNOWN_BOOKING:
            # Before the channel checks: nothing about a booking the client never heard
            # of goes out, on this channel or the other.
            told = self._told_of_booking(n)
            if told == "wait":
                due = now + timedelta(seconds=WAIT_FOR_SENDING_S * (1 + self.rng.random()))
                return self._later(n, due, "waiting for another message about this "
                                   "appointment to be sent", "waiting", not_an_attempt=True)
            if told == "never":
                if n.kind == "appointment_cancelled":
                    return self._finish(n, "suppressed", NEVER_TOLD, now)
                # A reschedule of a booking never announced announces the new time.
                n, note = replace(n, kind="appointment_confirmation"), SENT_AS_CONFIRMATION
        closed = closed_now(n.channel, client, self.store)
        if closed:
            self._use_other_channel(n, client, closed, now)
            return self._finish(n, "suppressed", closed, now)
        appt = records.get(entity_ref("appointment", n.params.get("appointment_id", "")))
        if isinstance(appt, AppointmentRecord):
            # The video link is the appointment's as it is now: one changed without a
            # reschedule must not send the client to the old room.
            join_url = str(appt.appointment.join_url) if appt.appointment.join_url else None
            if n.kind == "appointment_join_link" and join_url is None:
                return self._finish(n, "suppressed", "the visit no longer has a video link",
                                    now)
            n = replace(n, params={**n.params, "join_url": join_url})
        provider = records.get(entity_ref("provider", n.params.get("provider_id", "")))
        rx = records.get(entity_ref("prescription", n.params.get("prescription_id", "")))
        appointment_id = n.params.get("appointment_id")

        def shorten() -> str:
            return short_url(self.settings.public_url,
                             self.store.short_links.token_for(str(appointment_id)))

        try:
            message = compose_client_message(
                n, client, provider if isinstance(provider, ProviderRecord) else None,
                self.settings, self.renderer, now,
                prescription=rx if isinstance(rx, PrescriptionRecord) else None,
                shorten=shorten if appointment_id else None)
        except OverBudget as exc:
            # The last step of the budget rule: not sent as SMS at all, by email instead.
            reason = f"over the SMS budget: {exc}"
            self._use_other_channel(n, client, reason, now)
            return self._finish(n, "suppressed", reason, now, sms_encoding=exc.size.encoding,
                                sms_segments=exc.size.segments)
        return message, "; ".join(part for part in (note, message.fallback) if part)

    def _told_of_booking(self, n: Stored) -> Told:
        """Whether the client heard of this booking: from the ledger states of the other
        client notifications about the appointment. The same message on another channel
        is left out: it decides the same way (and two of them being sent at once must not
        wait for each other)."""
        message = n.id.rsplit(":", 1)[0]
        return told_of_booking(
            entry[1] if entry is not None else None
            for other, entry in self.store.about_entity(n.entity).items()
            if other.rsplit(":", 1)[0] != message and (entry is None or entry[0] == "client"))

    def _use_other_channel(self, n: Stored, client: ClientRecord, why: str,
                           now: datetime) -> None:
        use_other_channel(self.store, n.id, n.channel, client, why, now)

    def _prepare_support(self, n: Stored, now: datetime) -> Prepared:
        """Support alerts ignore quiet hours; SMS only when a support phone is set."""
        if n.channel == "sms" and not self.settings.support_phone:
            return self._finish(n, "suppressed", "NOTIFIER_SUPPORT_PHONE is not set", now)
        provider = self.store.load_record(entity_ref("provider",
                                                     n.params.get("provider_id", "")))
        return compose_support_message(
            n, provider if isinstance(provider, ProviderRecord) else None, self.settings,
            self.renderer, now), ""

    def _prepare_provider(self, n: Stored, now: datetime) -> Prepared:
        """The provider digest lists what is open when it is sent; nothing open, no email."""
        records = self.store.load_records([entity_ref("provider", n.recipient_id),
                                           entity_ref("provider_queue", n.recipient_id)])
        provider = records.get(entity_ref("provider", n.recipient_id))
        queue = records.get(entity_ref("provider_queue", n.recipient_id))
        if not isinstance(provider, ProviderRecord):
            return self._finish(n, "suppressed", "unknown provider", now)
        if not isinstance(queue, ProviderQueueRecord) or not queue.items:
            return self._finish(n, "suppressed", "nothing open", now)
        return compose_provider_digest(n, provider, queue, self.settings, self.policy,
                                       self.renderer, now), ""


def expired_because(n: Stored, now: datetime) -> str:
    """Why `n` is past its expiry when a worker takes it at `now`: it was planned that way
    (an event applied after the moment it was about), or the workers reached it late (none
    running, or a backlog); the lateness says how late."""
    if n.created_at is not None and n.created_at >= n.expires_at:
        return PLANNED_AFTER_EXPIRY
    return (f"the workers reached it only after its expiry, "
            f"{_duration(now - n.due_at)} after it was due")


def _duration(span: timedelta) -> str:
    """A span as a person reads it: `40 s`, `12 min`, `3 h 5 min`, `2 days 4 h`."""
    seconds = max(0, int(span.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} day{'s' if days != 1 else ''}" + (f" {hours} h" if hours else "")
    if hours:
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    return f"{minutes} min" if minutes else f"{seconds} s"


def subjects_of(n: Stored) -> list[str]:
    """The subjects (see `policy.ordering`) whose unapplied events could change `n`: what it
    is about, the appointment or prescription it names, and its client."""
    refs = [n.entity] if n.entity else []
    for kind, key in (("appointment", "appointment_id"), ("prescription", "prescription_id")):
        if n.params.get(key):
            refs.append(entity_ref(kind, n.params[key]))
    if n.recipient == "client":
        refs.append(entity_ref("client", n.recipient_id))
    return list(dict.fromkeys(refs))
