"""The clock's repair job for delivery reports: sends with no final report after
`NOTIFIER_DELIVERY_REPORT_WAIT_S` are looked up at the provider.

A callback can be lost (our web was down when Twilio called: Twilio does not retry status
callbacks; a webhook batch refused), and some carriers never report. So a send through a
provider that reports delivery waits in an index (`notifier.ledger.reports`) until a final
report (delivered, undelivered, failed, bounce, dropped) takes it out; one still there
after the wait is handled here, in a worker (the clock only enqueues the job, `run_job`,
at most once a minute across clocks: provider calls block for up to 20 s each):

- SMS (Twilio): its Message resource is fetched by SID (`TwilioSMS.look_up`). A final
  status is recorded as the status callback would record it (never backwards), and a
  final failure is handled as a failed callback is (`fallback.after_reported_failure`:
  21610 opts the number out; a client's message goes by email where they allow it; one
  that Redis kept from being planned is looked up again next run, not lost). Any
  other status (Twilio still says `sent`: the carrier never reported) and a permanent
  refusal (20404: a SID this account does not know) record `unknown`; a 429, a 5xx or
  the network leave it for the next run, and end this run's calls.
- Email (SendGrid): it cannot be asked without its paid Email Activity add-on, so
  `unknown` at once; so is a send whose channel is no longer one that can be asked (the
  backend switched to the outbox since).
- Its notification's hash gone (expired): dropped from the index.

`unknown` is final for the job (the send leaves the index, so it is not looked up again)
but not for the ledger: a real report arriving later still replaces it
(`notifications.DELIVERY_RANK`).

Bounds: a run claims at most `LOOKUPS_PER_RUN` ids, `BATCH` at a time (each batch one
round trip to read, one to write), and calls the provider one message at a time, for at
most `RUN_BUDGET_S` (then one call's 20 s more at worst). Runs start at most once a
minute (`EVERY_S`), so the provider sees about 200 look-ups a minute (3.3 a second) at
most, whatever the backlog: one of 100,000 takes about 8 hours to clear, well within the
72 h wait. Measured against the local stand-in, a run of 200 takes 0.3-0.4 s, so the
provider's own answer time is what bounds a run.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from enum import StrEnum

from notifier.delivery.channels import Channel, LookedUp, ReportLookup
from notifier.delivery.fallback import after_reported_failure
from notifier.errors import PermanentError, RetryableError, StoreError
from notifier.ledger.deliveries import DELIVERY_FAILURES
from notifier.ledger.notifications import DELIVERY_RANK, FINAL_RANK, UNKNOWN
from notifier.ledger.reports import Awaiting, Settle
from notifier.ledger.store import Store

log = logging.getLogger(__name__)

#: The job's name in `run_job` (the clock enqueues it; `notifier.worker.actors` runs it).
REPORT_LOOKUPS = "delivery-reports"
#: How often a run starts, seconds (once across all clocks and workers).
EVERY_S = 60.0
#: The job's turn: held (SET NX) by the clock that enqueued a run for as long as the run
#: may wait in the queue (`QUEUED_S`), then by the run itself for `EVERY_S` from its start.
#: So while no worker takes the queued run (workers down, or busy with a backlog), no
#: second one is queued behind it to start together with it.
REPORTS_TURN = "n:job:" + REPORT_LOOKUPS
#: Taken (SET NX EX) by a run as it starts: a run that finds it taken (another started
#: under `EVERY_S` ago: two queued before a long outage) does nothing.
REPORTS_STARTED = REPORTS_TURN + ":started"
#: Held by a run while it runs (SET NX; deleted at its end, or expiring after the longest
#: run, `RUN_BUDGET_S` plus one call's 20 s, plus a margin): no second run beside it.
REPORTS_RUNNING = REPORTS_TURN + ":running"
#: How long a queued run holds the turn, seconds: if its worker died with it, the clock
#: queues another after this.
QUEUED_S = 600
#: The most sends a run handles (so the most provider calls it makes).
LOOKUPS_PER_RUN = 200
#: Sends claimed, read and written at a time: one round trip each way per batch.
BATCH = 50
#: A run makes no new provider call after this many seconds; the rest wait for the next
#: run. With one call's 20 s on top, a run stays far inside dramatiq's 5 minute time limit.
RUN_BUDGET_S = 60.0
#: A claimed send is due again after this long if its run died before writing it back
#: (longer than a run can take).
CLAIM_S = 300.0
#: A send left for the next run is due this long after the run's `now`: later than the
#: instant this run claims at, so it does not take it again, and long before the next run.
AGAIN_AFTER_S = 1.0


class LookupOutcome(StrEnum):
    """How one send's look-up ended (`notifier_report_lookups_total{outcome}`)."""

    #: the provider says delivered
    DELIVERED = "delivered"
    #: the provider says it never arrived (Twilio's undelivered, failed)
    FAILED = "failed"
    #: no final word: still `sent` at the provider, unknown to it, or not askable (email)
    UNKNOWN = "unknown"
    #: the provider could not answer now (429, 5xx, network): the next run asks again
    RETRY = "retry"
    #: its notification had expired: dropped from the index
    GONE = "gone"


