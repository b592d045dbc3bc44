"""Redis killed and restarted (append-only file, fsync always): every event answered 202 is
still there and produces its notifications; nothing is sent twice.

A killed redis-server leaves its last writes in the kernel's page cache, so these pass with
`appendfsync no` too: they prove the append-only file is replayed and acted on once, not
that a power loss keeps a 202 (`always` does that; `tests/ledger/test_durability.py` checks
the policy is read and reported)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import OwnRedis
from tests.kit import appointment, client_upserted, daytime_zone, provider_upserted
from tests.service import Service, wait_for

#: The whole service (web on a port, worker, clock) or its processes.
pytestmark = pytest.mark.e2e


class DurableRedis(OwnRedis):
    """A redis-server with its append-only file on, fsync always, that a test can kill and
    bring back."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, "--appendonly", "yes", "--appendfsync", "always")


@pytest.fixture
def durable(tmp_path: Path) -> Iterator[DurableRedis]:
    directory = tmp_path / "redis"
    directory.mkdir()
    server = DurableRedis(directory)
    server.start()
    yield server
    server.stop()


def test_accepted_events_survive_a_redis_crash(durable, tmp_path):
    service = Service(durable.url, tmp_path, with_worker=False)
    try:
        now = datetime.now(UTC)
        events = [client_upserted("c1", daytime_zone(now), now),
                  provider_upserted("prov-1", now)]
        events += [appointment("appointment.scheduled", f"a{i}", "c1",
                               now + timedelta(days=5), now) for i in range(20)]
        assert service.http.get("/healthz").json()["redis_fsync"] == "always"
        for evt in events:
            assert service.post(evt).status_code == 202
        durable.kill()  # no shutdown, no save: only what the append-only file holds
        durable.start()
        service.start_worker()
        expected = {f"appointment_confirmation:a{i}:booked:{ch}"
                    for i in range(20) for ch in ("sms", "email")}
        service.sent_exactly_once(expected)
    finally:
        service.close()


def test_redis_down_under_load_then_back(durable, tmp_path):
    service = Service(durable.url, tmp_path)
    try:
        now = datetime.now(UTC)
        for evt in (client_upserted("c1", daytime_zone(now), now),
                    provider_upserted("prov-1", now)):
            assert service.post(evt).status_code == 202
        first = appointment("appointment.scheduled", "a1", "c1", now + timedelta(days=5), now)
        assert service.post(first).status_code == 202
        durable.kill()
        late = appointment("appointment.scheduled", "a2", "c1", now + timedelta(days=6), now)
        refused = service.post(late)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
        durable.start()
        # The integrator retries, as a 503 asks; worker and clock carried on by themselves.
        wait_for(lambda: service.post(late).status_code == 202, what="Redis to be back")
        expected = {f"appointment_confirmation:a{i}:booked:{ch}"
                    for i in (1, 2) for ch in ("sms", "email")}
        service.sent_exactly_once(expected)
    finally:
        service.close()
