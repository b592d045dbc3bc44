"""Delivery-webhook endpoints as data: what a good file or variable gives, each mistake
stopping start-up with one line naming the endpoint and the key or variable, and the
`notifier` command refusing a bad file and listing a good one."""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from notifier.cli.webhooks import endpoint_lines
from notifier.config import PROJECT_ROOT, Settings
from notifier.errors import ConfigError
from notifier.webhooks.catalogue import EVENT_TYPES
from notifier.webhooks.endpoints import Endpoint, load_endpoints, secret_variable

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
OLD = "whsec_" + base64.b64encode(b"o" * 24).decode()
EHR = '[[endpoint]]\nname = "ehr"\nurl = "https://ehr.example/hooks"\nevents = ["*"]\n'
NOTIFICATIONS = sorted(t for t in EVENT_TYPES if t.startswith("notification."))


def load(directory: Path, toml: str | None = None, **env: str) -> tuple[Endpoint, ...]:
    """The endpoints of `toml` written as webhooks.toml in `directory` (none: no file)."""
    if toml is not None:
        (directory / "webhooks.toml").write_text(toml)
    return load_endpoints(env, directory)


def test_the_example_file_documents_every_key_and_parses():
    example = PROJECT_ROOT / "schedules" / "webhooks.example.toml"
    (ehr,) = load_endpoints({"NOTIFIER_WEBHOOKS_FILE": str(example),
                             "NOTIFIER_WEBHOOK_SECRET_EHR": SECRET}, Path("/nonexistent"))
    assert ehr.events == {*NOTIFICATIONS, "client.opted_out"}
    text = example.read_text()
    for key in ("name", "url", "events", "description", "max_in_flight", "timeout_s"):
        assert re.search(rf"^{key} = ", text, re.MULTILINE), key
    # Only the example is shipped: without a webhooks.toml there are no endpoints.
    assert not (PROJECT_ROOT / "schedules" / "webhooks.toml").exists()


def test_no_file_and_no_variable_is_no_endpoints(tmp_path):
    assert load(tmp_path) == ()
    assert load(tmp_path, "") == ()
    assert load(tmp_path, "endpoint = []\n") == ()
    assert Settings.from_env({"NOTIFIER_SCHEDULES_DIR": str(tmp_path)},
                             dotenv=Path("/nonexistent")).webhook_endpoints == ()


def test_a_minimal_endpoint_takes_the_defaults(tmp_path):
    (ehr,) = load(tmp_path, EHR, NOTIFIER_WEBHOOK_SECRET_EHR=SECRET)
    assert (ehr.name, ehr.url, ehr.events) == ("ehr", "https://ehr.example/hooks",
                                               frozenset(EVENT_TYPES))
    assert (ehr.description, ehr.max_in_flight, ehr.timeout_s) == ("", 4, 10.0)
    assert (ehr.previous_secret, ehr.previous_until) == (None, None)
    assert ehr.signing_secrets(datetime.now(UTC)) == (SECRET,)
    assert SECRET not in repr(ehr)


def test_endpoints_come_sorted_by_name_with_what_they_want(tmp_path):
    toml = ('[[endpoint]]\nname = "zz-billing"\nurl = "http://127.0.0.1:8081/in?x=1"\n'
            'events = ["client.opted_out", "client.opted_in"]\nmax_in_flight = 32\n'
            'timeout_s = 2.5\n'
            '[[endpoint]]\nname = "a_ehr"\nurl = "https://[::1]:8443/"\n'
            'events = ["notification.*"]\nmax_in_flight = 1\ntimeout_s = 30\n'
            'description = "the EHR — its status feed"\n')
    billing_secret = "whsec_" + base64.b64encode(b"b" * 16).decode()
    found = load(tmp_path, toml, NOTIFIER_WEBHOOK_SECRET_ZZ_BILLING=billing_secret,
                 NOTIFIER_WEBHOOK_SECRET_A_EHR=SECRET)
    assert [e.name for e in found] == ["a_ehr", "zz-billing"]
    ehr, billing = found
    assert ehr.events == set(NOTIFICATIONS) and ehr.wants("notification.sent")
    assert not ehr.wants("client.opted_out") and billing.wants("client.opted_out")
    assert (ehr.max_in_flight, ehr.timeout_s, billing.max_in_flight, billing.timeout_s) == \
        (1, 30.0, 32, 2.5)
    assert isinstance(ehr.timeout_s, float)
    assert billing.signing_secrets(datetime.now(UTC)) == (billing_secret,)


