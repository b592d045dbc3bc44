"""The web's event loop is never held by Redis: with Redis paused (SIGSTOP of a dedicated
redis-server), a `POST /v1/events` waits for it, and a route that does not need Redis still
answers meanwhile. Before, `/openapi.json` waited as long as Redis did.

A real uvicorn server and real sockets: the starlette test client would run the stalled
request and the other one on its own loop, not the server's. The assertions are about
order, not time: the OpenAPI answer arrives while the stalled POST is still pending.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import signal
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import uvicorn

from notifier.cli.send_event import sign_event
from notifier.config import Settings
from notifier.ledger import async_events
from notifier.ledger.embedded_redis import free_port
from notifier.ledger.shards import ShardKeys
from notifier.ledger.store import Store
from notifier.web.app import create_app
from notifier.worker.actors import build_broker
from tests.conftest import OwnRedis
from tests.service import wait_for

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    """A redis-server of this test's own, which it may pause."""
    server = OwnRedis(tmp_path, "--appendonly", "no").start()
    yield server
    server.stop()


@pytest.fixture
def server(own_redis: OwnRedis) -> Iterator[str]:
    """The app on a real port, on the dedicated Redis: its base URL."""
    url = own_redis.url
    settings = Settings.from_env({"NOTIFIER_WEBHOOK_SECRET": SECRET,
                                  "NOTIFIER_API_TOKEN": secrets.token_urlsafe(32)},
                                 dotenv=Path("/nonexistent"))
    client = redis.Redis.from_url(url)
    broker = build_broker(url)
    port = free_port()
    web = uvicorn.Server(uvicorn.Config(create_app(settings, Store(client), broker),
                                        host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=web.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: web.started, 10, "the web server")
        yield f"http://127.0.0.1:{port}"
    finally:
        web.should_exit = True
        thread.join(timeout=10)
        broker.close()
        client.close()


def signed_event(event_id: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"id": event_id, "type": "appointment.completed",
                       "occurred_at": "2026-03-04T12:00:00Z",
                       "data": {"appointment_id": "a1"}}).encode()
    return body, sign_event(SECRET, body, event_id, datetime.now(UTC))


def test_a_paused_redis_does_not_hold_up_a_route_that_does_not_need_it(
        server: str, own_redis: OwnRedis,
        monkeypatch: pytest.MonkeyPatch) -> None:
    redis_process = own_redis.process
    assert redis_process is not None
    # Told when the POST is about to wait for Redis: the order of events, not a sleep.
    waiting_for_redis = threading.Event()
    store_event = async_events.AsyncEventStore.store_event

    async def announced(self: async_events.AsyncEventStore, *args: Any, **kwargs: Any
                        ) -> bool:
        waiting_for_redis.set()
        return await store_event(self, *args, **kwargs)

    monkeypatch.setattr(async_events.AsyncEventStore, "store_event", announced)
    with httpx.Client(base_url=server, timeout=30) as http:
        assert http.get("/healthz").status_code == 200  # Redis answers before the pause
        body, headers = signed_event("evt-stalled")
        answers: list[httpx.Response] = []
        redis_process.send_signal(signal.SIGSTOP)
        try:
            post = threading.Thread(target=lambda: answers.append(
                http.post("/v1/events", content=body, headers=headers)))
            post.start()
            assert waiting_for_redis.wait(timeout=10), "the POST never reached its Redis call"

            document = http.get("/openapi.json")

            assert document.status_code == 200
            assert "/v1/events" in document.json()["paths"]
            assert post.is_alive() and answers == [], "the POST finished with Redis paused"
        finally:
            redis_process.send_signal(signal.SIGCONT)
        post.join(timeout=30)
    [answer] = answers
    assert answer.status_code == 202, "once Redis is back, the stalled event is accepted"
    assert answer.json() == {"id": "evt-stalled", "status": "accepted"}


def test_the_web_stores_an_event_as_the_worker_side_store_does(redis_client: redis.Redis
                                                                 ) -> None:
    """`AsyncEventStore` (the web) and `Store` (everything else) run the same script with
    the same keys and arguments: what one stores, the other's readers find alike."""
    now = datetime(2030, 3, 4, 12, 0, tzinfo=UTC)
    occurred = datetime(2030, 3, 4, 11, 0, tzinfo=UTC)
    assert Store(redis_client).store_event("evt-sync", b"{}", now, subject="appointment:a1",
                                           occurred_at=occurred)

    async def store_async() -> tuple[bool, bool]:
        events = async_events.AsyncEventStore(async_events.async_twin(redis_client),
                                              ShardKeys())
        try:
            first = await events.store_event("evt-async", b"{}", now,
                                             subject="appointment:a1", occurred_at=occurred)
            again = await events.store_event("evt-async", b"{}", now,
                                             subject="appointment:a1", occurred_at=occurred)
            return first, again
        finally:
            await events.close()

    assert asyncio.run(store_async()) == (True, False)
    store = Store(redis_client)
    sync_fields, async_fields = store.event_status("evt-sync"), store.event_status("evt-async")
    assert sync_fields.keys() == async_fields.keys()
    assert {k: v for k, v in async_fields.items() if k != "member"} == {
        k: v for k, v in sync_fields.items() if k != "member"}
    later = datetime(2030, 3, 5, tzinfo=UTC)
    assert sorted(store.unapplied_events(later, later)) == ["evt-async", "evt-sync"]
