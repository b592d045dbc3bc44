"""The end-to-end core with RabbitMQ as the queue (NOTIFIER_BROKER_URL=amqp://), on the
session's private rabbitmq-server (`tests.rabbitmq`; `make rabbitmq` installs it, and
without it these tests fail saying so): the ledger stays on Redis, so every event is
stored first and enqueued after (`notifier.worker.queueing`).

The same service, helpers and stand-ins as the Redis-queue tests, whose files these reuse:
a booking's reminder due seconds away sent once through the Twilio stand-in, a
reschedule, a cancellation and a refill reminder (test_provider_end_to_end,
test_end_to_end), then a worker SIGKILLed mid-run (test_worker_crash). There, RabbitMQ
gives the dead worker's unacknowledged messages back as soon as its connection drops,
so the redelivery the Redis test stages by hand happens here by itself.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from notifier.config import PROJECT_ROOT
from tests.end_to_end.test_end_to_end import onboard
from tests.end_to_end.test_provider_end_to_end import ids_sent, provider_env
from tests.end_to_end.test_worker_crash import (
    BOOKINGS,
    claimed_bookings,
    kill_mid_stream,
    start_worker,
    stop_workers,
)
from tests.fakes import FakeSendGrid, FakeTwilio
from tests.kit import appointment, daytime_zone, prescription_filled
from tests.service import Service, wait_for

#: The whole service (web on a port, worker, clock) or its processes.
pytestmark = pytest.mark.e2e


@pytest.fixture
def fakes() -> Iterator[tuple[FakeTwilio, FakeSendGrid]]:
    with FakeTwilio(account_sid="AC" + "0" * 32, auth_token="test-token") as twilio, \
            FakeSendGrid() as sendgrid:
        yield twilio, sendgrid


def sms_sent(twilio: FakeTwilio, prefix: str) -> list[str]:
    """The notification ids of the SMS the Twilio stand-in took whose id starts with
    `prefix`, once per message taken."""
    return [i for i in ids_sent(twilio) if i.startswith(prefix) and i.endswith(":sms")]


def test_book_remind_reschedule_cancel_and_refill_on_rabbitmq(redis_client, redis_url,
                                                              rabbitmq_url, tmp_path, fakes):
    twilio, _ = fakes
    service = Service(redis_url, tmp_path, env=provider_env(
        *fakes, NOTIFIER_BROKER_URL=rabbitmq_url))
    try:
        assert service.runtime.broker_url == rabbitmq_url
        now = datetime.now(UTC)
        onboard(service, now)
        start = now + timedelta(hours=72, seconds=4)  # its 72 h reminder is due in 4 s
        assert service.post(appointment("appointment.scheduled", "a1", "c1", start,
                                        now)).status_code == 202
        reminder = f"appointment_reminder:a1:72h.{start:%Y%m%dT%H%M%SZ}"
        wait_for(lambda: sms_sent(twilio, reminder), what="the 72 h reminder")
        assert sms_sent(twilio, "appointment_confirmation:a1:booked") == [
            "appointment_confirmation:a1:booked:sms"]

        moved = start + timedelta(days=2)
        assert service.post(appointment("appointment.rescheduled", "a1", "c1", moved,
                                        now + timedelta(seconds=1))).status_code == 202
        wait_for(lambda: sms_sent(twilio, "appointment_updated:a1"), what="the update")
        assert service.post({"id": "evt-cancel", "type": "appointment.cancelled",
                             "occurred_at": (now + timedelta(seconds=2)).isoformat(),
                             "data": {"appointment_id": "a1", "cancelled_by": "client"}}
                            ).status_code == 202
        wait_for(lambda: sms_sent(twilio, "appointment_cancelled:a1"), what="the cancellation")

        today = now.astimezone(ZoneInfo(daytime_zone(now))).date()
        fill = prescription_filled("rx-1", "c1", today - timedelta(days=25), now)
        assert service.post(fill).status_code == 202
        wait_for(lambda: sms_sent(twilio, "refill_due:rx-1"), what="the refill reminder")

        wait_for(service.quiet, what="the service to go idle")
        planned = service.notifications("c1")
        assert {v["state"] for v in planned.values()
                if v["kind"] == "appointment_reminder"
                and not v["id"].startswith(reminder)} == {"cancelled"}
        assert planned[f"{reminder}:sms"]["state"] == "sent"
        counts = Counter(ids_sent(twilio))
        assert max(counts.values()) == 1, [i for i, n in counts.items() if n > 1]
        assert redis_client.keys("notifier-dq*") == [], "a message went through Redis"
    finally:
        service.close()


def test_sigkilled_worker_on_rabbitmq_loses_nothing_and_sends_nothing_twice(
        redis_client, redis_url, rabbitmq_url, tmp_path):
    service = Service(redis_url, tmp_path, lease_s=2, with_worker=False,
                      env={"NOTIFIER_BROKER_URL": rabbitmq_url})
    workers: list[subprocess.Popen[bytes]] = []
    try:
        # The clock claims everything due and enqueues it on RabbitMQ while no worker runs.
        expected = claimed_bookings(service, BOOKINGS)
        workers.append(start_worker(service, PROJECT_ROOT))
        sent_at_kill = kill_mid_stream(service, workers[0], expected)

        workers.append(start_worker(service, PROJECT_ROOT))
        service.sent_exactly_once(expected)
        store = service.runtime.store
        assert {store.notification(i)["state"] for i in expected} == {"sent"}
        assert redis_client.keys("notifier-dq*") == [], "a message went through Redis"
        print(f"sent before the kill: {sent_at_kill} of {len(expected)}")
    finally:
        stop_workers(workers)
        service.close()
