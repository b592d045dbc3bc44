"""The SMS send rate is one per sender, shared by every worker process through Redis
(notifier/ledger/ratelimit.py, `rate_reserve.lua`): two real `notifier worker` processes
drain a burst of SMS to the Twilio stand-in, and the slots the limiter handed out are
checked against its own rule, not against the wall clock.

The rule (GCRA): each send reserves its sender's next free slot, `max(now, next)`, and
`next` moves one interval (1 / rate) on; a send goes out at its slot or later, never
before. The slots are read from Redis itself: a MONITOR connection records every `SET` of
the sender's `n:rate:` key that the script makes (its value is the slot plus one interval),
in the order Redis ran them, whichever process asked. Each send's moment is its `sent_at`
in the ledger. So the test asserts, with no timing tolerance beyond the limiter's own:

- one key for the sender, whichever process reserved: the processes share it;
- consecutive slots at least one interval apart: in any 1 s at most `RATE` slots;
- sends never run ahead of the slots: by any moment, no more SMS had left than slots had
  come up by then (the k-th send is no earlier than the k-th slot, less the limiter's
  `SLACK_S`, within which a slot counts as now).

How far sends lag their slots (the clock's claim, a worker's pick-up) is printed, not
asserted: it depends on the machine's load."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from notifier.config import PROJECT_ROOT
from notifier.ledger.ratelimit import SLACK_S
from notifier.ledger.store import Store
from tests.end_to_end.test_provider_end_to_end import ids_sent, provider_env
from tests.fakes import FakeSendGrid, FakeTwilio
from tests.kit import appointment, client_upserted, daytime_zone, store_and_apply
from tests.service import Service, service_env, wait_for

pytestmark = pytest.mark.e2e

#: SMS a second: 60 SMS take about 6 s, long enough for both processes to take part.
RATE = 10
BOOKINGS = 60
INTERVAL_S = 1.0 / RATE
NAMES = ("worker-1", "worker-2")
#: dramatiq's sorted set of the brokers that polled lately, one per worker process.
HEARTBEATS = "notifier-dq:__heartbeats__"
#: The script stores the next slot with Lua's `tostring` (14 significant digits: 0.1 ms
#: for an epoch in seconds).
STORED_S = 1e-4


class RateKeyWrites:
    """A MONITOR connection recording, in Redis's order, every `SET` of an `n:rate:` key
    that a script makes: (key, the value set, the address of the client whose script it
    was). Redis 6 shows a command to MONITOR as it starts, so a script's `EVAL` comes just
    before the commands it runs."""

    def __init__(self, url: str) -> None:
        # No read timeout: one that fires in the middle of a MONITOR line (a loaded machine)
        # leaves the connection unusable ("Connection closed by server"); `close` wakes the
        # reader with a command of its own instead.
        self.url = url
        self.client = redis.Redis.from_url(url)
        self.writes: list[tuple[str, float, str]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._record, daemon=True)
        self.ready = threading.Event()
        self.thread.start()
        self.ready.wait(10)

    def _record(self) -> None:
        caller = ""
        with self.client.monitor() as monitor:
            self.ready.set()
            while not self.stop.is_set():
                seen = monitor.next_command()
                words = seen["command"].split()
                if seen["client_type"] != "lua":
                    caller = f"{seen['client_address']}:{seen['client_port']}"
                elif words[:1] == ["SET"] and words[1].startswith("n:rate:"):
                    self.writes.append((words[1], float(words[2]), caller))

    def close(self) -> None:
        self.stop.set()
        waker = redis.Redis.from_url(self.url)
        waker.ping()  # the reader sees it, and then the stop
        waker.close()
        self.thread.join(timeout=10)
        self.client.close()


def start_worker(service: dict[str, str], name: str, log: Path
                 ) -> subprocess.Popen[bytes]:
    """One `notifier worker` process with the service's environment `service` (one process
    of 2 threads, taking one message at a time), logging at INFO to `log`; its
    connections to Redis carry `name` (`CLIENT SETNAME`, from the URL)."""
    env = {**os.environ, **service, "NOTIFIER_WORKER_PROCESSES": "1",
           "NOTIFIER_WORKER_THREADS": "2", "NOTIFIER_LOG_LEVEL": "INFO",
           "dramatiq_queue_prefetch": "1",
           "NOTIFIER_REDIS_URL": f"{service['NOTIFIER_REDIS_URL']}?client_name={name}"}
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "notifier", "worker"], env=env,
                                cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT)


def names_by_address(client: redis.Redis) -> dict[str, str]:
    """The name of each connected client, by its address (`CLIENT LIST`)."""
    return {c["addr"]: c["name"] for c in client.client_list()}


def sms_sent_by(log: Path) -> int:
    """How many SMS a worker's log says it sent."""
    return sum(1 for line in log.read_text().splitlines()
               if "notification appointment_confirmation:" in line and ":sms sent" in line)


