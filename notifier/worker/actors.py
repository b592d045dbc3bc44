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
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

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
from notifier.ledger.keyspace import BROKER_NAMESPACE
from notifier.timeutil import utcnow
from notifier.worker.digests import run_provider_digest
from notifier.worker.queueing import send, send_batches
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


def build_broker(url: str) -> dramatiq.Broker:
    """dramatiq's broker at `url`, with our middleware: `RabbitmqBroker` for `amqp://` and
    `amqps://` (publisher confirms on: an enqueue returns once RabbitMQ has the message),
    else a `RedisBroker` in the `notifier-dq` namespace. Connects on first use, not here.
    Whether the ledger may write its messages in its own scripts is `worker.queueing`'s
    to say."""
    middleware = [AgeLimit(), TimeLimit(time_limit=TIME_LIMIT_MS), ShutdownNotifications(),
                  Callbacks(), Pipelines(), Retries(max_retries=10, max_backoff=MAX_BACKOFF_MS)]
    if urlsplit(url).scheme in ("amqp", "amqps"):
        # Imported here: pika is needed only by a process configured for RabbitMQ.
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        return RabbitmqBroker(url=url, middleware=middleware, confirm_delivery=True)
    # dramatiq leaves RedisBroker.__init__ unannotated
    broker: dramatiq.Broker = RedisBroker(  # type: ignore[no-untyped-call]
        url=url, middleware=middleware, namespace=BROKER_NAMESPACE)
    return broker


def enqueue_apply(broker: dramatiq.Broker, event_id: str) -> None:
    """Raises `StoreUnavailable` (or `StoreError`) when the broker fails
    (`worker.queueing.send`), as every `enqueue_*` does."""
    send(broker, EVENTS_QUEUE, APPLY_EVENT, event_id)


def enqueue_deliver(broker: dramatiq.Broker, ids: list[str]) -> None:
    send(broker, DELIVER_QUEUE, DELIVER, ids)


def enqueue_deliveries(broker: dramatiq.Broker, batches: list[list[str]]) -> None:
    """One `deliver` message per list of ids, in one round trip on a Redis broker
    (`worker.queueing.send_batches`), where a loop of `enqueue_deliver` makes one a
    message (40 for a claim of 1,000). When the broker fails, the ids stay in flight and
    their leases bring them back."""
    send_batches(broker, DELIVER_QUEUE, DELIVER, batches)


def enqueue_job(broker: dramatiq.Broker, name: str, zone: str, fire_iso: str) -> None:
    send(broker, JOBS_QUEUE, RUN_JOB, name, zone, fire_iso)


def declare_actors(broker: dramatiq.Broker, runtime: Runtime,
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
