"""The webhooks benchmark's harness, end to end at a tiny size, so it cannot rot unseen:
the dispatcher delivers every message to the lean receiver at each in-flight bound, and a
burst of reminders goes out exactly once with and without a dead endpoint, which does hold
the dispatcher's senders. Speed itself is measured by `make bench`, never asserted here."""

from __future__ import annotations

import math

import httpx
import pytest

from bench.webhook_sinks import dead_receiver
from bench.webhooks import (
    LATENESS_HEADERS,
    THROUGHPUT_HEADERS,
    lateness_rows,
    run_all,
    throughput_rows,
)


def test_the_dead_receiver_accepts_and_never_answers_until_released() -> None:
    with dead_receiver() as dead:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(dead.url, content=b"{}", timeout=httpx.Timeout(0.3, connect=5))
        assert dead.held == 1
        dead.release()
        with pytest.raises(httpx.ConnectError):
            httpx.post(dead.url, content=b"{}", timeout=5)


@pytest.mark.slow
def test_a_tiny_run_delivers_every_message_and_every_reminder_once() -> None:
    throughput, lateness, box = run_all(messages=40, count=30, processes=2, threads=2,
                                        rounds=1)

    assert [(t.max_in_flight, t.delivered) for t in throughput] == [(4, 40), (16, 40)]
    assert all(t.rate > 0 for t in throughput)
    assert [x.endpoint for x in lateness] == ["none", "dead"]
    for x in lateness:
        assert (x.run.sent, x.run.lost, x.run.duplicates) == (x.run.count, 0, 0)
        assert not math.isnan(x.run.p95_s)
    dead = lateness[1]
    # Each reminder's `notification.scheduled` was fanned out before T, and none delivered.
    assert dead.attempts_hung >= 1 and dead.messages_waiting >= dead.run.count
    assert "webhooks process" in dead.run.layout
    assert len(throughput_rows(throughput)[0]) == len(THROUGHPUT_HEADERS)
    assert all(len(row) == len(LATENESS_HEADERS) for row in lateness_rows(lateness))
    assert box.redis and box.cores >= 1
