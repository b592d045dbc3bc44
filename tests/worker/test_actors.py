"""The worker's actors as dramatiq runs them: a real `dramatiq.Worker` in this process,
consuming the real broker on the session's Redis (what `notifier worker` does)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dramatiq
import pytest
from dramatiq.brokers.redis import RedisBroker

from notifier.config import Settings
from notifier.ledger.store import Store
from notifier.runtime import Runtime
from notifier.timeutil import utcnow
from notifier.worker.actors import JOBS_QUEUE, build_broker, declare_actors, enqueue_job
from notifier.worker.clock import Clock
from notifier.worker.cron import Job
from tests.kit import event_dict, message_received, store_and_apply
from tests.service import wait_for

JOB_MESSAGES = f"notifier-dq:{JOBS_QUEUE}.msgs"


@pytest.fixture
def runtime(redis_url: str, redis_client, tmp_path: Path) -> Runtime:
    settings = Settings.from_env({"NOTIFIER_REDIS_URL": redis_url,
                                  "NOTIFIER_OUTBOX_DIR": str(tmp_path / "outbox"),
                                  "NOTIFIER_VAR_DIR": str(tmp_path / "var")},
                                 dotenv=Path("/nonexistent"))
    return Runtime.build(settings, redis_url)


@pytest.fixture
def worker(redis_url: str, runtime: Runtime) -> Iterator[RedisBroker]:
    broker = build_broker(redis_url)
    declare_actors(broker, runtime)
    running = dramatiq.Worker(broker, queues={JOBS_QUEUE}, worker_threads=2,
                              worker_timeout=50)
    running.start()
    try:
        yield broker
    finally:
        running.stop()
        broker.close()


def test_a_fire_claimed_by_the_clock_is_run_by_a_real_worker(runtime, worker, policy,
                                                             redis_client):
    """Clock -> jobs queue -> `run_job` in a dramatiq worker -> a digest in the ledger,
    the message acknowledged (cron jobs otherwise only run in-process in tests)."""
    store: Store = runtime.store
    now = utcnow()
    before = now - timedelta(days=1)
    store_and_apply(store, policy, event_dict("provider.upserted", {"provider": {
        "id": "prov-1", "name": "Dr. One", "email": "prov-1@example.com",
        "timezone": "America/New_York"}}, before), before)
    store_and_apply(store, policy, message_received("msg-1", "c1", before), before)
    # Every minute, so the fire is the current minute whenever the test runs.
    clock = Clock(store, build_broker(runtime.redis_url),
                  jobs=[Job(name="provider-digest", cron="* * * * *", zone="provider")])
    [fired] = clock.fire_jobs(now)
    digests = wait_for(lambda: store.notifications_for("provider", "prov-1"),
                       what="the worker to plan the digest")
    fire = datetime.fromtimestamp(int(fired.rsplit(":", 1)[1]), UTC)
    assert [n.id for n in digests] == [f"provider_digest:prov-1:{fire:%Y%m%dT%H%M%SZ}:email"]
    wait_for(lambda: redis_client.hlen(JOB_MESSAGES) == 0, what="the job message's ack")


def test_an_unknown_job_is_logged_and_acknowledged_not_retried(runtime, worker, redis_client,
                                                               caplog):
    caplog.set_level(logging.ERROR, logger="notifier.worker.actors")
    enqueue_job(worker, "no-such-job", "UTC", utcnow().isoformat())
    wait_for(lambda: redis_client.hlen(JOB_MESSAGES) == 0, what="the job message's ack")
    assert "unknown job no-such-job" in [r.getMessage() for r in caplog.records]
