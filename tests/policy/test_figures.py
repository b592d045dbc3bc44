"""Policy figures (notifier/policy/figures.py): the shipped file, and every bad value refused."""

from __future__ import annotations

import copy
import re
import tomllib
from datetime import time, timedelta
from pathlib import Path
from typing import Any

import pytest

from notifier.errors import ConfigError
from notifier.policy.figures import Policy, load_policy, policy_from_mapping

SHIPPED = Path(__file__).resolve().parents[2] / "schedules" / "policy.toml"
MISSING = object()


def shipped_mapping() -> dict[str, Any]:
    return tomllib.loads(SHIPPED.read_text())


def with_value(table: str, key: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(shipped_mapping())
    assert key in data[table], f"{table}.{key} is not in the shipped file"
    if value is MISSING:
        del data[table][key]
    else:
        data[table][key] = value
    return data


def test_the_shipped_file_loads_with_its_figures(policy: Policy) -> None:
    assert policy == load_policy(SHIPPED.parent)
    assert (policy.quiet_hours.start, policy.quiet_hours.end) == (time(21, 0), time(8, 0))
    appts = policy.appointments
    assert appts.reminder_offsets == (timedelta(hours=72), timedelta(hours=24))
    assert appts.late_change_window == timedelta(hours=24)
    assert appts.join_link_offset == timedelta(minutes=15)
    assert appts.join_link_grace == timedelta(minutes=10)
    assert appts.confirmation_channels == ("email", "sms")
    assert appts.reminder_channels == ("sms", "email")
    assert appts.update_channels == ("email", "sms")
    assert appts.cancellation_channels == ("email", "sms")
    refills = policy.refills
    assert refills.due_before_runout == timedelta(days=7)
    assert refills.second_nudge_before_runout == timedelta(days=3)
    assert refills.visit_required_after == timedelta(days=90)
    assert refills.book_by_before_runout == timedelta(days=2)
    assert refills.local_send_time == time(10, 0)
    assert policy.follow_up_after == timedelta(days=28)
    assert policy.follow_up_local_time == time(10, 0)
    window = policy.response_window
    assert (window.mode, window.window, window.business_days, window.holiday_country) == (
        "elapsed", timedelta(hours=48), 2, "US")


def test_reminder_offsets_are_sorted_latest_first_whatever_the_file_order() -> None:
    data = with_value("appointments", "reminder_offsets_h", [2, 24, 72, 0.5])
    assert policy_from_mapping(data).appointments.reminder_offsets == (
        timedelta(hours=72), timedelta(hours=24), timedelta(hours=2), timedelta(minutes=30))


@pytest.mark.parametrize("table", [
    "quiet_hours", "appointments", "refills", "follow_up", "response_window"])
def test_a_missing_table_is_named(table: str) -> None:
    data = shipped_mapping()
    del data[table]
    with pytest.raises(ConfigError, match=re.escape(f"missing table [{table}]")):
        policy_from_mapping(data)


def test_a_table_that_is_not_a_table_is_named() -> None:
    data = shipped_mapping()
    data["quiet_hours"] = "21:00-08:00"
    with pytest.raises(ConfigError, match=re.escape("[quiet_hours]")):
        policy_from_mapping(data)


@pytest.mark.parametrize(("table", "key"), [
    ("quiet_hours", "start"),
    ("quiet_hours", "end"),
    ("appointments", "reminder_offsets_h"),
    ("appointments", "late_change_window_h"),
    ("appointments", "join_link_offset_min"),
    ("appointments", "join_link_grace_min"),
    ("appointments", "confirmation_channels"),
    ("appointments", "reminder_channels"),
    ("appointments", "update_channels"),
    ("appointments", "cancellation_channels"),
    ("refills", "due_days_before_runout"),
    ("refills", "second_nudge_days_before_runout"),
    ("refills", "visit_required_after_days"),
    ("refills", "book_by_days_before_runout"),
    ("refills", "local_send_time"),
    ("follow_up", "after_completed_days"),
    ("follow_up", "local_send_time"),
    ("response_window", "mode"),
    ("response_window", "window_h"),
    ("response_window", "business_days"),
    ("response_window", "holiday_country"),
])
def test_a_missing_key_is_named(table: str, key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"missing {table}.{key}")):
        policy_from_mapping(with_value(table, key, MISSING))


