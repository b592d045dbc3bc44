"""`POST /v1/events` stores an event and enqueues its `apply_event` message in one script
(`web.events.ONE_WRITE`), the message as dramatiq's `RedisBroker` writes one: against a
real Redis (one of the test's own where it is killed) and a real dramatiq worker, with no
clock running, so nothing but the message itself can get an event applied.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware

from notifier.cli.common import server_config
from notifier.cli.send_event import sign_event
from notifier.config import Settings
from notifier.ledger import async_events
from notifier.ledger.broker_messages import broker_message
from notifier.ledger.events import store_event_call
from notifier.ledger.lua import lua_source
from notifier.ledger.shards import ShardKeys
from notifier.ledger.store import Store
from notifier.runtime import Runtime
from notifier.web.app import create_app
from notifier.web.events import UNAVAILABLE
from notifier.worker.actors import APPLY_EVENT, EVENTS_QUEUE, build_broker, declare_actors
from tests.end_to_end.test_redis_restart import durable
from tests.kit import client_upserted, daytime_zone
from tests.ledger.test_lua_scripts import Monitor
from tests.ledger_keys import event_key, stored_event_key
from tests.service import wait_for

__all__ = ["durable"]  # the fixture, shared with test_redis_restart

from fastapi.testclient import TestClient

NAMESPACE = "notifier-dq"
QUEUE_KEY = f"{NAMESPACE}:{EVENTS_QUEUE}"
MESSAGES_KEY = f"{QUEUE_KEY}.msgs"
SECRET = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA=="


def settings_for(redis_url: str, tmp_path: Path) -> Settings:
    return Settings.from_env({"NOTIFIER_WEBHOOK_SECRET": SECRET,
                              "NOTIFIER_REDIS_URL": redis_url,
                              "NOTIFIER_OUTBOX_DIR": str(tmp_path / "outbox"),
                              "NOTIFIER_VAR_DIR": str(tmp_path / "var")},
                             dotenv=Path("/nonexistent"))


def client_event(client_id: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return client_upserted(client_id, daytime_zone(now), now)


def post(http: TestClient, evt: dict[str, Any]) -> Any:
    body = json.dumps(evt).encode()
    return http.post("/v1/events", content=body,
                     headers=sign_event(SECRET, body, evt["id"], datetime.now(UTC)))


def queued(r: redis.Redis) -> list[dict[str, Any]]:
    """The events queue's messages, in order, each checked to sit under its own
    `redis_message_id`, as a worker's fetch reads them."""
    ids = r.lrange(QUEUE_KEY, 0, -1)
    messages = [json.loads(b) for b in (r.hmget(MESSAGES_KEY, ids) if ids else [])]
    assert [m["options"]["redis_message_id"].encode() for m in messages] == ids
    return messages


@pytest.fixture
def web(redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> Iterator[TestClient]:
    broker = build_broker(redis_url)
    app = create_app(settings_for(redis_url, tmp_path), Store(redis_client), broker)
    with TestClient(app) as http:
        yield http
    broker.close()


def test_a_posted_event_is_applied_by_a_real_worker_from_its_message_alone(
        redis_url, redis_client, web, tmp_path):
    runtime = Runtime.build(settings_for(redis_url, tmp_path), redis_url)
    broker = build_broker(redis_url)
    declare_actors(broker, runtime)
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=50)
    worker.start()
    try:
        evt = client_event("c1")
        assert post(web, evt).status_code == 202
        wait_for(lambda: runtime.store.event_status(evt["id"]).get("status") == "applied",
                 what="the worker to apply the event")
        wait_for(lambda: redis_client.hlen(MESSAGES_KEY) == 0, what="the message's ack")
    finally:
        worker.stop()
        broker.close()


