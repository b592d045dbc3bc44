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
a channel that cannot tell is sent again (at least once beats never for a reminder). A
provider's answer lost after the request left (`errors.MaybeSent`) is retried only after a
wait for the provider's delivery report, and a report found then records it `sent` instead
(`decide.lost_answer_hold`, `decide.reported_after_lost_answer`). The README's "At most one
send per notification" states every window exactly.
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
    Outcome,
    Send,
    SendDigest,
    SendToClient,
    SendToSupport,
    last_look,
    lost_answer_hold,
    over_budget,
    paced,
    subjects_of,
)
from notifier.delivery.facts import Records, decide_all, queue_changed_since
from notifier.delivery.fencing import check_lease_fits, may_send
from notifier.delivery.jobs import Job, Writes
from notifier.delivery.recording import Recorder
from notifier.delivery.render import Renderer
from notifier.delivery.sms_budget import OverBudget, short_url
from notifier.errors import MaybeSent, PermanentError, RetryableError, TemplateError
from notifier.ledger.batch import Batch
from notifier.ledger.notifications import Verdict, epoch
from notifier.ledger.ratelimit import RateLimiter
from notifier.ledger.store import Store
from notifier.policy.figures import Policy

log = logging.getLogger(__name__)


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
        self.record = Recorder(self.store, self.settings, self.rng)

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
                self.record.act(writes, job,
                                self.record.retry_decision(job, now, "internal error"), now)
            elif isinstance(answer, SendToClient | SendToSupport | SendDigest):
                sends.append((job, answer))
            else:
                self.record.act(writes, job, answer, now)
        for job, send in sends:
            try:
                self._send(writes, job, send, now, started, records)
            except Exception:
                # A bug must not lose the notification: put it back to be tried again
                # later, until max_attempts gives up on it.
                log.exception("delivering %s failed unexpectedly", job.id)
                self.record.act(writes, job,
                                self.record.retry_decision(job, now, "internal error"), now)
            if writes.sent is not None and writes.sent is not job:
                # A send is recorded before anything else is sent (see `_send`).
                writes.run(lambda failed, exc: self.record.write_failed(failed, exc, now))
        writes.run(lambda failed, exc: self.record.write_failed(failed, exc, now))
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
            self.record.act(writes, job, HoldUntil(
                now, "its batch ran long: to be decided afresh", Outcome.WAITING), now)
            return
        try:
            message = self._compose(send, now)
        except OverBudget as exc:
            if not isinstance(send, SendToClient):
                raise
            self.record.act(writes, job, over_budget(exc, send.client), now)
            return
        except TemplateError as exc:
            self.record.act(writes, job, FinishAs("failed", f"template: {exc}"), now)
            return
        note = send.note if isinstance(send, SendToClient) else ""
        note = "; ".join(part for part in (note, message.fallback) if part)
        channel = self.channels[message.channel]
        # A process died with it `sending`: it went out if the channel says so, or if its
        # provider has reported on it since (a report names only a message it took; one
        # recorded before had ended it `sent`).
        if job.recovering and (n.reported or channel.already_sent(message)):
            self.record.act(writes, job, FinishAs("sent", "sent before a crash"), now)
            return
        limiter = self.limiters.get(message.channel)
        slot = (limiter.queue_reserve(writes.batch, now)
                if limiter is not None and limiter.enabled and not (n.slot and n.slot <= now)
                else None)  # reserved once per notification, kept across its hold
        blockers = self.store.reading.queue_send_blockers(writes.batch, n.id, subjects_of(n))
        changed = queue_changed_since(self.store, writes.batch, n,
                                      message.to if message.channel == "sms" else None, records)
        lease = self.store.schedule.lease_of(writes.batch, n.id)
        writes.run(lambda failed, exc: self.record.write_failed(failed, exc, now))
        if writes.unrecorded:
            # Redis would not record a send that went out: send nothing more on it.
            self.record.act(writes, job, HoldUntil(
                now, "not sent: Redis would not record a send", Outcome.WAITING), now)
            return
        if lease.get() != job.lease:
            job.outcome = self.record.taken_over(n)
            return
        # The batch's `now` plus its time so far: the decisions stay at `now`, but the lease
        # is judged (as another worker judges it) and `sent_at` recorded (the lateness it
        # measures) at the moment of the send.
        at = now + timedelta(seconds=self.monotonic() - started)
        if not may_send(job.lease, epoch(at), self.call_limits_s.get(message.channel, 0.0)):
            self.record.act(writes, job, HoldUntil(
                now, "too little of its lease left for the send: to be decided afresh",
                Outcome.WAITING), now)
            return
        held = paced(n, slot.get(), now) if slot is not None else None
        if held:
            self.record.act(writes, job, held, now)
            return
        looked = last_look(*blockers.get(), now)
        if looked:
            self.record.act(writes, job, looked, now)
            return
        if changed.get():
            self.record.act(writes, job, HoldUntil(
                now, "its records changed while its batch was sending: to be decided afresh",
                Outcome.WAITING), now)
            return
        try:
            receipt = channel.send(message, at)
        except PermanentError as exc:
            job.outcome = self.record.finish(job, "failed", str(exc), code=exc.code)
            if n.recipient == "client":
                self.record.after_permanent_failure(n, message.to, exc, now)
            return
        except MaybeSent as exc:
            # The provider may have taken it: where a report can tell, wait for one before
            # sending again (`decide.reported_after_lost_answer` reads it then).
            wait = exc.report_wait_s
            retry = self.record.retry_decision(
                job, now, f"{exc.code or 'error'}: {exc}",
                exc.retry_after_s if wait is None else max(wait, exc.retry_after_s or 0.0))
            # Marked at the first lost answer's time: a report later is about its message.
            self.record.act(writes, job, lost_answer_hold(retry, wait, n.maybe_sent_at or at),
                            now)
            return
        except RetryableError as exc:
            self.record.act(writes, job, self.record.retry_decision(
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
        writes.then(job, lambda: self.record.recorded(job, note, fields, report_at, reply))
        writes.sent = job

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
