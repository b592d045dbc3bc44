"""Everything a process builds once at start-up from its settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import redis

from notifier.channels import Channel
from notifier.channels.outbox import Outbox
from notifier.config import Settings
from notifier.delivery import Deliverer
from notifier.errors import ConfigError
from notifier.jobs import Job, load_jobs
from notifier.policy.figures import Policy, load_policy
from notifier.redis_server import EmbeddedRedis
from notifier.render import Renderer
from notifier.store import Store


def resolve_redis_url(settings: Settings) -> tuple[str, EmbeddedRedis | None]:
    """The configured Redis, or the embedded one under `var/` (started if need be)."""
    if settings.redis_url:
        return settings.redis_url, None
    embedded = EmbeddedRedis(settings.var_dir)
    return embedded.ensure(), embedded


def build_channels(settings: Settings) -> dict[str, Channel]:
    """One channel per medium, chosen from settings once per process."""
    if settings.sms_backend != "outbox":
        raise ConfigError("NOTIFIER_SMS_BACKEND: the twilio backend is not built yet; "
                          "set NOTIFIER_SMS_BACKEND=outbox")
    if settings.email_backend != "outbox":
        raise ConfigError("NOTIFIER_EMAIL_BACKEND: the sendgrid backend is not built yet; "
                          "set NOTIFIER_EMAIL_BACKEND=outbox")
    outbox = Outbox(settings.outbox_dir)
    return {"sms": outbox, "email": outbox}


@dataclass
class Runtime:
    settings: Settings
    policy: Policy
    redis_url: str
    redis: redis.Redis
    store: Store
    renderer: Renderer
    channels: dict[str, Channel]
    deliverer: Deliverer
    jobs: list[Job]

    @classmethod
    def build(cls, settings: Settings, redis_url: str) -> Runtime:
        policy = load_policy(settings.schedules_dir)
        client = redis.Redis.from_url(redis_url, health_check_interval=30)
        store = Store(client)
        renderer = Renderer(Path(settings.templates_dir))
        channels = build_channels(settings)
        deliverer = Deliverer(store=store, channels=channels, renderer=renderer,
                              settings=settings, policy=policy, lease_s=settings.lease_s)
        return cls(settings=settings, policy=policy, redis_url=redis_url, redis=client,
                   store=store, renderer=renderer, channels=channels, deliverer=deliverer,
                   jobs=load_jobs(settings.schedules_dir))
