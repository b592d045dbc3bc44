"""The dramatiq side: the broker, configured in one place, and the two actors.

`apply_event(event_id)` applies an accepted event in its subject's turn (with the subject's
other queued events, oldest first); `deliver(ids)` sends a batch of claimed
notifications in a few round trips, each with its own outcome (one failing never holds up
the others); `run_job(name, zone, fire)` runs a cron job's fire, or the clock's repair job
for delivery reports (`notifier.worker.reports`). The web and the
clock only enqueue, by name, so they never import what the worker needs to run actors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from notifier.intake.apply import apply_in_turn
from notifier.ledger.broker_messages import broker_message
from notifier.ledger.client import store_errors
from notifier.timeutil import utcnow
from notifier.worker.digests import run_provider_digest
from notifier.worker.reports import REPORT_LOOKUPS, end_run, run_report_lookups, start_run

if TYPE_CHECKING:
    from notifier.runtime import Runtime

log = logging.getLogger(__name__)

EVENTS_QUEUE = "events"
DELIVER_QUEUE = "deliver"
JOBS_QUEUE = "jobs"
APPLY_EVENT = "apply_event"
DELIVER = "deliver"
RUN_JOB = "run_job"
#: Dramatiq's own retries are only for planning errors (a Redis hiccup); their backoff
#: sits in dramatiq's delay list, a plain FIFO that workers pre-fetch, where a message due
#: in seconds waits behind those due later: so it is capped near an hour, and reminders
#: wait in our own schedule instead, never there.
MAX_BACKOFF_MS = 3_600_000
TIME_LIMIT_MS = 5 * 60 * 1000


def build_broker(redis_url: str) -> RedisBroker:
    middleware = [AgeLimit(), TimeLimit(time_limit=TIME_LIMIT_MS), ShutdownNotifications(),
                  Callbacks(), Pipelines(), Retries(max_retries=10, max_backoff=MAX_BACKOFF_MS)]
    # dramatiq leaves RedisBroker.__init__ unannotated
    broker = RedisBroker(url=redis_url, middleware=middleware,  # type: ignore[no-untyped-call]
                         namespace="notifier-dq")
    return broker


def _send(broker: RedisBroker, queue: str, actor: str, *args: Any) -> None:
    """Enqueue a message; raises `StoreUnavailable` (or `StoreError`) when the broker's
    Redis fails."""
    with store_errors():
        broker.enqueue(dramatiq.Message(queue_name=queue, actor_name=actor, args=args,
                                        kwargs={}, options={}))


def enqueue_apply(broker: RedisBroker, event_id: str) -> None:
    _send(broker, EVENTS_QUEUE, APPLY_EVENT, event_id)


def enqueue_deliver(broker: RedisBroker, ids: list[str]) -> None:
    _send(broker, DELIVER_QUEUE, DELIVER, ids)


def enqueue_deliveries(broker: RedisBroker, batches: list[list[str]]) -> None:
    """One `deliver` message per list of ids, all in one round trip: a pipeline of what
    `RedisBroker.enqueue` writes for each (`ledger.broker_messages`), where a loop of
    `enqueue_deliver` makes one round trip a message (40 for a claim of 1,000). Raises
    `StoreUnavailable` (or `StoreError`) when the broker's Redis fails; the ids stay in
    flight and their leases bring them back."""
    if not batches:
        return
    with store_errors(), broker.client.pipeline(transaction=False) as pipe:
        for ids in batches:
            message = broker_message(broker.namespace, DELIVER_QUEUE, DELIVER, ids)
            pipe.hset(message.messages_key, message.redis_message_id, message.data)
            pipe.rpush(message.queue_key, message.redis_message_id)
        pipe.execute()


def enqueue_job(broker: RedisBroker, name: str, zone: str, fire_iso: str) -> None:
    _send(broker, JOBS_QUEUE, RUN_JOB, name, zone, fire_iso)


def declare_actors(broker: RedisBroker, runtime: Runtime,
                   clock: Callable[[], datetime] = utcnow) -> None:
    """Declare the actors on `broker`, bound to this worker process's runtime; events are
    applied at `clock()` (tests pin it to compare plans)."""

    def apply_event(event_id: str) -> None:
        apply_in_turn(runtime.store, event_id, runtime.policy, clock, runtime.settings.lease_s)

    def deliver(ids: list[str]) -> None:
        runtime.deliverer.deliver_batch(ids, utcnow())

    def run_job(name: str, zone: str, fire_iso: str) -> None:
        if name == "provider-digest":
            # The digests' ids name this fire, so a redelivered message plans nothing new.
            run_provider_digest(runtime.store, utcnow(), zone, datetime.fromisoformat(fire_iso))
        elif name == REPORT_LOOKUPS:
            # Claims make a redelivered or concurrent run look up nothing twice; a run
            # queued behind another (workers were away) does nothing.
            if start_run(runtime.store):
                try:
                    run_report_lookups(runtime.store, runtime.channels, utcnow())
                finally:
                    end_run(runtime.store)
        else:
            log.error("unknown job %s", name)

    dramatiq.actor(broker=broker, actor_name=RUN_JOB, queue_name=JOBS_QUEUE,
                   max_retries=5)(run_job)
    dramatiq.actor(broker=broker, actor_name=APPLY_EVENT, queue_name=EVENTS_QUEUE,
                   max_retries=10)(apply_event)
    # Our own schedule retries deliveries; a failed message is recovered by the lease sweep.
    dramatiq.actor(broker=broker, actor_name=DELIVER, queue_name=DELIVER_QUEUE,
                   max_retries=0)(deliver)
