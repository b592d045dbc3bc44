"""Settings, built once from a mapping (the environment plus `.env`) and passed down.

Nothing here reads the environment at import time. A missing or malformed value raises
`ConfigError` with one line naming the variable; secrets are pydantic's `SecretStr`, which
shows `**********` in `repr`, `str` and f-strings (`reveal` gives the value to the SDK or
signature that needs it).

Why this is not `pydantic-settings` (weighed for issue 9; pydantic's `SecretStr` is taken
from it): what it would do for us, read variables and `.env` and coerce types, is the
small part of this module. The rest it would not remove, only move into hooks:
- `Settings.from_env(mapping, dotenv=path)` builds from a given mapping (the tests, the
  benches); a `BaseSettings` reads `os.environ`, so this needs a custom settings source, and
  `Settings()`, the defaults (`sms_budget`, tests), would start reading the environment too.
- Every message is ours, one line naming the variable, in the project's words ("expected a
  whole number, got 'many'"; the CLI tests pin some): each field would need a `mode="before"`
  validator raising our text, plus a layer turning `ValidationError` into `ConfigError`.
- Empty means unset, values are stripped, the log level and backends take any case: more
  `mode="before"` validators.
- The rules across variables (the backend chosen from the credentials present, the
  credentials a chosen backend requires, a public URL Twilio can reach) are a model
  validator either way.
Adding a setting here is a field and one line with `_int`/`_float`/`_bool`/`_url`/`_email`.
Revisit when settings come in groups (per-channel or per-tenant blocks, nested models) or
from sources other than variables (a secrets directory), which `pydantic-settings` has.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from pydantic import SecretStr

from notifier.errors import ConfigError
from notifier.ledger.redis_urls import is_cluster_url, parse_cluster_url

if TYPE_CHECKING:
    from notifier.webhooks.endpoints import Endpoint

#: The directory above the package: the repository root when this code runs from a source
#: checkout (an editable install, the tests), else the site-packages it is installed in.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@cache
def in_checkout() -> bool:
    """Whether this code runs from this project's source checkout (PROJECT_ROOT holds the
    pyproject.toml of `notifier`), rather than from an installed wheel."""
    try:
        project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    except (OSError, tomllib.TOMLDecodeError, KeyError):
        return False
    return isinstance(project, dict) and project.get("name") == "notifier"


def project_dir(name: str) -> Path:
    """A top-level directory of the project (`templates`, `schedules`, `examples`): the
    checkout's own when this code runs from one, else the copy the wheel ships under
    `notifier/_data/` (see `[tool.setuptools.package-data]` in pyproject.toml). Settings
    point elsewhere with NOTIFIER_TEMPLATES_DIR and NOTIFIER_SCHEDULES_DIR."""
    if in_checkout() and (PROJECT_ROOT / name).is_dir():
        return PROJECT_ROOT / name
    # A wheel is installed unpacked, so the package's files are a directory on disk.
    return Path(str(files("notifier") / "_data" / name))

Backend = Literal["twilio", "sendgrid", "outbox"]

#: What NOTIFIER_BROKER_URL may start with: RabbitMQ (`amqp`, `amqps` with TLS) or a Redis
#: (`redis`, `rediss`, `unix`), each as dramatiq's broker for it takes its URL.
BROKER_SCHEMES = {"amqp", "amqps", "redis", "rediss", "unix"}
#: What NOTIFIER_REDIS_URL may start with: one Redis (`redis`, `rediss`, `unix`), or a
#: Redis Cluster given by some of its nodes (`redis+cluster`, `rediss+cluster`:
#: `notifier.ledger.redis_urls`).
REDIS_SCHEMES = {"redis", "rediss", "unix"}
#: What NOTIFIER_LOG_LEVEL may be (any case).
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

#: Defaults of the delivery settings (NOTIFIER_MAX_ATTEMPTS, NOTIFIER_RETRY_BASE_S,
#: NOTIFIER_LEASE_S); defined here only.
#: A failing notification is tried this many times in all, backing off from the base.
MAX_ATTEMPTS = 8
RETRY_BASE_S = 5.0
#: How long a claimed notification is leased to a worker, in seconds: longer than the
#: slowest send (see PROVIDER_CALL_S); a lease that runs out means the worker died, or
#: stalled (a send then needs a lease with time left: `delivery.deliverer`).
LEASE_S = 60
#: Seconds each wait on a provider (Twilio, SendGrid) may take: connecting, and each read
#: of its answer (the SDKs' socket timeouts).
PROVIDER_TIMEOUT_S = 10.0
#: The longest one provider call takes, seconds: connecting, then its answer, each up to
#: PROVIDER_TIMEOUT_S (a DNS lookup, or an answer trickled byte by byte, is not bounded
#: by them).
PROVIDER_CALL_S = 2 * PROVIDER_TIMEOUT_S
#: How far ahead of this server's clock an event's `occurred_at` may be, in seconds (the
#: signature timestamp's tolerance): clocks disagree by seconds, never by hours, and an
#: event from the future would make every real later one about its subject stale.
FUTURE_SKEW_S = 5 * 60

#: The ledger's shards by default, and the most allowed: `notifier.ledger.shards`'s
#: DEFAULT_SHARDS and MAX_SHARDS (a test keeps them equal). Not imported from there: the
#: policy imports this module, and must import nothing of Redis's (`redis.crc`).
LEDGER_SHARDS = 16
MAX_LEDGER_SHARDS = 1024
#: Days a finished notification is kept whole (`NOTIFIER_RETENTION_DAYS`): 90, what it was
#: before it was a setting (GOV.UK Notify keeps 7 by default, a service may set its own).
RETENTION_DAYS = 90
#: The shortest retention allowed: the read API lists notifications due from 30 days ago.
MIN_RETENTION_DAYS = 30
#: Days a retired notification's content-free row is kept after the retention
#: (`NOTIFIER_HISTORY_DAYS`): a year, so its dedupe key still holds for replays and the
#: year's outcomes can be counted; 0 deletes it at the retention.
HISTORY_DAYS = 365
#: The longest retention or history (days): ten years, past any medical-record retention
#: rule a US practice keeps for this (HIPAA documentation, 6 years: 45 CFR 164.316(b)(2)),
#: and far inside what Redis's EXPIRE takes (a larger value would fail every plan holding
#: an ended notification, in the middle of its transaction).
MAX_KEEP_DAYS = 3650
#: The longest wait for a delivery report before the look-up (seconds): a week, far inside
#: the shortest retention (30 days from the due time: a send can come days after it), so a
#: send is looked up while its row still has its SID (found by QA: with 30 days and 30, the
#: row was retired first and the job recorded `unknown` unasked).
MAX_REPORT_WAIT_S = 7 * 86400
#: How long after a send through Twilio or SendGrid with no final delivery report the
#: repair job looks it up, in seconds: 72 h, when a report can no longer be expected.
#: SendGrid retries a deferred email for up to 72 hours before it gives up
#: (https://www.twilio.com/docs/sendgrid/ui/sending-email/deferrals), Twilio drops a
#: message still in its queue after at most 36,000 s (`ValidityPeriod`), and GOV.UK Notify
#: gives up waiting on its providers' reports after the same 3 days
#: (alphagov/notifications-api, `SENDING_NOTIFICATIONS_TIMEOUT_PERIOD = 259200`, run by
#: its nightly `timeout-sending-notifications` task).
DELIVERY_REPORT_WAIT_S = 72 * 3600

#: The read API token is compared as sent in `Authorization: Bearer`; shorter is guessable.
MIN_API_TOKEN_CHARS = 24


def reveal(secret: SecretStr | None) -> str | None:
    """The value of a secret setting, for the one call that needs it (an SDK, a signature).
    Secrets are pydantic's `SecretStr`: `str()`, `repr()` and f-strings show `**********`,
    so settings, and a secret put in a message by mistake, can be logged safely."""
    return None if secret is None else secret.get_secret_value()


def read_schedule_file(schedules_dir: Path, name: str, what: str) -> dict[str, Any]:
    """A TOML file of `schedules/`, or a ConfigError naming what is wrong with it."""
    path = schedules_dir / name
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"NOTIFIER_SCHEDULES_DIR: no {name} in {schedules_dir}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} file {path}: not valid TOML ({exc})") from None


def _webhook_secret(value: str, name: str) -> SecretStr:
    # Standard Webhooks secrets are `whsec_` + base64 of at least 24 random bytes.
    if not value.startswith("whsec_"):
        raise ConfigError(f"{name}: must start with 'whsec_' (Standard Webhooks secret)")
    try:
        key = base64.b64decode(value.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{name}: the part after 'whsec_' is not valid base64") from None
    if len(key) < 16:
        raise ConfigError(f"{name}: key too short ({len(key)} bytes, need at least 16)")
    return SecretStr(value)


def _api_token(value: str, name: str) -> SecretStr:
    if len(value) < MIN_API_TOKEN_CHARS:
        raise ConfigError(f"{name}: too short ({len(value)} characters, need at least "
                          f"{MIN_API_TOKEN_CHARS}; e.g. python -c 'import secrets; "
                          "print(secrets.token_urlsafe(32))')")
    if not (value.isascii() and value.isprintable()) or " " in value:
        raise ConfigError(f"{name}: only printable ASCII without spaces (it is sent in a header)")
    return SecretStr(value)


def _e164(env: Mapping[str, str], name: str) -> str | None:
    """A phone number in E.164 form, checked as events check theirs, or None when unset."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        number = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not phonenumbers.is_valid_number(number) or raw != \
            phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164):
        raise ConfigError(f"{name}: not a valid phone number in E.164 form "
                          f"(e.g. +14155550123), got {raw!r}")
    return raw


