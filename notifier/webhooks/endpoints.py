"""Delivery-webhook endpoints as data, validated at start-up (no I/O beyond reading them).

Endpoints come from one of two sources, never both (which would win is not obvious):
- a TOML file of `[[endpoint]]` tables: `webhooks.toml` in the schedules directory
  (optional: absent, no endpoints), or the file NOTIFIER_WEBHOOKS_FILE names (which must
  exist); `schedules/webhooks.example.toml` documents every key;
- NOTIFIER_WEBHOOK_ENDPOINTS, a JSON array of the same tables, for containers.

Secrets are never in the file: endpoint `ehr-main` signs with NOTIFIER_WEBHOOK_SECRET_EHR_MAIN
(a `whsec_` secret, checked as NOTIFIER_WEBHOOK_SECRET is). To rotate it, the old secret
goes in NOTIFIER_WEBHOOK_SECRET_EHR_MAIN_PREVIOUS and the instant to stop using it in
..._PREVIOUS_UNTIL (RFC 3339, with an offset); until then each message carries both
signatures, space-separated, as Standard Webhooks allows, so the receiver can switch keys
at any time in between.

Every mistake raises `ConfigError` with one line naming the source, the endpoint and the
key or variable: `webhooks.toml: endpoint 'ehr': url: not an absolute http(s) URL ...`.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from notifier.config import _webhook_secret
from notifier.errors import ConfigError
from notifier.intake.json_body import repeated_keys
from notifier.webhooks.catalogue import expand

#: The file read from the schedules directory unless NOTIFIER_WEBHOOKS_FILE names another.
FILE_NAME = "webhooks.toml"
#: An endpoint's name: it is part of variable names, log lines and Redis keys.
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
#: Concurrent requests to one endpoint: a few keep a slow receiver from holding up its own
#: queue; more than 32 would be a flood to a receiver that is struggling.
MAX_IN_FLIGHT = (1, 32)
#: The whole request's timeout, seconds, connecting (at most 5 s of it) to the answer's
#: status (`dispatcher.attempt` cuts it there however the receiver trickles): a receiver
#: should answer at once and do its work later (Standard Webhooks advises a short timeout;
#: Stripe's is 10 s, Svix's 15 s).
TIMEOUT_S = (1.0, 30.0)
#: RFC 3339's date-time (section 5.6): seconds required, an offset required.
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")

_KEYS = {"name", "url", "events", "description", "max_in_flight", "timeout_s"}


@dataclass(frozen=True)
class Endpoint:
    """One receiver of delivery webhooks and the event types it wants. Secrets are
    `SecretStr`, shown as stars in `repr`; `signing_secrets` gives their values."""

    name: str
    url: str
    events: frozenset[str]
    secret: SecretStr
    previous_secret: SecretStr | None = None
    #: When the previous secret stops signing (aware); set exactly when it is.
    previous_until: datetime | None = None
    description: str = ""
    max_in_flight: int = 4
    timeout_s: float = 10.0

    def wants(self, event_type: str) -> bool:
        """Whether this endpoint subscribed to `event_type`."""
        return event_type in self.events

    def signing_secrets(self, now: datetime) -> tuple[str, ...]:
        """The `whsec_` secrets to sign a message sent at `now` (aware) with: the current
        one first, then the previous one while `now` is before `previous_until`."""
        current = self.secret.get_secret_value()
        if self.previous_secret is not None and self.previous_until is not None \
                and now < self.previous_until:
            return current, self.previous_secret.get_secret_value()
        return (current,)


def secret_variable(name: str) -> str:
    """The variable holding endpoint `name`'s secret: `ehr-main` -> ..._SECRET_EHR_MAIN."""
    return "NOTIFIER_WEBHOOK_SECRET_" + name.upper().replace("-", "_")