@pytest.fixture
def fakes() -> Iterator[tuple[FakeTwilio, FakeSendGrid]]:
    with FakeTwilio(account_sid="AC" + "0" * 32, auth_token="test-token") as twilio, \
            FakeSendGrid() as sendgrid:
        yield twilio, sendgrid


def test_two_worker_processes_share_one_sms_rate(redis_client, redis_url, tmp_path, fakes,
                                                policy):
    twilio, sendgrid = fakes
    env = service_env(redis_url, tmp_path) | provider_env(
        twilio, sendgrid, NOTIFIER_SMS_RATE_PER_S=str(RATE))
    # A confirmation SMS and email per booking, all due before anything runs, so the whole
    # burst meets the limiter.
    now = datetime.now(UTC)
    store = Store(redis_client)
    store_and_apply(store, policy, client_upserted("c1", daytime_zone(now), now), now)
    for i in range(BOOKINGS):
        store_and_apply(store, policy, appointment(
            "appointment.scheduled", f"a{i}", "c1", now + timedelta(days=9), now), now)
    sms_ids = [f"appointment_confirmation:a{i}:booked:sms" for i in range(BOOKINGS)]
    rate_writes = RateKeyWrites(redis_url)
    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    workers = [start_worker(env, name, log) for name, log in zip(NAMES, logs, strict=True)]
    service: Service | None = None
    try:
        # Both processes polling before the clock hands out the burst, each taking one
        # `deliver` message at a time, so both meet the limiter from the start.
        wait_for(lambda: redis_client.zcard(HEARTBEATS) == len(NAMES), timeout_s=30,
                 what="both workers to poll their queues")
        service = Service(redis_url, tmp_path, with_worker=False, env=env)
        wait_for(lambda: len(twilio.sent_messages()) >= BOOKINGS, timeout_s=90,
                 what="every SMS of the burst")
        wait_for(service.drained, timeout_s=30, what="the workers to finish")
        names = names_by_address(redis_client)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)
        rate_writes.close()
        if service is not None:
            service.close()

    counts = Counter(ids_sent(twilio))
    assert sorted(counts) == sorted(sms_ids) and set(counts.values()) == {1}
    by_process = [sms_sent_by(log) for log in logs]
    assert sum(by_process) == BOOKINGS

    reserved_by = Counter(names.get(caller) for _, _, caller in rate_writes.writes)
    assert set(reserved_by) == set(NAMES), (
        f"both processes must reserve slots for the rate to be shared: {reserved_by}")
    keys = {key for key, _, _ in rate_writes.writes}
    assert len(keys) == 1, f"one rate key for the sender, whichever process: {keys}"
    slots = [value - INTERVAL_S for _, value, _ in rate_writes.writes]
    assert len(slots) >= BOOKINGS, "every send reserved a slot"
    gaps = [later - earlier for earlier, later in zip(slots, slots[1:], strict=False)]
    assert min(gaps) >= INTERVAL_S - STORED_S, "slots one interval apart, at least"
    busiest = max(sum(1 for s in slots[i:] if s < first + 1.0 - STORED_S * RATE)
                  for i, first in enumerate(slots))
    assert busiest <= RATE, f"{busiest} slots in one second"

    sent_at = sorted(float(store.notification(i)["sent_at"]) for i in sms_ids)
    ahead = [(k, slot, sent) for k, (slot, sent) in enumerate(zip(sorted(slots), sent_at,
                                                                    strict=False))
             if sent < slot - SLACK_S - STORED_S]
    assert not ahead, f"sends ran ahead of the limiter's slots: {ahead[:3]}"
    lag = max(sent - slot for slot, sent in zip(sorted(slots), sent_at, strict=False))
    in_a_second = max(sum(1 for t in sent_at[i:] if t < first + 1.0)
                      for i, first in enumerate(sent_at))
    print(f"{BOOKINGS} SMS at {RATE}/s by two processes (sent {by_process}, slots "
          f"{[reserved_by[n] for n in NAMES]}); the latest send "
          f"{lag:.3f} s after its slot in order; at most {in_a_second} sent in one second")
