"""The whole service in one test process: web on a real port, a real dramatiq worker, the
clock, all on the session's real Redis (the queue too, unless `env` names another
broker in NOTIFIER_BROKER_URL). Tests talk to it over HTTP, like an integrator."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import dramatiq
import httpx
import redis
import uvicorn
from redis.cluster import RedisCluster

from notifier.cli.common import server_config
from notifier.cli.send_event import sign_event
from notifier.config import Settings
from notifier.delivery.channels.outbox import Outbox
from notifier.ledger.embedded_redis import free_port
from notifier.ledger.shard_marks import open_shards
from notifier.runtime import Runtime
from notifier.web.app import create_app
from notifier.webhooks.dispatcher import Dispatcher
from notifier.worker.actors import DELIVER_QUEUE, EVENTS_QUEUE, build_broker, declare_actors
from notifier.worker.clock import Clock

T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout_s: float = 20.0, what: str = "condition") -> T:
    """Poll `check` until it returns something truthy; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.02)


def service_env(redis_url: str, tmp_path: Path, lease_s: int = 3) -> dict[str, str]:
    return {
        "NOTIFIER_LEASE_S": str(lease_s),
        "NOTIFIER_REDIS_URL": redis_url,
        "NOTIFIER_WEBHOOK_SECRET": "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
        "NOTIFIER_API_TOKEN": secrets.token_urlsafe(32),
        "NOTIFIER_OUTBOX_DIR": str(tmp_path / "outbox"),
        "NOTIFIER_VAR_DIR": str(tmp_path / "var"),
    }


class Service:
    def __init__(self, redis_url: str, tmp_path: Path, *, lease_s: int = 3,
                 with_worker: bool = True, with_jobs: bool = False,
                 with_webhooks: bool = True, env: dict[str, str] | None = None) -> None:
        """`with_webhooks=False`: no delivery-webhook senders in this process (the clock
        still fans the outbox out), for tests whose worker process sends them."""
        self.env = {**service_env(redis_url, tmp_path, lease_s), **(env or {})}
        self.settings = Settings.from_env(self.env, dotenv=Path("/nonexistent"))
        self.runtime = Runtime.build(self.settings, redis_url)
        self.redis: redis.Redis = self.runtime.redis
        open_shards(self.redis, self.settings.ledger_shards)  # as start-up does
        self.outbox = Outbox(self.settings.outbox_dir)
        self.stop = threading.Event()
        self.worker: dramatiq.Worker | None = None
        if with_worker:
            self.start_worker()
        self.clock = Clock(self.runtime.store, build_broker(self.runtime.broker_url),
                           lease_s=self.settings.lease_s, poll_s=0.05, event_grace_s=2.0,
                           events_every_s=0.5,
                           jobs=self.runtime.jobs if with_jobs else [],
                           webhooks=self.runtime.webhooks)
        self.clock_thread = threading.Thread(target=self.clock.run, args=(self.stop,),
                                             daemon=True)
        self.clock_thread.start()
        #: the delivery-webhook senders' clock is real time plus this (tests move it past
        #: retry delays); they send to the endpoints of `env`, if any
        self.webhook_offset = timedelta(0)
        self.dispatcher = Dispatcher(self.runtime.webhooks, idle_s=0.02,
                                     now=lambda: datetime.now(UTC) + self.webhook_offset)
        self.webhooks_thread = threading.Thread(target=self.dispatcher.serve,
                                                args=(self.stop,), daemon=True)
        if with_webhooks:
            self.webhooks_thread.start()
        self.port = free_port()
        self.web_broker = build_broker(self.runtime.broker_url)
        app = create_app(self.settings, self.runtime.store, self.web_broker)
        # The production server's config: read deadline, connection cap, httptools.
        self.server = uvicorn.Server(server_config(app, "warning", self.settings,
                                                   host="127.0.0.1", port=self.port))
        self.web_thread = threading.Thread(target=self.server.run, daemon=True)
        self.web_thread.start()
        wait_for(lambda: self.server.started, 10, "the web server")
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    def start_worker(self) -> None:
        broker = build_broker(self.runtime.broker_url)
        declare_actors(broker, self.runtime)
        self.worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=50)
        self.worker.start()

    def post(self, event: dict[str, Any]) -> httpx.Response:
        body = json.dumps(event).encode()
        headers = sign_event(self.env["NOTIFIER_WEBHOOK_SECRET"], body, event["id"],
                             datetime.now(UTC))
        return self.http.post("/v1/events", content=body, headers=headers)

    def notifications(self, client_id: str) -> dict[str, dict[str, Any]]:
        answer = self.http.get(f"/v1/clients/{client_id}/notifications", headers={
            "Authorization": f"Bearer {self.env['NOTIFIER_API_TOKEN']}"})
        answer.raise_for_status()
        return {n["id"]: n for n in answer.json()["notifications"]}

    def sent(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [m for m in self.outbox.messages() if kind is None or m["kind"] == kind]

    def sent_exactly_once(self, expected: set[str], timeout_s: float = 60.0) -> Counter[str]:
        """Wait until every expected notification is in the outbox and the service is idle;
        fail if any is missing, unexpected or there twice. Returns the count per key."""
        wait_for(lambda: {m["dedupe_key"] for m in self.sent()} >= expected,
                 timeout_s=timeout_s, what=f"all {len(expected)} notifications to be sent")
        wait_for(self.quiet, what="the service to go idle")
        counts = Counter(str(m["dedupe_key"]) for m in self.sent())
        assert set(counts) == expected, set(counts) ^ expected
        assert max(counts.values()) == 1, [k for k, c in counts.items() if c > 1]
        return counts

    def quiet(self) -> bool:
        """Nothing in flight, nothing due, no event waiting: our own sets say the service
        has nothing left to do (a dead worker's unacked queue messages may still come back
        later, and change nothing).

        The three sets are read in one MULTI: read one by one, an event applied between
        the reads (its notifications added to the schedule, itself taken off the pending
        set in one transaction) was seen neither pending nor planned. "Due" looks a second
        ahead, since a plan's due time is the worker's clock when it planned, which may be
        a moment after ours here."""
        soon = datetime.now(UTC).timestamp() + 1.0
        keys = self.runtime.store.keys
        # On a cluster a MULTI holds one slot: one per shard there, which is enough, since
        # an event and what it plans are in one shard (the subject's).
        groups = ([list(keys.all())] if not isinstance(self.redis, RedisCluster)
                  else [[shard] for shard in keys.all()])
        for shards in groups:
            with self.redis.pipeline(transaction=True) as pipe:
                for shard in shards:
                    pipe.zcard(keys.inflight(shard))
                    pipe.zcount(keys.schedule(shard), "-inf", soon)
                    pipe.zcard(keys.events_pending(shard))
                if any(pipe.execute()):
                    return False
        return True

    def drained(self) -> bool:
        """Quiet, and every queue message taken and acknowledged (no worker has died)."""
        return self.quiet() and all(self.redis.hlen(f"notifier-dq:{q}.msgs") == 0
                                    for q in (EVENTS_QUEUE, DELIVER_QUEUE))

    def close(self) -> None:
        self.stop.set()
        self.server.should_exit = True
        self.web_thread.join(timeout=10)
        self.clock_thread.join(timeout=10)
        if self.webhooks_thread.is_alive():
            self.webhooks_thread.join(timeout=10)
        if self.worker is not None:
            self.worker.stop()
        self.clock.broker.close()
        self.web_broker.close()
        self.http.close()