def load_endpoints(env: Mapping[str, str], schedules_dir: Path) -> tuple[Endpoint, ...]:
    """The endpoints configured in `env` (the settings' mapping) and the file, sorted by
    name; () when there are none. Raises ConfigError, one line, for any mistake."""
    inline = env.get("NOTIFIER_WEBHOOK_ENDPOINTS", "").strip()
    named = env.get("NOTIFIER_WEBHOOKS_FILE", "").strip()
    path = Path(named) if named else schedules_dir / FILE_NAME
    if inline:
        if named or path.is_file():
            raise ConfigError(f"NOTIFIER_WEBHOOK_ENDPOINTS: endpoints are also configured in "
                              f"{path}; keep one of the two")
        source, tables = "NOTIFIER_WEBHOOK_ENDPOINTS", _json_tables(inline)
    elif named or path.is_file():
        source, tables = str(path), _toml_tables(path)
    else:
        return ()
    fields = [_fields(source, number, table) for number, table in enumerate(tables, start=1)]
    # Before the secrets are read: with two endpoints reading one variable, a message
    # about that variable would blame the wrong one.
    _check_distinct(source, [f["name"] for f in fields])
    return tuple(sorted((Endpoint(**f, **_secrets(env, f["name"])) for f in fields),
                        key=lambda e: e.name))


def _json_tables(text: str) -> list[Any]:
    where = "NOTIFIER_WEBHOOK_ENDPOINTS"
    try:
        repeated = repeated_keys(text)  # also refuses NaN and Infinity
        loaded = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: not valid JSON ({_one_line(exc)})") from None
    if repeated:
        # json.loads keeps the last copy silently; which one was meant is not known.
        index, _, key = repeated[0].partition(".")
        at = f"endpoint {int(index) + 1}: {key}" if index.isdigit() and key else repeated[0]
        raise ConfigError(f"{where}: {at}: given more than once in its object")
    if not isinstance(loaded, list):
        raise ConfigError(f"{where}: expected a JSON array of endpoint objects")
    return loaded


def _toml_tables(path: Path) -> list[Any]:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"NOTIFIER_WEBHOOKS_FILE: no file {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it ({_one_line(exc)})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({_one_line(exc)})") from None
    unknown = sorted(set(data) - {"endpoint"})
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r} (endpoints are [[endpoint]] "
                          "tables)")
    tables = data.get("endpoint", [])
    if not isinstance(tables, list):
        raise ConfigError(f"{path}: endpoint: write each endpoint as an [[endpoint]] table")
    return tables


def _fields(source: str, number: int, table: Any) -> dict[str, Any]:
    """The fields of endpoint `number` (from 1) of `source` but its secrets, validated."""
    where = f"{source}: endpoint {number}"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table of keys (name, url, events, ...)")
    name = table.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(f"{where}: name: expected lower-case letters, digits, '-' and '_' "
                          f"(1 to 40, starting with a letter or digit), got {name!r}")
    where = f"{source}: endpoint {name!r}"
    unknown = sorted(set(table) - _KEYS, key=str)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: "
                          f"{', '.join(sorted(_KEYS))})")
    for required in ("url", "events"):
        if required not in table:
            raise ConfigError(f"{where}: {required}: required")
    description = table.get("description", "")
    if not isinstance(description, str) or not description.isprintable():
        raise ConfigError(f"{where}: description: expected one line of text")
    return {
        "name": name, "url": _url(where, table["url"]),
        "events": _events(where, table["events"]), "description": description,
        "max_in_flight": _whole(where, "max_in_flight", table.get("max_in_flight", 4),
                                MAX_IN_FLIGHT),
        "timeout_s": _seconds(where, "timeout_s", table.get("timeout_s", 10.0), TIMEOUT_S)}