def _is_local(url: str) -> bool:
    """Whether `url` names this machine, which no outside service can call back."""
    host = (urlparse(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name}: expected true or false, got {raw!r}")


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1,
         maximum: int | None = None) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    # ASCII digits only: Python's int() also takes "3_0", "+30" and other scripts' digits,
    # which no one means in a setting.
    if not (raw.isascii() and raw.lstrip("-").isdigit()):
        raise ConfigError(f"{name}: expected a whole number, got {raw!r}")
    value = int(raw)
    if value < minimum:
        raise ConfigError(f"{name}: must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}: must be at most {maximum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected a number, got {raw!r}") from None
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"{name}: must be a finite number >= 0, got {raw!r}")
    return value


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    value = _float(env, name, default)
    if value == 0:
        raise ConfigError(f"{name}: must be more than 0")
    return value


def _zone(env: Mapping[str, str], name: str, default: str) -> str:
    """An IANA time zone name (`America/Chicago`), checked against the zone database."""
    raw = env.get(name, "").strip() or default
    try:
        ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # OSError: a directory of the zone database such as "America".
        raise ConfigError(f"{name}: not an IANA time zone such as America/Chicago, "
                          f"got {raw!r}") from None
    return raw


#: A FHIR source's name: a path segment, and the prefix of its records' ids.
FHIR_SOURCE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


