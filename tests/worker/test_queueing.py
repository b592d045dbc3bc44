"""`notifier.worker.queueing`: which messages the ledger writes in its own scripts, and the
broker's failures as the ledger's errors, against real Redis servers (RabbitMQ's side runs
end to end, tests/end_to_end/test_rabbitmq_end_to_end.py)."""

from __future__ import annotations

import json

import pytest
import redis

from notifier.errors import StoreUnavailable
from notifier.ledger.embedded_redis import free_port
from notifier.worker.actors import (
    DELIVER,
    DELIVER_QUEUE,
    EVENTS_QUEUE,
    build_broker,
    enqueue_apply,
    enqueue_deliveries,
)
from notifier.worker.queueing import in_ledger, ledger_message


def dead_amqp_url() -> str:
    return f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"


def test_only_a_redis_broker_on_the_ledgers_own_database_writes_in_the_ledger(
        redis_client, redis_url):
    assert in_ledger(build_broker(redis_url), redis_client)
    message = ledger_message(build_broker(redis_url), redis_client, EVENTS_QUEUE,
                             "apply_event", "evt-1")
    assert message is not None and message.queue_key == "notifier-dq:events"
    other_db = redis_url.rsplit("/", 1)[0] + "/5"
    for elsewhere in (build_broker(other_db), build_broker(dead_amqp_url())):
        assert not in_ledger(elsewhere, redis_client)
        assert ledger_message(elsewhere, redis_client, EVENTS_QUEUE, "apply_event",
                              "evt-1") is None


def test_deliveries_on_a_queue_redis_of_its_own_are_written_there(redis_client,
                                                                  other_redis_url):
    enqueue_deliveries(build_broker(other_redis_url), [["n1", "n2"], ["n3"]])
    other = redis.Redis.from_url(other_redis_url)
    ids = other.lrange(f"notifier-dq:{DELIVER_QUEUE}", 0, -1)
    bodies = [json.loads(b) for b in other.hmget(f"notifier-dq:{DELIVER_QUEUE}.msgs", ids)]
    assert [(b["actor_name"], b["args"]) for b in bodies] == [
        (DELIVER, [["n1", "n2"]]), (DELIVER, [["n3"]])]
    assert redis_client.keys("notifier-dq*") == []


def test_rabbitmq_unreachable_is_store_unavailable():
    """dramatiq's `ConnectionClosed`, after its own attempts, is the ledger's
    `StoreUnavailable`: the clock's tick and the web handle it as they handle Redis down."""
    broker = build_broker(dead_amqp_url())
    with pytest.raises(StoreUnavailable, match="the broker"):
        enqueue_apply(broker, "evt-1")
    with pytest.raises(StoreUnavailable, match="the broker"):
        enqueue_deliveries(broker, [["n1"]])
