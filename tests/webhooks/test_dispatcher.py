"""One attempt at a message, over real HTTP to the verifying receiver: headers, signatures
(with a rotation's two), and what each kind of answer or silence makes of it."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis
from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook

from notifier.ledger.embedded_redis import free_port
from notifier.webhooks.catalogue import expand
from notifier.webhooks.dispatcher import Dispatcher, attempt, signed_headers
from notifier.webhooks.endpoints import Endpoint
from notifier.webhooks.outbox import WebhookOutbox
from tests.ledger_keys import KEYS
from tests.webhooks.receiver import Answer, Drop, Hang, WebhookReceiver

NEW, OLD = "whsec_" + "TkVX" * 8, "whsec_" + "T0xE" * 8
BODY = '{"type":"notification.sent","timestamp":"2026-11-30T15:00:00Z","data":{}}'


def endpoint(url: str, *, timeout_s: float = 2.0, rotating_until: datetime | None = None
             ) -> Endpoint:
    return Endpoint(name="ehr", url=url, events=expand(["*"]), secret=SecretStr(NEW),
                    previous_secret=SecretStr(OLD) if rotating_until else None,
                    previous_until=rotating_until, timeout_s=timeout_s)


def test_the_headers_verify_with_the_reference_library():
    now = datetime.now(UTC)
    headers = signed_headers(endpoint("http://x/"), "msg_1_2", BODY, now)
    assert headers["webhook-id"] == "msg_1_2"
    assert headers["webhook-timestamp"] == str(int(now.timestamp()))
    assert headers["content-type"] == "application/json"
    assert Webhook(NEW).verify(BODY, headers)["type"] == "notification.sent"
    with pytest.raises(Exception, match="signature"):
        Webhook(OLD).verify(BODY, headers)


def test_while_a_rotation_overlaps_both_secrets_sign():
    now = datetime.now(UTC)
    rotating = endpoint("http://x/", rotating_until=now + timedelta(hours=1))
    headers = signed_headers(rotating, "msg_1_2", BODY, now)
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(OLD).verify(BODY, headers) and Webhook(NEW).verify(BODY, headers)
    after = signed_headers(rotating, "msg_1_2", BODY, now + timedelta(hours=2))
    assert len(after["webhook-signature"].split(" ")) == 1


@pytest.mark.parametrize(("script", "outcome", "status"), [
    ([Answer(204)], "delivered", 204),
    ([Answer(503)], "retry", 503),
    ([Answer(429, retry_after="120")], "retry", 429),
    ([Answer(410)], "failed", 410),
    ([Answer(400)], "failed", 400),
    ([Hang(30)], "retry", None),
    ([Drop()], "retry", None),
])
def test_each_answer_makes_its_verdict(script, outcome, status):
    now = datetime.now(UTC)
    with WebhookReceiver() as receiver, httpx.Client() as client:
        receiver.endpoint("/ehr", secrets=[NEW], script=script)
        verdict, answered = attempt(client, endpoint(receiver.url("/ehr"), timeout_s=0.5),
                                    "msg_1_2", BODY, 0, now)
        assert (verdict.outcome, answered) == (outcome, status)
        (request,) = receiver.received("/ehr")
        assert request.verified and request.body == BODY.encode()
    if status == 429:
        assert verdict.next_at == now + timedelta(seconds=120)


def test_nobody_listening_is_retried():
    now = datetime.now(UTC)
    with httpx.Client() as client:
        verdict, answered = attempt(client, endpoint(f"http://127.0.0.1:{free_port()}/"),
                                    "msg_1_2", BODY, 0, now)
    assert (verdict.outcome, answered) == ("retry", None)
    assert verdict.why.startswith("no answer")


def test_the_dispatcher_stops_when_told_and_without_endpoints_at_once(redis_client):
    stop = threading.Event()
    Dispatcher(WebhookOutbox(redis_client, (), KEYS)).serve(stop)  # returns: nothing to send
    with WebhookReceiver() as receiver:
        receiver.endpoint("/ehr", secrets=[NEW])
        dispatcher = Dispatcher(WebhookOutbox(redis_client, [endpoint(receiver.url("/ehr"))], KEYS),
                                idle_s=0.01)
        thread = threading.Thread(target=dispatcher.serve, args=(stop,))
        thread.start()
        stop.set()
        thread.join(timeout=5)
        assert not thread.is_alive()


def test_every_attempt_at_a_message_carries_its_one_webhook_id(redis_client):
    """A retry is the same message: the receiver dedupes on `webhook-id`, and orders by
    `data.sequence`; only the signature's timestamp is the attempt's own."""
    from notifier.ledger.announcements import queue_announcement
    from notifier.webhooks.catalogue import Announcement

    clock = [datetime.now(UTC)]
    with WebhookReceiver() as receiver, httpx.Client() as client:
        receiver.endpoint("/ehr", secrets=[NEW], script=[Answer(503), Drop(), Answer(200)])
        ehr = endpoint(receiver.url("/ehr"))
        outbox = WebhookOutbox(redis_client, [ehr], KEYS)
        with redis_client.pipeline() as pipe:
            queue_announcement(pipe, KEYS, Announcement("client.opted_out", "client:c1",
                                                  {"client_id": "c1"}))
            pipe.execute()
        assert outbox.fan_out(clock[0]) == 1
        dispatcher = Dispatcher(outbox, now=lambda: clock[0])
        # The schedule's clock moves past the first two delays (5 s, then 5 min: an hour,
        # beyond any receiver's tolerance); signatures carry the real time, and verify.
        for wait_s in (0, 5, 3600):
            clock[0] += timedelta(seconds=wait_s)
            assert dispatcher.send_due(client, ehr) == 1
        assert dispatcher.send_due(client, ehr) == 0, "delivered: nothing left"
        requests = receiver.received("/ehr")
    assert len(requests) == 3 and all(r.verified for r in requests)
    assert len({r.headers["webhook-id"] for r in requests}) == 1
    assert len({r.body for r in requests}) == 1
    (status,) = outbox.statuses(clock[0])
    assert (status.delivered, status.retried, status.pending) == (1, 2, 0)


def test_a_sender_that_hits_an_unexpected_error_goes_on(redis_client, caplog):
    """One bad moment (here a message whose body vanished from under the claim) is logged,
    and the same thread sends the next message."""
    from notifier.webhooks.outbox import due_key, message_key

    with WebhookReceiver() as receiver:
        receiver.endpoint("/ehr", secrets=[NEW])
        ehr = endpoint(receiver.url("/ehr"))
        outbox = WebhookOutbox(redis_client, [ehr], KEYS)
        now = datetime.now(UTC)
        for mid in ("msg_1_1", "msg_2_2"):
            redis_client.hset(message_key("ehr", mid), mapping={
                "body": BODY, "attempts": "x" if mid == "msg_1_1" else 0,
                "state": "pending"})
            redis_client.zadd(due_key("ehr"), {mid: now.timestamp()})
        stop = threading.Event()
        dispatcher = Dispatcher(outbox, idle_s=0.01)
        thread = threading.Thread(target=dispatcher.run_sender, args=(ehr, stop))
        thread.start()
        try:
            receiver.wait_for(lambda: receiver.received("/ehr"), what="the second message")
        finally:
            stop.set()
            thread.join(timeout=5)
        assert [r.headers["webhook-id"] for r in receiver.received("/ehr")] == ["msg_2_2"]
        assert "sending failed; going on" in caplog.text


def test_an_endless_answer_is_never_read():
    """A receiver (or a URL pointing at a download) answering 200 with an endless body:
    only the status is read, so the webhooks process's memory stays flat (found by QA:
    a 600 MB answer took `notifier webhooks test` to 1.27 GB)."""
    pulled = 0

    def endless() -> Iterator[bytes]:
        nonlocal pulled
        chunk = b"x" * 65536
        while pulled < 64 * 1024 * 1024:  # stands for "never ends"
            pulled += len(chunk)
            yield chunk

    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=endless()))
    with httpx.Client(transport=transport) as client:
        verdict, status = attempt(client, endpoint("http://x/"), "msg_1_1", "{}", 0,
                                  datetime.now(UTC))
    assert (verdict.outcome, status) == ("delivered", 200)
    assert pulled <= 1024 * 1024, f"read {pulled} bytes of the receiver's answer"


def test_a_receiver_trickling_its_answer_is_cut_at_the_timeout():
    """httpx's timeouts are per read: a receiver sending a header line every 0.2 s would
    hold a sender for ever. The whole request has the endpoint's timeout; then the client
    is closed, and the sender makes a new one."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            while not stop.wait(0.2):
                try:
                    conn.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.getsockname()[1]}/"
        client = httpx.Client()
        verdict, status = attempt(client, endpoint(url, timeout_s=1.0), "msg_1_1", BODY, 0,
                                  datetime.now(UTC))
        assert (verdict.outcome, status) == ("retry", None)
        assert verdict.why == "timeout: no answer within 1 s"
        assert client.is_closed
    finally:
        stop.set()
        server.close()
        thread.join(timeout=5)