def test_the_variable_holds_the_same_tables_as_json(tmp_path):
    tables = [{"name": "ehr", "url": "https://ehr.example/hooks", "events": ["*"],
               "timeout_s": 5}]
    (ehr,) = load(tmp_path, NOTIFIER_WEBHOOK_ENDPOINTS=json.dumps(tables),
                  NOTIFIER_WEBHOOK_SECRET_EHR=SECRET)
    assert (ehr.name, ehr.timeout_s) == ("ehr", 5.0)
    elsewhere = _written(tmp_path / "elsewhere.toml", EHR)
    (named,) = load(tmp_path, None, NOTIFIER_WEBHOOKS_FILE=str(elsewhere),
                    NOTIFIER_WEBHOOK_SECRET_EHR=SECRET)
    assert named.url == "https://ehr.example/hooks"


def _written(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_rotated_secret_signs_too_until_its_instant(tmp_path):
    (ehr,) = load(tmp_path, EHR, NOTIFIER_WEBHOOK_SECRET_EHR=SECRET,
                  NOTIFIER_WEBHOOK_SECRET_EHR_PREVIOUS=OLD,
                  NOTIFIER_WEBHOOK_SECRET_EHR_PREVIOUS_UNTIL="2026-12-01T01:00:00+01:00")
    until = datetime(2026, 12, 1, tzinfo=UTC)
    assert ehr.previous_until == until and ehr.previous_until.tzinfo is UTC
    assert ehr.signing_secrets(until - timedelta(microseconds=1)) == (SECRET, OLD)
    assert ehr.signing_secrets(until) == (SECRET,)
    assert ehr.signing_secrets(until + timedelta(days=1)) == (SECRET,)
    assert OLD not in repr(ehr)
    (lower,) = load(tmp_path, EHR, NOTIFIER_WEBHOOK_SECRET_EHR=SECRET,
                    NOTIFIER_WEBHOOK_SECRET_EHR_PREVIOUS=OLD,
                    NOTIFIER_WEBHOOK_SECRET_EHR_PREVIOUS_UNTIL="2026-12-01t00:00:00.5z")
    assert lower.previous_until == until + timedelta(milliseconds=500)


def test_settings_carry_the_endpoints_and_never_show_their_secrets(tmp_path):
    (tmp_path / "webhooks.toml").write_text(EHR)
    s = Settings.from_env({"NOTIFIER_SCHEDULES_DIR": str(tmp_path),
                           "NOTIFIER_WEBHOOK_SECRET_EHR": SECRET,
                           "NOTIFIER_WEBHOOK_SECRET_EHR_PREVIOUS": OLD,
                           "NOTIFIER_WEBHOOK_SECRET_EHR_PREVIOUS_UNTIL": "2026-12-01T00:00:00Z"},
                          dotenv=Path("/nonexistent"))
    assert [e.name for e in s.webhook_endpoints] == ["ehr"]
    for shown in (repr(s), str(s), f"{s}", repr(s.webhook_endpoints)):
        assert SECRET not in shown and OLD not in shown


#: (webhooks.toml, NOTIFIER_WEBHOOK_ENDPOINTS, other variables, how the message starts);
#: `{file}` stands for the path of webhooks.toml. The secret of `ehr` is set unless the
#: case sets it.
BAD: list[tuple[str | None, str | None, dict[str, str], str]] = [
    (EHR.replace("https://", "ftp://"), None, {},
     "{file}: endpoint 'ehr': url: not an absolute http(s) URL"),
    (EHR.replace("https://ehr.example", "https://"), None, {},
     "{file}: endpoint 'ehr': url: not an absolute http(s) URL"),
    (EHR.replace("https://ehr.example/hooks", "/hooks"), None, {},
     "{file}: endpoint 'ehr': url: not an absolute http(s) URL"),
    # a host no request can name (an empty label, one over 63 characters): found by QA
    (EHR.replace("ehr.example", "ehr..example"), None, {},
     "{file}: endpoint 'ehr': url: not a host name a request can be sent to"),
    (EHR.replace("ehr.example", "a" * 64 + ".example"), None, {},
     "{file}: endpoint 'ehr': url: not a host name a request can be sent to"),
    # ... or one httpx's parser refuses (found by the second QA pass)
    (EHR.replace("ehr.example", "256.1.1.1"), None, {},
     "{file}: endpoint 'ehr': url: not a host name a request can be sent to"),
    (EHR.replace("ehr.example", "01.02.03.04"), None, {},
     "{file}: endpoint 'ehr': url: not a host name a request can be sent to"),
    (EHR.replace("ehr.example", "[v1.x]"), None, {},
     "{file}: endpoint 'ehr': url: not a host name a request can be sent to"),
    (EHR.replace("ehr.example", "user:hunter2@ehr.example"), None, {},
     "{file}: endpoint 'ehr': url: no user or password in it"),
    (EHR.replace("ehr.example", "ehr.example:99999"), None, {},
     "{file}: endpoint 'ehr': url: not a valid URL"),
    (EHR.replace("/hooks", "/hooks#top"), None, {}, "{file}: endpoint 'ehr': url: no #fragment"),
    (EHR.replace("/hooks", "/my hooks"), None, {}, "{file}: endpoint 'ehr': url: only printable"),
    (EHR.replace('"https://ehr.example/hooks"', "42"), None, {},
     "{file}: endpoint 'ehr': url: expected a string"),
    (EHR.replace('["*"]', "[]"), None, {}, "{file}: endpoint 'ehr': events: expected a non-empty"),
    (EHR.replace('["*"]', '"*"'), None, {}, "{file}: endpoint 'ehr': events: expected a non-empty"),
    (EHR.replace('["*"]', '["notification.sent", "notification.read"]'), None, {},
     "{file}: endpoint 'ehr': events: unknown event type 'notification.read'"),
    (EHR + 'secret = "whsec_x"\n', None, {}, "{file}: endpoint 'ehr': unknown key 'secret'"),
    (EHR + "max_in_flight = true\n", None, {},
     "{file}: endpoint 'ehr': max_in_flight: expected a whole number, got True"),
    (EHR + "max_in_flight = 4.0\n", None, {},
     "{file}: endpoint 'ehr': max_in_flight: expected a whole number"),
    (EHR + "max_in_flight = 0\n", None, {},
     "{file}: endpoint 'ehr': max_in_flight: must be 1 to 32"),
    (EHR + "max_in_flight = 33\n", None, {},
     "{file}: endpoint 'ehr': max_in_flight: must be 1 to 32"),
    (EHR + 'timeout_s = "10"\n', None, {},
     "{file}: endpoint 'ehr': timeout_s: expected a number of seconds"),
    (EHR + "timeout_s = false\n", None, {},
     "{file}: endpoint 'ehr': timeout_s: expected a number of seconds"),
    (EHR + "timeout_s = 0.5\n", None, {}, "{file}: endpoint 'ehr': timeout_s: must be 1 to 30"),
    (EHR + "timeout_s = 31\n", None, {}, "{file}: endpoint 'ehr': timeout_s: must be 1 to 30"),
    (EHR + "timeout_s = nan\n", None, {}, "{file}: endpoint 'ehr': timeout_s: must be 1 to 30"),
    (EHR + "timeout_s = inf\n", None, {}, "{file}: endpoint 'ehr': timeout_s: must be 1 to 30"),
    (EHR + 'description = "two\\nlines"\n', None, {},
     "{file}: endpoint 'ehr': description: expected one line"),
    (EHR.replace('"ehr"', '"EHR"'), None, {}, "{file}: endpoint 1: name: expected lower-case"),
    (EHR.replace('"ehr"', '"-ehr"'), None, {}, "{file}: endpoint 1: name: expected lower-case"),
    (EHR.replace('"ehr"', '"' + "e" * 41 + '"'), None, {}, "{file}: endpoint 1: name: expected"),
    (EHR.replace('name = "ehr"\n', ""), None, {}, "{file}: endpoint 1: name: expected lower-case"),
    (EHR.replace('url = "https://ehr.example/hooks"\n', ""), None, {},
     "{file}: endpoint 'ehr': url: required"),
    (EHR.replace('events = ["*"]\n', ""), None, {}, "{file}: endpoint 'ehr': events: required"),
    (EHR + EHR, None, {}, "{file}: endpoint 'ehr': name: given to more than one endpoint"),
    (EHR.replace("ehr", "a-b") + EHR.replace("ehr", "a_b"),
     None, {"NOTIFIER_WEBHOOK_SECRET_A_B": SECRET},
     "{file}: endpoint 'a_b': name: reads NOTIFIER_WEBHOOK_SECRET_A_B as endpoint 'a-b' does"),
    (EHR + EHR.replace('"ehr"', '"ehr_previous"'), None,
     {"NOTIFIER_WEBHOOK_SECRET_EHR_PREVIOUS": SECRET},
     "{file}: endpoint 'ehr_previous': name: reads NOTIFIER_WEBHOOK_SECRET_EHR_PREVIOUS as "
     "endpoint 'ehr' does"),
    (EHR, None, {"NOTIFIER_WEBHOOK_SECRET_EHR": ""},
     "NOTIFIER_WEBHOOK_SECRET_EHR: required for webhook endpoint 'ehr'"),
    (EHR, None, {"NOTIFIER_WEBHOOK_SECRET_EHR": SECRET.removeprefix("whsec_")},
     "NOTIFIER_WEBHOOK_SECRET_EHR: must start with 'whsec_'"),
    (EHR, None, {"NOTIFIER_WEBHOOK_SECRET_EHR": "whsec_not*base64"},
     "NOTIFIER_WEBHOOK_SECRET_EHR: the part after 'whsec_' is not valid base64"),
    (EHR, None, {"NOTIFIER_WEBHOOK_SECRET_EHR": "whsec_" + base64.b64encode(b"k" * 8).decode()},
     "NOTIFIER_WEBHOOK_SECRET_EHR: key too short (8 bytes"),
    (EHR, None, {"NOTIFIER_WEBHOOK_SECRET_EHR_PREVIOUS": OLD},
     "NOTIFIER_WEBHOOK_SECRET_EHR_PREVIOUS_UNTIL: required with "
     "NOTIFIER_WEBHOOK_SECRET_EHR_PREVIOUS (endpoint 'ehr'"),
    (EHR, None, {"NOTIFIER_WEBHOOK_SECRET_EHR_PREVIOUS_UNTIL": "2026-12-01T00:00:00Z"},
     "NOTIFIER_WEBHOOK_SECRET_EHR_PREVIOUS: required with "
     "NOTIFIER_WEBHOOK_SECRET_EHR_PREVIOUS_UNTIL (endpoint 'ehr'"),
    (EHR, None, {"NOTIFIER_WEBHOOK_SECRET_EHR_PREVIOUS": "whsec_",
                 "NOTIFIER_WEBHOOK_SECRET_EHR_PREVIOUS_UNTIL": "2026-12-01T00:00:00Z"},
     "NOTIFIER_WEBHOOK_SECRET_EHR_PREVIOUS: key too short (0 bytes"),
    *[(EHR, None, {"NOTIFIER_WEBHOOK_SECRET_EHR_PREVIOUS": OLD,
                   "NOTIFIER_WEBHOOK_SECRET_EHR_PREVIOUS_UNTIL": until},
       "NOTIFIER_WEBHOOK_SECRET_EHR_PREVIOUS_UNTIL: expected an RFC 3339 instant")
      for until in ("2026-12-01", "2026-12-01T00:00:00", "2026-12-01T00:00Z", "tomorrow",
                    "1764547200", "2026-12-01T00:00:00+0100")],
    (EHR, None, {"NOTIFIER_WEBHOOK_SECRET_EHR_PREVIOUS": OLD,
                 "NOTIFIER_WEBHOOK_SECRET_EHR_PREVIOUS_UNTIL": "2026-13-01T00:00:00Z"},
     "NOTIFIER_WEBHOOK_SECRET_EHR_PREVIOUS_UNTIL: not a real instant"),
    ("endpoint = 1\n[oops\n", None, {}, "{file}: not valid TOML ("),
    ('endpoints = []\n', None, {}, "{file}: unknown key 'endpoints'"),
    (EHR.replace("[[endpoint]]", "[endpoint]"), None, {},
     "{file}: endpoint: write each endpoint as an [[endpoint]] table"),
    (EHR, '[{"name": "ehr", "url": "https://x.example", "events": ["*"]}]', {},
     "NOTIFIER_WEBHOOK_ENDPOINTS: endpoints are also configured in {file}; keep one"),
    (None, "[{]", {}, "NOTIFIER_WEBHOOK_ENDPOINTS: not valid JSON ("),
    (None, '[{"name": "ehr", "timeout_s": NaN}]', {},
     "NOTIFIER_WEBHOOK_ENDPOINTS: not valid JSON (NaN is not a JSON value"),
    (None, '{"name": "ehr"}', {}, "NOTIFIER_WEBHOOK_ENDPOINTS: expected a JSON array"),
    (None, '["ehr"]', {}, "NOTIFIER_WEBHOOK_ENDPOINTS: endpoint 1: expected a table"),
    (None, '[{"name": "ehr", "url": "https://a.example", "url": "https://b.example", '
           '"events": ["*"]}]', {},
     "NOTIFIER_WEBHOOK_ENDPOINTS: endpoint 1: url: given more than once"),
    (None, '[{"name": "ehr", "url": "https://a.example", "events": ["*"], '
           '"max_in_flight": 1e400}]', {},
     "NOTIFIER_WEBHOOK_ENDPOINTS: endpoint 'ehr': max_in_flight: expected a whole number"),
]


@pytest.mark.parametrize(("toml", "inline", "env", "starts"), BAD)
def test_a_mistake_stops_start_up_with_one_line_naming_it(tmp_path, toml, inline, env, starts):
    given_env = {"NOTIFIER_WEBHOOK_SECRET_EHR": SECRET, **env}
    if inline is not None:
        given_env["NOTIFIER_WEBHOOK_ENDPOINTS"] = inline
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, toml, **given_env)
    message = str(caught.value)
    assert message.startswith(starts.format(file=tmp_path / "webhooks.toml")), message
    assert "\n" not in message
    assert "hunter2" not in message and SECRET not in message and OLD not in message


