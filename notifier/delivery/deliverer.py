"""Delivering one notification: the reads, the channel call, the ledger update.

For each claimed id: `begin` (compare-and-set `scheduled -> sending`, with a lease), then
the send-time rules of `delivery.decide` against the records as they are now (this module
reads what they ask for and acts on their answer), then the send, then `finish`. A
retryable failure puts the notification back on our own schedule with backoff
(`delivery.retry`; never into dramatiq's delay queue); a permanent one records `failed`
with the provider's code, and a client's message goes by the other channel
(`delivery.fallback`).

The one window for a duplicate is a process dying inside `channel.send`: the notification
stays `sending`, its lease runs out, and the next attempt asks the channel whether the
message went out (`already_sent`); a channel that cannot tell is sent again (at least
once beats never for a reminder).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field, fields, replace
from datetime import datetime

from notifier.config import Settings
from notifier.delivery.channels import Channel, Message
from notifier.delivery.compose import (
    Stored,
    compose_client_message,
    compose_provider_digest,
    compose_support_message,
)
from notifier.delivery.decide import (
    Facts,
    FinishAs,
    HoldUntil,
    NoSend,
    Outcome,
    Read,
    Send,
    SendDigest,
    SendToClient,
    SendToSupport,
    UseOtherChannel,
    decide,
    last_look,
    over_budget,
    paced,
    record_refs,
    subjects_of,
    told_of,
)
from notifier.delivery.fallback import use_other_channel
from notifier.delivery.render import Renderer
from notifier.delivery.retry import GiveUp, next_attempt
from notifier.delivery.sms_budget import OverBudget, short_url
from notifier.errors import PermanentError, RetryableError, StoreError, TemplateError
from notifier.ledger.notifications import Rescheduled, Verdict
from notifier.ledger.ratelimit import RateLimiter
from notifier.ledger.records import ClientRecord
from notifier.ledger.store import Store
from notifier.policy.figures import Policy
from notifier.policy.plan import entity_ref

log = logging.getLogger(__name__)


class SentButUnrecorded(StoreError):
    """The provider took the message but Redis would not record it."""


#: Recording a send that went out is retried this often (a Redis failover takes moments).
RECORD_TRIES = 4
RECORD_PAUSE_S = 0.25
#: Twilio's error for a number that replied STOP to our sender.
TWILIO_OPTED_OUT = "21610"
#: A decision asks for each fact at most once; more rounds than this is a bug in `decide`.
MAX_READS = len(fields(Facts))


@dataclass
class Deliverer:
    """Delivers claimed notifications: the store, the channels by name (`sms`, `email`), the
    renderer, settings, policy and the send-rate limiters by channel."""
    store: Store
    channels: dict[str, Channel]
    renderer: Renderer
    settings: Settings
    policy: Policy
    limiters: dict[str, RateLimiter] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)

    def deliver(self, notification_id: str, now: datetime) -> Outcome:
        """Take one claimed notification as far as it can go now; returns its `Outcome`.
        Channel errors, template errors and bugs are not raised: they end in a retry or a
        final state, and a send that went out but could not be recorded is
        `Outcome.UNRECORDED`. Raises `StoreUnavailable` / `StoreError` when Redis fails
        before anything is sent (`begin`) or while the notification is put back after an
        unexpected error."""
        begun = self.store.schedule.begin(notification_id, now, self.settings.lease_s)
        if not begun.may_send:
            return Outcome(begun.verdict)
        n = Stored.from_fields(notification_id, begun.fields)
        try:
            return self._deliver(n, now, recovering=begun.verdict is Verdict.RECOVER)
        except SentButUnrecorded:
            # Never retry a message that went out: it stays `sending`, its lease runs out,
            # and the recovery asks the channel before anything is sent again.
            log.exception("notification %s was sent but could not be recorded", n.id)
            return Outcome.UNRECORDED
        except Exception:
            # A bug must not lose the notification: put it back to be tried again later,
            # until max_attempts gives up on it.
            log.exception("delivering %s failed unexpectedly", n.id)
            return self._retry(n, now, "internal error", None)

    def _deliver(self, n: Stored, now: datetime, recovering: bool) -> Outcome:
        decision = self._decide(n, now)
        if not isinstance(decision, SendToClient | SendToSupport | SendDigest):
            return self._act(n, decision, now)
        try:
            message = self._compose(decision, now)
        except OverBudget as exc:
            if not isinstance(decision, SendToClient):
                raise
            return self._act(n, over_budget(exc, decision.client), now)
        except TemplateError as exc:
            return self._act(n, FinishAs("failed", f"template: {exc}"), now)
        note = decision.note if isinstance(decision, SendToClient) else ""
        note = "; ".join(part for part in (note, message.fallback) if part)
        channel = self.channels[message.channel]
        if recovering and channel.already_sent(message):
            return self._act(n, FinishAs("sent", "sent before a crash"), now)
        held = self._pace(n, message.channel, now)
        if held:
            return self._act(n, held, now)
        looked = last_look(*self.store.send_blockers(n.id, subjects_of(n)), now)
        if looked:
            return self._act(n, looked, now)
        try:
            receipt = channel.send(message, now)
        except PermanentError as exc:
            outcome = self._finish(n, "failed", str(exc), code=exc.code)
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
                return self._finish(n, "sent", note, sent_at=receipt.sent_at.timestamp(),
                                    receipt=receipt.provider_id, **sizes)
            except StoreError as exc:
                if attempt == RECORD_TRIES - 1:
                    raise SentButUnrecorded(n.id) from exc
                time.sleep(RECORD_PAUSE_S * (attempt + 1))
        raise AssertionError("unreachable")

    # Reading what the rules ask for ------------------------------------------------------

    def _decide(self, n: Stored, now: datetime) -> Send | NoSend:
        """`decide`, reading each fact it asks for (only those, once each)."""
        facts = Facts()
        for _ in range(MAX_READS + 1):
            decision = decide(n, facts, now, policy=self.policy, settings=self.settings,
                              rng=self.rng)
            if not isinstance(decision, Read):
                return decision
            facts = self._read(n, decision, facts)
        raise AssertionError(f"decide kept asking for facts about {n.id}")

    def _read(self, n: Stored, read: Read, facts: Facts) -> Facts:
        if read.fact == "unapplied":
            return replace(facts, unapplied=self.store.turns.unapplied_about(subjects_of(n)))
        if read.fact == "records":
            return replace(facts, records=self.store.load_records(record_refs(n)))
        if read.fact == "told":
            return replace(facts, told=told_of(n, self.store.about_entity(n.entity)))
        return replace(facts, opted_out=self.store.sms_opted_out(read.phone))

    def _compose(self, send: Send, now: datetime) -> Message:
        if isinstance(send, SendToSupport):
            return compose_support_message(send.n, send.provider, self.settings, self.renderer,
                                           now)
        if isinstance(send, SendDigest):
            return compose_provider_digest(send.n, send.provider, send.queue, self.settings,
                                           self.policy, self.renderer, now)
        appointment_id = send.n.params.get("appointment_id")

        def shorten() -> str:
            return short_url(self.settings.public_url,
                             self.store.short_links.token_for(str(appointment_id)))

        return compose_client_message(send.n, send.client, send.provider, self.settings,
                                      self.renderer, now, prescription=send.prescription,
                                      shorten=shorten if appointment_id else None)

    def _pace(self, n: Stored, channel: str, now: datetime) -> HoldUntil | FinishAs | None:
        """Hold the send for its sender's next free slot, reserved once per notification."""
        limiter = self.limiters.get(channel)
        if limiter is None or not limiter.enabled or (n.slot and n.slot <= now):
            return None
        return paced(n, limiter.reserve(now), now)

    # Acting on a decision ----------------------------------------------------------------

    def _act(self, n: Stored, decision: NoSend, now: datetime) -> Outcome:
        if isinstance(decision, FinishAs):
            return self._finish(n, decision.state, decision.reason, **decision.fields)
        if isinstance(decision, UseOtherChannel):
            use_other_channel(self.store, n.id, n.channel, decision.client, decision.reason,
                              now)
            return self._finish(n, "suppressed", decision.reason, **decision.fields)
        return self._later(n, decision)

    def _finish(self, n: Stored, state: str, reason: str, **fields: object) -> Outcome:
        self.store.schedule.finish(n.id, state, reason=reason, **fields)
        log.info("notification %s %s %s", n.id, state, reason)
        return Outcome(state)

    def _later(self, n: Stored, hold: HoldUntil) -> Outcome:
        """Put the notification back on the schedule, unless it was superseded meanwhile."""
        result = self.store.schedule.reschedule(n.id, hold.due, hold.reason,
                                                not_an_attempt=hold.not_an_attempt,
                                                slot=hold.slot,
                                                recipient=(n.recipient, n.recipient_id))
        if result is Rescheduled.CANCELLED:
            log.info("notification %s superseded while it was being sent", n.id)
            return Outcome.CANCELLED
        return hold.outcome

    def _retry(self, n: Stored, now: datetime, reason: str, retry_after_s: float | None,
               ) -> Outcome:
        due = next_attempt(n.attempts, reason, retry_after_s, n.expires_at, now, self.rng,
                           max_attempts=self.settings.max_attempts,
                           base_s=self.settings.retry_base_s)
        if isinstance(due, GiveUp):
            return self._finish(n, "failed", due.reason)
        return self._later(n, HoldUntil(due, f"retrying: {reason}", Outcome.RETRYING,
                                        not_an_attempt=False))

    def _after_permanent_failure(self, n: Stored, address: str, exc: PermanentError,
                                 now: datetime) -> None:
        if exc.code == TWILIO_OPTED_OUT:
            # The carrier says this number replied STOP: record it like an inbound STOP.
            self.store.set_sms_opt_out(address, True)
        client = self.store.load_record(entity_ref("client", n.recipient_id))
        if isinstance(client, ClientRecord):
            use_other_channel(self.store, n.id, n.channel, client,
                              f"{n.channel} failed ({exc.code})", now)
