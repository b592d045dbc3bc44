"""The console's settings: defaults, bounds, the secret checked at start-up and hidden, and
the development secret kept under `var/`."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from notifier.cli.common import dev_secret
from notifier.config import Settings
from notifier.errors import ConfigError

NO_DOTENV = Path("/nonexistent")


def test_defaults_and_the_operators_file_under_the_var_dir(tmp_path: Path):
    settings = Settings.from_env({"NOTIFIER_VAR_DIR": str(tmp_path)}, dotenv=NO_DOTENV)
    assert settings.console_secret is None
    assert settings.console_operators_file == tmp_path / "console" / "operators.toml"
    assert settings.console_session_s == 1800
    assert settings.console_audit_days == 6 * 365 + 2
    named = Settings.from_env({"NOTIFIER_CONSOLE_OPERATORS_FILE": "/etc/ops.toml"},
                              dotenv=NO_DOTENV)
    assert named.console_operators_file == Path("/etc/ops.toml")


@pytest.mark.parametrize(("env", "error"), [
    ({"NOTIFIER_CONSOLE_SECRET": "short"}, "NOTIFIER_CONSOLE_SECRET: too short"),
    ({"NOTIFIER_CONSOLE_SESSION_S": "10"}, "NOTIFIER_CONSOLE_SESSION_S: must be at least 60"),
    ({"NOTIFIER_CONSOLE_SESSION_S": "soon"}, "NOTIFIER_CONSOLE_SESSION_S: expected a whole"),
    ({"NOTIFIER_CONSOLE_AUDIT_DAYS": "0"}, "NOTIFIER_CONSOLE_AUDIT_DAYS: must be at least 1"),
])
def test_a_bad_console_setting_stops_start_up_naming_it(env: dict[str, str], error: str):
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env, dotenv=NO_DOTENV)
    assert str(raised.value).startswith(error)


def test_the_secret_hides_in_repr():
    secret = "s" * 40
    settings = Settings.from_env({"NOTIFIER_CONSOLE_SECRET": secret}, dotenv=NO_DOTENV)
    assert settings.console_secret is not None
    assert settings.console_secret.get_secret_value() == secret
    assert secret not in repr(settings)


def test_in_development_a_secret_is_made_once_under_var(tmp_path: Path):
    settings = Settings.from_env({"NOTIFIER_VAR_DIR": str(tmp_path)}, dotenv=NO_DOTENV)
    first = dev_secret(settings, "console_secret").console_secret
    again = dev_secret(settings, "console_secret").console_secret
    assert first is not None and again is not None
    assert first.get_secret_value() == again.get_secret_value()
    assert len(first.get_secret_value()) >= 24
    assert stat.S_IMODE((tmp_path / "console-secret").stat().st_mode) == 0o600
    given = Settings.from_env({"NOTIFIER_CONSOLE_SECRET": "g" * 30}, dotenv=NO_DOTENV)
    assert dev_secret(given, "console_secret") is given