def verdict(looked: LookedUp) -> tuple[LookupOutcome, str]:
    """What a provider's answer records (pure): its own status when final (`delivered`,
    or a failure, with its code), else `unknown`."""
    status = looked.status.lower()
    if DELIVERY_RANK.get(status, 0) < FINAL_RANK:
        return LookupOutcome.UNKNOWN, UNKNOWN
    if status in DELIVERY_FAILURES:
        return LookupOutcome.FAILED, status
    return LookupOutcome.DELIVERED, status


def start_run(store: Store, every_s: float = EVERY_S) -> bool:
    """Take this run's start, unless another run started less than `every_s` ago or is
    still running; returns whether this one may run (then it must call `end_run`). The
    queued run's turn is given back, so the clock queues the next at its next try, a
    minute after it queued this one (found by QA: held for a minute from the run's start,
    it made runs two minutes apart). A run that does nothing gives it back too: it is no
    longer queued."""
    store.redis.delete(REPORTS_TURN)
    if store.redis.exists(REPORTS_RUNNING) or not store.redis.set(
            REPORTS_STARTED, "1", nx=True, ex=max(1, int(every_s) - 1)):
        log.info("delivery reports: a run started under %g s ago, or is still running; "
                 "this one does nothing", every_s)
        return False
    store.redis.set(REPORTS_RUNNING, "1", ex=int(RUN_BUDGET_S + 20 + 30))
    return True


def end_run(store: Store) -> None:
    """The run started by `start_run` is over: the next may start (a minute after it)."""
    store.redis.delete(REPORTS_RUNNING)


