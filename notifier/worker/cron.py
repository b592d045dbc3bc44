"""Cron jobs from `schedules/jobs.toml`, fired once per (job, zone, fire time) cluster-wide.

`next_fire` / `previous_fire` are pure: cron is evaluated on the wall clock of the job's
zone, and a wall-clock time that does not exist (spring forward) fires at the first valid
minute after it, one that occurs twice (fall back) fires once, at the first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from notifier.config import read_schedule_file
from notifier.errors import ConfigError
from notifier.policy.timing import local_time

#: `zone = "provider"`: the job fires in each provider's own zone.
PROVIDER_ZONE = "provider"
#: A fire time missed while no clock ran is still honoured this long after it.
CATCH_UP = timedelta(hours=1)
KNOWN_JOBS = ("provider-digest",)
JOB_KEYS = ("name", "cron", "zone")


@dataclass(frozen=True)
class Job:
    name: str
    cron: str
    zone: str


def load_jobs(schedules_dir: Path) -> list[Job]:
    data = read_schedule_file(schedules_dir, "jobs.toml", "jobs")
    for key in data:
        if key != "job":
            raise ConfigError(f"jobs file: unknown table {key!r}; jobs are [[job]] tables")
    entries = data.get("job", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError("jobs file: jobs are [[job]] tables (an array), not one [job]")
    jobs = []
    for entry in entries:
        name, cron, zone = entry.get("name"), entry.get("cron"), entry.get("zone", "UTC")
        if name not in KNOWN_JOBS:
            raise ConfigError(f"jobs file: unknown job {name!r}; known: {', '.join(KNOWN_JOBS)}")
        for key in entry:
            if key not in JOB_KEYS:
                raise ConfigError(f"jobs file: job {name}: unknown key {key!r}; "
                                  f"known: {', '.join(JOB_KEYS)}")
        if not isinstance(cron, str) or not croniter.is_valid(cron):
            raise ConfigError(f"jobs file: job {name}: cron {cron!r} is not a cron expression")
        if zone != PROVIDER_ZONE and not _is_zone(zone):
            raise ConfigError(f"jobs file: job {name}: zone {zone!r} is unknown")
        jobs.append(Job(name=name, cron=cron, zone=zone))
    return jobs


def _is_zone(zone: object) -> bool:
    if not isinstance(zone, str):
        return False
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # OSError: a directory of the zone database such as "America" (IsADirectoryError).
        return False
    return True


def next_fire(expr: str, after: datetime, zone: ZoneInfo) -> datetime:
    """The first fire time strictly after `after` (aware, UTC result)."""
    naive = after.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0)
    cron = croniter(expr, naive - timedelta(minutes=1))
    while True:
        local: datetime = cron.get_next(datetime)
        fire = local_time(local.date(), local.time(), zone)
        if fire > after:
            return fire


def previous_fire(expr: str, at: datetime, zone: ZoneInfo) -> datetime:
    """The last fire time at or before `at` (aware, UTC result)."""
    naive = at.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0)
    cron = croniter(expr, naive + timedelta(minutes=1))
    while True:
        local: datetime = cron.get_prev(datetime)
        fire = local_time(local.date(), local.time(), zone)
        if fire <= at:
            break
    # In the second pass of a fall-back hour the wall clock reads earlier than fires of the
    # first pass that already happened (at 01:30 EST, 01:40 EDT came before): walking back
    # by wall clock finds 01:20 EDT, so walk forward to the last fire at or before `at`.
    while (following := next_fire(expr, fire, zone)) <= at:
        fire = following
    return fire
