"""Running the provider-digest job: find the providers, plan their digests, write them.

The digest's content is rendered when it is sent (the items open then); here we only
decide who gets one, so an empty queue sends nothing. Every run stands for one fire of the
job in one zone, and a digest's id names that fire, so running a fire twice (two clocks, a
redelivered message, `notifier jobs run` twice) plans each provider's digest once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from notifier.ledger.records import ProviderQueueRecord, ProviderRecord
from notifier.ledger.store import Store
from notifier.policy.digest import plan_digests
from notifier.policy.plan import entity_ref
from notifier.worker.cron import PROVIDER_ZONE, Job, previous_fire

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DigestRun:
    """What one run planned for one fire in one zone (None: every zone)."""

    zone: str | None
    fire: datetime
    #: providers with open items: the digests this fire calls for
    due: int
    #: of those, how many were planned now; the rest had a digest for this fire already
    planned: int

    def describe(self) -> str:
        """One line saying what was planned, in words that fit the counts."""
        if self.zone is not None:
            local = self.fire.astimezone(ZoneInfo(self.zone))
            when = f"fire {local:%a %Y-%m-%d %H:%M %Z} in {self.zone}"
        else:
            when = f"fire {self.fire.astimezone(UTC):%a %Y-%m-%d %H:%M} UTC"
        if self.due == 0:
            return f"{when}: nothing planned: no provider has open items"
        already = self.due - self.planned
        had = f"{_count(already, 'provider')} with open items already " + (
            "has" if already == 1 else "have")
        if self.planned == 0:
            return f"{when}: nothing planned: {had} a digest for that fire"
        line = f"{when}: planned {_count(self.planned, 'digest')}, due now"
        return line + (f" ({had} one)" if already else "")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def all_providers(store: Store) -> list[ProviderRecord]:
    """Every provider's record, found through the providers set (no keyspace SCAN)."""
    return store.providers()


def provider_zones(store: Store) -> set[str]:
    """The zones of all providers: where a job in the providers' zone fires."""
    return {p.provider.timezone for p in all_providers(store)}


def run_provider_digest(store: Store, now: datetime, zone: str | None,
                        fire: datetime) -> DigestRun:
    """Plan the digest of the job's `fire` for every provider (in `zone`, when given)."""
    providers = [p for p in all_providers(store) if zone is None or p.provider.timezone == zone]
    queues = store.load_records([entity_ref("provider_queue", p.provider.id)
                                 for p in providers])
    pairs: list[tuple[ProviderRecord, ProviderQueueRecord | None]] = []
    for p in providers:
        queue = queues.get(entity_ref("provider_queue", p.provider.id))
        pairs.append((p, queue if isinstance(queue, ProviderQueueRecord) else None))
    plan = plan_digests(pairs, fire, now)
    run = DigestRun(zone=zone, fire=fire, due=len(plan.add),
                    planned=store.write_plan(plan, now))
    log.info("provider-digest for %s (%s): %d due, %d newly planned", fire.isoformat(),
             zone or "all zones", run.due, run.planned)
    return run


def manual_fires(store: Store, jobs: list[Job], name: str, now: datetime
                 ) -> dict[str, datetime]:
    """The fire a manual run of job `name` stands for, per zone: the most recent scheduled
    fire at or before `now` (of the latest, when several jobs of that name cover a zone).

    So a manual run plans exactly what the clock plans (or planned) for that fire: never a
    second digest for a fire the clock already handled, nothing new when run twice, and
    when the clock missed a fire (down for longer than the catch-up window), the run makes
    it up."""
    fires: dict[str, datetime] = {}
    for job in jobs:
        if job.name != name:
            continue
        zones = provider_zones(store) if job.zone == PROVIDER_ZONE else {job.zone}
        for zone in zones:
            fire = previous_fire(job.cron, now, ZoneInfo(zone))
            fires[zone] = max(fire, fires.get(zone, fire))
    return dict(sorted(fires.items()))


def run_manually(store: Store, jobs: list[Job], name: str, now: datetime) -> list[DigestRun]:
    """`notifier jobs run provider-digest`: one run per zone, for that zone's manual fire."""
    return [run_provider_digest(store, now, zone, fire)
            for zone, fire in manual_fires(store, jobs, name, now).items()]