def _csv(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list, blanks dropped, duplicates kept once, in order."""
    items = [item.strip() for item in env.get(name, "").split(",")]
    return tuple(dict.fromkeys(item for item in items if item))


def _fhir_sources(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    sources = _csv(env, name)
    for source in sources:
        if not FHIR_SOURCE.fullmatch(source) or source == "notify":
            raise ConfigError(f"{name}: {source!r} is not a source name (1-32 lower-case "
                              "letters, digits and '-', a letter or digit first; not "
                              "'notify')")
    return sources


def _fhir_extensions(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    urls = _csv(env, name)
    for url in urls:
        if not re.fullmatch(r"(https?|urn):\S+", url):
            raise ConfigError(f"{name}: {url!r} is not an extension URL (http, https or urn)")
    return urls


def _url(env: Mapping[str, str], name: str, default: str | None, schemes: set[str]) -> str | None:
    raw = env.get(name, "").strip() or default
    if raw is None:
        return None
    parsed = urlparse(raw)
    if parsed.scheme not in schemes or not (parsed.netloc or parsed.path):
        allowed = ", ".join(sorted(f"{s}://" for s in schemes))
        raise ConfigError(f"{name}: expected a URL starting with {allowed}, got {raw!r}")
    return raw.rstrip("/")


def _redis_url(env: Mapping[str, str], name: str) -> str | None:
    """NOTIFIER_REDIS_URL: one Redis, or a cluster URL whose form is checked here (a
    malformed list of nodes stops start-up, rather than the first connection)."""
    raw = env.get(name, "").strip()
    if not is_cluster_url(raw):
        try:
            return _url(env, name, None, REDIS_SCHEMES)
        except ConfigError:
            raise ConfigError(f"{name}: expected a URL starting with redis://, rediss://, "
                              "unix://, or a cluster's redis+cluster://host:port,host:port "
                              f"(rediss+cluster:// with TLS), got {raw!r}") from None
    try:
        parse_cluster_url(raw)
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    return raw.rstrip("/")


def _log_level(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if raw.upper() not in LOG_LEVELS:
        raise ConfigError(f"{name}: expected one of {', '.join(LOG_LEVELS).lower()}, "
                          f"got {raw!r}")
    return raw.upper()


def _email(env: Mapping[str, str], name: str, default: str | None) -> str | None:
    raw = env.get(name, "").strip() or default
    if raw is None:
        return None
    local, _, domain = raw.partition("@")
    if not local or "." not in domain or " " in raw:
        raise ConfigError(f"{name}: not an email address: {raw!r}")
    return raw


def _backend(
    env: Mapping[str, str], name: str, provider: Backend, has_credentials: bool
) -> Backend:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return provider if has_credentials else "outbox"
    if raw == "outbox":
        return "outbox"
    if raw != provider:
        raise ConfigError(f"{name}: expected {provider!r} or 'outbox', got {raw!r}")
    return provider


def _read_dotenv(path: Path) -> dict[str, str]:
    """The variables a `.env` file sets, or a ConfigError naming the file it cannot read."""
    from dotenv import dotenv_values

    try:
        values = dotenv_values(path)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
                          f"offset {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None
    return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class Settings:
    """Everything the processes need to know, validated."""

    #: The ledger's Redis: one server, or a cluster (`redis+cluster://host:port,...`, which
    #: needs `broker_url`); unset, the embedded one under `var/`.
    redis_url: str | None = None
    #: dramatiq's broker: `amqp://` (RabbitMQ) or `redis://` (a Redis of its own); unset,
    #: the ledger's Redis (`worker.actors.build_broker`, `worker.queueing`), which cannot
    #: be a cluster
    broker_url: str | None = None
    webhook_secret: SecretStr | None = None
    #: Bearer token of the read API; unset, the read API refuses every request.
    api_token: SecretStr | None = None
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from: str | None = None
    twilio_messaging_service_sid: str | None = None
    twilio_base_url: str | None = None
    twilio_edge: str | None = None
    twilio_region: str | None = None
    sendgrid_api_key: SecretStr | None = None
    sendgrid_api_host: str = "https://api.sendgrid.com"
    from_email: str = "reminders@practice.example"
    support_email: str = "support@practice.example"
    support_phone: str | None = None
    public_url: str = "http://localhost:8000"
    practice_name: str = "Riverbend Health"
    practice_phone: str = "+1 555 0100"
    practice_url: str = "https://portal.practice.example"
    schedules_dir: Path = field(default_factory=lambda: project_dir("schedules"))
    templates_dir: Path = field(default_factory=lambda: project_dir("templates"))
    outbox_dir: Path = Path("var/outbox")
    var_dir: Path = Path("var")
    sms_backend: Backend = "outbox"
    email_backend: Backend = "outbox"
    email_shows_medication: bool = False
    #: Threads per worker process. With a process per core, 2 drained a burst of 5,000
    #: (outbox) at a median 1,940/s on 2 busy cores, against 1,720/s for 4 and 1,270/s
    #: for one process of 8 (issue 12): more threads mostly wait on the interpreter lock.
    worker_threads: int = 2
    #: Worker processes `notifier worker` runs (None: one per core).
    worker_processes: int | None = None
    sendgrid_webhook_public_key: str | None = None
    #: SMS per second per sender, shared by every worker (1 for a US long code).
    sms_rate_per_s: float = 1.0
    #: Emails per second (0: no limit of our own).
    email_rate_per_s: float = 0.0
    #: A failing notification is tried this many times in all, backing off from the base.
    max_attempts: int = MAX_ATTEMPTS
    retry_base_s: float = RETRY_BASE_S
    #: How long a claimed notification is leased to a worker; longer than the slowest send.
    lease_s: int = LEASE_S
    #: How far ahead of our clock an event's `occurred_at` may be; further is a 422.
    future_skew_s: int = FUTURE_SKEW_S
    #: Days a finished notification is kept (from its due time), then removed by the clock.
    retention_days: int = RETENTION_DAYS
    #: Days a retired notification's content-free row is kept after the retention.
    history_days: int = HISTORY_DAYS
    #: The ledger's shard count (`notifier.ledger.shards`): part of the data, so fixed
    #: once the ledger is written (start-up refuses another).
    ledger_shards: int = LEDGER_SHARDS
    log_level: str = "INFO"
    #: A request's head and body must arrive within this many seconds (of the connection
    #: opening, or of the request's first byte); slower clients get 408 and are closed.
    web_read_timeout_s: float = 10.0
    #: Connections (and requests in progress) the web serves at once; above, 503.
    web_max_connections: int = 1000
    #: A send through a provider with no final delivery report this long after it (seconds)
    #: is looked up by the clock's repair job.
    delivery_report_wait_s: int = DELIVERY_REPORT_WAIT_S
    #: Receivers of delivery webhooks, sorted by name (`notifier.webhooks.endpoints`).
    webhook_endpoints: tuple[Endpoint, ...] = ()
    #: Signs the operator console's session cookies; unset, the console is not served.
    console_secret: SecretStr | None = None
    #: The bearer token a FHIR server sends to `POST /fhir/r4/notify` (its Subscription's
    #: `channel.header`); unset, only Standard Webhooks signatures are taken there.
    fhir_token: SecretStr | None = None
    #: The EHRs posting under their own path, `/fhir/r4/{source}/notify` (names of 1-32
    #: lower-case letters, digits and `-`), so two EHRs' `Patient/123` are two clients;
    #: `/fhir/r4/notify` is always served, as the default source.
    fhir_sources: tuple[str, ...] = ()
    #: Appointment extension URLs whose `valueUrl`/`valueUri`/`valueString` is the video
    #: link, looked at after the R5 `virtualService` backport extension (an EHR vendor's
    #: telehealth extension).
    fhir_video_extensions: tuple[str, ...] = ()
    #: The console's operators and their argon2id password hashes (`notifier.console.operators`).
    console_operators_file: Path = Path("var/console/operators.toml")
    #: A console session unused this long (seconds) is over: the operator signs in again.
    console_session_s: int = 1800
    #: Days the console's audit records are kept: six years, as HIPAA keeps access logs
    #: (45 CFR 164.316(b)(2)), leap days included.
    console_audit_days: int = 2192
    #: The IANA zone the console shows times in beside the client's own (the operators').
    console_timezone: str = "UTC"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, dotenv: Path | None = None) -> Settings:
        """Build settings from `env` (default: `os.environ`) over the values of `dotenv`."""
        merged: dict[str, str] = {}
        dotenv_path = dotenv if dotenv is not None else Path(".env")
        if dotenv_path.is_file():
            merged.update(_read_dotenv(dotenv_path))
        merged.update(os.environ if env is None else env)
        return cls._from_mapping(merged)

    @classmethod
    def _from_mapping(cls, env: Mapping[str, str]) -> Settings:
        def opt(name: str) -> str | None:
            return env.get(name, "").strip() or None

        secret, api_token = opt("NOTIFIER_WEBHOOK_SECRET"), opt("NOTIFIER_API_TOKEN")
        console_secret = opt("NOTIFIER_CONSOLE_SECRET")
        fhir_token = opt("NOTIFIER_FHIR_TOKEN")
        sid, token = opt("TWILIO_ACCOUNT_SID"), opt("TWILIO_AUTH_TOKEN")
        twilio_from = _e164(env, "TWILIO_FROM")
        service = opt("TWILIO_MESSAGING_SERVICE_SID")
        sendgrid_key = opt("SENDGRID_API_KEY")
        sms_backend = _backend(
            env, "NOTIFIER_SMS_BACKEND", "twilio", bool(sid and token and (twilio_from or service))
        )
        email_backend = _backend(env, "NOTIFIER_EMAIL_BACKEND", "sendgrid", bool(sendgrid_key))
        if sms_backend == "twilio":
            for name, value in (("TWILIO_ACCOUNT_SID", sid), ("TWILIO_AUTH_TOKEN", token)):
                if not value:
                    raise ConfigError(f"{name}: required when NOTIFIER_SMS_BACKEND is twilio")
            if not (twilio_from or service):
                raise ConfigError(
                    "TWILIO_FROM: set it or TWILIO_MESSAGING_SERVICE_SID for the twilio backend"
                )
        if email_backend == "sendgrid" and not sendgrid_key:
            raise ConfigError("SENDGRID_API_KEY: required when NOTIFIER_EMAIL_BACKEND is sendgrid")
        defaults = cls()
        public_url = _url(env, "NOTIFIER_PUBLIC_URL", None, {"http", "https"})
        twilio_base_url = _url(env, "NOTIFIER_TWILIO_BASE_URL", None, {"http", "https"})
        # Only a Twilio elsewhere has to call us back. A stand-in on this machine (staging,
        # tests) reaches a local URL; a base URL elsewhere may be a gateway to the real one.
        twilio_calls_back = twilio_base_url is None or not _is_local(twilio_base_url)
        if sms_backend == "twilio" and twilio_calls_back and (
                public_url is None or _is_local(public_url)):
            # Twilio could never call back: every delivery report and STOP would be lost.
            raise ConfigError(
                "NOTIFIER_PUBLIC_URL: the twilio backend needs a URL of this service that "
                f"Twilio can reach (got {public_url or 'none'}); it posts delivery reports and "
                "STOP replies there")
        var_dir = Path(opt("NOTIFIER_VAR_DIR") or defaults.var_dir)
        schedules_dir = Path(opt("NOTIFIER_SCHEDULES_DIR") or defaults.schedules_dir)
        redis_url = _redis_url(env, "NOTIFIER_REDIS_URL")
        broker_url = _url(env, "NOTIFIER_BROKER_URL", None, BROKER_SCHEMES)
        if is_cluster_url(redis_url) and broker_url is None:
            # dramatiq's Redis broker runs scripts over many keys of its own, which a
            # cluster refuses (docs/cluster.md, "The queue").
            raise ConfigError(
                "NOTIFIER_BROKER_URL: required with a Redis Cluster ledger (NOTIFIER_REDIS_URL "
                "is a cluster URL, and the queue cannot be on a cluster): set it to a "
                "RabbitMQ (amqp://...) or a Redis of the queue's own (redis://...)")
        # Imported here: the endpoints module takes `_webhook_secret` from this one.
        from notifier.webhooks.endpoints import load_endpoints

        return cls(
            redis_url=redis_url,
            broker_url=broker_url,
            webhook_secret=_webhook_secret(secret, "NOTIFIER_WEBHOOK_SECRET") if secret else None,
            api_token=_api_token(api_token, "NOTIFIER_API_TOKEN") if api_token else None,
            twilio_account_sid=sid,
            twilio_auth_token=SecretStr(token) if token else None,
            twilio_from=twilio_from,
            twilio_messaging_service_sid=service,
            twilio_base_url=twilio_base_url,
            twilio_edge=opt("TWILIO_EDGE"),
            twilio_region=opt("TWILIO_REGION"),
            sendgrid_api_key=SecretStr(sendgrid_key) if sendgrid_key else None,
            sendgrid_api_host=_url(
                env, "SENDGRID_API_HOST", defaults.sendgrid_api_host, {"http", "https"}
            )
            or defaults.sendgrid_api_host,
            from_email=_email(env, "NOTIFIER_FROM_EMAIL", defaults.from_email) or "",
            support_email=_email(env, "NOTIFIER_SUPPORT_EMAIL", defaults.support_email) or "",
            support_phone=_e164(env, "NOTIFIER_SUPPORT_PHONE"),
            public_url=public_url or defaults.public_url,
            practice_name=opt("NOTIFIER_PRACTICE_NAME") or defaults.practice_name,
            practice_phone=opt("NOTIFIER_PRACTICE_PHONE") or defaults.practice_phone,
            practice_url=opt("NOTIFIER_PRACTICE_URL") or defaults.practice_url,
            schedules_dir=schedules_dir,
            templates_dir=Path(opt("NOTIFIER_TEMPLATES_DIR") or defaults.templates_dir),
            outbox_dir=Path(opt("NOTIFIER_OUTBOX_DIR") or var_dir / "outbox"),
            var_dir=var_dir,
            sms_backend=sms_backend,
            email_backend=email_backend,
            email_shows_medication=_bool(env, "NOTIFIER_EMAIL_SHOWS_MEDICATION", False),
            worker_threads=_int(env, "NOTIFIER_WORKER_THREADS", defaults.worker_threads),
            worker_processes=_int(env, "NOTIFIER_WORKER_PROCESSES", 0) or None,
            lease_s=_int(env, "NOTIFIER_LEASE_S", defaults.lease_s),
            future_skew_s=_int(env, "NOTIFIER_FUTURE_SKEW_S", defaults.future_skew_s),
            retention_days=_int(env, "NOTIFIER_RETENTION_DAYS", defaults.retention_days,
                                minimum=MIN_RETENTION_DAYS, maximum=MAX_KEEP_DAYS),
            ledger_shards=_int(env, "NOTIFIER_LEDGER_SHARDS", defaults.ledger_shards,
                               maximum=MAX_LEDGER_SHARDS),
            history_days=_int(env, "NOTIFIER_HISTORY_DAYS", defaults.history_days, minimum=0,
                              maximum=MAX_KEEP_DAYS),
            log_level=_log_level(env, "NOTIFIER_LOG_LEVEL", defaults.log_level),
            sendgrid_webhook_public_key=opt("SENDGRID_WEBHOOK_PUBLIC_KEY"),
            max_attempts=_int(env, "NOTIFIER_MAX_ATTEMPTS", defaults.max_attempts),
            retry_base_s=_float(env, "NOTIFIER_RETRY_BASE_S", defaults.retry_base_s),
            sms_rate_per_s=_float(env, "NOTIFIER_SMS_RATE_PER_S", defaults.sms_rate_per_s),
            email_rate_per_s=_float(env, "NOTIFIER_EMAIL_RATE_PER_S", defaults.email_rate_per_s),
            web_read_timeout_s=_positive(env, "NOTIFIER_WEB_READ_TIMEOUT_S",
                                         defaults.web_read_timeout_s),
            web_max_connections=_int(env, "NOTIFIER_WEB_MAX_CONNECTIONS",
                                     defaults.web_max_connections),
            delivery_report_wait_s=_int(env, "NOTIFIER_DELIVERY_REPORT_WAIT_S",
                                        defaults.delivery_report_wait_s,
                                        maximum=MAX_REPORT_WAIT_S),
            webhook_endpoints=load_endpoints(env, schedules_dir),
            console_secret=(_api_token(console_secret, "NOTIFIER_CONSOLE_SECRET")
                            if console_secret else None),
            fhir_token=_api_token(fhir_token, "NOTIFIER_FHIR_TOKEN") if fhir_token else None,
            fhir_sources=_fhir_sources(env, "NOTIFIER_FHIR_SOURCES"),
            fhir_video_extensions=_fhir_extensions(env, "NOTIFIER_FHIR_VIDEO_EXTENSIONS"),
            console_operators_file=Path(opt("NOTIFIER_CONSOLE_OPERATORS_FILE")
                                        or var_dir / "console" / "operators.toml"),
            console_session_s=_int(env, "NOTIFIER_CONSOLE_SESSION_S",
                                   defaults.console_session_s, minimum=60, maximum=86400),
            console_audit_days=_int(env, "NOTIFIER_CONSOLE_AUDIT_DAYS",
                                    defaults.console_audit_days, minimum=1,
                                    maximum=MAX_KEEP_DAYS),
            console_timezone=_zone(env, "NOTIFIER_CONSOLE_TIMEZONE",
                                   defaults.console_timezone),
        )

    @property
    def retention_s(self) -> int:
        """`retention_days` in seconds."""
        return self.retention_days * 24 * 3600

    @property
    def history_s(self) -> int:
        """`history_days` in seconds."""
        return self.history_days * 24 * 3600

    def require_webhook_secret(self) -> str:
        """The value of NOTIFIER_WEBHOOK_SECRET, to sign or verify events with."""
        if self.webhook_secret is None:
            raise ConfigError("NOTIFIER_WEBHOOK_SECRET: required (a whsec_... secret)")
        return self.webhook_secret.get_secret_value()
