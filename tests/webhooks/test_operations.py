"""What operators do and see of delivery webhooks: `notifier webhooks test` and `replay`
run as a user runs them (a process of their own, a real receiver, a real Redis), `--since`
read both ways, and `/metrics`' per-endpoint figures after messages delivered, failed and
retrying (the outbox driven directly, with its `now` injected)."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from notifier.config import Settings
from notifier.errors import UsageError
from notifier.ledger.announcements import queue_announcement
from notifier.ledger.store import Store
from notifier.web.app import create_app
from notifier.web.ops import WebhookCollector
from notifier.webhooks.catalogue import EVENT_TYPES, TEST_EVENT_TYPE, Announcement, expand
from notifier.webhooks.endpoints import Endpoint
from notifier.webhooks.operations import parse_since
from notifier.webhooks.outbox import WebhookOutbox, message_key
from notifier.worker.actors import build_broker
from tests.kit import CountingConnection
from tests.ledger_keys import KEYS
from tests.webhooks.receiver import Answer, WebhookReceiver

NOW = datetime(2026, 11, 30, 18, 0, tzinfo=UTC)


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def endpoints_env(receiver: WebhookReceiver, *names: str,
                  script: tuple[Answer, ...] = (Answer(200),)) -> dict[str, str]:
    """NOTIFIER_WEBHOOK_ENDPOINTS for endpoints `names`, each subscribed to every event at
    `/{name}` on `receiver`, and their new secrets, registered with the receiver."""
    env: dict[str, str] = {}
    for name in names:
        env[f"NOTIFIER_WEBHOOK_SECRET_{name.upper()}"] = secret = new_secret()
        receiver.endpoint(f"/{name}", secrets=[secret], script=list(script))
    env["NOTIFIER_WEBHOOK_ENDPOINTS"] = json.dumps(
        [{"name": name, "url": receiver.url(f"/{name}"), "events": ["*"]} for name in names])
    return env


def settings_of(env: dict[str, str]) -> Settings:
    return Settings.from_env(env, dotenv=Path("/nonexistent"))


def announce(client: redis.Redis, count: int) -> None:
    """`count` opt-outs in the webhook outbox, as the ledger's transactions queue them."""
    with client.pipeline() as pipe:
        for n in range(count):
            queue_announcement(pipe, KEYS, Announcement("client.opted_out", f"client:c{n}",
                                                  {"client_id": f"c{n}"}))
        pipe.execute()


def made(outbox: WebhookOutbox, count: int, at: datetime) -> None:
    """`count` messages to every endpoint, made (fanned out) at `at`."""
    announce(outbox.redis, count)
    assert outbox.fan_out(at) == count


def state(outbox: WebhookOutbox, endpoint: Endpoint, message_id: str) -> str:
    return outbox.redis.hget(message_key(endpoint.name, message_id), "state").decode()


# `webhook.test` is no event ------------------------------------------------------------------

def test_webhook_test_cannot_be_subscribed_to():
    assert TEST_EVENT_TYPE not in EVENT_TYPES
    assert TEST_EVENT_TYPE not in expand(["*"])
    for pattern in (TEST_EVENT_TYPE, "webhook.*"):
        with pytest.raises(ValueError, match="unknown event type"):
            expand([pattern])


# --since --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    ("90s", NOW - timedelta(seconds=90)),
    ("45m", NOW - timedelta(minutes=45)),
    ("2h", NOW - timedelta(hours=2)),
    ("3d", NOW - timedelta(days=3)),
    ("0h", NOW),
    ("2026-11-30T15:00:00Z", datetime(2026, 11, 30, 15, 0, tzinfo=UTC)),
    ("2026-11-30t15:00:00.5z", datetime(2026, 11, 30, 15, 0, 0, 500000, tzinfo=UTC)),
    ("2026-11-30T10:00:00-05:00", datetime(2026, 11, 30, 15, 0, tzinfo=UTC)),
])
def test_since_is_an_rfc3339_instant_or_a_duration_before_now(value, expected):
    assert parse_since(value, NOW) == expected
    assert parse_since(value, NOW).tzinfo == UTC