@pytest.mark.parametrize("url", ["http://crm..example/hook", f"http://{'a' * 64}.example/",
                                 "http://256.1.1.1/hook", "http://[v1.x]/hook"])
def test_a_url_no_request_can_name_fails_the_message_and_never_raises(url):
    """Start-up refuses such a URL (`endpoints`); were one to get here, the attempt fails
    the message rather than raising out of the sender (found by QA)."""
    with httpx.Client() as client:
        verdict, status = attempt(client, endpoint(url), "msg_1_1", BODY, 0, datetime.now(UTC))
    assert (verdict.outcome, status) == ("failed", None)
    assert verdict.why.startswith("cannot send to this URL")


def _deadlines_cut_in_this_process() -> None:
    from notifier.webhooks.dispatcher import shared_deadlines

    client = httpx.Client()
    with shared_deadlines().watch(client, 0.05) as cut:
        if not cut.wait(timeout=10):
            raise SystemExit(1)
    raise SystemExit(0 if client.is_closed else 2)


def test_a_forked_webhooks_process_has_its_own_deadline_thread():
    """`notifier worker` forks its webhooks process after the parent may have used the
    deadlines: a thread does not survive a fork, so the child must start its own, or no
    request of its would ever be cut."""
    import multiprocessing

    from notifier.webhooks.dispatcher import shared_deadlines

    shared_deadlines()  # the parent's, as a parent that tested an endpoint would have
    child = multiprocessing.get_context("fork").Process(target=_deadlines_cut_in_this_process)
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0