def test_the_message_is_what_dramatiqs_own_enqueue_writes(redis_url, redis_client, web):
    evt = client_event("c1")
    assert post(web, evt).status_code == 202
    [ours] = queued(redis_client)
    ours_keys = set(redis_client.keys(f"{NAMESPACE}:*"))
    redis_client.delete(*ours_keys)
    broker = build_broker(redis_url)
    try:
        broker.enqueue(dramatiq.Message(queue_name=EVENTS_QUEUE, actor_name=APPLY_EVENT,
                                        args=(evt["id"],), kwargs={}, options={}))
    finally:
        broker.close()
    [theirs] = queued(redis_client)
    # The same keys, of the same types, but the broker's heartbeat (see
    # ledger.broker_messages); the same message but for its ids and time.
    theirs_keys = set(redis_client.keys(f"{NAMESPACE}:*"))
    assert theirs_keys - ours_keys == {f"{NAMESPACE}:__heartbeats__".encode()}
    assert {redis_client.type(k) for k in ours_keys} == {b"list", b"hash"}
    unique = ("message_id", "message_timestamp", "options")
    assert {k: v for k, v in ours.items() if k not in unique} == \
        {k: v for k, v in theirs.items() if k not in unique}
    assert ours["args"] == [evt["id"]]
    assert ours["options"].keys() == theirs["options"].keys() == {"redis_message_id"}
    assert ours.keys() == theirs.keys()


def test_the_event_and_its_message_are_one_command(redis_url, redis_client, web):
    """One EVALSHA from the web, that writes the event and the message: they are written
    together or not at all, and with `appendfsync always` share one fsync."""
    assert post(web, client_event("c0")).status_code == 202  # the script is loaded now
    with Monitor(redis_url) as monitor:
        evt = client_event("c1")
        assert post(web, evt).status_code == 202
    # Connections' handshakes (the monitor's own closing one among them) aside.
    sent = [args for source, args in monitor.lines
            if source != "lua" and args[0].upper() not in ("HELLO", "CLIENT", "SELECT")]
    sha = hashlib.sha1(lua_source("event_store").encode()).hexdigest()
    assert [(args[0].upper(), args[1]) for args in sent] == [("EVALSHA", sha)]
    written = {(args[0].upper(), args[1]) for source, args in monitor.lines
               if source == "lua" and args[0].upper() in ("HSET", "RPUSH")}
    assert {("HSET", event_key(evt["id"], "client:c1")), ("HSET", MESSAGES_KEY),
            ("RPUSH", QUEUE_KEY)} <= written


def test_a_duplicate_enqueues_nothing_even_once_applied(redis_client, web):
    evt = client_event("c1")
    assert post(web, evt).status_code == 202
    redis_client.delete(QUEUE_KEY, MESSAGES_KEY)  # as if a worker had taken and acked it
    again = post(web, evt)
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    assert queued(redis_client) == []


def test_each_event_answered_202_is_there_with_its_message_after_a_redis_crash(
        durable, tmp_path):
    client = redis.Redis.from_url(durable.url)
    broker = build_broker(durable.url)
    ids = []
    try:
        app = create_app(settings_for(durable.url, tmp_path), Store(client), broker)
        with TestClient(app) as http:
            for i in range(20):
                evt = client_event(f"c{i}")
                assert post(http, evt).status_code == 202
                ids.append(evt["id"])
        durable.kill()  # no shutdown, no save: only what the append-only file holds
        durable.start()
        assert sorted(m["args"][0] for m in queued(client)) == sorted(ids)
        assert all(stored_event_key(client, i) for i in ids)
    finally:
        broker.close()
        client.close()


def test_after_a_redis_restart_the_first_event_is_accepted(durable, tmp_path):
    """The web's pooled connections die with the server; the next request reconnects
    instead of answering 503 to whoever comes first."""
    client = redis.Redis.from_url(durable.url)
    broker = build_broker(durable.url)
    try:
        app = create_app(settings_for(durable.url, tmp_path), Store(client), broker)
        with TestClient(app) as http:
            assert post(http, client_event("c0")).status_code == 202
            durable.kill()
            durable.start()
            evt = client_event("c1")
            assert post(http, evt).status_code == 202
            assert http.get("/healthz").status_code == 200
            assert evt["id"] in [m["args"][0] for m in queued(client)]
    finally:
        broker.close()
        client.close()


