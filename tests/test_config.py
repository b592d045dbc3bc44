"""Settings: built from a mapping, each bad value stops start-up naming the variable."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from pydantic import SecretStr

from notifier.config import (
    MAX_LEDGER_SHARDS,
    PROJECT_ROOT,
    Settings,
    in_checkout,
    project_dir,
    reveal,
)
from notifier.errors import ConfigError
from notifier.ledger.shards import DEFAULT_SHARDS, MAX_SHARDS

NO_DOTENV = Path("/nonexistent")
SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
TOKEN = "t0k3n-" + "a" * 18  # 24 characters, the least allowed
PUBLIC = "https://notifier.example.org"
TWILIO = {"TWILIO_ACCOUNT_SID": "AC1", "TWILIO_AUTH_TOKEN": "tok", "TWILIO_FROM": "+15005550006"}


def settings(**env: str) -> Settings:
    return Settings.from_env(env, dotenv=NO_DOTENV)


@pytest.mark.parametrize("url", [
    "redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002/",
    "rediss+cluster://user:p%40ss@redis-a.internal:6380,[::1]:6381",
])
def test_a_cluster_ledger_is_taken_with_a_queue_elsewhere(url):
    for broker in ("amqp://guest:guest@rabbit:5672/%2F", "redis://queue:6379/0"):
        s = settings(NOTIFIER_REDIS_URL=url, NOTIFIER_BROKER_URL=broker)
        assert (s.redis_url, s.broker_url) == (url.rstrip("/"), broker)


def test_a_cluster_ledger_without_a_queue_names_the_fix():
    with pytest.raises(ConfigError) as caught:
        settings(NOTIFIER_REDIS_URL="redis+cluster://127.0.0.1:7000")
    assert str(caught.value).startswith("NOTIFIER_BROKER_URL: required with a Redis Cluster")
    assert "amqp://" in str(caught.value) and "redis://" in str(caught.value)


def test_a_malformed_cluster_url_names_the_variable_and_hides_the_password():
    with pytest.raises(ConfigError) as caught:
        settings(NOTIFIER_REDIS_URL="redis+cluster://u:hunter2@h1:7000,,h2:7001",
                 NOTIFIER_BROKER_URL="amqp://q")
    assert str(caught.value) == ("NOTIFIER_REDIS_URL: 'redis+cluster://u:***@h1:7000,,h2:7001'"
                                 ": an empty entry in the list of startup nodes")


def test_defaults_deliver_to_the_outbox_on_the_embedded_redis():
    s = settings()
    assert (s.redis_url, s.sms_backend, s.email_backend) == (None, "outbox", "outbox")
    assert s.broker_url is None
    for url in ("amqp://guest:guest@rabbit:5672/%2F", "redis://queue:6379/0"):
        assert settings(NOTIFIER_BROKER_URL=url).broker_url == url
    assert s.outbox_dir == Path("var/outbox")
    assert s.lease_s == 60
    assert s.future_skew_s == 300
    assert settings(NOTIFIER_FUTURE_SKEW_S="30").future_skew_s == 30
    assert (s.retention_days, s.retention_s) == (90, 90 * 86400)
    assert (s.history_days, s.history_s) == (365, 365 * 86400)
    assert settings(NOTIFIER_RETENTION_DAYS="30").retention_s == 30 * 86400
    assert settings(NOTIFIER_RETENTION_DAYS="3650", NOTIFIER_HISTORY_DAYS="3650"
                    ).retention_s == 3650 * 86400
    assert settings(NOTIFIER_HISTORY_DAYS="0").history_s == 0
    assert s.ledger_shards == 16 == DEFAULT_SHARDS
    assert MAX_LEDGER_SHARDS == MAX_SHARDS
    assert settings(NOTIFIER_LEDGER_SHARDS="1").ledger_shards == 1
    assert settings(NOTIFIER_LEDGER_SHARDS="1024").ledger_shards == 1024
    assert s.delivery_report_wait_s == 72 * 3600
    assert settings(NOTIFIER_DELIVERY_REPORT_WAIT_S="3600").delivery_report_wait_s == 3600


def readme_defaults() -> dict[str, str]:
    """Each variable of README's Configuration table whose default is one literal value (a
    number, a word), by name; `A` / `B` rows give one each. Defaults that are words about
    the value ("embedded", "one per core") are left out."""
    text = (PROJECT_ROOT / "README.md").read_text()
    table = text.split("## Configuration", 1)[1].split("\n\n", 3)
    rows = next(part for part in table if part.startswith("| variable"))
    found: dict[str, str] = {}
    for row in rows.splitlines()[2:]:
        names_cell, default_cell = row.split(" | ")[0].strip("| "), row.split(" | ")[1]
        names = re.findall(r"`([A-Z_]+)`", names_cell)
        values = [v.strip() for v in default_cell.split(" / ")]
        literals = [re.fullmatch(r"`([^`]+)`(?: \(no limit\))?", v) for v in values]
        if len(names) == len(values) and all(literals):
            found.update(zip(names, (m[1] for m in literals if m), strict=True))
    return found


def test_every_literal_default_in_the_readme_is_the_real_one():
    """Setting a variable to the default README gives it changes nothing (lease, skew,
    SMS and email rates, attempts and backoff, threads, web bounds, log level, …)."""
    documented = readme_defaults()
    assert {"NOTIFIER_LEASE_S", "NOTIFIER_SMS_RATE_PER_S", "NOTIFIER_EMAIL_RATE_PER_S",
            "NOTIFIER_MAX_ATTEMPTS", "NOTIFIER_RETRY_BASE_S", "NOTIFIER_WORKER_THREADS",
            "NOTIFIER_WEB_MAX_CONNECTIONS"} <= set(documented), documented
    for name, value in documented.items():
        assert settings(**{name: value}) == settings(), f"{name}: README says {value}"


def test_run_from_the_checkout_templates_and_schedules_are_its_top_level_ones(tmp_path):
    # The installed wheel's side is tests/end_to_end/test_wheel.py.
    assert in_checkout()
    assert settings().templates_dir == PROJECT_ROOT / "templates" == project_dir("templates")
    assert settings().schedules_dir == PROJECT_ROOT / "schedules"
    told = settings(NOTIFIER_TEMPLATES_DIR=str(tmp_path), NOTIFIER_SCHEDULES_DIR=str(tmp_path))
    assert told.templates_dir == told.schedules_dir == tmp_path
    # The links the wheel is built from lead to the same files.
    assert (PROJECT_ROOT / "notifier" / "_data" / "templates").resolve() == \
        PROJECT_ROOT / "templates"


def test_provider_credentials_choose_the_provider_unless_told_otherwise():
    creds = {**TWILIO, "SENDGRID_API_KEY": "SG.key", "NOTIFIER_PUBLIC_URL": PUBLIC}
    s = settings(**creds)
    assert (s.sms_backend, s.email_backend) == ("twilio", "sendgrid")
    s = settings(**creds, NOTIFIER_SMS_BACKEND="outbox", NOTIFIER_EMAIL_BACKEND="OUTBOX")
    assert (s.sms_backend, s.email_backend) == ("outbox", "outbox")
    assert reveal(s.twilio_auth_token) == "tok"  # kept: an outbox still verifies Twilio signatures


def test_secrets_never_show_in_repr():
    endpoint_secret = "whsec_" + base64.b64encode(b"e" * 32).decode()
    previous = "whsec_" + base64.b64encode(b"p" * 32).decode()
    s = settings(NOTIFIER_WEBHOOK_SECRET=SECRET, TWILIO_AUTH_TOKEN="tok-123",
                 SENDGRID_API_KEY="SG.very-secret", NOTIFIER_SMS_BACKEND="outbox",
                 NOTIFIER_API_TOKEN=TOKEN,
                 NOTIFIER_WEBHOOK_ENDPOINTS='[{"name": "ehr", "url": "https://ehr.example", '
                                            '"events": ["*"]}]',
                 NOTIFIER_WEBHOOK_SECRET_EHR=endpoint_secret,
                 NOTIFIER_WEBHOOK_SECRET_EHR_PREVIOUS=previous,
                 NOTIFIER_WEBHOOK_SECRET_EHR_PREVIOUS_UNTIL="2026-12-01T00:00:00Z")
    text = repr(s)
    for secret in (SECRET, "tok-123", "SG.very-secret", TOKEN, endpoint_secret, previous):
        assert secret not in text
    assert "'ehr'" in text  # the endpoints are there, their secrets starred
    assert s.require_webhook_secret() == SECRET
    assert reveal(s.api_token) == TOKEN


def test_secrets_never_show_in_str_or_f_strings_either():
    """A secret put in a log line or an error message by mistake shows as stars; its value
    is only had by asking for it (`reveal`, `get_secret_value`)."""
    s = settings(NOTIFIER_WEBHOOK_SECRET=SECRET, TWILIO_AUTH_TOKEN="tok-123",
                 SENDGRID_API_KEY="SG.very-secret", NOTIFIER_SMS_BACKEND="outbox",
                 NOTIFIER_API_TOKEN=TOKEN)
    held = (s.webhook_secret, s.twilio_auth_token, s.sendgrid_api_key, s.api_token)
    for secret, value in zip(held, (SECRET, "tok-123", "SG.very-secret", TOKEN), strict=True):
        assert isinstance(secret, SecretStr)
        for shown in (str(secret), f"{secret}", f"{secret!r}", str(s)):
            assert value not in shown
        assert reveal(secret) == secret.get_secret_value() == value
    assert reveal(None) is None


def test_the_api_token_is_optional():
    assert settings().api_token is None


@pytest.mark.parametrize("phone", ["+14155550123", "+442079460958"])
def test_phones_in_e164_form_are_kept(phone):
    s = settings(NOTIFIER_SUPPORT_PHONE=phone, TWILIO_FROM=phone)
    assert (s.support_phone, s.twilio_from) == (phone, phone)


@pytest.mark.parametrize("public_url", [PUBLIC, "https://notifier.example.org:8443/base",
                                        "http://203.0.113.7:8000"])
def test_the_twilio_backend_starts_with_a_reachable_public_url(public_url):
    s = settings(**TWILIO, NOTIFIER_PUBLIC_URL=public_url)
    assert (s.sms_backend, s.public_url) == ("twilio", public_url.rstrip("/"))


@pytest.mark.parametrize("public_url", [None, "http://localhost:8000", "https://LOCALHOST",
                                        "http://127.0.0.1:8000", "http://127.1.2.3",
                                        "http://[::1]:8000", "http://0.0.0.0:8000",
                                        "http://app.localhost"])
@pytest.mark.parametrize("backend", [{}, {"NOTIFIER_SMS_BACKEND": "twilio"}])
def test_the_twilio_backend_refuses_a_public_url_twilio_cannot_reach(public_url, backend):
    env = {**TWILIO, **backend}
    if public_url is not None:
        env["NOTIFIER_PUBLIC_URL"] = public_url
    with pytest.raises(ConfigError) as caught:
        settings(**env)
    message = str(caught.value)
    assert message.startswith("NOTIFIER_PUBLIC_URL: the twilio backend needs a URL"), message
    assert "\n" not in message


@pytest.mark.parametrize("stand_in", ["http://127.0.0.1:8765", "http://localhost:9000/twilio"])
@pytest.mark.parametrize("public_url", [None, "http://localhost:8000", "http://127.0.0.1:8000"])
def test_a_local_public_url_is_fine_when_twilio_is_a_local_stand_in(stand_in, public_url):
    """A stand-in on this machine (staging, tests) reaches a local URL; no real Twilio
    has to call it."""
    env = {**TWILIO, "NOTIFIER_TWILIO_BASE_URL": stand_in}
    if public_url is not None:
        env["NOTIFIER_PUBLIC_URL"] = public_url
    s = settings(**env)
    assert (s.sms_backend, s.twilio_base_url) == ("twilio", stand_in.rstrip("/"))
    assert s.public_url == (public_url or "http://localhost:8000")


def test_a_gateway_elsewhere_still_needs_a_reachable_public_url():
    """A base URL on another host may be a gateway to the real Twilio, which calls back."""
    with pytest.raises(ConfigError, match="^NOTIFIER_PUBLIC_URL: the twilio backend needs"):
        settings(**TWILIO, NOTIFIER_TWILIO_BASE_URL="https://twilio-gateway.example.org",
                 NOTIFIER_PUBLIC_URL="http://localhost:8000")


@pytest.mark.parametrize(("raw", "level"), [("", "INFO"), ("debug", "DEBUG"),
                                            (" Warning ", "WARNING"), ("ERROR", "ERROR")])
def test_the_log_level_is_a_logging_level_in_any_case(raw, level):
    assert settings(NOTIFIER_LOG_LEVEL=raw).log_level == level


def test_a_local_public_url_is_fine_for_the_outbox():
    s = settings(**TWILIO, NOTIFIER_SMS_BACKEND="outbox", NOTIFIER_PUBLIC_URL="http://localhost")
    assert (s.sms_backend, s.public_url) == ("outbox", "http://localhost")


def test_dotenv_is_read_and_the_environment_wins(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("NOTIFIER_PRACTICE_NAME=From Dotenv\nNOTIFIER_WORKER_THREADS=7\n")
    s = Settings.from_env({"NOTIFIER_WORKER_THREADS": "3"}, dotenv=dotenv)
    assert (s.practice_name, s.worker_threads) == ("From Dotenv", 3)


def test_the_log_level_is_read_from_dotenv_and_the_environment_wins(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("NOTIFIER_LOG_LEVEL=debug\n")
    assert Settings.from_env({}, dotenv=dotenv).log_level == "DEBUG"
    assert Settings.from_env({"NOTIFIER_LOG_LEVEL": "error"}, dotenv=dotenv).log_level == "ERROR"
    dotenv.write_text("NOTIFIER_LOG_LEVEL=verbose\n")
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({}, dotenv=dotenv)
    assert str(caught.value) == ("NOTIFIER_LOG_LEVEL: expected one of debug, info, warning, "
                                 "error, critical, got 'verbose'")


def test_a_dotenv_that_is_not_text_is_named_in_one_line(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_bytes(b"NOTIFIER_PRACTICE_NAME=Caf\xe9\n")  # Latin-1, not UTF-8
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({}, dotenv=dotenv)
    assert str(caught.value) == f"{dotenv}: not UTF-8 text (byte 0xe9 at offset 26)"


@pytest.mark.parametrize(("env", "names"), [
    ({"NOTIFIER_REDIS_URL": "localhost:6379"}, "NOTIFIER_REDIS_URL"),
    # A cluster ledger needs a queue elsewhere (dramatiq's Redis broker cannot use one).
    ({"NOTIFIER_REDIS_URL": "redis+cluster://127.0.0.1:7000,127.0.0.1:7001/"},
     "NOTIFIER_BROKER_URL"),
    ({"NOTIFIER_REDIS_URL": "redis+cluster://127.0.0.1:7000",
      "NOTIFIER_BROKER_URL": "redis+cluster://127.0.0.1:7000"}, "NOTIFIER_BROKER_URL"),
    ({"NOTIFIER_REDIS_URL": "redis+cluster://127.0.0.1", "NOTIFIER_BROKER_URL": "amqp://q"},
     "NOTIFIER_REDIS_URL"),
    ({"NOTIFIER_REDIS_URL": "redis+cluster://127.0.0.1:7000/0",
      "NOTIFIER_BROKER_URL": "amqp://q"}, "NOTIFIER_REDIS_URL"),
    ({"NOTIFIER_REDIS_URL": "cluster://127.0.0.1:7000", "NOTIFIER_BROKER_URL": "amqp://q"},
     "NOTIFIER_REDIS_URL"),
    ({"NOTIFIER_BROKER_URL": "http://rabbit:5672"}, "NOTIFIER_BROKER_URL"),
    ({"NOTIFIER_BROKER_URL": "rabbit:5672"}, "NOTIFIER_BROKER_URL"),
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
    ({"NOTIFIER_WORKER_PROCESSES": "0"}, "NOTIFIER_WORKER_PROCESSES"),
    ({"NOTIFIER_LEASE_S": "-5"}, "NOTIFIER_LEASE_S"),
    ({"NOTIFIER_FUTURE_SKEW_S": "0"}, "NOTIFIER_FUTURE_SKEW_S"),
    ({"NOTIFIER_FUTURE_SKEW_S": "5m"}, "NOTIFIER_FUTURE_SKEW_S"),
    # Shorter than the read API's 30-day window would empty it early.
    ({"NOTIFIER_RETENTION_DAYS": "29"}, "NOTIFIER_RETENTION_DAYS"),
    ({"NOTIFIER_RETENTION_DAYS": "90d"}, "NOTIFIER_RETENTION_DAYS"),
    ({"NOTIFIER_HISTORY_DAYS": "-1"}, "NOTIFIER_HISTORY_DAYS"),
    ({"NOTIFIER_LEDGER_SHARDS": "0"}, "NOTIFIER_LEDGER_SHARDS"),
    ({"NOTIFIER_LEDGER_SHARDS": "1025"}, "NOTIFIER_LEDGER_SHARDS"),
    ({"NOTIFIER_LEDGER_SHARDS": "sixteen"}, "NOTIFIER_LEDGER_SHARDS"),
    # Found by QA: past what Redis's EXPIRE takes, every plan with an ended notification
    # failed mid-transaction; ten years is the bound.
    ({"NOTIFIER_RETENTION_DAYS": "99999999999999"}, "NOTIFIER_RETENTION_DAYS"),
    ({"NOTIFIER_RETENTION_DAYS": "3651"}, "NOTIFIER_RETENTION_DAYS"),
    ({"NOTIFIER_HISTORY_DAYS": "3651"}, "NOTIFIER_HISTORY_DAYS"),
    ({"NOTIFIER_RETENTION_DAYS": "3_0"}, "NOTIFIER_RETENTION_DAYS"),
    ({"NOTIFIER_RETENTION_DAYS": "+30"}, "NOTIFIER_RETENTION_DAYS"),
    ({"NOTIFIER_RETENTION_DAYS": "\u0663\u0660"}, "NOTIFIER_RETENTION_DAYS"),  # Arabic-Indic 30
    ({"NOTIFIER_DELIVERY_REPORT_WAIT_S": str(7 * 86400 + 1)},
     "NOTIFIER_DELIVERY_REPORT_WAIT_S"),
    ({"NOTIFIER_DELIVERY_REPORT_WAIT_S": "0"}, "NOTIFIER_DELIVERY_REPORT_WAIT_S"),
    ({"NOTIFIER_DELIVERY_REPORT_WAIT_S": "3d"}, "NOTIFIER_DELIVERY_REPORT_WAIT_S"),
    ({"NOTIFIER_LOG_LEVEL": "verbose"}, "NOTIFIER_LOG_LEVEL"),
    ({"NOTIFIER_LOG_LEVEL": "10"}, "NOTIFIER_LOG_LEVEL"),
    ({"NOTIFIER_API_TOKEN": "t" * 23}, "NOTIFIER_API_TOKEN"),
    ({"NOTIFIER_API_TOKEN": "short"}, "NOTIFIER_API_TOKEN"),
    ({"NOTIFIER_API_TOKEN": "a token with spaces in it, long enough"}, "NOTIFIER_API_TOKEN"),
    ({"NOTIFIER_API_TOKEN": "ünïcode-" + "x" * 30}, "NOTIFIER_API_TOKEN"),
    ({"NOTIFIER_SUPPORT_PHONE": "555-0100"}, "NOTIFIER_SUPPORT_PHONE"),
    ({"NOTIFIER_SUPPORT_PHONE": "+1 415 555 0123"}, "NOTIFIER_SUPPORT_PHONE"),
    ({"NOTIFIER_SUPPORT_PHONE": "14155550123"}, "NOTIFIER_SUPPORT_PHONE"),
    ({"NOTIFIER_SUPPORT_PHONE": "+1415555012"}, "NOTIFIER_SUPPORT_PHONE"),
    ({"NOTIFIER_SUPPORT_PHONE": "+10005550123"}, "NOTIFIER_SUPPORT_PHONE"),
    ({"NOTIFIER_SUPPORT_PHONE": "support"}, "NOTIFIER_SUPPORT_PHONE"),
    ({"TWILIO_FROM": "415-555-0123"}, "TWILIO_FROM"),
    ({**TWILIO, "TWILIO_FROM": "+1 500 555 0006", "NOTIFIER_PUBLIC_URL": PUBLIC}, "TWILIO_FROM"),
    ({"NOTIFIER_SMS_BACKEND": "outbox", "TWILIO_FROM": "+1500555000"}, "TWILIO_FROM"),
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


def test_worker_processes_default_to_one_per_core_unless_set():
    assert settings().worker_processes is None  # `notifier worker` then runs one per core
    assert settings(NOTIFIER_WORKER_PROCESSES="3").worker_processes == 3


def test_fhir_sources_and_video_extensions_are_comma_separated_lists():
    assert (settings().fhir_sources, settings().fhir_video_extensions) == ((), ())
    told = settings(NOTIFIER_FHIR_SOURCES=" ehr-b, clinic2,,ehr-b ",
                    NOTIFIER_FHIR_VIDEO_EXTENSIONS="http://open.epic.com/x, urn:vendor:video")
    assert told.fhir_sources == ("ehr-b", "clinic2")
    assert told.fhir_video_extensions == ("http://open.epic.com/x", "urn:vendor:video")


@pytest.mark.parametrize(("name", "value"), [
    ("NOTIFIER_FHIR_SOURCES", "EHR-B"),  # upper case: FHIR types are; sources are not
    ("NOTIFIER_FHIR_SOURCES", "ehr/b"),
    ("NOTIFIER_FHIR_SOURCES", "notify"),
    ("NOTIFIER_FHIR_SOURCES", "x" * 33),
    ("NOTIFIER_FHIR_VIDEO_EXTENSIONS", "telehealth-url"),
])
def test_a_bad_fhir_source_or_extension_is_refused_naming_it(name, value):
    with pytest.raises(ConfigError, match=f"^{name}: "):
        settings(**{name: value})
