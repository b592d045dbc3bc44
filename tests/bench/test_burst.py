"""The burst benchmark's harness, end to end with a tiny burst, so it cannot rot unseen:
every system (ours through the Procfile processes, Celery, dramatiq) sends each
notification exactly once, and the figures the table prints are there. Speed itself is
measured by `make bench`, never asserted here."""

from __future__ import annotations

import math

import pytest

from bench.burst import rows, run_burst


@pytest.mark.slow
def test_a_tiny_burst_reaches_every_outbox_once_on_every_system() -> None:
    runs, box = run_burst(100, 1, 2, defaults=False, peers=True)

    assert [run.system for run in runs] == ["Notifier", "Celery", "dramatiq"]
    for run in runs:
        assert (run.system, run.sent, run.lost, run.duplicates) == (run.system, run.count, 0, 0)
        assert run.count >= 100
        # 100 sends may take less CPU than one clock tick of /proc (10 ms): 0 can be read.
        assert not math.isnan(run.p99_s) and run.cpu_s_per_1k >= 0
    headers, table = rows(runs)
    assert headers[-1] == "ours / best peer" and len(table[0]) == len(headers)
    assert box.redis and box.cores >= 1
