"""A worker killed (SIGKILL) while it holds claimed notifications loses none and, after a
restart, every notification is sent exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from notifier.config import PROJECT_ROOT
from notifier.worker.actors import enqueue_deliver
from tests.kit import appointment, client_upserted, daytime_zone, store_and_apply
from tests.ledger_keys import inflight_count
from tests.service import Service, wait_for

#: The whole service (web on a port, worker, clock) or its processes.
pytestmark = pytest.mark.e2e

BOOKINGS = 200  # two confirmations each, due at once


def start_worker(service: Service, cwd) -> subprocess.Popen[bytes]:
    """One worker process, so the process the test kills is the one sending (several
    processes stop gracefully when their parent is killed: tests/worker/test_processes)."""
    env = {**os.environ, **service.env, "NOTIFIER_WORKER_PROCESSES": "1",
           "NOTIFIER_WORKER_THREADS": "4", "NOTIFIER_LOG_LEVEL": "WARNING"}
    return subprocess.Popen([sys.executable, "-m", "notifier", "worker"], env=env, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def claimed_bookings(service: Service, bookings: int) -> set[str]:
    """`bookings` appointments of one client booked ten days out, their two confirmations
    each due now and claimed by the service's clock while no worker runs; returns their
    ids."""
    now = datetime.now(UTC)
    store, policy = service.runtime.store, service.runtime.policy
    store_and_apply(store, policy, client_upserted("c1", daytime_zone(now), now), now)
    for i in range(bookings):
        store_and_apply(store, policy, appointment(
            "appointment.scheduled", f"a{i}", "c1", now + timedelta(days=10), now), now)
    expected = {f"appointment_confirmation:a{i}:booked:{ch}"
                for i in range(bookings) for ch in ("sms", "email")}
    wait_for(lambda: inflight_count(service.redis) == len(expected), what="the claims")
    return expected


def kill_mid_stream(service: Service, worker: subprocess.Popen[bytes],
                    expected: set[str]) -> int:
    """SIGKILL `worker` once 40 messages left: some sent, some being sent, the rest claimed
    and waiting. Returns how many had been sent then (fewer than `expected`)."""
    wait_for(lambda: len(service.sent()) >= 40, timeout_s=30, what="the first sends")
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    sent_at_kill = len(service.sent())
    assert sent_at_kill < len(expected), "the kill came too late to interrupt anything"
    return sent_at_kill


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    """Terminate the workers still running, and wait for each."""
    for worker in workers:
        if worker.poll() is None:
            worker.terminate()
            worker.wait(timeout=10)


def test_sigkilled_worker_loses_nothing_and_sends_nothing_twice(redis_client, redis_url,
                                                                tmp_path):
    service = Service(redis_url, tmp_path, lease_s=2, with_worker=False)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        # The clock claims everything due and enqueues it while no worker runs.
        expected = claimed_bookings(service, BOOKINGS)
        store = service.runtime.store

        workers.append(start_worker(service, PROJECT_ROOT))
        sent_at_kill = kill_mid_stream(service, workers[0], expected)

        workers.append(start_worker(service, PROJECT_ROOT))
        counts = service.sent_exactly_once(expected)
        states = {store.notification(i)["state"] for i in expected}
        assert states == {"sent"}
        # The dead worker's unacked messages come back only after dramatiq's heartbeat
        # timeout; deliver them now, as that late redelivery would: nothing is sent again.
        ids = sorted(expected)
        unacked_of_the_dead = service.redis.hlen("notifier-dq:deliver.msgs")
        for start in range(0, len(ids), 25):
            enqueue_deliver(service.clock.broker, ids[start:start + 25])
        wait_for(lambda: service.redis.hlen("notifier-dq:deliver.msgs") == unacked_of_the_dead,
                 what="the redelivered messages to be processed and acknowledged")
        assert Counter(m["dedupe_key"] for m in service.sent()) == counts
        print(f"sent before the kill: {sent_at_kill} of {len(expected)}")
    finally:
        stop_workers(workers)
        service.close()