def run_report_lookups(store: Store, channels: Mapping[str, Channel], now: datetime, *,
                       limit: int = LOOKUPS_PER_RUN, batch: int = BATCH,
                       budget_s: float = RUN_BUDGET_S,
                       monotonic: Callable[[], float] = time.monotonic
                       ) -> Counter[LookupOutcome]:
    """One run at `now`: claim the sends past their wait, `batch` at a time, up to `limit`,
    and settle each (see the module docstring). Returns how many ended each way. Raises
    `StoreUnavailable` / `StoreError` when Redis fails (what was claimed comes back after
    `CLAIM_S`)."""
    started = monotonic()
    again_at = now + timedelta(seconds=AGAIN_AFTER_S)
    done: Counter[LookupOutcome] = Counter()
    calling = True  # until the provider struggles or the budget is spent
    handled = 0
    while handled < limit and calling:  # once it stops calling, it claims no more
        ids = store.reports.claim(now, min(batch, limit - handled), CLAIM_S)
        if not ids:
            break
        handled += len(ids)
        settle = Settle(record=[], drop=[], again=[], counts=Counter())
        failures: list[tuple[str, str, str]] = []
        for notification_id, awaiting in store.reports.facts(ids).items():
            if awaiting is None:
                settle.drop.append(notification_id)
                _count(settle, done, LookupOutcome.GONE, notification_id.rsplit(":", 1)[-1])
                continue
            lookup = channels.get(awaiting.channel)
            if not isinstance(lookup, ReportLookup) or not awaiting.receipt:
                settle.record.append((notification_id, UNKNOWN, ""))
                _count(settle, done, LookupOutcome.UNKNOWN, awaiting.channel)
                continue
            calling = calling and monotonic() - started < budget_s
            if not calling:
                settle.again.append(notification_id)  # not asked: the next run asks
                continue
            outcome, status, code, to = _ask(lookup, awaiting, now)
            _count(settle, done, outcome, awaiting.channel)
            if outcome is LookupOutcome.RETRY:
                settle.again.append(notification_id)
                calling = False  # the provider struggles: leave it be until the next run
                continue
            settle.record.append((notification_id, status, code))
            if outcome is LookupOutcome.FAILED:
                failures.append((notification_id, code or status, to))
        on_record = store.reports.settle(settle, now, again_at)
        for notification_id, code, to in failures:
            # While the delivery on record is a failure (not after a `delivered`).
            if on_record.get(notification_id) in DELIVERY_FAILURES:
                _after_failure(store, notification_id, code, to, now, again_at)
    if done:
        log.info("delivery reports looked up: %s",
                 ", ".join(f"{count} {outcome}" for outcome, count in sorted(done.items())))
    return done


#: The look-up's refusals that say the provider has no such message (Twilio's 404, error
#: 20404): it will never know more, so the report is `unknown`. Any other refusal (401
#: 20003 after a rotated token, 403) says nothing of the message: asked again next run.
NO_SUCH_MESSAGE = frozenset({"20404", "404"})


def _ask(lookup: ReportLookup, awaiting: Awaiting, now: datetime
         ) -> tuple[LookupOutcome, str, str, str]:
    """One look-up: (outcome, status to record, code, the address it went to)."""
    try:
        looked = lookup.look_up(awaiting.receipt, now)
    except RetryableError as exc:
        log.warning("delivery report of %s: the provider could not answer (%s); asking "
                    "again next run", awaiting.id, exc.code or exc)
        return LookupOutcome.RETRY, "", "", ""
    except PermanentError as exc:
        if exc.code not in NO_SUCH_MESSAGE:
            log.error("delivery report of %s: the provider refused the look-up (%s): check "
                      "the account's credentials; asking again next run", awaiting.id, exc)
            return LookupOutcome.RETRY, "", "", ""
        log.info("delivery report of %s: the provider does not know it (%s): unknown",
                 awaiting.id, exc.code)
        # Its code is the look-up's, not the message's: logged, not recorded as a failure's.
        return LookupOutcome.UNKNOWN, UNKNOWN, "", ""
    outcome, status = verdict(looked)
    return outcome, status, looked.code, looked.to


def _after_failure(store: Store, notification_id: str, code: str, address: str,
                   now: datetime, again_at: datetime) -> None:
    """A failure the look-up found, handled as a failed callback is. When Redis fails
    meanwhile (the other channel's plan lost to contention), the send is looked up again
    next run: its report is recorded already (recording it again changes nothing) and
    planning the other channel is idempotent, so the fallback is tried again, not lost."""
    try:
        after_reported_failure(store, notification_id, code, now, address=address)
    except StoreError:
        log.exception("delivery report of %s: its failure is recorded, but the other channel "
                      "could not be planned; trying again next run", notification_id)
        store.reports.look_again([notification_id], again_at)


def _count(settle: Settle, done: Counter[LookupOutcome], outcome: LookupOutcome,
           channel: str) -> None:
    settle.counts[(outcome.value, channel)] += 1
    done[outcome] += 1
