"""Settings: built from a mapping, each bad value stops start-up naming the variable."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from notifier.config import Settings
from notifier.errors import ConfigError

NO_DOTENV = Path("/nonexistent")
SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def settings(**env: str) -> Settings:
    return Settings.from_env(env, dotenv=NO_DOTENV)


def test_defaults_deliver_to_the_outbox_on_the_embedded_redis():
    s = settings()
    assert (s.redis_url, s.sms_backend, s.email_backend) == (None, "outbox", "outbox")
    assert s.outbox_dir == Path("var/outbox")
    assert s.lease_s == 60


def test_provider_credentials_choose_the_provider_unless_told_otherwise():
    creds = {"TWILIO_ACCOUNT_SID": "AC1", "TWILIO_AUTH_TOKEN": "tok", "TWILIO_FROM": "+15005550006",
             "SENDGRID_API_KEY": "SG.key"}
    s = settings(**creds)
    assert (s.sms_backend, s.email_backend) == ("twilio", "sendgrid")
    s = settings(**creds, NOTIFIER_SMS_BACKEND="outbox", NOTIFIER_EMAIL_BACKEND="OUTBOX")
    assert (s.sms_backend, s.email_backend) == ("outbox", "outbox")
    assert s.twilio_auth_token == "tok"  # kept: an outbox still verifies Twilio signatures


def test_secrets_never_show_in_repr():
    s = settings(NOTIFIER_WEBHOOK_SECRET=SECRET, TWILIO_AUTH_TOKEN="tok-123",
                 SENDGRID_API_KEY="SG.very-secret", NOTIFIER_SMS_BACKEND="outbox")
    text = repr(s)
    for secret in (SECRET, "tok-123", "SG.very-secret"):
        assert secret not in text
    assert s.require_webhook_secret() == SECRET


def test_dotenv_is_read_and_the_environment_wins(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("NOTIFIER_PRACTICE_NAME=From Dotenv\nNOTIFIER_WORKER_THREADS=7\n")
    s = Settings.from_env({"NOTIFIER_WORKER_THREADS": "3"}, dotenv=dotenv)
    assert (s.practice_name, s.worker_threads) == ("From Dotenv", 3)


@pytest.mark.parametrize(("env", "names"), [
    ({"NOTIFIER_REDIS_URL": "localhost:6379"}, "NOTIFIER_REDIS_URL"),
    ({"NOTIFIER_WEBHOOK_SECRET": "plain"}, "NOTIFIER_WEBHOOK_SECRET"),
    ({"NOTIFIER_WEBHOOK_SECRET": "whsec_!!!"}, "NOTIFIER_WEBHOOK_SECRET"),
    ({"NOTIFIER_WEBHOOK_SECRET": "whsec_" + base64.b64encode(b"short").decode()},
     "NOTIFIER_WEBHOOK_SECRET"),
    ({"NOTIFIER_SMS_BACKEND": "pigeon"}, "NOTIFIER_SMS_BACKEND"),
    ({"NOTIFIER_EMAIL_BACKEND": "twilio"}, "NOTIFIER_EMAIL_BACKEND"),
    ({"NOTIFIER_SMS_BACKEND": "twilio"}, "TWILIO_ACCOUNT_SID"),
    ({"NOTIFIER_SMS_BACKEND": "twilio", "TWILIO_ACCOUNT_SID": "AC1",
      "TWILIO_AUTH_TOKEN": "t"}, "TWILIO_FROM"),
    ({"NOTIFIER_EMAIL_BACKEND": "sendgrid"}, "SENDGRID_API_KEY"),
    ({"NOTIFIER_FROM_EMAIL": "not-an-address"}, "NOTIFIER_FROM_EMAIL"),
    ({"NOTIFIER_SUPPORT_EMAIL": "a@b"}, "NOTIFIER_SUPPORT_EMAIL"),
    ({"NOTIFIER_PUBLIC_URL": "ftp://x"}, "NOTIFIER_PUBLIC_URL"),
    ({"SENDGRID_API_HOST": "api.sendgrid.com"}, "SENDGRID_API_HOST"),
    ({"NOTIFIER_TWILIO_BASE_URL": "nope"}, "NOTIFIER_TWILIO_BASE_URL"),
    ({"NOTIFIER_EMAIL_SHOWS_MEDICATION": "maybe"}, "NOTIFIER_EMAIL_SHOWS_MEDICATION"),
    ({"NOTIFIER_WORKER_THREADS": "many"}, "NOTIFIER_WORKER_THREADS"),
    ({"NOTIFIER_WORKER_THREADS": "0"}, "NOTIFIER_WORKER_THREADS"),
    ({"NOTIFIER_LEASE_S": "-5"}, "NOTIFIER_LEASE_S"),
])
def test_a_bad_value_names_its_variable(env, names):
    with pytest.raises(ConfigError) as caught:
        settings(**env)
    message = str(caught.value)
    assert message.startswith(names + ":"), message
    assert "\n" not in message


def test_missing_webhook_secret_is_named_when_required():
    with pytest.raises(ConfigError, match="^NOTIFIER_WEBHOOK_SECRET: required"):
        settings().require_webhook_secret()