@pytest.mark.parametrize("value", [
    "", "2", "2 h", "-2h", "2w", "1.5h", "2H", "h",
    "2026-11-30", "2026-11-30T15:00:00",  # no offset: whose local time?
    "2026-02-30T15:00:00Z",  # the shape of one, not a real instant
    "yesterday",
])
def test_a_since_of_neither_form_names_both(value):
    with pytest.raises(UsageError) as raised:
        parse_since(value, NOW)
    assert str(raised.value) == (
        f"webhooks replay: --since {value!r}: expected an RFC 3339 instant with its offset "
        "(2026-11-30T15:00:00Z) or a duration before now (90s, 45m, 2h, 3d)")


def test_a_since_too_far_back_or_in_the_future_is_a_one_line_usage_error():
    """`--since 999999d` overflowed into "unexpected error" (found by QA); an instant after
    now would replay nothing, silently."""
    with pytest.raises(UsageError, match="expected an RFC 3339 instant"):
        parse_since("999999d", NOW)
    with pytest.raises(UsageError, match="is in the future"):
        parse_since("2026-12-01T00:00:00Z", NOW)
    assert parse_since("0s", NOW) == NOW


# notifier webhooks test -----------------------------------------------------------------------

@pytest.mark.slow
def test_test_sends_one_verified_webhook_test_message_and_exits_0(tmp_path, receiver):
    from tests.test_cli import notifier

    env = endpoints_env(receiver, "ehr", "crm")
    result = notifier("webhooks", "test", "ehr", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    (request,) = receiver.received()
    assert request.path == "/ehr" and request.verified
    assert request.headers["webhook-id"].startswith("msg_test_")
    assert request.payload["type"] == "webhook.test"
    assert request.payload["data"] == {"endpoint": "ehr"}
    assert datetime.fromisoformat(request.payload["timestamp"]).tzinfo is not None
    line = result.stdout.strip()
    assert line.startswith("ehr: HTTP 200 in ")
    assert line.endswith(f" ms: counts as delivered ({request.headers['webhook-id']})")
    # A second test is another message: a receiver deduping on webhook-id takes both.
    assert notifier("webhooks", "test", "ehr", cwd=tmp_path, env=env).returncode == 0
    ids = {r.headers["webhook-id"] for r in receiver.received("/ehr")}
    assert len(ids) == 2


@pytest.mark.slow
@pytest.mark.parametrize(("answer", "counts"), [
    (Answer(500), "HTTP 500 in {} ms: would count as retry"),
    (Answer(410), "HTTP 410 in {} ms: would count as failed"),
])
def test_test_exits_1_and_says_how_an_answer_would_count(tmp_path, receiver, answer,
                                                         counts):
    from tests.test_cli import notifier

    env = endpoints_env(receiver, "ehr", script=(answer,))
    result = notifier("webhooks", "test", "ehr", cwd=tmp_path, env=env)
    assert result.returncode == 1
    (request,) = receiver.received("/ehr")
    assert request.verified
    prefix, _, suffix = counts.partition("{}")
    line = result.stdout.strip()
    assert line.startswith(f"ehr: {prefix}") and suffix in line, line


@pytest.mark.slow
def test_test_of_an_endpoint_that_does_not_answer_exits_1(tmp_path, receiver):
    from tests.test_cli import notifier

    env = endpoints_env(receiver, "ehr")
    env["NOTIFIER_WEBHOOK_ENDPOINTS"] = env["NOTIFIER_WEBHOOK_ENDPOINTS"].replace(
        receiver.base_url, "http://127.0.0.1:1")
    result = notifier("webhooks", "test", "ehr", cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert result.stdout.startswith("ehr: no answer: ConnectError in "), result.stdout
    assert "would count as retry" in result.stdout


@pytest.mark.slow
def test_test_of_an_unknown_endpoint_is_one_line(tmp_path, receiver):
    from tests.test_cli import notifier, one_line

    env = endpoints_env(receiver, "ehr", "crm")
    result = notifier("webhooks", "test", "billing", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert one_line(result) == ("notifier: webhooks test: no endpoint named 'billing' "
                                "(known: crm, ehr; `notifier webhooks list` shows them)")
    assert receiver.received() == []


# notifier webhooks replay ---------------------------------------------------------------------

@pytest.mark.slow
def test_replay_requeues_only_failed_messages_made_since_and_enables_again(
        tmp_path, receiver, redis_client, redis_url):
    from tests.test_cli import notifier

    env = {**endpoints_env(receiver, "ehr", "crm"), "NOTIFIER_REDIS_URL": redis_url}
    outbox = WebhookOutbox(redis_client, settings_of(env).webhook_endpoints, KEYS)
    crm, ehr = outbox.endpoints
    now = datetime.now(UTC)  # the command reads the real clock for --since 2h
    made(outbox, 1, now - timedelta(hours=3))  # older than --since
    made(outbox, 4, now - timedelta(hours=1))
    at = now - timedelta(minutes=50)
    old, failed, delivered, retrying = outbox.claim(ehr, at, 60, limit=4)
    for message, outcome in ((old, "failed"), (failed, "failed"), (delivered, "delivered"),
                             (retrying, "retry")):
        outbox.finish(ehr, message.id, outcome, at, next_at=now + timedelta(hours=1))
    # The last one fails too, and ehr with it (failing for 0 s: disabled at once).
    (given_up,) = outbox.claim(ehr, at, 60, limit=4)
    assert outbox.finish(ehr, given_up.id, "failed", at, disable_after_s=0) == 2
    assert outbox.claim(ehr, now, 60) == [], "a disabled endpoint sends nothing"

    bad = notifier("webhooks", "replay", "--since", "yesterday", cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "expected an RFC 3339 instant" in bad.stderr
    unknown = notifier("webhooks", "replay", "--since", "2h", "--endpoint", "billing",
                       cwd=tmp_path, env=env)
    assert unknown.returncode == 2 and "no endpoint named 'billing'" in unknown.stderr

    result = notifier("webhooks", "replay", "--since", "2h", "--endpoint", "ehr",
                      cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("ehr: 2 failed messages made since ")
    assert "requeued; enabled again (disabled since " in lines[0]
    assert lines[1:] == ["a running worker sends them"]
    assert state(outbox, ehr, old.id) == "failed", "made before --since"
    assert state(outbox, ehr, delivered.id) == "delivered"
    assert state(outbox, ehr, retrying.id) == "pending"
    # Due when the command ran: by now.
    again = outbox.claim(ehr, datetime.now(UTC), 60, limit=4)
    assert sorted(m.id for m in again) == sorted([failed.id, given_up.id])
    assert all(m.attempts == 0 for m in again)
    status = outbox.statuses(now)[1]
    assert status.disabled_at is None and status.pending == 3
    # Each endpoint when none is named; crm had nothing failed.
    everyone = notifier("webhooks", "replay", "--since", "2026-01-01T00:00:00Z",
                        cwd=tmp_path, env=env)
    assert everyone.returncode == 0, everyone.stderr
    assert everyone.stdout.splitlines() == [
        "crm: 0 failed messages made since 2026-01-01 00:00:00 UTC requeued",
        "ehr: 1 failed message made since 2026-01-01 00:00:00 UTC requeued",
        "a running worker sends them"]


# /metrics -------------------------------------------------------------------------------------

@pytest.fixture
def metrics_env(receiver: WebhookReceiver) -> dict[str, str]:
    return {**endpoints_env(receiver, "ehr", "crm"),
            "NOTIFIER_WEBHOOK_SECRET": new_secret(), "NOTIFIER_API_TOKEN": "t" * 32}


@pytest.fixture
def client(metrics_env: dict[str, str], redis_client: redis.Redis,
           redis_url: str) -> Iterator[TestClient]:
    broker = build_broker(redis_url)
    app = create_app(settings_of(metrics_env), Store(redis_client), broker)
    with TestClient(app) as test_client:
        yield test_client
    broker.close()


def webhook_samples(client: TestClient) -> dict[tuple[str, ...], float]:
    """The webhook samples of a scrape: (name, endpoint[, outcome]) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    answer = client.get("/metrics")
    assert answer.status_code == 200
    return {(s.name, *s.labels.values()): s.value
            for family in text_string_to_metric_families(answer.text)
            if family.name.startswith("notifier_webhook_") for s in family.samples}


def test_metrics_show_each_endpoint_s_messages_retries_backlog_and_health(
        client, metrics_env, redis_client):
    outbox = WebhookOutbox(redis_client, settings_of(metrics_env).webhook_endpoints, KEYS)
    crm, ehr = outbox.endpoints
    zero = {("notifier_webhook_messages_total", e, o): 0.0 for e in ("crm", "ehr")
            for o in ("delivered", "failed")}
    zero |= {(f"notifier_webhook_{name}", e): 0.0 for e in ("crm", "ehr") for name in (
        "retries_total", "retrying", "pending", "oldest_pending_seconds", "endpoint_disabled")}
    assert webhook_samples(client) == zero, "every series from the start, at 0"

    now = datetime.now(UTC)  # /metrics reads the real clock: ages and what is retrying
    made_at = now - timedelta(hours=2)
    made(outbox, 4, made_at)
    delivered, also_delivered, failed, retrying = outbox.claim(ehr, made_at, 60, limit=4)
    for message in (delivered, also_delivered):
        outbox.finish(ehr, message.id, "delivered", made_at)
    outbox.finish(ehr, failed.id, "failed", made_at, status=410)
    outbox.finish(ehr, retrying.id, "retry", made_at, next_at=now + timedelta(hours=1))
    # crm: its first attempt fails and disables it (0 s: at once); 3 still wait, due.
    (first,) = outbox.claim(crm, made_at, 60)
    assert outbox.finish(crm, first.id, "retry", made_at, next_at=now + timedelta(hours=1),
                         disable_after_s=0) == 2

    samples = webhook_samples(client)
    ages = {e: samples.pop(("notifier_webhook_oldest_pending_seconds", e))
            for e in ("crm", "ehr")}
    assert samples == {
        ("notifier_webhook_messages_total", "ehr", "delivered"): 2.0,
        ("notifier_webhook_messages_total", "ehr", "failed"): 1.0,
        ("notifier_webhook_messages_total", "crm", "delivered"): 0.0,
        ("notifier_webhook_messages_total", "crm", "failed"): 0.0,
        ("notifier_webhook_retries_total", "ehr"): 1.0,
        ("notifier_webhook_retries_total", "crm"): 1.0,
        ("notifier_webhook_retrying", "ehr"): 1.0,
        ("notifier_webhook_retrying", "crm"): 1.0,
        ("notifier_webhook_pending", "ehr"): 1.0,
        ("notifier_webhook_pending", "crm"): 4.0,
        ("notifier_webhook_endpoint_disabled", "ehr"): 0.0,
        ("notifier_webhook_endpoint_disabled", "crm"): 1.0,
    }
    # Made two hours before `now`, scraped after it: at least that old.
    assert all(age >= 7200 for age in ages.values()), ages
    assert all(age < 7200 + 3600 for age in ages.values()), ages

    # Once everything ended, nothing is pending, and the oldest pending is 0.
    outbox.finish(ehr, retrying.id, "delivered", now)
    samples = webhook_samples(client)
    assert samples[("notifier_webhook_pending", "ehr")] == 0.0
    assert samples[("notifier_webhook_oldest_pending_seconds", "ehr")] == 0.0
    assert samples[("notifier_webhook_messages_total", "ehr", "delivered")] == 3.0


def test_the_webhook_figures_cost_one_round_trip_whatever_the_endpoints(
        redis_url, redis_client, metrics_env):
    counted = redis.Redis(connection_pool=redis.ConnectionPool.from_url(
        redis_url, connection_class=CountingConnection))
    try:
        endpoints = settings_of(metrics_env).webhook_endpoints
        counted.ping()  # the connection's own handshake is no round trip of the figures'
        for configured in (endpoints[:1], endpoints, endpoints * 10):
            collector = WebhookCollector(WebhookOutbox(counted, configured, KEYS))
            before = CountingConnection.sent
            families = list(collector.collect())
            assert CountingConnection.sent - before == 1
            assert len(families) == 6
    finally:
        counted.close()


# README -----------------------------------------------------------------------------------------

def test_the_readme_s_example_verifies_a_message_and_refuses_a_tampered_one():
    """README, "Delivery webhooks": the Python example, run as written."""
    from notifier.config import PROJECT_ROOT
    from notifier.webhooks.dispatcher import signed_headers

    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme.split("## Delivery webhooks\n", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    verified = namespace["verified"]
    secret = new_secret()
    env = {"NOTIFIER_WEBHOOK_SECRET_EHR": secret, "NOTIFIER_WEBHOOK_ENDPOINTS": json.dumps(
        [{"name": "ehr", "url": "https://ehr.example/hooks", "events": ["*"]}])}
    (ehr,) = settings_of(env).webhook_endpoints
    body = '{"type":"client.opted_out","timestamp":"2026-11-30T15:00:00Z","data":{}}'
    headers = signed_headers(ehr, "msg_1_2", body, datetime.now(UTC))
    assert verified(secret, body.encode(), headers)["type"] == "client.opted_out"
    assert verified(secret, body.replace("out", "in").encode(), headers) is None
    assert verified(new_secret(), body.encode(), headers) is None
