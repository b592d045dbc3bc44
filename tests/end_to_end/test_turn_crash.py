"""A worker SIGKILLed while it holds an entity's turn: the entity's later events are still
applied, in order, within the lease.

How the kill is made to land inside a turn, with no hook in the production code and no fixed
sleep: the booking and hundreds of reschedules of ONE appointment are posted (signed HTTP)
while no worker runs, so they all wait in the appointment's queue. Two real worker
processes are then started, and once both run one apply message is sent (the others are
set aside, or the first worker up would drain the queue before the second has imported):
whichever takes the turn applies the whole queue in one long turn.
Polling Redis, the test waits until both workers run and the turn is mid-drain (some
events applied, many left), names the holder from the workers' logs (only the holder logs
"event ... applied" for them) and SIGKILLs it. Later reschedules are then posted while the
dead worker's turn is still in force, so the surviving worker's messages for them find the
turn taken and return: only the lease can bring the appointment back.

The clock's 30 s sweep of unapplied events would also bring it back, late; the test harness
shortens it to 2 s, which would hide a broken resume within the lease, so this test puts
the production figure back. The deadline for recovery is a few leases from the kill.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from notifier.config import PROJECT_ROOT
from notifier.intake.apply import apply_in_turn
from notifier.intake.events import parse_event
from notifier.ledger.records import AppointmentRecord
from notifier.ledger.store import Store
from notifier.ledger.turns import member_event_id
from notifier.policy.ordering import subject_ref
from notifier.timeutil import utcnow
from notifier.worker.actors import EVENTS_QUEUE, build_broker, enqueue_apply
from notifier.worker.clock import Clock
from tests.kit import appointment, client_upserted, daytime_zone, store_and_apply
from tests.ledger_keys import (
    event_key,
    pending_events,
    queue_key,
    record_key,
    turn_key,
    turns_key,
)
from tests.service import Service, wait_for

#: The whole service (web on a port, worker, clock) or its processes.
pytestmark = pytest.mark.e2e

LEASE_S = 3
BEFORE_KILL = 300  # reschedules queued before the workers start
AFTER_KILL = 20  # reschedules posted after the kill
APPT = "apt-1"
REF = f"appointment:{APPT}"
APPLIED_LINE = re.compile(r"event (\S+) (applied|stale|ignored) \(")
#: The clock's sweep of events accepted but never applied, as in production.
PRODUCTION_EVENT_GRACE_S = 30.0


def start_worker(service: Service, log_path: Path) -> subprocess.Popen[bytes]:
    """A real `python -m notifier worker` running this checkout's code, logging at INFO:
    one process, so the process the test kills is the one holding the turn."""
    env = {**os.environ, **service.env, "PYTHONPATH": str(PROJECT_ROOT),
           "NOTIFIER_WORKER_PROCESSES": "1", "NOTIFIER_WORKER_THREADS": "2",
           "NOTIFIER_LOG_LEVEL": "INFO"}
    with log_path.open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "notifier", "worker"], env=env,
                                cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=log)


def applied_in_log(log_path: Path) -> set[str]:
    """Ids of the events this worker's log says it applied."""
    return {m[0] for m in APPLIED_LINE.findall(log_path.read_text(errors="replace"))}