def test_redis_dying_under_a_request_is_503_with_retry_after_and_nothing_written(
        durable, tmp_path, monkeypatch):
    client = redis.Redis.from_url(durable.url)
    broker = build_broker(durable.url)
    waiting = threading.Event()
    store_event = async_events.AsyncEventStore.store_event

    async def announced(self: async_events.AsyncEventStore, *args: Any, **kwargs: Any
                        ) -> bool:
        waiting.set()
        return await store_event(self, *args, **kwargs)

    monkeypatch.setattr(async_events.AsyncEventStore, "store_event", announced)
    try:
        app = create_app(settings_for(durable.url, tmp_path), Store(client), broker)
        with TestClient(app) as http:
            assert http.get("/healthz").status_code == 200
            evt = client_event("c1")
            assert durable.process is not None
            durable.process.send_signal(signal.SIGSTOP)
            answers: list[Any] = []
            request = threading.Thread(target=lambda: answers.append(post(http, evt)))
            request.start()
            assert waiting.wait(timeout=10), "the POST never reached its Redis call"
            durable.kill()  # paused: whatever was sent is never read
            request.join(timeout=60)
            [answer] = answers
            assert answer.status_code == 503
            assert answer.headers["retry-after"] == "5"
            assert answer.json()["error"] == UNAVAILABLE
            durable.start()
            assert client.dbsize() == 0, "nothing of the refused event was written"
            assert post(http, evt).status_code == 202  # sent again, as the 503 asks
            assert [m["args"] for m in queued(client)] == [[evt["id"]]]
    finally:
        broker.close()
        client.close()


def test_a_message_is_written_with_its_event_only_when_it_has_a_subject():
    message = broker_message(NAMESPACE, EVENTS_QUEUE, APPLY_EVENT, "evt-1")
    now = datetime.now(UTC)
    shards = ShardKeys()
    keys, args = store_event_call(shards, "evt-1", b"{}", now, "client:c1", now, message)
    assert keys[3:] == [QUEUE_KEY, MESSAGES_KEY]
    assert args[6:] == [message.redis_message_id, message.data]
    with pytest.raises(ValueError, match="only with its subject"):
        store_event_call(shards, "evt-1", b"{}", now, None, None, message)


def test_no_middleware_of_the_broker_hooks_enqueue(redis_url):
    """The web writes `apply_event` messages itself, so a middleware's enqueue hooks would
    not run for them: none of ours has any."""
    broker = build_broker(redis_url)
    try:
        hooked = [type(m).__name__ for m in broker.middleware
                  for hook in ("before_enqueue", "after_enqueue")
                  if getattr(type(m), hook) is not getattr(Middleware, hook)]
    finally:
        broker.close()
    assert hooked == []


def test_one_log_line_per_event_and_no_access_log_unless_debugging(web, caplog):
    evt = client_event("c1")
    with caplog.at_level(logging.INFO):
        assert post(web, evt).status_code == 202
        assert post(web, evt).status_code == 200
        assert post(web, {**client_event("c2"), "type": "nope"}).status_code == 422
    assert [r.getMessage() for r in caplog.records if r.name.startswith("notifier")] == [
        f"event {evt['id']} accepted (client.upserted)", f"event {evt['id']} duplicate",
        "event refused: 422 invalid type"]
    assert not server_config(web.app, "info").access_log
    assert server_config(web.app, "debug").access_log


def test_the_broker_must_share_the_stores_redis_to_the_database():
    one = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    assert async_events.same_server(one, redis.Redis.from_url("redis://127.0.0.1:6379/0"))
    assert not async_events.same_server(one, redis.Redis.from_url("redis://127.0.0.1:6379/1"))
    assert not async_events.same_server(one, redis.Redis.from_url("redis://127.0.0.1:6380/0"))
    assert not async_events.same_server(one, RedisBroker(url="unix:///tmp/r.sock").client)
