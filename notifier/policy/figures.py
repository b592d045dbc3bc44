"""Policy figures: the numbers the rules use, read from `schedules/policy.toml`.

Every figure is validated at start-up; a bad one raises `ConfigError` naming the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import time, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays

from notifier.config import read_schedule_file
from notifier.errors import ConfigError

Channel = Literal["sms", "email"]
CHANNELS: tuple[Channel, ...] = ("sms", "email")


@dataclass(frozen=True)
class QuietHours:
    """Client-local hours in which nothing is sent to a client; `start` may be after `end`."""

    start: time
    end: time

    def contains(self, local: time) -> bool:
        if self.start <= self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


@dataclass(frozen=True)
class AppointmentFigures:
    reminder_offsets: tuple[timedelta, ...]
    late_change_window: timedelta
    join_link_offset: timedelta
    join_link_grace: timedelta
    confirmation_channels: tuple[Channel, ...]
    reminder_channels: tuple[Channel, ...]
    update_channels: tuple[Channel, ...]
    cancellation_channels: tuple[Channel, ...]


@dataclass(frozen=True)
class RefillFigures:
    due_before_runout: timedelta
    second_nudge_before_runout: timedelta
    visit_required_after: timedelta
    book_by_before_runout: timedelta
    local_send_time: time


@dataclass(frozen=True)
class ResponseWindow:
    mode: Literal["elapsed", "business_days"]
    window: timedelta
    business_days: int
    holiday_country: str


@dataclass(frozen=True)
class Policy:
    quiet_hours: QuietHours
    appointments: AppointmentFigures
    refills: RefillFigures
    follow_up_after: timedelta
    follow_up_local_time: time
    response_window: ResponseWindow
    #: the zone used when a recipient's own is not known
    practice_zone: ZoneInfo = ZoneInfo("America/New_York")
    follow_up_valid: timedelta = timedelta(days=14)
    digest_max_items: int = 50
    #: how long a close for an unseen subject waits for its opening event
    opening_wait: timedelta = timedelta(hours=24)


class _Section:
    """Typed reads from one table of the policy file, with errors naming `table.key`."""

    def __init__(self, data: dict[str, Any], name: str) -> None:
        value = data.get(name)
        if not isinstance(value, dict):
            raise ConfigError(f"policy file: missing table [{name}]")
        self.data, self.name = value, name

    def _get(self, key: str) -> Any:
        if key not in self.data:
            raise ConfigError(f"policy file: missing {self.name}.{key}")
        return self.data[key]

    def number(self, key: str, minimum: float = 0) -> float:
        value = self._get(key)
        if (isinstance(value, bool) or not isinstance(value, int | float)
                or not math.isfinite(value) or value < minimum):
            raise ConfigError(f"policy file: {self.name}.{key} must be a number >= {minimum}")
        return float(value)

    def numbers(self, key: str) -> list[float]:
        value = self._get(key)
        if not isinstance(value, list) or not value:
            raise ConfigError(f"policy file: {self.name}.{key} must be a non-empty list")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                   and v > 0 for v in value):
            raise ConfigError(f"policy file: {self.name}.{key} must hold positive numbers")
        return [float(v) for v in value]

    def clock_time(self, key: str) -> time:
        value = self._get(key)
        try:
            hour, minute = (int(part) for part in str(value).split(":"))
            return time(hour, minute)
        except ValueError:
            raise ConfigError(
                f"policy file: {self.name}.{key} must be HH:MM, got {value!r}"
            ) from None

    def channels(self, key: str) -> tuple[Channel, ...]:
        value = self._get(key)
        if not isinstance(value, list) or not value or any(v not in CHANNELS for v in value):
            raise ConfigError(f"policy file: {self.name}.{key} must list 'sms' and/or 'email'")
        return tuple(value)

    def choice(self, key: str, options: tuple[str, ...]) -> str:
        value = self._get(key)
        if value not in options:
            raise ConfigError(f"policy file: {self.name}.{key} must be one of {options}")
        return str(value)


def policy_from_mapping(data: dict[str, Any]) -> Policy:
    practice, digest = _Section(data, "practice"), _Section(data, "digest")
    try:
        practice_zone = ZoneInfo(str(practice._get("timezone")))
    except (ZoneInfoNotFoundError, ValueError, OSError):  # "America" is a directory
        raise ConfigError("policy file: practice.timezone is not an IANA time zone") from None
    quiet, appts = _Section(data, "quiet_hours"), _Section(data, "appointments")
    refills, follow = _Section(data, "refills"), _Section(data, "follow_up")
    window = _Section(data, "response_window")
    # [events] came later than the other tables: a policy file without it keeps the default.
    events = _Section(data, "events") if "events" in data else None
    country = str(window._get("holiday_country"))
    if country not in holidays.list_supported_countries():
        raise ConfigError(f"policy file: response_window.holiday_country {country!r} is unknown")
    return Policy(
        quiet_hours=QuietHours(quiet.clock_time("start"), quiet.clock_time("end")),
        appointments=AppointmentFigures(
            reminder_offsets=tuple(
                sorted((timedelta(hours=h) for h in appts.numbers("reminder_offsets_h")),
                       reverse=True)
            ),
            late_change_window=timedelta(hours=appts.number("late_change_window_h")),
            join_link_offset=timedelta(minutes=appts.number("join_link_offset_min", 1)),
            join_link_grace=timedelta(minutes=appts.number("join_link_grace_min")),
            confirmation_channels=appts.channels("confirmation_channels"),
            reminder_channels=appts.channels("reminder_channels"),
            update_channels=appts.channels("update_channels"),
            cancellation_channels=appts.channels("cancellation_channels"),
        ),
        refills=RefillFigures(
            due_before_runout=timedelta(days=refills.number("due_days_before_runout")),
            second_nudge_before_runout=timedelta(
                days=refills.number("second_nudge_days_before_runout")
            ),
            visit_required_after=timedelta(days=refills.number("visit_required_after_days")),
            book_by_before_runout=timedelta(days=refills.number("book_by_days_before_runout")),
            local_send_time=refills.clock_time("local_send_time"),
        ),
        follow_up_after=timedelta(days=follow.number("after_completed_days")),
        follow_up_local_time=follow.clock_time("local_send_time"),
        response_window=ResponseWindow(
            mode=window.choice("mode", ("elapsed", "business_days")),  # type: ignore[arg-type]
            window=timedelta(hours=window.number("window_h", 1)),
            business_days=int(window.number("business_days", 1)),
            holiday_country=country,
        ),
        practice_zone=practice_zone,
        follow_up_valid=timedelta(days=follow.number("valid_days", 1)),
        digest_max_items=int(digest.number("max_items", 1)),
        opening_wait=(timedelta(hours=events.number("opening_wait_h"))
                      if events is not None else Policy.opening_wait),
    )


def load_policy(schedules_dir: Path) -> Policy:
    """Read and validate `policy.toml` in `schedules_dir`."""
    return policy_from_mapping(read_schedule_file(schedules_dir, "policy.toml", "policy"))
