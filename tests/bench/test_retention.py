"""The retention benchmark on a small workload: the per-notification figures the README's
sizing page multiplies hold (a notification kept whole stays in Redis's compact encoding;
a retired one shrinks to its row), and every notification is sent and retired."""

from __future__ import annotations

import json

from bench import retention
from bench.common import RESULTS_DIR


def test_a_notification_costs_what_the_sizing_page_says_at_each_stage() -> None:
    retention.main(["--bookings", "40"])
    results = json.loads((RESULTS_DIR / "retention.json").read_text())["results"]
    assert results["notifications"] == 240 and results["sent"] == 240
    pending, ended, retired = (results[stage]["bytes_per_notification"]
                               for stage in ("pending", "ended", "retired"))
    # README, "Sizing": under 800 B pending, 900 B kept whole, 400 B as a retired row
    # (MEMORY USAGE; a long provider id would take a hash out of its compact encoding and
    # double the second).
    assert pending < 800 and ended < 900 and retired < 400, (pending, ended, retired)
    assert retired < ended / 2
    assert results["retired"]["families"]["n:notif"]["keys"] == 240  # rows, not gone
