"""Delivery webhooks through the whole service when receivers misbehave: errors then
success, Retry-After, a hang past the timeout, one down for good (disabled after 5 days,
then replayed), 410 Gone, a secret's rotation, and a worker process SIGKILLed mid-send.

The senders' schedule clock is `service.webhook_offset` ahead of real time: tests move it
past a retry's delay or the 5-day window instead of waiting (signatures carry real time:
a receiver checks them against its own clock, so each `verified` below also says so)."""

from __future__ import annotations

import itertools
import logging
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from notifier.config import PROJECT_ROOT
from notifier.webhooks.endpoints import Endpoint
from notifier.webhooks.outbox import EndpointStatus, inflight_key, log_key
from notifier.webhooks.retries import DISABLE_AFTER_S, RETRY_SCHEDULE_S
from tests.end_to_end.test_provider_end_to_end import (  # the Twilio/SendGrid stand-ins
    fakes,  # noqa: F401  (a fixture)
    onboard_and_book,
    provider_env,
    signed_twilio,
    state,
)
from tests.end_to_end.test_worker_crash import start_worker, stop_workers
from tests.kit import appointment, client_upserted, daytime_zone, provider_upserted
from tests.ledger_keys import outbox_waiting
from tests.service import Service, wait_for
from tests.webhooks.kit import (
    due_at_s,
    endpoint_health,
    endpoints_env,
    message,
    new_secret,
)
from tests.webhooks.receiver import Answer, Hang, Request

pytestmark = pytest.mark.e2e

PHONE = "+14155550123"  # client c1's (tests.kit.client_upserted)
_sids = itertools.count(1)


@pytest.fixture
def make_service(redis_client, redis_url, tmp_path, fakes, receiver  # noqa: F811
                 ) -> Iterator[Callable[..., Service]]:
    """Start the service (real Twilio/SendGrid stand-ins) sending to `endpoints`
    (`tests.webhooks.kit.endpoints_env`); stopped after the test."""
    services: list[Service] = []

    def make(*endpoints: dict[str, Any]) -> Service:
        env = {**provider_env(*fakes), **endpoints_env(receiver, *endpoints)}
        services.append(Service(redis_url, tmp_path, env=env))
        return services[-1]

    yield make
    for service in services:
        service.close()


# Driving the service -------------------------------------------------------------------
def a_client(service: Service) -> None:
    """Client c1, stored: replies from its number find it."""
    now = datetime.now(UTC)
    assert service.post(client_upserted("c1", daytime_zone(now),
                                        now - timedelta(minutes=1))).status_code == 202
    wait_for(lambda: service.runtime.store.load_record("client:c1"), what="the client")


def reply(service: Service, body: str) -> None:
    """An SMS reply from c1's number: STOP and START each make one change, so one
    message (`client.opted_out`, `client.opted_in`) to each endpoint."""
    answer = signed_twilio(service, "/twilio/inbound",
                           {"From": PHONE, "Body": body, "MessageSid": f"SMin{next(_sids)}"})
    assert answer.is_success, answer.text


def senders_now_s(service: Service) -> float:
    """The senders' schedule clock, epoch seconds."""
    return (datetime.now(UTC) + service.webhook_offset).timestamp()


def advance(service: Service, to_s: float) -> None:
    """Move the senders' clock forward to just past `to_s` (epoch seconds); never back."""
    ahead = timedelta(seconds=to_s + 1 - time.time())
    service.webhook_offset = max(service.webhook_offset, ahead)


def endpoint(service: Service, name: str) -> Endpoint:
    return next(e for e in service.runtime.webhooks.endpoints if e.name == name)


def status(service: Service, name: str) -> EndpointStatus:
    now = datetime.now(UTC) + service.webhook_offset
    return next(s for s in service.runtime.webhooks.statuses(now) if s.name == name)


def ids(requests: list[Request]) -> list[str]:
    return [r.headers["webhook-id"] for r in requests]


def attempts_recorded(service: Service, name: str, message_id: str, n: int) -> dict[str, str]:
    """The message's hash once its `n`th attempt is recorded."""
    return wait_for(lambda: (m := message(service, name, message_id)).get("attempts") == str(n)
                    and m, what=f"attempt {n} of {message_id} recorded")