def test_a_redis_outage_is_said_once_a_sender_not_every_second(tmp_path, caplog):
    """16 senders logging a traceback every second flooded the log during an outage (found
    by the second QA pass): each says it once, and once more when Redis answers again."""
    from notifier.ledger.client import ledger_client
    from tests.conftest import OwnRedis

    server = OwnRedis(tmp_path).start()
    try:
        with WebhookReceiver() as receiver:
            receiver.endpoint("/ehr", secrets=[NEW])
            client = ledger_client(redis.Redis.from_url(server.url, socket_timeout=2))
            dispatcher = Dispatcher(WebhookOutbox(client, [endpoint(receiver.url("/ehr"))], KEYS),
                                    idle_s=0.01)
            ehr = dispatcher.outbox.endpoints[0]
            stop = threading.Event()
            thread = threading.Thread(target=dispatcher.run_sender, args=(ehr, stop))
            with caplog.at_level(logging.INFO, logger="notifier.webhooks"):
                server.kill()
                thread.start()
                deadline = time.monotonic() + 20
                while not caplog.records and time.monotonic() < deadline:
                    time.sleep(0.05)
                time.sleep(2.5)  # several of the senders' 1 s tries while Redis is down
                server.start()
                while len(caplog.records) < 2 and time.monotonic() < deadline:
                    time.sleep(0.05)
                stop.set()
                thread.join(timeout=10)
    finally:
        server.stop()
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2, said
    assert "Redis unavailable" in said[0] and "answers again" in said[1]
