"""The dramatiq peer: one actor that does `peer_work.deliver`, sent as a delayed message
(`send_with_options(delay=...)`), run by dramatiq's own CLI (`--processes`, `--threads`).

Its broker carries the same middleware as ours (`notifier.worker.actors.build_broker`),
and in particular not dramatiq's Prometheus exporter. The worker finds its broker in
BENCH_PEER_BROKER, read when `dramatiq bench.peer_dramatiq` imports this module.
"""

from __future__ import annotations

import os
from typing import Any

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

from bench import peer_work

BROKER_ENV = "BENCH_PEER_BROKER"
QUEUE = "bench-peer"
NAMESPACE = "bench-dq"


def build_broker(url: str) -> RedisBroker:
    middleware = [AgeLimit(), TimeLimit(), ShutdownNotifications(), Callbacks(), Pipelines(),
                  Retries(max_retries=0)]
    return RedisBroker(url=url, middleware=middleware,  # type: ignore[no-untyped-call]
                       namespace=NAMESPACE)


broker = build_broker(os.environ.get(BROKER_ENV, "redis://127.0.0.1:6379/2"))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def deliver(task: dict[str, Any]) -> None:
    peer_work.deliver(task)