def claim_at(service: Service, name: str, now_s: float) -> list[str]:
    """Claim `name`'s messages due at `now_s` as a sender would (leasing any found, so
    only where none should be): the ids."""
    return [m.id for m in service.runtime.webhooks.claim(
        endpoint(service, name), datetime.fromtimestamp(now_s, UTC), lease_s=60, limit=32)]


# The tests -------------------------------------------------------------------------------
def test_500_three_times_then_200_is_one_message_attempted_four_times(make_service, receiver):
    service = make_service({"name": "flaky", "path": "/flaky", "max_in_flight": 1,
                            "script": [Answer(500)] * 3 + [Answer(200)]})
    a_client(service)
    reply(service, "STOP")
    [first] = receiver.wait_for(lambda: receiver.received("/flaky"), what="the first attempt")
    mid = first.headers["webhook-id"]
    for n, delay_s in enumerate(RETRY_SCHEDULE_S[:3], start=1):
        recorded = attempts_recorded(service, "flaky", mid, n)
        assert (recorded["state"], recorded["last_status"]) == ("pending", "500")
        due_s = due_at_s(service, "flaky", mid)
        # Due `delay_s` after the attempt began (recorded when it ended).
        assert due_s is not None and delay_s - 1 < due_s - float(recorded["last_at"]) <= delay_s
        assert len(receiver.received("/flaky")) == n  # nothing sent before its time
        advance(service, due_s)
        receiver.wait_for(lambda n=n: len(receiver.received("/flaky")) == n + 1,
                          what=f"attempt {n + 1}")
    delivered = wait_for(lambda: (m := message(service, "flaky", mid))["state"] == "delivered"
                         and m, what="the message delivered")
    assert (delivered["attempts"], delivered["last_status"]) == ("4", "200")
    attempts = receiver.received("/flaky")
    assert [r.response for r in attempts] == [Answer(500)] * 3 + [Answer(200)]
    assert ids(attempts) == [mid] * 4 and {r.body for r in attempts} == {first.body}
    # Verified: each carries a signature of its own time, the senders' clock being 35
    # minutes ahead by the last (a receiver's tolerance is 5).
    assert all(r.verified for r in attempts)
    assert attempts[0].payload["type"] == "client.opted_out"
    stamps = [int(r.headers["webhook-timestamp"]) for r in attempts]
    assert stamps == sorted(stamps)
    assert (status(service, "flaky").delivered, status(service, "flaky").retried,
            status(service, "flaky").failed, status(service, "flaky").pending) == (1, 3, 0, 0)

    # Later messages flow at once.
    reply(service, "START")
    later = receiver.wait_for(lambda: receiver.received("/flaky")[4:], what="the next message")
    assert later[0].verified and later[0].payload["type"] == "client.opted_in"
    assert attempts_recorded(service, "flaky", later[0].headers["webhook-id"], 1)["state"] \
        == "delivered"
    assert (status(service, "flaky").delivered, status(service, "flaky").retried) == (2, 3)


def test_429_with_retry_after_is_tried_again_no_sooner_than_asked(make_service, receiver):
    service = make_service({"name": "busy", "path": "/busy", "max_in_flight": 1,
                            "script": [Answer(429, retry_after="600"), Answer(200)]})
    a_client(service)
    reply(service, "STOP")
    [first] = receiver.wait_for(lambda: receiver.received("/busy"), what="the first attempt")
    mid = first.headers["webhook-id"]
    recorded = attempts_recorded(service, "busy", mid, 1)
    assert (recorded["state"], recorded["last_status"]) == ("pending", "429")
    due_s = due_at_s(service, "busy", mid)
    assert due_s is not None and 599 < due_s - float(recorded["last_at"]) <= 600
    # 300 s on (past the schedule's 5 s), nothing is due; the senders send what is.
    assert claim_at(service, "busy", float(recorded["last_at"]) + 300) == []
    advance(service, float(recorded["last_at"]) + 300)
    reply(service, "START")
    probe = receiver.wait_for(lambda: receiver.received("/busy")[1:], what="the next message")
    assert probe[0].payload["type"] == "client.opted_in"
    assert ids(receiver.received("/busy")).count(mid) == 1
    # Past Retry-After, it goes.
    advance(service, due_s)
    again = receiver.wait_for(lambda: [r for r in receiver.received("/busy")[1:]
                                       if r.headers["webhook-id"] == mid],
                              what="the second attempt")
    assert again[0].verified and again[0].body == first.body
    assert attempts_recorded(service, "busy", mid, 2)["state"] == "delivered"