def _url(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: url: expected a string, got {type(value).__name__}")
    if not (value.isascii() and value.isprintable()) or " " in value:
        # Encoded as it is to be sent: httpx would refuse it at the first message.
        raise ConfigError(f"{where}: url: only printable ASCII without spaces (percent-encode "
                          "the rest)")
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError for a port that is no port
    except ValueError:
        raise ConfigError(f"{where}: url: not a valid URL: {value!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: url: not an absolute http(s) URL with a host: {value!r}")
    if "@" in parts.netloc:
        # Not echoed: it may hold a password.
        raise ConfigError(f"{where}: url: no user or password in it (the requests are "
                          "signed; put nothing secret in the file)")
    if parts.fragment or value.endswith("#"):
        raise ConfigError(f"{where}: url: no #fragment (it is never sent): {value!r}")
    try:
        # What httpx does to the URL before each request (its parser, then IDNA for the
        # host): `256.1.1.1`, `[v1.x]`, an empty label (`crm..example`) or one over 63
        # characters would fail every message instead (found by QA).
        httpx.URL(value)
        parts.hostname.encode("idna")
    except (httpx.InvalidURL, UnicodeError):
        raise ConfigError(f"{where}: url: not a host name a request can be sent to: "
                          f"{parts.hostname!r}") from None
    return value


def _events(where: str, value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not value \
            or not all(isinstance(pattern, str) for pattern in value):
        raise ConfigError(f"{where}: events: expected a non-empty list of event types or "
                          "patterns (\"notification.*\", \"*\")")
    try:
        return expand(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: events: {exc}") from None


def _whole(where: str, key: str, value: Any, bounds: tuple[int, int]) -> int:
    # bool is an int to Python; `true` is no count.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{where}: {key}: expected a whole number, got {value!r}")
    if not bounds[0] <= value <= bounds[1]:
        raise ConfigError(f"{where}: {key}: must be {bounds[0]} to {bounds[1]}, got {value}")
    return value


def _seconds(where: str, key: str, value: Any, bounds: tuple[float, float]) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ConfigError(f"{where}: {key}: expected a number of seconds, got {value!r}")
    if not (math.isfinite(value) and bounds[0] <= value <= bounds[1]):
        raise ConfigError(f"{where}: {key}: must be {bounds[0]:g} to {bounds[1]:g} seconds, "
                          f"got {value!r}")
    return float(value)


def _secrets(env: Mapping[str, str], name: str) -> dict[str, Any]:
    """The endpoint's secret, and its previous one with the instant it stops signing."""
    variable = secret_variable(name)
    current = env.get(variable, "").strip()
    if not current:
        raise ConfigError(f"{variable}: required for webhook endpoint {name!r} (a whsec_... "
                          "secret, never written in the file)")
    previous = env.get(f"{variable}_PREVIOUS", "").strip()
    until = env.get(f"{variable}_PREVIOUS_UNTIL", "").strip()
    if bool(previous) != bool(until):
        given, missing = (("_PREVIOUS", "_PREVIOUS_UNTIL") if previous
                          else ("_PREVIOUS_UNTIL", "_PREVIOUS"))
        raise ConfigError(f"{variable}{missing}: required with {variable}{given} (endpoint "
                          f"{name!r}: the old secret and when to stop signing with it)")
    found: dict[str, Any] = {"secret": _webhook_secret(current, variable)}
    if previous:
        found["previous_secret"] = _webhook_secret(previous, f"{variable}_PREVIOUS")
        found["previous_until"] = _instant(until, f"{variable}_PREVIOUS_UNTIL")
    return found


def _instant(value: str, variable: str) -> datetime:
    """An RFC 3339 date-time with its offset, in UTC."""
    if not RFC3339.fullmatch(value):
        raise ConfigError(f"{variable}: expected an RFC 3339 instant with its offset, such "
                          f"as 2026-12-01T00:00:00Z, got {value!r}")
    try:
        return datetime.fromisoformat(value.upper()).astimezone(UTC)
    except ValueError as exc:
        raise ConfigError(f"{variable}: not a real instant ({exc}): {value!r}") from None


def _check_distinct(source: str, names: list[str]) -> None:
    """Names unique, and no two endpoints reading one variable (`a-b` and `a_b`; `x` and
    `x_previous`, whose secret would be `x`'s previous one)."""
    readers: dict[str, str] = {}
    for name in names:
        variable = secret_variable(name)
        for read in (variable, f"{variable}_PREVIOUS", f"{variable}_PREVIOUS_UNTIL"):
            other = readers.get(read)
            if other == name:
                raise ConfigError(f"{source}: endpoint {name!r}: name: given to more than "
                                  "one endpoint")
            if other is not None:
                raise ConfigError(f"{source}: endpoint {name!r}: name: reads {read} as "
                                  f"endpoint {other!r} does; rename one")
            readers[read] = name


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
