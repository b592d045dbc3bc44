"""What operators read: `/healthz`, `/metrics` (figures read from Redis at scrape time)
and the OpenAPI document. None of them needs a token."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from pydantic import BaseModel
from redis.cluster import RedisCluster
from starlette.routing import BaseRoute

from notifier.errors import StoreError
from notifier.ledger.cluster.health import cluster_health
from notifier.ledger.durability import Fsync, fsync_policy
from notifier.ledger.events import SET_ASIDE_STATUSES
from notifier.ledger.notifications import FINAL_STATES, SENT_AGAIN
from notifier.ledger.shard_marks import lost_shards
from notifier.ledger.shards import ShardKeys
from notifier.ledger.store import Store
from notifier.policy.figures import CHANNELS
from notifier.timeutil import utcnow
from notifier.web.answers import RETRY_AFTER_S
from notifier.web.failures import document_failures
from notifier.webhooks.outbox import WebhookOutbox
from notifier.worker.reports import LookupOutcome


class HealthAnswer(BaseModel):
    #: "degraded" with some masters of a Redis Cluster down, or shards lost
    status: Literal["ok", "degraded", "unhealthy"]
    #: "ok" or "unreachable"; on a cluster, "degraded" when some masters are down
    redis: Literal["ok", "degraded", "unreachable"]
    #: Redis's fsync policy (`ledger.durability`): always, everysec, no, off, unknown
    redis_fsync: Fsync | None = None
    #: On a Redis Cluster only: its masters, and how many are down (not answering, or
    #: not holding the cluster as working: `ledger.cluster.health`)
    redis_masters: int | None = None
    redis_masters_down: int | None = None
    #: Shards whose data is gone (`ledger.shard_marks`: a master restarted without its
    #: append-only file); > 0 makes the status "degraded" until `notifier shards mark`.
    #: None (not counted) on a cluster with a master down.
    ledger_shards_lost: int | None = 0


class LedgerCollector(Collector):
    """Figures read from Redis at scrape time, so they cover every worker and clock."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        figures = self.store.figures()
        yield GaugeMetricFamily("notifier_scheduled", "Notifications waiting for their time",
                                value=figures.scheduled)
        yield GaugeMetricFamily("notifier_in_flight", "Notifications claimed, not finished",
                                value=figures.in_flight)
        yield GaugeMetricFamily("notifier_events_pending", "Events accepted, not yet applied",
                                value=figures.events_pending)
        yield GaugeMetricFamily("notifier_events_held",
                                "Closes waiting for their subject's opening event",
                                value=figures.events_held)
        yield GaugeMetricFamily(
            "notifier_ledger_shards_lost",
            "Ledger shards whose data is gone (a master restarted without its append-only "
            "file), until `notifier shards mark`",
            value=len(lost_shards(self.store.redis, self.store.keys)))
        set_aside = CounterMetricFamily(
            "notifier_events_set_aside",
            "Accepted events that will never be applied: rejected (no longer valid) or "
            "failed (planning kept failing), by status", labels=["status"])
        for status in SET_ASIDE_STATUSES:
            set_aside.add_metric([status], figures.events_set_aside.get(status, 0))
        yield set_aside
        outcomes = CounterMetricFamily(
            "notifier_notifications",
            "Notifications ended (sent, failed, expired, suppressed, cancelled; when sent or "
            "when planned), by state and channel", labels=["state", "channel"])
        # Every state on every channel from the start, so a rate() or an alert on `failed`
        # or `expired` has a series before the first one happens.
        counts: dict[tuple[str, str], int] = {
            (state, channel): 0 for state in FINAL_STATES for channel in CHANNELS}
        counts.update(figures.outcomes)
        again = dict.fromkeys(CHANNELS, 0) | {
            channel: counts.pop((state, channel)) for state, channel in list(counts)
            if state == SENT_AGAIN}
        for (state, channel), count in sorted(counts.items()):
            outcomes.add_metric([state, channel], count)
        yield outcomes
        sent_again = CounterMetricFamily(
            "notifier_sent_again",
            "Messages sent again after their worker lost its lease (stalled past it), by "
            "channel: with state=sent above, every message that left", labels=["channel"])
        for channel, count in sorted(again.items()):
            sent_again.add_metric([channel], count)
        yield sent_again
        lateness = HistogramMetricFamily(
            "notifier_send_lateness_seconds",
            "How long after its due time each notification was sent (sent_at - due_at), by "
            "kind and channel", labels=["kind", "channel"])
        for kind_and_channel, late in figures.lateness.items():
            lateness.add_metric(
                list(kind_and_channel),
                buckets=[(floatToGoString(bound), count) for bound, count in late.buckets]
                + [("+Inf", late.count)],
                sum_value=late.total_s)
        yield lateness
        yield from report_metrics(self.store)


def report_metrics(store: Store) -> Iterator[Metric]:
    """The delivery-report repair job's figures (`notifier.worker.reports`)."""
    figures = store.reports.figures(utcnow())
    yield GaugeMetricFamily("notifier_awaiting_report",
                            "Sends through Twilio or SendGrid with no final delivery report",
                            value=figures.awaiting)
    yield GaugeMetricFamily("notifier_awaiting_report_overdue",
                            "Of those, the ones past their wait: the repair job's backlog",
                            value=figures.overdue)
    lookups = CounterMetricFamily(
        "notifier_report_lookups",
        "Sends with no final delivery report after the wait, by how the repair job's "
        "look-up ended (delivered, failed, unknown, retry, gone) and channel",
        labels=["outcome", "channel"])
    # Every outcome on every channel from the start, as for the notifications above.
    counts: dict[tuple[str, str], int] = {
        (outcome.value, channel): 0 for outcome in LookupOutcome for channel in CHANNELS}
    counts.update(figures.lookups)
    for (outcome, channel), count in sorted(counts.items()):
        lookups.add_metric([outcome, channel], count)
    yield lookups