BURST = 15  # appointments: two confirmations each, due at once


def test_a_receiver_hanging_past_its_timeout_holds_up_no_one_else(make_service, receiver):
    service = make_service(
        {"name": "slow", "path": "/slow", "timeout_s": 1, "max_in_flight": 2,
         "script": [Hang(30)]},
        {"name": "fast", "path": "/fast"})
    now = datetime.now(UTC)
    for evt in (client_upserted("c1", daytime_zone(now), now - timedelta(hours=1)),
                provider_upserted("prov-1", now - timedelta(hours=1)),
                *(appointment("appointment.scheduled", f"a{i}", "c1",
                              now + timedelta(days=10), now) for i in range(BURST))):
        assert service.post(evt).status_code in (200, 202)
    confirmations = {f"appointment_confirmation:a{i}:booked:{channel}"
                     for i in range(BURST) for channel in ("sms", "email")}
    wait_for(lambda: all(state(service, n).get("state") == "sent" for n in confirmations),
             timeout_s=60, what="every confirmation sent")

    def fast_caught_up() -> bool:
        made = {i.decode() for i in service.redis.zrange(log_key("fast"), 0, -1)}
        got = {r.headers["webhook-id"] for r in receiver.received("/fast") if r.verified}
        return (outbox_waiting(service.redis) == 0 and bool(made) and made <= got
                and status(service, "fast").pending == 0)

    wait_for(fast_caught_up, what="every message at the fast endpoint")
    sent = {(p["data"]["notification_id"], p["type"])
            for p in receiver.verified_payloads("/fast") if p["type"] == "notification.sent"}
    assert sent == {(n, "notification.sent") for n in confirmations}
    # ... while the slow one is still hanging: a request leased, most messages waiting.
    wait_for(lambda: service.redis.zcard(inflight_key("slow")) > 0, timeout_s=3,
             what="a request to the slow endpoint in flight")
    slow = status(service, "slow")
    assert slow.delivered == 0 and slow.pending > len(confirmations)
    # Its first attempt ended as a timeout, to be tried again.
    first = receiver.received("/slow")[0].headers["webhook-id"]
    recorded = wait_for(lambda: (m := message(service, "slow", first)).get("last_error")
                        and m, what="the first attempt recorded")
    assert recorded["last_error"].startswith("timeout") and recorded["last_status"] == ""
    assert recorded["state"] == "pending" and status(service, "slow").retried >= 1
    assert all(r.verified for r in receiver.received())


