"""The benchmarks' own arithmetic: what the outbox says was lost or sent twice, the
partial line a concurrent writer leaves, percentiles, and the zone that keeps a burst out
of quiet hours. (The whole harness runs in test_burst.py.)"""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bench.common import percentile, ratio, table
from bench.workload import OutboxTail, expected_ids, midday_zone, read_sends


def line(notification_id: str, due: datetime, late_s: float) -> str:
    return json.dumps({"id": notification_id, "due_at": due.isoformat(),
                       "sent_at": (due + timedelta(seconds=late_s)).isoformat()}) + "\n"


def test_the_outbox_tells_lateness_lost_and_duplicates(tmp_path: Path) -> None:
    due = datetime(2026, 11, 30, 12, tzinfo=UTC)
    path = tmp_path / "messages.jsonl"
    path.write_text(line("a", due, 0.5) + line("b", due, 1.5) + line("a", due, 2.0)
                    + line("stranger", due, 0.1))

    sends = read_sends(path, {"a", "b", "c"})

    assert sends.lateness == [0.5, 1.5]  # the first send of each
    assert (sends.lost, sends.duplicates, sends.unexpected) == (1, 1, 1)
    assert sends.last_sent == (due + timedelta(seconds=2)).timestamp()


def test_the_tail_counts_only_finished_lines(tmp_path: Path) -> None:
    path = tmp_path / "messages.jsonl"
    tail = OutboxTail(path)
    assert tail.count() == 0
    path.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c"')
    assert tail.count() == 2
    with path.open("a") as f:
        f.write('}\n')
    assert tail.count() == 3


@pytest.mark.parametrize("hour", range(24))
def test_the_burst_zone_is_midday_whatever_the_hour(hour: int) -> None:
    at = datetime(2026, 11, 30, hour, 37, tzinfo=UTC)
    local = at.astimezone(ZoneInfo(midday_zone(at)))
    assert time(12) <= local.time() < time(13)


def test_three_notifications_per_message() -> None:
    assert len(expected_ids(10, "t")) == 30
    assert "escalation_notice:t-m0000003:message-window:sms" in expected_ids(10, "t")


@pytest.mark.parametrize(("values", "q", "expected"), [
    ([1.0], 0.99, 1.0), ([1.0, 2.0, 3.0, 4.0], 0.5, 2.0), (list(map(float, range(1, 101))),
                                                           0.99, 99.0)])
def test_percentile_is_the_nearest_rank(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == expected


def test_ratio_and_table() -> None:
    assert ratio(3.0, 1.5) == "x2.00"
    assert ratio(1.0, 0.0) == "-"
    assert table(["a", "b"], [["x", 1.5]]) == "| a | b |\n|---|---:|\n| x | 1.50 |"
