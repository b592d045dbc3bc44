"""`notifier worker --processes N` as real processes on the session's Redis
(notifier/worker/processes.py, `cmd_worker` in notifier/cli/serve.py): N children consume,
SIGTERM stops them all, a child that dies takes the others down with a non-zero exit, and
children do not outlive a killed parent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from notifier.config import PROJECT_ROOT
from notifier.intake.events import parse_event
from notifier.ledger.store import Store
from notifier.policy.ordering import subject_ref
from notifier.webhooks.endpoints import load_endpoints
from notifier.webhooks.outbox import WebhookOutbox
from notifier.worker.actors import build_broker, enqueue_apply
from notifier.worker.processes import default_processes
from tests.kit import appointment, client_upserted, daytime_zone, store_and_apply
from tests.ledger_keys import pending_events
from tests.service import service_env, wait_for
from tests.webhooks.receiver import WebhookReceiver

#: Runs the worker's processes.
pytestmark = pytest.mark.e2e

PROCESSES = 3
HEARTBEATS = "notifier-dq:__heartbeats__"  # dramatiq's: one member per consuming process


def start(redis_url: str, tmp_path: Path, *args: str,
          env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, **service_env(redis_url, tmp_path), "PYTHONPATH": str(PROJECT_ROOT),
           "NOTIFIER_LOG_LEVEL": "WARNING", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "notifier", "worker", *args], env=env,
                            cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def children(parent: int) -> list[int]:
    listed = subprocess.run(["ps", "--ppid", str(parent), "-o", "pid="], capture_output=True,
                            text=True).stdout
    return [int(pid) for pid in listed.split()]


def gone(pid: int) -> bool:
    """Whether `pid` has ended (a zombie nobody reaped yet counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def running_workers(redis_url: str, tmp_path: Path) -> tuple[subprocess.Popen[bytes],
                                                             list[int]]:
    worker = start(redis_url, tmp_path, "--processes", str(PROCESSES), "--threads", "1")
    pids = wait_for(lambda: len(found := children(worker.pid)) == PROCESSES and found,
                    timeout_s=30, what="the worker processes")
    return worker, pids


@pytest.fixture
def stop_after():
    """Register a started worker: killed with its children after the test if still up."""
    started: list[subprocess.Popen[bytes]] = []
    yield started.append
    for process in started:
        for pid in children(process.pid):
            os.kill(pid, signal.SIGKILL)
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def test_each_process_consumes_and_sigterm_stops_them_all(redis_client, redis_url, tmp_path,
                                                          stop_after, policy):
    store = Store(redis_client)
    now = datetime.now(UTC)
    store_and_apply(store, policy, client_upserted("c1", daytime_zone(now), now), now)
    worker, pids = running_workers(redis_url, tmp_path)
    stop_after(worker)
    broker = build_broker(redis_url)
    for i in range(60):
        raw = json.dumps(appointment("appointment.scheduled", f"a{i}", "c1",
                                     now + timedelta(days=10), now)).encode()
        event = parse_event(raw)
        store.store_event(event.id, raw, now, subject=subject_ref(event),
                          occurred_at=event.occurred_at)
        enqueue_apply(broker, event.id)
    wait_for(lambda: pending_events(redis_client) == [], timeout_s=30,
             what="every event applied")

    def consumers() -> set[bytes]:  # the test's own broker beats as it enqueues
        return set(redis_client.zrange(HEARTBEATS, 0, -1)) - {broker.broker_id.encode()}

    wait_for(lambda: len(consumers()) == PROCESSES, timeout_s=30,
             what="a consumer in each process")

    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    assert all(gone(pid) for pid in pids)


def test_a_child_killed_stops_the_others_and_the_parent_exits_non_zero(redis_client,
                                                                       redis_url, tmp_path,
                                                                       stop_after):
    worker, pids = running_workers(redis_url, tmp_path)
    stop_after(worker)
    os.kill(pids[0], signal.SIGKILL)
    assert worker.wait(timeout=30) == 1
    assert all(gone(pid) for pid in pids)


def test_children_stop_when_their_parent_is_killed(redis_client, redis_url, tmp_path,
                                                   stop_after):
    worker, pids = running_workers(redis_url, tmp_path)
    stop_after(worker)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    wait_for(lambda: all(gone(pid) for pid in pids), timeout_s=30,
             what="the orphaned worker processes to stop")


def test_one_process_per_core_by_default():
    assert default_processes() == len(os.sched_getaffinity(0))


def test_delivery_webhooks_are_sent_by_a_process_of_their_own(redis_client, redis_url,
                                                              tmp_path, stop_after):
    """With endpoints configured, one more child sends them: a receiver that hangs holds
    none of the threads that deliver notifications."""
    secret = "whsec_" + "QUJD" * 8
    with WebhookReceiver() as receiver:
        receiver.endpoint("/ehr", secrets=[secret])
        env = {"NOTIFIER_WEBHOOK_ENDPOINTS": json.dumps(
                   [{"name": "ehr", "url": receiver.url("/ehr"), "events": ["client.*"]}]),
               "NOTIFIER_WEBHOOK_SECRET_EHR": secret}
        worker = start(redis_url, tmp_path, "--processes", str(PROCESSES), "--threads", "1",
                       env=env)
        stop_after(worker)
        pids = wait_for(lambda: len(found := children(worker.pid)) == PROCESSES + 1 and found,
                        timeout_s=30, what="the worker processes and the webhooks one")
        store = Store(redis_client)
        store.set_sms_opt_out("+14155550123", True)
        WebhookOutbox(redis_client, load_endpoints(env, tmp_path), store.keys).fan_out(
            datetime.now(UTC))
        receiver.wait_for(lambda: receiver.verified_payloads("/ehr"), timeout_s=30,
                          what="the opt-out, sent by the webhooks process")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
        assert all(gone(pid) for pid in pids)