def test_a_receiver_down_for_good_is_disabled_after_5_days_then_replayed(
        make_service, receiver, caplog):
    caplog.set_level(logging.ERROR, logger="notifier.webhooks")
    service = make_service({"name": "down", "path": "/down", "max_in_flight": 1,
                            "script": [Answer(503)]})
    since = datetime.now(UTC) - timedelta(seconds=1)
    a_client(service)
    reply(service, "STOP")
    [first] = receiver.wait_for(lambda: receiver.received("/down"), what="the first attempt")
    stopped = first.headers["webhook-id"]
    # Its 8 attempts, the clock moved through the schedule.
    for n in range(1, len(RETRY_SCHEDULE_S) + 1):
        recorded = attempts_recorded(service, "down", stopped, n)
        due_s = due_at_s(service, "down", stopped)
        assert recorded["state"] == "pending" and due_s is not None
        assert RETRY_SCHEDULE_S[n - 1] - 1 < due_s - float(recorded["last_at"])
        advance(service, due_s)
        receiver.wait_for(lambda n=n: len(receiver.received("/down")) == n + 1,
                          what=f"attempt {n + 1}")
    ended = wait_for(lambda: (m := message(service, "down", stopped))["state"] == "failed"
                     and m, what="the message given up")
    assert ended["attempts"] == "8" and ended["last_error"] == "HTTP 503; no retries left"
    assert ids(receiver.received("/down")) == [stopped] * 8
    assert due_at_s(service, "down", stopped) is None
    down = status(service, "down")
    assert (down.failed, down.retried, down.disabled_at) == (1, 7, None)  # 27.6 h < 5 days

    # 5 days after the first failure, the next failed attempt disables the endpoint.
    advance(service, float(endpoint_health(service, "down")["failing_since"]) + DISABLE_AFTER_S)
    reply(service, "START")
    started = receiver.wait_for(lambda: receiver.received("/down")[8:],
                                what="the next message")[0].headers["webhook-id"]
    wait_for(lambda: status(service, "down").disabled_at, what="the endpoint disabled")
    # Logged by the sender thread just after it records the endpoint disabled: waited
    # for, not read at once (a loaded machine read it in between, once).
    alerts = wait_for(lambda: [r.getMessage() for r in caplog.records
                               if r.levelno == logging.ERROR], what="the alert")
    assert len(alerts) == 1 and "down" in alerts[0] and "disabled" in alerts[0], alerts
    assert message(service, "down", started)["state"] == "pending"  # a retry, held

    # While disabled, nothing is attempted: a new change is recorded failed at once, and
    # nothing is claimed even past every retry's time.
    reply(service, "STOP")
    stopped_again = wait_for(lambda: {i.decode() for i in service.redis.zrange(
        log_key("down"), 0, -1)} - {stopped, started}, what="the third message")
    [stopped_again_id] = stopped_again
    held = message(service, "down", stopped_again_id)
    assert (held["state"], held["attempts"], held["last_error"]) == \
        ("failed", "0", "endpoint disabled")
    assert claim_at(service, "down", senders_now_s(service) + 86400) == []
    assert len(receiver.received("/down")) == 9

    # Fixed, and replayed: every message arrives, under its own webhook-id.
    receiver.set_script("/down", [Answer(200)])
    now = datetime.now(UTC) + service.webhook_offset
    assert service.runtime.webhooks.replay(endpoint(service, "down"), since, now) == 2
    advance(service, senders_now_s(service) + RETRY_SCHEDULE_S[0])  # the held retry's time
    receiver.wait_for(lambda: {r.headers["webhook-id"] for r in receiver.received("/down")
                               if r.response == Answer(200)}
                      >= {stopped, started, stopped_again_id},
                      what="the three messages delivered")
    assert all(r.verified for r in receiver.received("/down"))
    wait_for(lambda: status(service, "down").pending == 0, what="nothing pending")
    after = status(service, "down")
    assert (after.delivered, after.disabled_at) == (3, None)


def test_410_gone_is_attempted_once_and_never_again(make_service, receiver):
    service = make_service({"name": "gone", "path": "/gone", "max_in_flight": 1,
                            "script": [Answer(410), Answer(200)]})
    a_client(service)
    reply(service, "STOP")
    [first] = receiver.wait_for(lambda: receiver.received("/gone"), what="the attempt")
    mid = first.headers["webhook-id"]
    recorded = attempts_recorded(service, "gone", mid, 1)
    assert (recorded["state"], recorded["last_status"]) == ("failed", "410")
    assert due_at_s(service, "gone", mid) is None
    # A day on, it is not due, and the next message goes while it does not.
    assert claim_at(service, "gone", senders_now_s(service) + 86400) == []
    advance(service, senders_now_s(service) + 86400)
    reply(service, "START")
    probe = receiver.wait_for(lambda: receiver.received("/gone")[1:], what="the next message")
    assert attempts_recorded(service, "gone", probe[0].headers["webhook-id"], 1)["state"] \
        == "delivered"
    assert ids(receiver.received("/gone")).count(mid) == 1
    gone = status(service, "gone")
    assert (gone.failed, gone.retried, gone.delivered) == (1, 0, 1)