class WebhookCollector(Collector):
    """Each configured delivery-webhook endpoint's figures, read from Redis at scrape time
    in one round trip (`WebhookOutbox.statuses`): they cover every dispatcher."""

    def __init__(self, outbox: WebhookOutbox) -> None:
        self.outbox = outbox

    def collect(self) -> Iterator[Metric]:
        statuses = self.outbox.statuses(utcnow())
        messages = CounterMetricFamily(
            "notifier_webhook_messages",
            "Delivery-webhook messages ended, by endpoint and outcome: delivered (2xx), "
            "failed (given up: a 4xx, retries spent, or the endpoint disabled)",
            labels=["endpoint", "outcome"])
        retries = CounterMetricFamily(
            "notifier_webhook_retries", "Attempts answered 'later' (no answer, 429, 5xx) "
            "and scheduled again, by endpoint", labels=["endpoint"])
        gauges = {name: GaugeMetricFamily(f"notifier_webhook_{name}", text, labels=["endpoint"])
                  for name, text in (
                      ("retrying", "Messages waiting for a retry's time"),
                      ("pending", "Messages not yet delivered or failed"),
                      ("oldest_pending_seconds", "Age of the oldest pending message (0: none)"),
                      ("endpoint_disabled", "1 while the endpoint is disabled (failing for 5 "
                                            "days, no success): `notifier webhooks replay`"))}
        for status in statuses:
            labels = [status.name]
            messages.add_metric([status.name, "delivered"], status.delivered)
            messages.add_metric([status.name, "failed"], status.failed)
            retries.add_metric(labels, status.retried)
            gauges["retrying"].add_metric(labels, status.retrying)
            gauges["pending"].add_metric(labels, status.pending)
            gauges["oldest_pending_seconds"].add_metric(labels, status.oldest_pending_s)
            gauges["endpoint_disabled"].add_metric(labels, float(status.disabled_at is not None))
        yield messages
        yield retries
        yield from gauges.values()


def ops_routes(store: Store, registry: CollectorRegistry) -> APIRouter:
    router = APIRouter()

    @router.get("/healthz", response_model=HealthAnswer,
                responses={503: {"model": HealthAnswer, "description": "Redis unreachable "
                                                                   "(on a cluster: no master up)"}})
    def healthz() -> JSONResponse:
        if isinstance(store.redis, RedisCluster):
            return cluster_healthz(store.redis, store.keys)
        try:
            store.redis.ping()
        except StoreError:
            # Not Redis's own words: they name its internal address, and this route needs
            # no token. The web's log has them, from any route that needed Redis.
            return JSONResponse({"status": "unhealthy", "redis": "unreachable"},
                                status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})
        try:
            fsync = fsync_policy(store.redis)
            lost = len(lost_shards(store.redis, store.keys))
        except StoreError:
            # It went between the commands; the ping said it was up.
            fsync, lost = "unknown", 0
        return JSONResponse({"status": "degraded" if lost else "ok", "redis": "ok",
                             "redis_fsync": fsync, "ledger_shards_lost": lost})

    @router.get("/metrics", response_class=Response, responses={200: {
        "description": "Prometheus text exposition format",
        "content": {"text/plain": {"schema": {"type": "string"}}}}})
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router


def cluster_healthz(cluster: RedisCluster, keys: ShardKeys) -> JSONResponse:
    """`/healthz` on a Redis Cluster ledger: 503 when no master is up; 200 `degraded`
    when some are. A load balancer that took the web out for one master down would turn
    a partial outage into a whole one: the events of the shards still up are stored, the
    others' answered 503 (and posted again by their sender). Counts, never addresses
    (this route needs no token)."""
    health = cluster_health(cluster)
    answer: dict[str, Any] = {"redis": health.state, "redis_masters": health.masters,
                              "redis_masters_down": health.down}
    if health.state == "unreachable":
        return JSONResponse({"status": "unhealthy", **answer}, status_code=503,
                            headers={"Retry-After": str(RETRY_AFTER_S)})
    if health.state != "ok":
        # Each would wait out a hung master's timeouts again (measured: 8 s with one
        # hung), and the answer is `degraded` already.
        return JSONResponse({"status": "degraded", **answer, "redis_fsync": "unknown",
                             "ledger_shards_lost": None})
    try:
        fsync = fsync_policy(cluster)  # type: ignore[arg-type]  # a LedgerCluster
        lost = len(lost_shards(cluster, keys))
    except StoreError:  # a master went down since it was asked
        fsync, lost = "unknown", None
    return JSONResponse({"status": "degraded" if lost or lost is None else "ok", **answer,
                         "redis_fsync": fsync, "ledger_shards_lost": lost})


def openapi_document(app: FastAPI, amend: Callable[[dict[str, Any]], None],
                     documented: Sequence[BaseRoute] = ()) -> dict[str, Any]:
    """The app's OpenAPI document, built once: its FastAPI routes, then those `documented`
    for routes it serves as plain Starlette ones, then what routes read by hand, added by
    `amend` (FastAPI cannot see it), then what any route may answer when Redis fails or a
    request is too slow or too large (`web.failures.document_failures`)."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version,
                         routes=[*app.routes, *documented], description=app.description)
    amend(schema)
    document_failures(schema)
    app.openapi_schema = schema
    return schema