def test_a_named_file_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="^NOTIFIER_WEBHOOKS_FILE: no file "):
        load(tmp_path, NOTIFIER_WEBHOOKS_FILE=str(tmp_path / "missing.toml"))


# --- fuzzing: random mutations of a valid configuration --------------------------------

KEYS = ("name", "url", "events", "description", "max_in_flight", "timeout_s")
texts = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=12)
values = st.one_of(st.booleans(), st.integers(-2**63, 2**63 - 1),
                   st.floats(allow_nan=False, allow_infinity=False), texts,
                   st.lists(st.one_of(texts, st.integers(-3, 3)), max_size=3))
urls = st.one_of(st.sampled_from([
    "ftp://h.example/", "http://", "https://u:p@h.example/", "https://@h.example/",
    "http://h.example:99999/", "//h.example/p", "h.example/p", "http://h.example/#f",
    "http://h.example /", "https://ok.example/x?y=1", "http://127.0.0.1:8080/h",
    "HTTP://UPPER.example/", "https://[::1]/", "https://[zz]/", "http://h.example:0/",
    "javascript:alert(1)", "https://ok.example/\u00e9"]), texts)
secrets_ = st.one_of(st.sampled_from([
    "", "   ", SECRET, OLD, "whsec_", "whsec_!!!!", "whsec_" + base64.b64encode(b"x" * 15).decode(),
    SECRET.removeprefix("whsec_"), "whsec_" + base64.b64encode(b"x" * 16).decode() + "="]),
    texts)
