"""The Celery peer: one task that does `peer_work.deliver`, scheduled as an ETA task on
Celery's Redis broker, run by `celery worker --pool threads`.

The worker finds its broker in BENCH_PEER_BROKER (read when `celery -A bench.peer_celery`
imports this module: Celery's CLI gives no other way in); the benchmark enqueues with
`producer(url)`, which needs no environment.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from bench import peer_work

BROKER_ENV = "BENCH_PEER_BROKER"
TASK = "bench.peer_celery.deliver"


def configure(app: Celery, broker_url: str) -> Celery:
    app.conf.update(
        broker_url=broker_url, task_ignore_result=True, task_serializer="json",
        accept_content=["json"], enable_utc=True, broker_connection_retry_on_startup=True,
        # ETA tasks sit unacked in the worker until due: an hour is past any run here.
        broker_transport_options={"visibility_timeout": 3600}, worker_hijack_root_logger=False,
    )
    return app


app = configure(Celery("bench_peer_celery"),
                os.environ.get(BROKER_ENV, "redis://127.0.0.1:6379/1"))


@app.task(name=TASK)  # type: ignore[untyped-decorator]
def deliver(task: dict[str, Any]) -> None:
    peer_work.deliver(task)


def producer(broker_url: str) -> Celery:
    """A Celery app that only sends, to `broker_url`."""
    return configure(Celery("bench_peer_producer"), broker_url)
