"""A worker paused (SIGSTOP) past its lease, then resumed (SIGCONT), while another worker
takes its notifications over: every notification is sent once, or any second send is
recorded and counted (issue 13, failing input 1: the resumed worker used to send what the
other had already sent, and the ledger and /metrics counted neither).

Real worker processes on the session's Redis; the clock and the web run in the test."""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter

import pytest
from prometheus_client.parser import text_string_to_metric_families

from notifier.config import PROJECT_ROOT
from tests.end_to_end.test_worker_crash import claimed_bookings, start_worker
from tests.service import Service, wait_for

pytestmark = pytest.mark.e2e

#: Short, so the pause outlasts it quickly; the outbox needs no time for its call.
LEASE_S = 3
BOOKINGS = 200  # two confirmations each, due at once
#: Long enough for the lease to run out and the other worker to take its work over.
PAUSE_S = 2 * LEASE_S + 1


def scraped_sends(service: Service) -> tuple[float, float]:
    """(sent, sent again) on every channel, as /metrics says."""
    text = service.http.get("/metrics").text
    sent = again = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "notifier_notifications_total" and (
                    sample.labels["state"] == "sent"):
                sent += sample.value
            elif sample.name == "notifier_sent_again_total":
                again += sample.value
    return sent, again


def test_a_worker_paused_past_its_lease_sends_nothing_twice_unrecorded(redis_client,
                                                                       redis_url, tmp_path):
    service = Service(redis_url, tmp_path, lease_s=LEASE_S, with_worker=False)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        expected = claimed_bookings(service, BOOKINGS)
        store = service.runtime.store

        paused = start_worker(service, PROJECT_ROOT)
        workers.append(paused)
        wait_for(lambda: len(service.sent()) >= 40, timeout_s=30, what="the first sends")
        paused.send_signal(signal.SIGSTOP)
        sent_at_pause = len(service.sent())
        assert sent_at_pause < len(expected), "the pause came too late to interrupt anything"
        workers.append(start_worker(service, PROJECT_ROOT))
        # The pause is the experiment's input: its leases run out and the other worker
        # takes their notifications over (the clock sweeps them back).
        time.sleep(PAUSE_S)
        paused.send_signal(signal.SIGCONT)

        wait_for(lambda: {m["dedupe_key"] for m in service.sent()} >= expected,
                 timeout_s=60, what="every notification to be sent")
        wait_for(service.drained, timeout_s=30, what="both workers to finish their messages")
        counts = Counter(str(m["dedupe_key"]) for m in service.sent())
        assert set(counts) == expected
        fields = {i: store.notification(i) for i in expected}
        assert {f["state"] for f in fields.values()} == {"sent"}
        # Every message that left is in the ledger: once as the send, and any other as a
        # second send of that notification.
        again = {i: int(f.get("sent_again", 0)) for i, f in fields.items()}
        assert {i: c - 1 for i, c in counts.items() if c > 1} == {
            i: c for i, c in again.items() if c}
        outcomes = store.schedule.outcomes()
        sent = sum(c for (state, _), c in outcomes.items() if state == "sent")
        sent_again = sum(c for (state, _), c in outcomes.items() if state == "sent_again")
        assert (sent, sent + sent_again) == (len(expected), len(service.sent()))
        assert scraped_sends(service) == (len(expected), sent_again)
        taken_over = sum(1 for f in fields.values() if int(f["attempts"]) > 1)
        print(f"sent before the pause: {sent_at_pause} of {len(expected)}; taken over: "
              f"{taken_over}; sent again: {sent_again}")
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGCONT)
                worker.terminate()
                worker.wait(timeout=10)
        service.close()