def test_sigkilled_turn_holder_is_resumed_within_the_lease(redis_client, redis_url, tmp_path,
                                                           caplog):
    service = Service(redis_url, tmp_path, lease_s=LEASE_S, with_worker=False)
    service.clock.event_grace_s = PRODUCTION_EVENT_GRACE_S
    caplog.set_level(logging.WARNING, logger="notifier.worker.clock")
    r = service.redis
    workers: dict[str, subprocess.Popen[bytes]] = {}
    logs = {name: tmp_path / f"worker-{name}.log" for name in ("a", "b")}
    try:
        now = datetime.now(UTC)
        store, policy = service.runtime.store, service.runtime.policy
        store_and_apply(store, policy, client_upserted("c1", daytime_zone(now), now), now)
        t0, first_start = now - timedelta(hours=1), now + timedelta(days=10)
        # Event i (0: the booking) happened at t0 + i s and moves the visit to start + i min.
        events = [appointment("appointment.scheduled", APPT, "c1", first_start, t0)]
        events += [appointment("appointment.rescheduled", APPT, "c1",
                               first_start + timedelta(minutes=i), t0 + timedelta(seconds=i))
                   for i in range(1, BEFORE_KILL + AFTER_KILL + 1)]
        for evt in events[:BEFORE_KILL + 1]:
            assert service.post(evt).status_code == 202
        assert r.zcard(queue_key(REF)) == BEFORE_KILL + 1

        # Both workers must be up before the turn starts, or the first one up drains the
        # queue before the second has imported (applying 300 events takes well under a
        # second): the apply messages are set aside and one is sent once both run.
        r.delete(f"notifier-dq:{EVENTS_QUEUE}", f"notifier-dq:{EVENTS_QUEUE}.msgs")
        for name, path in logs.items():
            workers[name] = start_worker(service, path)
        wait_for(lambda: all("worker running" in p.read_text(errors="replace")
                             for p in logs.values()), timeout_s=60, what="both workers up")
        enqueue_apply(build_broker(redis_url), events[0]["id"])

        def mid_turn() -> bool:
            left = r.zcard(queue_key(REF))
            return bool(r.exists(turn_key(REF))) and 50 <= left <= BEFORE_KILL - 10

        wait_for(mid_turn, timeout_s=30, what="one worker in the middle of the turn")
        holders = [name for name, path in logs.items() if applied_in_log(path)]
        assert len(holders) == 1, f"expected one worker applying the queue, got {holders}"
        holder = workers[holders[0]]
        holder.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        holder.wait(timeout=10)
        dead_token = r.get(turn_key(REF))
        left = {member_event_id(m.decode()) for m in r.zrange(queue_key(REF), 0, -1)}
        assert dead_token is not None and left, "the kill came after the turn"

        for evt in events[BEFORE_KILL + 1:]:
            assert service.post(evt).status_code == 202
        # The survivor takes every message about them (they are all on its side once the
        # queue is empty) while the dead worker's turn still holds: its threads return.
        wait_for(lambda: r.llen(f"notifier-dq:{EVENTS_QUEUE}") == 0,
                 what="the survivor to take the messages")
        assert r.get(turn_key(REF)) == dead_token, "the later events came after the lease"

        ids = [e["id"] for e in events]

        def statuses() -> list[str]:
            with r.pipeline(transaction=False) as pipe:
                for i in ids:
                    pipe.hget(event_key(i, REF), "status")
                return [s.decode() if s else "" for s in pipe.execute()]

        wait_for(lambda: set(statuses()) == {"applied"},
                 timeout_s=max(0.0, killed_at + 4 * LEASE_S - time.monotonic()),
                 what="every event to be applied within a few leases of the kill")
        print(f"all applied {time.monotonic() - killed_at:.1f} s after the kill")
        # ...because the clock resumed the subject when the dead worker's lease ran out.
        assert any(rec.name == "notifier.worker.clock" and "turn expired on 1 subjects; resumed 1"
                   in rec.getMessage() for rec in caplog.records)

        # Applied one at a time, oldest first: each reschedule raised the sequence (an
        # out-of-order one would have been stale), and the last one is what stands.
        record = AppointmentRecord.model_validate_json(r.get(record_key(REF)))
        assert record.sequence == BEFORE_KILL + AFTER_KILL
        assert record.appointment.start == first_start + timedelta(
            minutes=BEFORE_KILL + AFTER_KILL)
        assert record.updated_at == t0 + timedelta(seconds=BEFORE_KILL + AFTER_KILL)
        applied_at = [float(r.hget(event_key(i, REF), "applied_at")) for i in ids]
        assert applied_at == sorted(applied_at)
        # Each event was applied once: the ones still queued at the kill and the later ones
        # by the survivor, after the dead worker's lease; none of them twice.
        survivor = logs["b" if holders == ["a"] else "a"]
        later = {e["id"] for e in events[BEFORE_KILL + 1:]}
        wait_for(lambda: applied_in_log(survivor) == left | later,
                 what="the survivor's log to show it applied what the dead worker left")
        assert not applied_in_log(logs[holders[0]]) & (left | later)
        # The dead worker's turn ran out and the survivor gave its own back: nothing queued,
        # nothing pending, no turn left behind.
        assert not r.exists(turn_key(REF))
        assert r.zscore(turns_key(REF), REF) is None
        assert r.zcard(queue_key(REF)) == 0
        assert pending_events(r) == []
        # Nothing went out while the appointment had unapplied events; then only its last
        # update, once per channel.
        last = f"appointment_updated:{APPT}:seq{BEFORE_KILL + AFTER_KILL}"
        service.sent_exactly_once({f"{last}:email", f"{last}:sms"})
        print(f"{len(left)} of {BEFORE_KILL + 1} events were left when the holder died")
    finally:
        for worker in workers.values():
            if worker.poll() is None:
                worker.terminate()
                worker.wait(timeout=10)
        service.close()


def test_a_turn_is_resumed_once_its_key_has_expired_not_before(redis_client, redis_url, policy):
    """`turns` holds the lease's end as the holder's clock saw it before its script ran (a
    thread waiting for the GIL, a slow round trip, another host's clock), so the clock can
    find a lease over while the turn key still holds. The subject must stay due for resuming
    until the key is gone: a worker given it early finds the turn taken and returns."""
    store = Store(redis_client)
    clock = Clock(store, build_broker(redis_url), lease_s=1)
    now = utcnow()
    evt = client_upserted("c1", daytime_zone(now), now)
    ref = subject_ref(parse_event(json.dumps(evt).encode()))
    store.store_event(evt["id"], json.dumps(evt).encode(), now, subject=ref,
                      occurred_at=now)
    # A holder that read its clock 0.5 s before its script ran, then died: `turns` says its
    # lease ends 0.5 s before its key expires.
    assert store.turns.take(ref, "dead", utcnow() - timedelta(seconds=0.5), lease_s=1.0)
    lease_end = datetime.fromtimestamp(redis_client.zscore(turns_key(ref), ref), UTC)
    # A tick after that end, while the key still holds: whatever it resumes finds the turn
    # taken.
    wait_for(lambda: utcnow() > lease_end, what="the lease's end as `turns` has it")
    assert redis_client.pttl(turn_key(ref)) > 100, "too slow to tick before the key expired"
    for event_id in clock.resume_turns(utcnow()):
        assert apply_in_turn(store, event_id, policy, utcnow, 1.0) == 0
    wait_for(lambda: not redis_client.exists(turn_key(ref)), timeout_s=5,
             what="the dead holder's turn key to expire")
    # Once the key is gone, a tick resumes the subject, and its event is applied.
    wait_for(lambda: clock.resume_turns(utcnow()) == [evt["id"]], timeout_s=2,
             what="a tick to resume the subject")
    assert apply_in_turn(store, evt["id"], policy, utcnow, 1.0) == 1
    assert store.event_status(evt["id"])["status"] == "applied"
