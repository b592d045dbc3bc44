"""Everything a process builds once at start-up from its settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import redis

from notifier.config import PROVIDER_CALL_S, Settings
from notifier.delivery.channels import Channel
from notifier.delivery.channels.outbox import Outbox
from notifier.delivery.compose import STAFF_KINDS
from notifier.delivery.deliverer import Deliverer
from notifier.delivery.render import Renderer
from notifier.delivery.sms_budget import check_configuration
from notifier.ledger.client import LedgerRedis
from notifier.ledger.embedded_redis import EmbeddedRedis
from notifier.ledger.ratelimit import RateLimiter
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
        policy = load_policy(settings.schedules_dir)
        client = LedgerRedis.from_url(redis_url, health_check_interval=30)
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
