"""Delivering claimed notifications, a batch at a time: the reads, the channel calls, the
ledger updates.

For a batch of claimed ids (one `deliver` message): `begin` for all of them in one round
trip (each its own compare-and-set `scheduled -> sending`, with its own lease); then the
send-time rules of `delivery.decide` against the records as they are now, their facts read
for the whole batch at once (`delivery.facts`); then the sends, one at a time, each just
after its last look; then `finish`. A retryable failure puts the notification back on our
own schedule with backoff (`delivery.retry`; never into dramatiq's delay queue); a
permanent one records `failed` with the provider's code, and a client's message goes by the
other channel (`delivery.fallback`). Each notification keeps its own outcome: one that
fails (a bug, a channel error, a record that no longer parses) is retried on its own, and
the rest of the batch goes on.

Fencing: each notification's lease has a token (its end as `begin` wrote it) that every
write about it carries, so a worker whose lease ran out and was taken over writes nothing.
A message is sent only if its last look (the round trip just before the provider's call)
finds the lease still this worker's, with time left for the channel's longest call
(`call_limits_s`) plus `fencing.LEASE_MARGIN_S`, by the batch's clock (`now` plus a monotonic
clock's time since). A message that still left after its lease was lost (the process
paused between that look and the call) is recorded all the same, as the notification's
send or as a second one (`Outcome.SENT_AGAIN`, `notif_finish.lua`).

The other window for a duplicate is a process dying between a provider's answer and the
next round trip (the send is recorded in the round trip that takes the next message's
last look, before that message is sent): the notification stays `sending`, its lease runs
out, and the next attempt asks the channel whether the message went out (`already_sent`);
a channel that cannot tell is sent again (at least once beats never for a reminder). The
README's "At most one send per notification" states every window exactly.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from notifier.config import Settings
from notifier.delivery.channels import Channel, Message
from notifier.delivery.compose import (
    Stored,
    compose_client_message,
    compose_provider_digest,
    compose_support_message,
)
from notifier.delivery.decide import (
    FinishAs,
    HoldUntil,
    NoSend,
    Outcome,
    Send,
    SendDigest,
    SendToClient,
    SendToSupport,
    UseOtherChannel,
    last_look,
    over_budget,
    paced,
    subjects_of,
)
from notifier.delivery.facts import Records, decide_all, queue_changed_since
from notifier.delivery.fallback import TWILIO_OPTED_OUT, use_other_channel
from notifier.delivery.fencing import check_lease_fits, may_send
from notifier.delivery.jobs import Job, Writes
from notifier.delivery.render import Renderer
from notifier.delivery.retry import GiveUp, next_attempt
from notifier.delivery.sms_budget import OverBudget, short_url
from notifier.errors import PermanentError, RetryableError, StoreError, TemplateError
from notifier.ledger.batch import Batch, Reply
from notifier.ledger.notifications import Finished, Rescheduled, Verdict, epoch
from notifier.ledger.ratelimit import RateLimiter
from notifier.ledger.records import ClientRecord
from notifier.ledger.store import Store
from notifier.policy.figures import Policy
from notifier.policy.plan import entity_ref

log = logging.getLogger(__name__)


#: Recording a send that went out is retried this often (a Redis failover takes moments).
RECORD_TRIES = 4
RECORD_PAUSE_S = 0.25
#: A batch sends for at most this long (seconds), and at most half its lease: its decisions
#: are made at the batch's `now`, which must not go stale (quiet hours,
#: expiry), and a lease must not run out under a send (another worker could take the
#: notification over and send it too). The rest is put back, due at once, to be decided
#: afresh. A batch of 25 to the outbox takes milliseconds; to a slow provider, seconds.
BATCH_SEND_S = 5.0


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
    #: seconds on a clock that only goes forward: how long a batch has been running
    monotonic: Callable[[], float] = field(default=time.monotonic)
    #: the longest one send can take on each channel, seconds, by channel name
    #: (`config.PROVIDER_CALL_S` for Twilio and SendGrid); a channel not named takes no
    #: time worth a lease's attention (the outbox: a local file write)
    call_limits_s: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Raises ConfigError when the lease leaves too little time for a channel's call
        (`fencing.check_lease_fits`)."""
        check_lease_fits(self.settings.lease_s, BATCH_SEND_S, self.call_limits_s)

    def deliver(self, notification_id: str, now: datetime) -> Outcome:
        """`deliver_batch` of one notification, except that a Redis failure that leaves it to
        its lease is raised (`StoreUnavailable` / `StoreError`) instead of answered
        `Outcome.LEASED`."""
        job = self._run([notification_id], now)[0]
        if job.error is not None:
            raise job.error
        return job.outcome or Outcome.LEASED

    def deliver_batch(self, ids: Sequence[str], now: datetime) -> list[Outcome]:
        """Take each claimed notification of `ids` as far as it can go at `now`; returns
        their `Outcome`s, in order. Never raises: channel errors, template errors and bugs
        end in a retry or a final state, as each notification's own; a send that went out
        but could not be recorded is `Outcome.UNRECORDED`; one that Redis failed for before
        it was sent or while it was put back is `Outcome.LEASED` (logged), left in flight or
        `sending` until its lease runs out.

        Round trips: one `begin` for all, a few reads for all (`delivery.facts`), then per
        send one round trip that records the previous send (and the batch's other writes)
        and takes this one's send-rate slot and last look, and a last one for what is left.
        """
        return [Outcome.LEASED if job.error is not None or job.outcome is None
                else job.outcome for job in self._run(ids, now)]

    def _run(self, ids: Sequence[str], now: datetime) -> list[Job]:
        started = self.monotonic()
        jobs = self._begin(ids, now)
        begun = [job for job in jobs if job.n is not None]
        records = Records()
        answers = decide_all(self.store, [job.n for job in begun if job.n is not None], now,
                             policy=self.policy, settings=self.settings, rng=self.rng,
                             records=records)
        writes = Writes(self.store)
        sends: list[tuple[Job, Send]] = []
        for job, answer in zip(begun, answers, strict=True):
            if isinstance(answer, Exception):  # logged by decide_all
                self._act(writes, job, self._retry_decision(job, now, "internal error"), now)
            elif isinstance(answer, SendToClient | SendToSupport | SendDigest):
                sends.append((job, answer))
            else:
                self._act(writes, job, answer, now)
        for job, send in sends:
            try:
                self._send(writes, job, send, now, started, records)
            except Exception:
                # A bug must not lose the notification: put it back to be tried again
                # later, until max_attempts gives up on it.
                log.exception("delivering %s failed unexpectedly", job.id)
                self._act(writes, job, self._retry_decision(job, now, "internal error"), now)
            if writes.sent is not None and writes.sent is not job:
                # A send is recorded before anything else is sent (see `_send`).
                writes.run(lambda failed, exc: self._write_failed(failed, exc, now))
        writes.run(lambda failed, exc: self._write_failed(failed, exc, now))
        return jobs

    def _begin(self, ids: Sequence[str], now: datetime) -> list[Job]:
        """`begin` for every id in one round trip (each its own compare-and-set and lease)."""
        batch = Batch(self.store.redis)
        replies = [self.store.schedule.queue_begin(batch, i, now, self.settings.lease_s)
                   for i in ids]
        batch.run()
        jobs = []
        for notification_id, reply in zip(ids, replies, strict=True):
            job = Job(notification_id)
            jobs.append(job)
            try:
                begun = reply.get()
                if not begun.may_send:
                    job.outcome = Outcome(begun.verdict)
                    continue
                job.n = Stored.from_fields(notification_id, begun.fields)
                job.recovering = begun.verdict is Verdict.RECOVER
                job.lease = begun.lease
            except Exception as exc:
                # Left in flight (or `sending`): its lease runs out and it is taken again.
                log.exception("beginning %s failed", notification_id)
                job.error, job.n = exc, None
        return jobs

    def _send(self, writes: Writes, job: Job, send: Send, now: datetime,
              started: float, records: Records) -> None:
        """Compose and send one notification, or queue what it comes to instead.

        The last look is read just before the provider's call, in the round trip that also
        records the previous send: so a send is recorded before the next one goes out, and
        the window for a duplicate stays a process dying between the provider's answer
        and that round trip (the next message's composing, well under a millisecond), or
        stalling between the look and the call. The look also reads the lease's token: a
        notification whose lease was taken over is not sent, one whose lease has too little
        time left for the call is put back."""
        n = job.stored
        if self.monotonic() - started > min(BATCH_SEND_S, self.settings.lease_s / 2):
            self._act(writes, job, HoldUntil(now, "its batch ran long: to be decided afresh",
                                             Outcome.WAITING), now)
            return
        try:
            message = self._compose(send, now)
        except OverBudget as exc:
            if not isinstance(send, SendToClient):
                raise
            self._act(writes, job, over_budget(exc, send.client), now)
            return
        except TemplateError as exc:
            self._act(writes, job, FinishAs("failed", f"template: {exc}"), now)
            return
        note = send.note if isinstance(send, SendToClient) else ""
        note = "; ".join(part for part in (note, message.fallback) if part)
        channel = self.channels[message.channel]
        if job.recovering and channel.already_sent(message):
            self._act(writes, job, FinishAs("sent", "sent before a crash"), now)
            return
        limiter = self.limiters.get(message.channel)
        slot = (limiter.queue_reserve(writes.batch, now)
                if limiter is not None and limiter.enabled and not (n.slot and n.slot <= now)
                else None)  # reserved once per notification, kept across its hold
        blockers = self.store.reading.queue_send_blockers(writes.batch, n.id, subjects_of(n))
        changed = queue_changed_since(self.store, writes.batch, n,
                                      message.to if message.channel == "sms" else None, records)
        lease = self.store.schedule.lease_of(writes.batch, n.id)
        writes.run(lambda failed, exc: self._write_failed(failed, exc, now))
        if writes.unrecorded:
            # Redis would not record a send that went out: send nothing more on it.
            self._act(writes, job, HoldUntil(now, "not sent: Redis would not record a send",
                                             Outcome.WAITING), now)
            return
        if lease.get() != job.lease:
            job.outcome = self._taken_over(n)
            return
        # The batch's `now` plus its time so far: the decisions stay at `now`, but the lease
        # is judged (as another worker judges it) and `sent_at` recorded (the lateness it
        # measures) at the moment of the send.
        at = now + timedelta(seconds=self.monotonic() - started)
        if not may_send(job.lease, epoch(at), self.call_limits_s.get(message.channel, 0.0)):
            self._act(writes, job, HoldUntil(now, "too little of its lease left for the send: "
                                             "to be decided afresh", Outcome.WAITING), now)
            return
        held = paced(n, slot.get(), now) if slot is not None else None
        if held:
            self._act(writes, job, held, now)
            return
        looked = last_look(*blockers.get(), now)
        if looked:
            self._act(writes, job, looked, now)
            return
        if changed.get():
            self._act(writes, job, HoldUntil(now, "its records changed while its batch was "
                                             "sending: to be decided afresh", Outcome.WAITING),
                      now)
            return
        try:
            receipt = channel.send(message, at)
        except PermanentError as exc:
            job.outcome = self._finish(job, "failed", str(exc), code=exc.code)
            if n.recipient == "client":
                self._after_permanent_failure(n, message.to, exc, now)
            return
        except RetryableError as exc:
            self._act(writes, job, self._retry_decision(
                job, now, f"{exc.code or 'error'}: {exc}", exc.retry_after_s), now)
            return
        fields: dict[str, object] = {"sent_at": receipt.sent_at.timestamp(),
                                     "receipt": receipt.provider_id}
        if message.sms is not None:
            fields |= {"sms_encoding": message.sms.encoding,
                       "sms_segments": message.sms.segments,
                       "provider_segments": receipt.segments}
        # A provider that reports delivery: the send awaits a final report, and the
        # repair job looks it up if none came by then (`worker.reports`).
        report_at = (receipt.sent_at.timestamp() + self.settings.delivery_report_wait_s
                     if receipt.awaits_report else None)
        reply = self.store.schedule.queue_finish(writes.batch, n.id, "sent", lease=job.lease,
                                                 report_at=report_at, reason=note, **fields)
        writes.then(job, lambda: self._recorded(job, note, fields, report_at, reply))
        writes.sent = job

    def _recorded(self, job: Job, note: str, fields: dict[str, object],
                  report_at: float | None, reply: Reply[Finished]) -> Outcome:
        """A send's record, retried when Redis would not take it (a failover takes
        moments; recording a send is idempotent); `Outcome.UNRECORDED` when it never does:
        the notification stays `sending`, its lease runs out, and the recovery asks the
        channel before anything is sent again (a message that went out is never retried).
        `Outcome.SENT_AGAIN` for a send after a lost lease recorded as a second one."""
        n = job.stored
        for attempt in range(RECORD_TRIES):
            try:
                if attempt == 0:
                    done = reply.get()
                else:
                    done = self.store.schedule.finish(n.id, "sent", lease=job.lease,
                                                      report_at=report_at, reason=note,
                                                      **fields)
                break
            except StoreError:
                if attempt == RECORD_TRIES - 1:
                    log.exception("notification %s was sent but could not be recorded", n.id)
                    return Outcome.UNRECORDED
                time.sleep(RECORD_PAUSE_S * (attempt + 1))
        if done is Finished.SENT_AGAIN:
            log.warning("notification %s was sent again: its lease ran out before the "
                        "provider's call (the process stalled); recorded as a second send",
                        n.id)
            return Outcome.SENT_AGAIN
        log.info("notification %s sent %s", n.id, note)
        return Outcome.SENT

    def _taken_over(self, n: Stored) -> Outcome:
        """A notification whose lease ran out and was taken over by another worker: left to
        it, nothing written."""
        log.warning("notification %s not sent: its lease ran out and was taken over (this "
                    "process stalled)", n.id)
        return Outcome.TAKEN_OVER


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

    # Acting on a decision ----------------------------------------------------------------

    def _act(self, writes: Writes, job: Job, decision: NoSend, now: datetime) -> None:
        """Queue on `writes` what `decision` comes to for `job` (a plan on the other channel
        is written at once); when that fails, the notification is put back instead."""
        try:
            self._queue(writes, job, decision, now)
        except Exception:
            log.exception("acting on %s failed", job.id)
            self._queue(writes, job, self._retry_decision(job, now, "internal error"), now)

    def _queue(self, writes: Writes, job: Job, decision: NoSend, now: datetime) -> None:
        n = job.stored
        if isinstance(decision, UseOtherChannel):
            use_other_channel(self.store, n.id, n.channel, decision.client, decision.reason,
                              now)
            decision = FinishAs("suppressed", decision.reason, decision.fields)
        if isinstance(decision, FinishAs):
            state, reason = decision.state, decision.reason
            finished = self.store.schedule.queue_finish(writes.batch, n.id, state,
                                                        lease=job.lease, reason=reason,
                                                        **decision.fields)
            writes.then(job, lambda: self._finished(n, state, reason, finished.get()))
            return
        hold = decision
        rescheduled = self.store.schedule.queue_reschedule(
            writes.batch, n.id, hold.due, hold.reason, lease=job.lease,
            not_an_attempt=hold.not_an_attempt, slot=hold.slot,
            recipient=(n.recipient, n.recipient_id))
        writes.then(job, lambda: self._held(job, hold, rescheduled.get()))

    def _write_failed(self, job: Job, exc: Exception, now: datetime) -> None:
        """A queued write Redis refused, or whose round trip failed: put the notification
        back at once, as after any unexpected error; if that fails too, it is left to its
        lease (`job.error`)."""
        log.error("recording %s failed: %s", job.id, exc, exc_info=exc)
        try:
            job.outcome = self._act_now(job, self._retry_decision(job, now, "internal error"),
                                        now)
        except Exception as again:
            log.exception("putting %s back failed; its lease will", job.id)
            job.error = again

    def _act_now(self, job: Job, decision: NoSend, now: datetime) -> Outcome:
        """`_act` in round trips of its own, for the rare paths (a failed write, a permanent
        provider error)."""
        n = job.stored
        if isinstance(decision, FinishAs):
            return self._finish(job, decision.state, decision.reason, **decision.fields)
        if isinstance(decision, UseOtherChannel):
            use_other_channel(self.store, n.id, n.channel, decision.client, decision.reason,
                              now)
            return self._finish(job, "suppressed", decision.reason, **decision.fields)
        return self._held(job, decision, None)

    def _finish(self, job: Job, state: str, reason: str, **fields: object) -> Outcome:
        done = self.store.schedule.finish(job.id, state, lease=job.lease, reason=reason,
                                          **fields)
        return self._finished(job.stored, state, reason, done)

    def _finished(self, n: Stored, state: str, reason: str, done: Finished) -> Outcome:
        """The outcome of a `finish`: `Outcome.TAKEN_OVER` when it was refused (the lease
        is another worker's now, or it ended meanwhile), which changed nothing."""
        if not done:
            return self._taken_over(n)
        log.info("notification %s %s %s", n.id, state, reason)
        return Outcome(state)

    def _held(self, job: Job, hold: HoldUntil, result: Rescheduled | None) -> Outcome:
        """The outcome of putting `job`'s notification back (`result` of the batched
        reschedule; None: not done yet, or its recipient changed meanwhile, so done here
        reading it), unless it was superseded meanwhile, or its lease was taken over."""
        n = job.stored
        if result is None:
            result = self.store.schedule.reschedule(n.id, hold.due, hold.reason,
                                                    lease=job.lease,
                                                    not_an_attempt=hold.not_an_attempt,
                                                    slot=hold.slot)
        if result is Rescheduled.CANCELLED:
            log.info("notification %s superseded while it was being sent", n.id)
            return Outcome.CANCELLED
        if result is Rescheduled.NOT_SENDING:
            return self._taken_over(n)
        return hold.outcome

    def _retry_decision(self, job: Job, now: datetime, reason: str,
                        retry_after_s: float | None = None) -> HoldUntil | FinishAs:
        """Another attempt later (with backoff), or `failed` once max_attempts is reached or
        the next attempt would come after its expiry."""
        n = job.stored
        due = next_attempt(n.attempts, reason, retry_after_s, n.expires_at, now, self.rng,
                           max_attempts=self.settings.max_attempts,
                           base_s=self.settings.retry_base_s)
        if isinstance(due, GiveUp):
            return FinishAs("failed", due.reason)
        return HoldUntil(due, f"retrying: {reason}", Outcome.RETRYING, not_an_attempt=False)

    def _after_permanent_failure(self, n: Stored, address: str, exc: PermanentError,
                                 now: datetime) -> None:
        if exc.code == TWILIO_OPTED_OUT:
            # The carrier says this number replied STOP: record it like an inbound STOP.
            self.store.set_sms_opt_out(address, True)
        client = self.store.load_record(entity_ref("client", n.recipient_id))
        if isinstance(client, ClientRecord):
            use_other_channel(self.store, n.id, n.channel, client,
                              f"{n.channel} failed ({exc.code})", now)