instants = st.one_of(st.sampled_from([
    "", "2026-12-01T00:00:00Z", "2026-12-01T00:00:00+05:30", "2026-12-01", "2026-02-30T00:00:00Z",
    "2026-12-01T24:00:00Z", "2026-12-01T00:00:00", "2026-12-01T00:00:00+25:00"]), texts)
patterns = st.one_of(st.sampled_from(["*", "notification.*", "client.*", "nope.*",
                                      "notification.sent", "notification.read", "", "."]),
                     texts)


def good_tables(count: int) -> tuple[list[dict[str, Any]], dict[str, str]]:
    tables = [{"name": f"ep-{i}", "url": f"https://ep{i}.example/hooks",
               "events": ["notification.*"], "description": f"endpoint {i}",
               "max_in_flight": 4, "timeout_s": 10} for i in range(count)]
    return tables, {secret_variable(t["name"]): SECRET for t in tables}


@st.composite
def mutated(draw: st.DrawFn) -> tuple[list[dict[str, Any]], dict[str, str], set[int | str]]:
    """A valid configuration, then a few random mutations; the indices of the endpoints
    mutated and the secrets' variables set (a mistake must be reported against one)."""
    tables, env = good_tables(draw(st.integers(1, 3)))
    touched: set[int | str] = set()
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(tables) - 1))
        table = tables[i]
        variable = secret_variable(table["name"]) if isinstance(table.get("name"), str) \
            else None
        kind = draw(st.sampled_from(["url", "secret", "previous", "events", "unknown",
                                     "type", "duplicate", "range", "missing", "name"]))
        touched.add(i)
        if kind == "url":
            table["url"] = draw(urls)
        elif kind == "secret" and variable:
            env[variable] = draw(secrets_)
            touched.add(variable)
        elif kind == "previous" and variable:
            if draw(st.booleans()):
                env[f"{variable}_PREVIOUS"] = draw(secrets_)
            if draw(st.booleans()):
                env[f"{variable}_PREVIOUS_UNTIL"] = draw(instants)
            touched.add(variable)
        elif kind == "events":
            table["events"] = draw(st.one_of(st.lists(patterns, max_size=3), values))
        elif kind == "unknown":
            table[draw(texts.filter(lambda k: k not in KEYS))] = draw(values)
        elif kind == "type":
            table[draw(st.sampled_from(KEYS))] = draw(values)
        elif kind == "duplicate" and "name" in tables[(i + 1) % len(tables)]:
            table["name"] = tables[(i + 1) % len(tables)]["name"]
        elif kind == "range":
            table["max_in_flight"] = draw(st.integers(-5, 40))
            table["timeout_s"] = draw(st.floats(-5, 40))
        elif kind == "missing":
            table.pop(draw(st.sampled_from(KEYS)), None)
        elif kind == "name":
            table["name"] = draw(st.one_of(st.from_regex(r"[a-z0-9][a-z0-9_-]{0,39}",
                                                         fullmatch=True), texts))
            if isinstance(table["name"], str) and draw(st.booleans()):
                env[secret_variable(table["name"])] = SECRET
    return tables, env, touched


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else {"nan": "nan", "inf": "inf",
                                                            "-inf": "-inf"}[repr(value)]
    if isinstance(value, str):
        return toml_string(value)
    return "[" + ", ".join(toml_value(item) for item in value) + "]"


