"""The clock: claims due notifications in batches and hands them to the workers.

Every tick it (0) renews its leases on shards of the schedule
(`notifier.ledger.shard_leases`: each clock takes its fair share of the shards, and a dead
clock's are taken over within a lease), then in the shards it holds (1) puts back
notifications whose lease ran out, (2) claims what is due, up to the in-flight cap, and
enqueues `deliver` messages of `chunk` ids each (in one round trip), (3) in the same
shards, now and then re-enqueues accepted events that were never applied (a lost message,
a web process that died between storing and enqueueing), resumes subjects whose turn's
holder died, and releases held closes whose wait for their opening event is over (events,
turns and held sets are per shard too: walking only the shards held splits the sweeps
between clocks as the claiming is split, rather than every clock re-enqueueing the same
stuck events; a dead clock's shards are swept by their next holder within a lease), (4) every
`trim_every_s` trims a slice of the indexes of notification ids
(`notifier.ledger.trimming`), and (5) once a minute, when sends are past their wait for a
delivery report, enqueues the repair job that looks them up (`notifier.worker.reports`; it
runs in a worker, as provider calls block), and (6) fans the delivery-webhook outboxes of
the shards it holds out to the endpoints (`notifier.webhooks.outbox`; the worker's
dispatcher sends). Several clocks may
run: each step is atomic in Redis, and the shard leases spread the claiming between them.
Between ticks it waits the poll interval, or less when the next notification falls due
sooner (`wait_s`).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import dramatiq

from notifier.errors import StoreError, StoreUnavailable
from notifier.ledger.shard_leases import SHARD_LEASE_S, ShardLeases
from notifier.ledger.store import Store
from notifier.timeutil import utcnow
from notifier.webhooks.outbox import FAN_OUT_BATCH, WebhookOutbox
from notifier.worker.actors import enqueue_apply, enqueue_deliveries, enqueue_job
from notifier.worker.cron import CATCH_UP, PROVIDER_ZONE, Job, previous_fire
from notifier.worker.digests import provider_zones
from notifier.worker.reports import EVERY_S, QUEUED_S, REPORT_LOOKUPS, REPORTS_TURN

log = logging.getLogger(__name__)

#: While ticks keep failing with the same error, it is said once per this many seconds.
FAILING_SAID_EVERY_S = 60.0
#: How much longer than `CATCH_UP` a claimed fire is remembered in memory.
FIRED_MARGIN = timedelta(minutes=10)


@dataclass
class Clock:
    store: Store
    broker: dramatiq.Broker
    lease_s: float = 60.0
    claim_batch: int = 1000
    chunk: int = 25
    max_inflight: int = 5000
    poll_s: float = 0.25
    #: the shortest wait between ticks (seconds), however soon the next is due: notifications
    #: due every few milliseconds are claimed together, not one tick each
    min_wait_s: float = 0.02
    #: an accepted event not applied after this long is enqueued again
    event_grace_s: float = 30.0
    events_every_s: float = 5.0
    jobs: list[Job] = field(default_factory=list)
    #: how often the set of provider zones is read again
    zones_every_s: float = 30.0
    rng: random.Random = field(default_factory=random.Random)
    #: how often a slice of the notification indexes is trimmed, and how many SCAN pages
    #: (of about 1,000 keys) one slice is: 10 pages took 0.2 s on a loaded 2-core machine,
    #: a pause in claiming; 3 keep it near 60 ms and still pass over a million keys an hour
    trim_every_s: float = 10.0
    trim_pages: int = 3
    _last_trim: datetime | None = None
    #: where the next trim goes on in the keyspace (0: a new pass)
    _trim_cursor: int = 0
    #: how often the delivery-report repair job is started, seconds (0: never)
    reports_every_s: float = EVERY_S
    _last_event_sweep: datetime | None = None
    _last_reports: datetime | None = None
    _zones: tuple[datetime, set[str]] | None = None
    #: fires this clock claimed (or saw claimed), by key, with their fire time; kept only
    #: while a fire can still come up (`CATCH_UP`, plus `FIRED_MARGIN`), so it stays small
    _fired: dict[str, datetime] = field(default_factory=dict)
    #: the delivery-webhook outbox, fanned out every tick (None: left alone, for tests of
    #: the rest; every command passes one, with or without endpoints)
    webhooks: WebhookOutbox | None = None
    #: how long this clock's leases on shards last unrenewed, seconds: a dead clock's
    #: shards are taken over within it
    shard_lease_s: float = SHARD_LEASE_S
    #: this clock's shard leases (made at the first tick)
    leases: ShardLeases | None = None

    def tick(self, now: datetime) -> int:
        """One pass; returns how many notifications were handed to workers."""
        if self.leases is None:
            self.leases = ShardLeases(self.store.redis, self.store.keys,
                                      self.shard_lease_s, self.rng)
        held = self.leases.renew()
        handed = self.claim_due(now, held) if held else 0
        # While a burst is being claimed, the outbox takes one batch a tick (its messages
        # are no less safe for waiting), so that fanning out never delays a reminder.
        self.fan_out_webhooks(now, held, max_batches=1 if handed else 10)
        self.resume_turns(now, held)
        if (self._last_event_sweep is None
                or now - self._last_event_sweep >= timedelta(seconds=self.events_every_s)):
            self._last_event_sweep = now
            stuck = self.store.unapplied_events(now - timedelta(seconds=self.event_grace_s),
                                                now, shards=held)
            for event_id in stuck:
                enqueue_apply(self.broker, event_id)
            if stuck:
                log.warning("re-enqueued %d events that were never applied", len(stuck))
            released = self.store.release_expired_holds(now, shards=held)
            for event_id in released:
                enqueue_apply(self.broker, event_id)
            if released:
                log.info("%d closes waited long enough for their opening; applying them",
                         len(released))
        for part in (self.fire_jobs, self.trim_indexes, self.report_lookups_due):
            try:
                part(now)
            except StoreUnavailable as exc:
                # On a cluster with a master down these meet it (a job's fire claim, the
                # trimming's scan, the awaiting-report sets of every shard): the claims
                # are made, and each is tried again at its next turn (found by QA: the
                # whole tick failed, and `run` logged it as the clock's own outage).
                log.warning("clock: %s skipped: %s", part.__name__, exc)
        return handed

    def report_lookups_due(self, now: datetime) -> None:
        """Every `reports_every_s` (never when 0), `start_report_lookups`."""
        if self.reports_every_s and (
                self._last_reports is None
                or now - self._last_reports >= timedelta(seconds=self.reports_every_s)):
            self._last_reports = now
            self.start_report_lookups(now)

    def claim_due(self, now: datetime, shards: list[int]) -> int:
        """Sweep and claim in `shards` (one round trip for the sweep, two a claim), and
        hand the claimed ids to the workers in messages of `chunk` ids, one pipeline a
        claim; returns how many were handed."""
        schedule = self.store.schedule
        swept = schedule.sweep(now, shards=shards)
        if swept:
            log.warning("lease expired for %d notifications; putting them back", len(swept))
        handed, waiting = 0, []
        while True:
            ids = schedule.claim(now, self.claim_batch, self.lease_s, self.max_inflight,
                                 shards)
            waiting += ids
            # Whole chunks now; the rest waits for the next claim (claims from several
            # shards would otherwise each end in a short message), and goes when it is last.
            last = len(ids) < self.claim_batch
            whole = len(waiting) if last else len(waiting) - len(waiting) % self.chunk
            enqueue_deliveries(self.broker, [waiting[start:min(start + self.chunk, whole)]
                                             for start in range(0, whole, self.chunk)])
            handed, waiting = handed + whole, waiting[whole:]
            if last:
                return handed

    def fan_out_webhooks(self, now: datetime, shards: list[int], max_batches: int = 10
                         ) -> int:
        """Fan the webhook outboxes of `shards` (those this clock holds) out, a batch
        (`FAN_OUT_BATCH` entries, spread over the shards that may hold entries) a round,
        until they are empty or `max_batches` rounds were taken (the rest waits a tick:
        claiming comes first); returns how many entries left them."""
        moved, left = 0, list(shards)
        for _ in range(max_batches if self.webhooks is not None else 0):
            if not left:
                break
            each = -(-FAN_OUT_BATCH // len(left))  # rounded up: at least one
            taken = self.webhooks.fan_out_round(now, left, each)  # type: ignore[union-attr]
            moved += sum(taken.values())
            # A shard that gave less than asked is empty (or another clock took it).
            left = [s for s, n in taken.items() if n >= each]
        return moved

    def trim_indexes(self, now: datetime) -> int:
        """Every `trim_every_s`, one slice of the index trimming, going on where the last
        stopped; returns how many ids it removed."""
        if (self._last_trim is not None
                and now - self._last_trim < timedelta(seconds=self.trim_every_s)):
            return 0
        self._last_trim = now
        if self.webhooks is not None:
            self.webhooks.trim(now)
        run = self.store.trimmer.run(now, self._trim_cursor, self.trim_pages)
        self._trim_cursor = run.cursor
        if run.removed:
            log.info("trimmed %d ids from %d notification indexes", run.removed, run.indexes)
        return run.removed

    def start_report_lookups(self, now: datetime) -> bool:
        """Enqueue the delivery-report repair job when sends are past their wait, unless a
        run is queued (up to `QUEUED_S`) or started within `reports_every_s`: SET NX on
        `REPORTS_TURN` (`worker.reports.start_run`); returns whether it did. The job runs
        in a worker: its provider calls block."""
        if not self.store.reports.overdue(now):
            return False
        if not self.store.redis.set(REPORTS_TURN, now.timestamp(), nx=True,
                                    ex=max(QUEUED_S, int(self.reports_every_s))):
            return False
        enqueue_job(self.broker, REPORT_LOOKUPS, "UTC", now.isoformat())
        return True

    def resume_turns(self, now: datetime, shards: Iterable[int] | None = None) -> list[str]:
        """Subjects whose turn's holder died (its lease ran out), in `shards` (every shard
        when None): enqueue the oldest queued event of each, so the subject's events go on
        within a lease of the death."""
        subjects = self.store.turns.expired(now, shards=shards)
        heads = self.store.turns.heads(subjects) if subjects else []
        for event_id in heads:
            enqueue_apply(self.broker, event_id)
        if subjects:
            log.warning("turn expired on %d subjects; resumed %d", len(subjects), len(heads))
        return heads

    def _job_zones(self, job: Job, now: datetime) -> set[str]:
        if job.zone != PROVIDER_ZONE:
            return {job.zone}
        if self._zones is None or now - self._zones[0] >= timedelta(seconds=self.zones_every_s):
            self._zones = (now, provider_zones(self.store))
        return self._zones[1]

    def fire_jobs(self, now: datetime) -> list[str]:
        """Enqueue each job whose fire time in a zone has come, once across all clocks:
        the fire is claimed with SET NX on (job, zone, fire time)."""
        fired = []
        self._forget_old_fires(now)
        for job in self.jobs:
            for zone in sorted(self._job_zones(job, now)):
                fire = previous_fire(job.cron, now, ZoneInfo(zone))
                key = f"n:job:{job.name}:{zone}:{int(fire.timestamp())}"
                if now - fire > CATCH_UP or key in self._fired:
                    continue
                self._fired[key] = fire
                if self.store.redis.set(key, now.timestamp(), nx=True, ex=3 * 24 * 3600):
                    enqueue_job(self.broker, job.name, zone, fire.isoformat())
                    fired.append(key)
                    log.info("fired %s for %s at %s", job.name, zone, fire.isoformat())
        return fired

    def _forget_old_fires(self, now: datetime) -> None:
        """Drop fires too old to come up again: past the catch-up window (with a margin),
        `fire_jobs` skips them before it looks here."""
        horizon = now - CATCH_UP - FIRED_MARGIN
        for key in [k for k, fire in self._fired.items() if fire < horizon]:
            del self._fired[key]

    def run(self, stop: threading.Event) -> None:
        """Tick until `stop` is set. A failing tick never ends the loop (this thread alone
        claims due notifications); its traceback is logged once per new error, and while
        the same error repeats (Redis down: four ticks a second) one line a minute says so,
        and one more when ticks succeed again."""
        log.info("clock running")
        try:
            self._run(stop)
        finally:
            self.release_shards()

    def release_shards(self) -> None:
        """Give up this clock's shards (it is stopping), so the other clocks take them at
        their next tick instead of a lease later; Redis down: they expire."""
        if self.leases is None:
            return
        try:
            self.leases.release_all()
        except StoreError:
            log.warning("could not release the clock's shards; they are free within %.0f s",
                        self.shard_lease_s)

    def _run(self, stop: threading.Event) -> None:
        failures, last_error, last_said = 0, "", 0.0
        while not stop.is_set():
            try:
                self.tick(utcnow())
            except Exception as exc:
                failures += 1
                error = f"{type(exc).__name__}: {exc}"
                if error != last_error:
                    log.exception("clock tick failed; trying again")
                    last_error, last_said = error, time.monotonic()
                elif time.monotonic() - last_said >= FAILING_SAID_EVERY_S:
                    log.warning("clock tick still failing (%d in a row): %s", failures, error)
                    last_said = time.monotonic()
            else:
                if failures:
                    log.info("clock ticks again after %d failed ticks", failures)
                failures, last_error = 0, ""
            stop.wait(self.wait_s(utcnow()))

    def wait_s(self, now: datetime) -> float:
        """Seconds to wait before the next tick: the poll interval, jittered so several
        clocks do not poll in lockstep, but no longer than until the next notification
        falls due (a reminder due in 0.1 s is not left for a whole poll), and at least
        `min_wait_s`. The poll interval alone when the soonest is already due (the
        in-flight cap holds it back) or Redis cannot say. Every shard's next due time, not
        only those this clock holds: a tick woken by another clock's notification finds
        nothing to claim, cheaper than missing one of a shard this clock is about to take."""
        wait = self.poll_s * (0.5 + self.rng.random())
        try:
            soonest = self.store.schedule.next_due()
        except StoreError:
            return wait  # the tick says so; this only decides how long to wait
        if soonest is None or soonest <= now:
            return wait
        return max(self.min_wait_s, min(wait, (soonest - now).total_seconds()))
