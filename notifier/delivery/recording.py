"""What a delivery comes to, written to the ledger: a send recorded (retried while Redis
would not take it), a decision not to send queued on the batch's writes (`finish`,
`reschedule`, or a plan on the other channel), a retry with backoff, and what a permanent
failure means for the client (an opt-out, the other channel).

Every write carries the notification's lease token (`delivery.fencing`): one refused
because the lease was taken over changes nothing and comes to `Outcome.TAKEN_OVER`.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime

from notifier.config import Settings
from notifier.delivery.compose import Stored
from notifier.delivery.decide import FinishAs, HoldUntil, NoSend, Outcome, UseOtherChannel
from notifier.delivery.fallback import carrier_opt_out, use_other_channel
from notifier.delivery.jobs import Job, Writes
from notifier.delivery.retry import GiveUp, next_attempt
from notifier.errors import PermanentError, StoreError
from notifier.ledger.batch import Reply
from notifier.ledger.notifications import Finished, Rescheduled
from notifier.ledger.records import ClientRecord
from notifier.ledger.store import Store
from notifier.policy.plan import entity_ref

log = logging.getLogger(__name__)

#: Recording a send that went out is retried this often (a Redis failover takes moments).
RECORD_TRIES = 4
RECORD_PAUSE_S = 0.25


@dataclass
class Recorder:
    """Writes what a `Deliverer`'s decisions and sends come to: its store, settings (max
    attempts, retry base) and random source (retry jitter)."""
    store: Store
    settings: Settings
    rng: random.Random

    def recorded(self, job: Job, note: str, fields: dict[str, object],
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

    def taken_over(self, n: Stored) -> Outcome:
        """A notification whose lease ran out and was taken over by another worker: left to
        it, nothing written."""
        log.warning("notification %s not sent: its lease ran out and was taken over (this "
                    "process stalled)", n.id)
        return Outcome.TAKEN_OVER

    def act(self, writes: Writes, job: Job, decision: NoSend, now: datetime) -> None:
        """Queue on `writes` what `decision` comes to for `job` (a plan on the other channel
        is written at once); when that fails, the notification is put back instead."""
        try:
            self._queue(writes, job, decision, now)
        except Exception:
            log.exception("acting on %s failed", job.id)
            self._queue(writes, job, self.retry_decision(job, now, "internal error"), now)

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
            writes.then(job, lambda: self.finished(n, state, reason, finished.get()))
            return
        hold = decision
        rescheduled = self.store.schedule.queue_reschedule(
            writes.batch, n.id, hold.due, hold.reason, lease=job.lease,
            not_an_attempt=hold.not_an_attempt, slot=hold.slot,
            recipient=(n.recipient, n.recipient_id), fields=hold.fields)
        writes.then(job, lambda: self.held(job, hold, rescheduled.get()))

    def write_failed(self, job: Job, exc: Exception, now: datetime) -> None:
        """A queued write Redis refused, or whose round trip failed: put the notification
        back at once, as after any unexpected error; if that fails too, it is left to its
        lease (`job.error`)."""
        log.error("recording %s failed: %s", job.id, exc, exc_info=exc)
        try:
            job.outcome = self.act_now(job, self.retry_decision(job, now, "internal error"),
                                        now)
        except Exception as again:
            log.exception("putting %s back failed; its lease will", job.id)
            job.error = again

    def act_now(self, job: Job, decision: NoSend, now: datetime) -> Outcome:
        """`act` in round trips of its own, for the rare paths (a failed write, a permanent
        provider error)."""
        n = job.stored
        if isinstance(decision, FinishAs):
            return self.finish(job, decision.state, decision.reason, **decision.fields)
        if isinstance(decision, UseOtherChannel):
            use_other_channel(self.store, n.id, n.channel, decision.client, decision.reason,
                              now)
            return self.finish(job, "suppressed", decision.reason, **decision.fields)
        return self.held(job, decision, None)

    def finish(self, job: Job, state: str, reason: str, **fields: object) -> Outcome:
        """End `job`'s notification in `state` now, in a round trip of its own; its
        `Outcome` (`finished`)."""
        done = self.store.schedule.finish(job.id, state, lease=job.lease, reason=reason,
                                          **fields)
        return self.finished(job.stored, state, reason, done)

    def finished(self, n: Stored, state: str, reason: str, done: Finished) -> Outcome:
        """The outcome of a `finish`: `Outcome.TAKEN_OVER` when it was refused (the lease
        is another worker's now, or it ended meanwhile), which changed nothing."""
        if not done:
            return self.taken_over(n)
        log.info("notification %s %s %s", n.id, state, reason)
        return Outcome(state)

    def held(self, job: Job, hold: HoldUntil, result: Rescheduled | None) -> Outcome:
        """The outcome of putting `job`'s notification back (`result` of the batched
        reschedule; None: not done yet, or its recipient changed meanwhile, so done here
        reading it), unless it was superseded meanwhile, or its lease was taken over."""
        n = job.stored
        if result is None:
            result = self.store.schedule.reschedule(n.id, hold.due, hold.reason,
                                                    lease=job.lease,
                                                    not_an_attempt=hold.not_an_attempt,
                                                    slot=hold.slot, fields=hold.fields)
        if result is Rescheduled.CANCELLED:
            log.info("notification %s superseded while it was being sent", n.id)
            return Outcome.CANCELLED
        if result is Rescheduled.NOT_SENDING:
            return self.taken_over(n)
        return hold.outcome

    def retry_decision(self, job: Job, now: datetime, reason: str,
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

    def after_permanent_failure(self, n: Stored, address: str, exc: PermanentError,
                                now: datetime) -> None:
        """What a provider's permanent refusal of a client's message at `address` means:
        Twilio's 21610 (the number replied STOP) is recorded as an opt-out; the message goes
        by the other channel where the client allows it (`delivery.fallback`)."""
        carrier_opt_out(self.store, exc.code, address)
        client = self.store.load_record(entity_ref("client", n.recipient_id))
        if isinstance(client, ClientRecord):
            use_other_channel(self.store, n.id, n.channel, client,
                              f"{n.channel} failed ({exc.code})", now)
