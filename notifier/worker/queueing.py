"""Where a dramatiq message is written: the one place that decides (QUEUEING).

Two ways, picked by the broker each process builds (`worker.actors.build_broker`):

- **in the ledger**: the broker is a `RedisBroker` on the ledger's own Redis (the default:
  `NOTIFIER_BROKER_URL` unset, or naming that same Redis). A ledger script then writes the
  message together with what it is about, as `RedisBroker.enqueue` writes one
  (`ledger.broker_messages`): the web's event and its `apply_event` message are one
  script (`event_store.lua`, `web.events.ONE_WRITE`), stored and queued or neither;
- **through the broker**: RabbitMQ, or a Redis of the queue's own. A ledger script cannot
  write there, so the ledger's write comes first and `broker.enqueue` after it. A crash,
  or a broker refusing, between the two leaves the write stored but its message not
  queued, and the clock's sweeps cover that window: an accepted event not applied after
  `Clock.event_grace_s` (30 s) is enqueued again (`Store.unapplied_events`), and claimed
  notifications whose `deliver` message never arrived go back to the schedule when their
  lease runs out (`Schedule.sweep`, `NOTIFIER_LEASE_S`), as they do when a worker dies.
  Both were there before, for lost messages and dead workers; here they are the only
  cover, so an event stored in that window is applied about half a minute late.

Messages that are only a broker's, never a ledger write's (`deliver` batches, `run_job`,
the sweeps' `apply_event`), go through `send` and `send_batches`: on any `RedisBroker`
(the ledger's or its own) a batch is one pipeline of the writes `RedisBroker.enqueue`
makes, one round trip for a claim's 40 messages; on RabbitMQ, one `broker.enqueue` each.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from redis.cluster import RedisCluster

from notifier.errors import StoreUnavailable
from notifier.ledger.async_events import same_server
from notifier.ledger.broker_messages import BrokerMessage, broker_message
from notifier.ledger.client import store_errors


def in_ledger(broker: dramatiq.Broker, ledger: redis.Redis) -> bool:
    """Whether the ledger's scripts may write `broker`'s messages: it is a `RedisBroker`
    on the same Redis database as the `ledger` client. Never on a Redis Cluster ledger:
    dramatiq's broker cannot use one (its queue is elsewhere, `notifier.config`)."""
    if isinstance(ledger, RedisCluster):
        return False
    return isinstance(broker, RedisBroker) and same_server(ledger, broker.client)


def ledger_message(broker: dramatiq.Broker, ledger: redis.Redis, queue_name: str,
                   actor_name: str, *args: Any) -> BrokerMessage | None:
    """The message sending `actor_name(*args)` on `queue_name`, for a ledger script to
    write with what it is about, when `in_ledger(broker, ledger)`; None otherwise, and
    then the caller stores first and `send`s it after (see QUEUEING)."""
    if not in_ledger(broker, ledger):
        return None
    namespace = broker.namespace  # type: ignore[attr-defined]  # a RedisBroker, as checked
    return broker_message(namespace, queue_name, actor_name, *args)


def send(broker: dramatiq.Broker, queue_name: str, actor_name: str, *args: Any) -> None:
    """Enqueue `actor_name(*args)` on `queue_name` through `broker`. Raises
    `StoreUnavailable` when the broker cannot take it (its Redis down, RabbitMQ's
    connection refused or closed after dramatiq's own attempts), `StoreError` when its
    Redis refuses the write."""
    with broker_errors():
        broker.enqueue(dramatiq.Message(queue_name=queue_name, actor_name=actor_name,
                                        args=args, kwargs={}, options={}))


def send_batches(broker: dramatiq.Broker, queue_name: str, actor_name: str,
                 batches: list[list[str]]) -> None:
    """One message `actor_name(ids)` on `queue_name` per list of ids: on a `RedisBroker`
    all in one round trip (a pipeline of what `RedisBroker.enqueue` writes for each,
    `ledger.broker_messages`), else one `broker.enqueue` each. Raises as `send` does;
    messages enqueued before a failure stay queued."""
    if not batches:
        return
    if not isinstance(broker, RedisBroker):
        for ids in batches:
            send(broker, queue_name, actor_name, ids)
        return
    with broker_errors(), broker.client.pipeline(transaction=False) as pipe:
        for ids in batches:
            message = broker_message(broker.namespace, queue_name, actor_name, ids)
            pipe.hset(message.messages_key, message.redis_message_id, message.data)
            pipe.rpush(message.queue_key, message.redis_message_id)
        pipe.execute()


@contextmanager
def broker_errors() -> Iterator[None]:
    """Inside it, the broker's failures are the ledger's errors: a Redis broker's as
    `store_errors` maps them, and dramatiq's `ConnectionFailed` / `ConnectionClosed`
    (RabbitMQ unreachable, or its channel closed, after the broker's own attempts) as
    `StoreUnavailable`, so what handles an unavailable store handles an unavailable
    queue too."""
    try:
        with store_errors():
            yield
    # Named one by one: their base, `ConnectionError`, is deprecated (dramatiq 2.x warns).
    except (dramatiq.errors.ConnectionFailed, dramatiq.errors.ConnectionClosed) as exc:
        raise StoreUnavailable(f"the broker: {exc}") from exc