def toml_string(text: str) -> str:
    """`text` as a TOML basic string: JSON's escapes are TOML's, but TOML takes no
    surrogate pair (so non-ASCII stays as it is) and no raw DEL."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def as_toml(tables: list[dict[str, Any]]) -> str:
    return "".join("[[endpoint]]\n" + "".join(f"{toml_string(k)} = {toml_value(v)}\n"
                                              for k, v in table.items()) for table in tables)


#: Examples per run; FUZZ_EXAMPLES=5000 in the environment searches further.
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))

#: Where a message says what is wrong: the endpoint (by number or name) and the key, or
#: the variable of its secret.
ABOUT = re.compile(r"(?P<source>[^:]+): endpoint (?P<endpoint>\d+|'[^']*'): "
                   r"(?:(?P<key>\w+): |unknown key |expected a table)"
                   r"|(?P<variable>NOTIFIER_WEBHOOK_SECRET_\w+): ")


@settings(max_examples=FUZZ_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(config=mutated(), in_file=st.booleans())
def test_fuzz_mutated_configs_give_endpoints_or_one_line_naming_the_mistake(tmp_path, config,
                                                                            in_file):
    tables, env, touched = config
    if in_file:
        path = _written(tmp_path / "webhooks.toml", as_toml(tables))
        source = str(path)
    else:
        (tmp_path / "webhooks.toml").unlink(missing_ok=True)
        env = {**env, "NOTIFIER_WEBHOOK_ENDPOINTS": json.dumps(tables)}
        source = "NOTIFIER_WEBHOOK_ENDPOINTS"
    try:
        found = load_endpoints(env, tmp_path)
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message and "\r" not in message, message
        assert touched, f"an untouched configuration refused: {message}"
        about = ABOUT.match(message)
        assert about, message
        variable = about["variable"] and re.sub(r"SECRET_\w+?(_PREVIOUS|_PREVIOUS_UNTIL)?$",
                                                r"SECRET_{name}\1", about["variable"])
        event(f"refused: {about['key'] or variable or 'table'}")
        if about["variable"]:
            # A variable of a touched endpoint, or one a mutation set (for an endpoint
            # renamed since, or for the one renamed to take its name).
            blamed = {secret_variable(t["name"]) for i, t in enumerate(tables)
                      if i in touched and isinstance(t.get("name"), str)}
            blamed |= {v for v in touched if isinstance(v, str)}
            assert any(about["variable"].startswith(v) for v in blamed), message
        else:
            assert about["source"] == source, message
            endpoint = about["endpoint"]
            if endpoint.isdigit():
                assert int(endpoint) - 1 in touched, message
            else:
                # Two endpoints reading one variable: the message names both.
                assert any(repr(t.get("name")) in message for i, t in enumerate(tables)
                           if i in touched), message
            assert about["key"] in (None, *KEYS), message
        return
    event("accepted")
    assert [e.name for e in found] == sorted(t["name"] for t in tables)
    for endpoint in found:
        assert endpoint.events and 1 <= endpoint.max_in_flight <= 32
        assert 1 <= endpoint.timeout_s <= 30
        assert endpoint.url.startswith(("http://", "https://", "HTTP://"))
        assert endpoint.signing_secrets(datetime.now(UTC))[0] == \
            env[secret_variable(endpoint.name)].strip()


# --- the `notifier` command -------------------------------------------------------------

def test_endpoint_lines_show_everything_but_secrets():
    now = datetime(2026, 11, 30, tzinfo=UTC)
    ehr = Endpoint(name="ehr", url="https://ehr.example/hooks",
                   events=frozenset({"notification.sent", "client.opted_out"}),
                   secret=SecretStr(SECRET), previous_secret=SecretStr(OLD),
                   previous_until=datetime(2026, 12, 1, tzinfo=UTC),
                   description="the EHR's status feed", timeout_s=2.5)
    plain = Endpoint(name="zz", url="http://127.0.0.1:9/", events=frozenset({"event.rejected"}),
                     secret=SecretStr(SECRET))
    assert endpoint_lines((ehr, plain), now) == [
        "ehr  https://ehr.example/hooks",
        "  events: client.opted_out, notification.sent",
        "  max_in_flight 4, timeout_s 2.5",
        "  previous secret: signs too until 2026-12-01 00:00:00 UTC",
        "  description: the EHR's status feed",
        "zz  http://127.0.0.1:9/",
        "  events: event.rejected",
        "  max_in_flight 4, timeout_s 10",
        "  previous secret: none",
    ]
    later = endpoint_lines((ehr,), datetime(2026, 12, 2, tzinfo=UTC))
    assert later[3] == "  previous secret: expired 2026-12-01 00:00:00 UTC (unset it)"


def _schedules(tmp_path: Path, webhooks: str) -> Path:
    schedules = tmp_path / "schedules"
    shutil.copytree(PROJECT_ROOT / "schedules", schedules)
    (schedules / "webhooks.toml").write_text(webhooks)
    return schedules


@pytest.mark.slow
@pytest.mark.parametrize("command", ["clock", "worker", "web", "dev", "webhooks"])
def test_a_bad_endpoint_stops_every_command_with_one_line(tmp_path, command):
    from tests.test_cli import notifier, one_line

    schedules = _schedules(tmp_path, EHR.replace("https://", "ftp://"))
    args = ["webhooks", "list"] if command == "webhooks" else [command]
    result = notifier(*args, cwd=tmp_path, env={"NOTIFIER_SCHEDULES_DIR": str(schedules),
                                                "NOTIFIER_WEBHOOK_SECRET_EHR": SECRET})
    assert result.returncode == 2
    assert one_line(result) == (f"notifier: {schedules / 'webhooks.toml'}: endpoint 'ehr': url: "
                                "not an absolute http(s) URL with a host: "
                                "'ftp://ehr.example/hooks'")


@pytest.mark.slow
def test_webhooks_list_shows_the_endpoints_without_redis_or_secrets(tmp_path):
    from tests.test_cli import notifier

    schedules = _schedules(tmp_path, EHR + 'description = "the EHR"\n')
    env = {"NOTIFIER_SCHEDULES_DIR": str(schedules), "NOTIFIER_WEBHOOK_SECRET_EHR": SECRET,
           "NOTIFIER_WEBHOOK_SECRET_EHR_PREVIOUS": OLD,
           "NOTIFIER_WEBHOOK_SECRET_EHR_PREVIOUS_UNTIL": "2999-01-01T00:00:00Z",
           # Nothing listens there: listing must not need Redis.
           "NOTIFIER_REDIS_URL": "redis://127.0.0.1:1/0"}
    result = notifier("webhooks", "list", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "ehr  https://ehr.example/hooks"
    assert lines[1] == "  events: " + ", ".join(sorted(EVENT_TYPES))
    assert lines[2:] == ["  max_in_flight 4, timeout_s 10",
                         "  previous secret: signs too until 2999-01-01 00:00:00 UTC",
                         "  description: the EHR"]
    assert SECRET not in result.stdout + result.stderr and OLD not in result.stdout
    (schedules / "webhooks.toml").unlink()
    nothing = notifier("webhooks", "list", cwd=tmp_path, env=env)
    assert nothing.returncode == 0, nothing.stderr
    assert nothing.stdout.startswith("no webhook endpoints: ")