def test_while_a_secret_rotates_both_secrets_verify_and_after_only_the_new(
        make_service, receiver):
    now = datetime.now(UTC)
    new, old, new_after, old_after = new_secret(), new_secret(), new_secret(), new_secret()
    service = make_service(
        {"name": "rotating", "path": "/rotating", "secret": new, "previous": old,
         "previous_until": f"{now + timedelta(hours=1):%Y-%m-%dT%H:%M:%SZ}",
         "verify_with": [old, new]},
        {"name": "rotated", "path": "/rotated", "secret": new_after, "previous": old_after,
         "previous_until": f"{now - timedelta(hours=1):%Y-%m-%dT%H:%M:%SZ}",
         "verify_with": [old_after, new_after]})
    a_client(service)
    reply(service, "STOP")
    reply(service, "START")
    for path in ("/rotating", "/rotated"):
        receiver.wait_for(lambda path=path: len(receiver.received(path)) >= 2,
                          what=f"both messages at {path}")
    # The receiver verifies with each of its secrets on its own: one that holds only the
    # old one, or only the new one, accepts every message while both sign.
    rotating = receiver.received("/rotating")
    assert [set(r.matched_secrets) for r in rotating] == [{old, new}] * 2
    assert all(len(r.headers["webhook-signature"].split()) == 2 for r in rotating)
    rotated = receiver.received("/rotated")
    assert [r.matched_secrets for r in rotated] == [(new_after,)] * 2
    assert all(len(r.headers["webhook-signature"].split()) == 1 for r in rotated)
    # Sent in parallel (max_in_flight 4): in order of sequence, not of arrival.
    assert [p["type"] for p in sorted((r.payload for r in rotated),
                                      key=lambda p: p["data"]["sequence"])] \
        == ["client.opted_out", "client.opted_in"]


def test_a_worker_sigkilled_mid_send_loses_no_message_and_sends_each_under_one_id(
        redis_client, redis_url, tmp_path, receiver):
    """The worker process sends the webhooks (the test's service does not); it is killed
    while its first request hangs, after the change was made and before any answer.
    The message's lease (timeout_s + 10 s) lapses and the restarted worker sends it again,
    under the same webhook-id."""
    # The kill must land before the hung request's timeout (its deadline then records an
    # attempt): 8 s leaves room on a loaded machine (4 s failed once beside a CI run).
    env = endpoints_env(receiver, {"name": "ehr", "path": "/ehr", "timeout_s": 8,
                                   "script": [Hang(60), Answer(200)]})
    service = Service(redis_url, tmp_path, with_worker=False, with_webhooks=False, env=env)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        workers.append(start_worker(service, PROJECT_ROOT))
        onboard_and_book(service)
        [hung] = receiver.wait_for(lambda: receiver.received("/ehr")[:1], timeout_s=30,
                                   what="the worker's first request")
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(timeout=10)
        hung_id = hung.headers["webhook-id"]
        # Killed mid-send: the message leased, no attempt recorded.
        assert message(service, "ehr", hung_id)["attempts"] == "0"
        assert service.redis.zscore(inflight_key("ehr"), hung_id) is not None

        workers.append(start_worker(service, PROJECT_ROOT))
        receiver.wait_for(lambda: ids(receiver.received("/ehr")).count(hung_id) == 2,
                          timeout_s=60, what="the hung message again, after its lease")
        notifications = service.notifications("c1")
        due = [n for n in notifications if n.startswith("appointment_confirmation:")]
        wait_for(lambda: all(service.notifications("c1")[n]["state"] == "sent" for n in due),
                 timeout_s=30, what="the confirmations sent")

        def settled() -> bool:
            return (outbox_waiting(service.redis) == 0
                    and status(service, "ehr").pending == 0)

        wait_for(settled, timeout_s=60, what="every message delivered")
        notifications = service.notifications("c1")
        changes = {(n, "notification.scheduled") for n in notifications} | {
            (n, "notification.sent") for n, v in notifications.items() if v["state"] == "sent"}
        requests = receiver.received("/ehr")
        assert all(r.verified for r in requests)
        announced: dict[tuple[str, str], set[str]] = {}
        for r in requests:
            change = (r.payload["data"]["notification_id"], r.payload["type"])
            announced.setdefault(change, set()).add(r.headers["webhook-id"])
        assert set(announced) == changes  # none lost, none made up
        assert all(len(i) == 1 for i in announced.values()), announced  # one id each
        made = {i.decode() for i in service.redis.zrange(log_key("ehr"), 0, -1)}
        assert set(ids(requests)) == made
        print(f"{len(changes)} changes announced in {len(requests)} requests")
    finally:
        stop_workers(workers)
        service.close()
