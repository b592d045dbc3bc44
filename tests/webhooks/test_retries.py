"""The retry schedule of delivery webhooks (Svix's) and which answers are retried."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notifier.webhooks.retries import (
    RETRY_AFTER_MAX_S,
    RETRY_SCHEDULE_S,
    judge,
)

NOW = datetime(2026, 11, 30, 17, 0, tzinfo=UTC)


def test_the_schedule_is_svixs_after_the_first_attempt():
    """5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: 8 attempts over about 27.6 hours."""
    waits = []
    for before in range(len(RETRY_SCHEDULE_S)):
        verdict = judge(503, before, NOW)
        assert verdict.outcome == "retry"
        assert verdict.next_at is not None
        waits.append((verdict.next_at - NOW).total_seconds())
    assert waits == [5, 300, 1800, 7200, 18000, 36000, 36000]
    assert judge(503, len(RETRY_SCHEDULE_S), NOW).outcome == "failed"
    assert sum(waits) / 3600 == pytest.approx(27.58, abs=0.01)


@pytest.mark.parametrize(("status", "outcome"), [
    (200, "delivered"), (201, "delivered"), (204, "delivered"), (299, "delivered"),
    (429, "retry"), (500, "retry"), (502, "retry"), (503, "retry"), (504, "retry"),
    (None, "retry"),  # a timeout, a refused or dropped connection
    (400, "failed"), (401, "failed"), (403, "failed"), (404, "failed"), (410, "failed"),
    (413, "failed"), (301, "failed"), (302, "failed"), (100, "failed"),
])
def test_only_timeouts_connection_errors_429_and_5xx_are_retried(status, outcome):
    assert judge(status, 0, NOW).outcome == outcome


def test_a_retry_after_is_honoured_but_never_sooner_than_the_schedule():
    assert judge(429, 0, NOW, "60").next_at == NOW + timedelta(seconds=60)
    assert judge(429, 2, NOW, "60").next_at == NOW + timedelta(seconds=1800)  # schedule's
    assert judge(503, 0, NOW, "999999").next_at == NOW + timedelta(seconds=RETRY_AFTER_MAX_S)
    date = format_datetime(NOW + timedelta(minutes=10), usegmt=True)
    assert judge(503, 0, NOW, date).next_at == NOW + timedelta(minutes=10)
    assert judge(503, 0, NOW, "soon").next_at == NOW + timedelta(seconds=5)


def test_retry_after_reads_seconds_and_http_dates():
    """Read as a provider's is (`delivery.channels.retry_after`): what asks for no more
    than the schedule, or says nothing, leaves the schedule's delay."""
    schedule = NOW + timedelta(seconds=RETRY_SCHEDULE_S[0])
    assert judge(503, 0, NOW, "120").next_at == NOW + timedelta(seconds=120)
    assert judge(503, 0, NOW, " 7 ").next_at == NOW + timedelta(seconds=7)
    past = format_datetime(NOW - timedelta(hours=1), usegmt=True)
    for said in (past, "", None, "-5", "Wed, 99 Foo 2026"):
        assert judge(503, 0, NOW, said).next_at == schedule, said


@given(status=st.one_of(st.none(), st.integers(100, 599)),
       before=st.integers(0, 20), header=st.one_of(st.none(), st.text(max_size=40)))
def test_every_verdict_is_well_formed(status, before, header):
    verdict = judge(status, before, NOW, header)
    if verdict.outcome == "retry":
        assert verdict.next_at is not None
        wait_s = (verdict.next_at - NOW).total_seconds()
        assert RETRY_SCHEDULE_S[before] <= wait_s <= max(RETRY_AFTER_MAX_S,
                                                         RETRY_SCHEDULE_S[before])
    else:
        assert verdict.next_at is None
    if status is not None and 200 <= status < 300:
        assert verdict.outcome == "delivered"
