"""Everything a process builds once at start-up from its settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from notifier.config import PROVIDER_CALL_S, Settings
from notifier.delivery.channels import Channel
from notifier.delivery.channels.outbox import Outbox
from notifier.delivery.compose import STAFF_KINDS
from notifier.delivery.deliverer import Deliverer
from notifier.delivery.render import Renderer
from notifier.delivery.sms_budget import check_configuration
from notifier.errors import ConfigError, StoreUnavailable
from notifier.ledger.client import LedgerRedis, ledger_client, store_errors
from notifier.ledger.connect import connect_cluster
from notifier.ledger.embedded_redis import EmbeddedRedis
from notifier.ledger.ratelimit import RateLimiter
from notifier.ledger.redis_urls import is_cluster_url
from notifier.ledger.store import Store
from notifier.policy.figures import Policy, load_policy
from notifier.webhooks.outbox import WebhookOutbox
from notifier.worker.cron import Job, load_jobs


def resolve_redis_url(settings: Settings) -> tuple[str, EmbeddedRedis | None]:
    """The configured Redis, or the embedded one under `var/` (started if need be)."""
    if settings.redis_url:
        return settings.redis_url, None
    embedded = EmbeddedRedis(settings.var_dir)
    return embedded.ensure(), embedded


#: A Redis Cluster ledger's client settings (`connect_ledger`). redis-py's defaults would
#: hold a command for a dead or hung master about a minute (measured 55 s: 5 s per read,
#: ten retries), while a request, a claim or the clock's tick waits. A master that is
#: killed refuses at once on its port, one that hangs (a stopped process, a partition)
#: never answers; either way the cluster gives its slots to a replica only after its
#: `cluster-node-timeout` (15 s by default), which retrying here cannot outlast. So a
#: command fails fast with `StoreUnavailable` and the caller's own retry (dramatiq's,
#: the clock's next tick, the web's 503 and the poster's retry) tries again:
#: - connecting: 1 s (a node on the same network connects in milliseconds);
#: - each read: 2 s (the ledger runs no blocking command, and its longest scripts take
#:   milliseconds; a read waiting 2 s is a node that does not answer);
#: - one retry, after 50-500 ms, on a connection error or timeout: a failover that has
#:   just happened is followed (redis-py reads the slot map again before it), a dead
#:   master is reported after about 0.5 s (refused) or 2 x 2 s (hung).
CLUSTER_CONNECT_TIMEOUT_S = 1.0
CLUSTER_SOCKET_TIMEOUT_S = 2.0
CLUSTER_RETRIES = 1


def connect_ledger(url: str) -> redis.Redis:
    """The ledger's client for NOTIFIER_REDIS_URL (or the embedded Redis's `url`): a
    `LedgerRedis` for one server, a `LedgerCluster` for a cluster URL (which reads the
    slot map now). Raises `ConfigError` for a malformed cluster URL and `StoreUnavailable`
    when no startup node of a cluster answers.

    Typed as `redis.Redis`, which the ledger's modules take: a `LedgerCluster` is not
    one, but answers the same commands and pipelines (`notifier.ledger.cluster.client`)."""
    if not is_cluster_url(url):
        return LedgerRedis.from_url(url, health_check_interval=30)
    try:
        with store_errors():
            cluster = connect_cluster(
                url, socket_connect_timeout=CLUSTER_CONNECT_TIMEOUT_S,
                socket_timeout=CLUSTER_SOCKET_TIMEOUT_S, health_check_interval=30,
                retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5),
                            CLUSTER_RETRIES))
    except RedisClusterException as exc:  # no startup node answered with a slot map
        raise StoreUnavailable(f"the Redis Cluster: {exc}") from exc
    return cast(redis.Redis, ledger_client(cluster))


def build_channels(settings: Settings) -> dict[str, Channel]:
    """One channel per medium, chosen from settings once per process. The outbox (and its
    file) is made only when a medium uses it: with both providers there is none."""
    if "outbox" in (settings.sms_backend, settings.email_backend):
        outbox = Outbox(settings.outbox_dir)
    sms: Channel
    email: Channel
    if settings.sms_backend == "twilio":
        from notifier.delivery.channels.twilio_sms import TwilioSMS

        sms = TwilioSMS(settings)
    else:
        sms = outbox
    if settings.email_backend == "sendgrid":
        from notifier.delivery.channels.sendgrid_email import SendGridEmail

        email = SendGridEmail(settings)
    else:
        email = outbox
    return {"sms": sms, "email": email}


def call_limits_s(settings: Settings) -> dict[str, float]:
    """The longest one send takes on each channel that calls a provider, seconds: the
    deliverer sends only while a lease has that much time left (and a margin)."""
    return {medium: PROVIDER_CALL_S for medium, backend in (
        ("sms", settings.sms_backend), ("email", settings.email_backend))
        if backend != "outbox"}


def build_limiters(settings: Settings, client: redis.Redis) -> dict[str, RateLimiter]:
    """Send rates per sender, for the real providers only (the outbox has no carrier)."""
    limiters = {}
    if settings.sms_backend == "twilio":
        sender = settings.twilio_messaging_service_sid or settings.twilio_from or "twilio"
        limiters["sms"] = RateLimiter(client, f"sms:{sender}", settings.sms_rate_per_s)
    if settings.email_backend == "sendgrid":
        limiters["email"] = RateLimiter(client, f"email:{settings.from_email}",
                                        settings.email_rate_per_s)
    return limiters


@dataclass
class Runtime:
    settings: Settings
    policy: Policy
    redis_url: str
    #: dramatiq's broker: NOTIFIER_BROKER_URL, else the ledger's Redis (`redis_url`)
    broker_url: str
    #: the ledger's client: a `LedgerRedis`, or a `LedgerCluster` (`connect_ledger`)
    redis: redis.Redis
    store: Store
    renderer: Renderer
    channels: dict[str, Channel]
    deliverer: Deliverer
    jobs: list[Job]
    #: the delivery-webhook outbox and the endpoints it fans out to (none configured: the
    #: clock still drains it)
    webhooks: WebhookOutbox

    @classmethod
    def build(cls, settings: Settings, redis_url: str) -> Runtime:
        """Everything, on the ledger at `redis_url` (`connect_ledger`). Raises `ConfigError`
        for a cluster URL without `settings.broker_url` (the queue cannot be on a cluster)
        or a configuration the policy refuses; `StoreUnavailable` when no node of a
        cluster answers."""
        if is_cluster_url(redis_url) and settings.broker_url is None:
            raise ConfigError("NOTIFIER_BROKER_URL: required with a Redis Cluster ledger "
                              "(set it to a RabbitMQ amqp://... or a Redis of the queue's "
                              "own redis://...)")
        policy = load_policy(settings.schedules_dir)
        client = connect_ledger(redis_url)
        store = Store(client, settings.retention_s, settings.history_s,
                      settings.ledger_shards)
        renderer = Renderer(Path(settings.templates_dir))
        # A practice name or URL that would put a client SMS over budget stops start-up.
        check_configuration(settings, renderer, STAFF_KINDS)
        channels = build_channels(settings)
        deliverer = Deliverer(store=store, channels=channels, renderer=renderer,
                              settings=settings, policy=policy,
                              limiters=build_limiters(settings, client),
                              call_limits_s=call_limits_s(settings))
        return cls(settings=settings, policy=policy, redis_url=redis_url,
                   broker_url=settings.broker_url or redis_url, redis=client,
                   store=store, renderer=renderer, channels=channels, deliverer=deliverer,
                   jobs=load_jobs(settings.schedules_dir),
                   webhooks=WebhookOutbox(client, settings.webhook_endpoints, store.keys))