@pytest.mark.parametrize(("table", "key", "value"), [
    # Negative, or below the key's minimum.
    ("appointments", "late_change_window_h", -1),
    ("appointments", "join_link_grace_min", -0.5),
    ("appointments", "join_link_offset_min", 0),
    ("refills", "due_days_before_runout", -7),
    ("refills", "second_nudge_days_before_runout", -3),
    ("refills", "visit_required_after_days", -90),
    ("refills", "book_by_days_before_runout", -2),
    ("follow_up", "after_completed_days", -28),
    ("response_window", "window_h", 0),
    ("response_window", "business_days", 0),
    # Not a number at all.
    ("appointments", "late_change_window_h", "24"),
    ("appointments", "late_change_window_h", True),
    ("refills", "due_days_before_runout", [7]),
    # Not a finite number: TOML allows nan and inf, a duration does not.
    ("appointments", "late_change_window_h", float("nan")),
    ("appointments", "join_link_grace_min", float("inf")),
    ("follow_up", "after_completed_days", float("inf")),
    # Offsets: a non-empty list of positive numbers.
    ("appointments", "reminder_offsets_h", [72, -24]),
    ("appointments", "reminder_offsets_h", [72, 0]),
    ("appointments", "reminder_offsets_h", []),
    ("appointments", "reminder_offsets_h", 72),
    ("appointments", "reminder_offsets_h", [72, "24"]),
    ("appointments", "reminder_offsets_h", [True]),
    ("appointments", "reminder_offsets_h", [72, float("inf")]),
    ("appointments", "reminder_offsets_h", [72, float("nan")]),
])
def test_a_bad_number_is_named(table: str, key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{table}.{key} must")):
        policy_from_mapping(with_value(table, key, value))


@pytest.mark.parametrize(("table", "key"), [
    ("quiet_hours", "start"), ("quiet_hours", "end"),
    ("refills", "local_send_time"), ("follow_up", "local_send_time"),
])
@pytest.mark.parametrize("value", ["25:00", "12:60", "8", "08:00:00", "noon", "", "-1:30", 800])
def test_a_bad_clock_time_is_named(table: str, key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{table}.{key} must be HH:MM, got {value!r}")):
        policy_from_mapping(with_value(table, key, value))


@pytest.mark.parametrize("key", [
    "confirmation_channels", "reminder_channels", "update_channels", "cancellation_channels"])
@pytest.mark.parametrize("value", [["sms", "fax"], ["push"], [], "sms", ["SMS"]])
def test_an_unknown_channel_is_named(key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"appointments.{key} must list 'sms'")):
        policy_from_mapping(with_value("appointments", key, value))


@pytest.mark.parametrize("value", ["calendar_days", "Elapsed", "", 48])
def test_an_unknown_mode_is_named(value: Any) -> None:
    with pytest.raises(ConfigError, match=re.escape("response_window.mode must be one of")):
        policy_from_mapping(with_value("response_window", "mode", value))


@pytest.mark.parametrize("value", ["XX", "ZZZ", "", "us"])
def test_an_unknown_holiday_country_is_named(value: str) -> None:
    with pytest.raises(ConfigError,
                       match=re.escape(f"response_window.holiday_country {value!r} is unknown")):
        policy_from_mapping(with_value("response_window", "holiday_country", value))


def test_another_supported_holiday_country_is_accepted() -> None:
    data = with_value("response_window", "holiday_country", "GB")
    assert policy_from_mapping(data).response_window.holiday_country == "GB"


def test_business_days_mode_loads() -> None:
    data = with_value("response_window", "mode", "business_days")
    assert policy_from_mapping(data).response_window.mode == "business_days"


def write_policy(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "policy.toml").write_text(text)
    return directory


def test_a_bad_value_in_the_file_is_named(tmp_path: Path) -> None:
    text = SHIPPED.read_text()
    assert text.count("late_change_window_h = 24\n") == 1
    directory = write_policy(tmp_path, text.replace("late_change_window_h = 24\n",
                                                    "late_change_window_h = -24\n"))
    with pytest.raises(ConfigError, match=re.escape("appointments.late_change_window_h must")):
        load_policy(directory)


def test_nan_in_the_file_is_named(tmp_path: Path) -> None:
    text = SHIPPED.read_text()
    assert text.count("join_link_grace_min = 10\n") == 1
    directory = write_policy(tmp_path, text.replace("join_link_grace_min = 10\n",
                                                    "join_link_grace_min = nan\n"))
    with pytest.raises(ConfigError, match=re.escape("appointments.join_link_grace_min must")):
        load_policy(directory)


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    directory = write_policy(tmp_path, SHIPPED.read_text() + "\n[quiet_hours\nstart = 9\n")
    path = directory / "policy.toml"
    with pytest.raises(ConfigError, match=re.escape(f"policy file {path}: not valid TOML")):
        load_policy(directory)


def test_a_duplicate_key_is_invalid_toml(tmp_path: Path) -> None:
    directory = write_policy(tmp_path, SHIPPED.read_text().replace(
        'start = "21:00"\n', 'start = "21:00"\nstart = "22:00"\n'))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_policy(directory)


def test_a_missing_file_names_the_setting_and_the_directory(tmp_path: Path) -> None:
    directory = tmp_path / "nowhere"
    with pytest.raises(ConfigError,
                       match=re.escape(f"NOTIFIER_SCHEDULES_DIR: no policy.toml in {directory}")):
        load_policy(directory)


def test_an_empty_file_names_a_missing_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape("policy file: missing table [")):
        load_policy(write_policy(tmp_path, ""))
