"""The `notifier` command as a user runs it: `dev` on the embedded Redis, `send-event`,
and start-up errors that name the bad setting."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from notifier.cli.common import dev_secret, server_log_level
from notifier.config import PROJECT_ROOT, Settings, reveal
from notifier.delivery.compose import STAFF_KINDS
from notifier.delivery.render import Renderer
from notifier.ledger.embedded_redis import EmbeddedRedis, free_port
from notifier.policy.timing import hold_for_quiet_hours
from tests.service import service_env, wait_for

#: Every test runs the `notifier` command in a process of its own.
pytestmark = pytest.mark.slow

EXAMPLE = PROJECT_ROOT / "examples" / "appointment-scheduled.json"


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a failed command prints: on stderr, nothing else, no traceback."""
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def redis_servers_under(directory: Path) -> list[int]:
    """Pids of live redis-server processes working in a directory below `directory`,
    whoever their parent is now (one left behind is reparented away from its command).
    Redis rewrites its command line but works in its `--dir`, so its cwd tells."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() != "redis-server":
                continue
            cwd = (proc / "cwd").resolve(strict=True)
        except OSError:
            continue  # gone meanwhile, or a zombie (exited, not yet reaped)
        if cwd.is_relative_to(directory.resolve()):
            pids.append(int(proc.name))
    return pids


def this_checkout(env: dict[str, str]) -> dict[str, str]:
    """`env` with this checkout first on PYTHONPATH: a subprocess runs the code under test,
    not whatever checkout the environment has installed (an editable install elsewhere)."""
    path = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    return {**env, "PYTHONPATH": path}


def notifier(*args: str, cwd: Path, env: dict[str, str] | None = None,
             **kw) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFIER_", "TWILIO_",
                                                                        "SENDGRID_"))}
    return subprocess.run([sys.executable, "-m", "notifier", *args], cwd=cwd,
                          env={**this_checkout(clean), **(env or {})},
                          capture_output=True, text=True, timeout=60, **kw)


def test_dev_runs_on_the_embedded_redis_and_send_event_reaches_it(tmp_path, policy):
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    dev = subprocess.Popen([sys.executable, "-m", "notifier", "dev", "--port", str(port)],
                           cwd=tmp_path, env=this_checkout(clean), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            try:
                return httpx.get(base + "/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout_s=30, what="notifier dev to answer")
        embedded = EmbeddedRedis(tmp_path / "var")
        assert embedded.running()
        assert embedded.ensure() == embedded.url and embedded.process is None  # reused
        embedded.release()  # a user that found it running leaves it running
        assert embedded.running()
        # Created at start-up, so `tail` works before the first message.
        outbox = tmp_path / "var" / "outbox" / "messages.jsonl"
        assert outbox.exists() and outbox.stat().st_mode & 0o777 == 0o600

        token_file = tmp_path / "var" / "api-token"
        token = token_file.read_text().strip()
        assert token_file.stat().st_mode & 0o777 == 0o600
        auth = {"Authorization": f"Bearer {token}"}
        read_url = base + "/v1/clients/client-1/notifications"
        assert httpx.get(read_url).status_code == 401
        assert httpx.get(read_url, headers=auth).status_code == 200

        sent = notifier("send-event", str(EXAMPLE), "--url", base, cwd=tmp_path)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert sent.stdout.count(": 202 ") == 3

        now = datetime.now(UTC)
        morning = hold_for_quiet_hours(now, ZoneInfo("America/New_York"), policy.quiet_hours)

        def confirmation_line() -> str:
            listed = notifier("notifications", "client-1", cwd=tmp_path)
            assert listed.returncode == 0, listed.stderr
            [line] = [line for line in listed.stdout.splitlines()
                      if "appointment_confirmation" in line and " sms " in line]
            return line

        if morning == now:  # daytime in New York: the confirmation goes out at once
            wait_for(lambda: outbox.exists() and len(outbox.read_text().splitlines()) == 2,
                     what="the confirmation in the outbox")
            kinds = {json.loads(line)["kind"] for line in outbox.read_text().splitlines()}
            assert kinds == {"appointment_confirmation"}
            [ics] = (tmp_path / "var" / "outbox").glob("*.ics")
            assert ics.stat().st_mode & 0o777 == 0o600
            assert confirmation_line().split()[0] == "sent"
        else:  # night there: held until 08:00 client-local
            def planned() -> dict[str, dict[str, str]]:
                answer = httpx.get(read_url, headers=auth).json()
                return {n["id"]: n for n in answer["notifications"]}

            def held_until_morning() -> bool:
                # The booking and the client are different subjects, applied in parallel:
                # planned before the client is known, the confirmation is due at once and
                # the worker holds it for quiet hours when it comes up (never sent at night).
                held = planned().get("appointment_confirmation:appt-1:booked:sms")
                return held is not None and datetime.fromisoformat(held["due_at"]) == morning

            wait_for(held_until_morning, what="the confirmation held until the morning")
            assert outbox.read_text() == ""
            line = confirmation_line()
            assert line.split()[0] == "scheduled"
            assert line.endswith("held by quiet hours (21:00-08:00 client-local)")

        again = notifier("send-event", str(EXAMPLE), "--url", base, cwd=tmp_path)
        assert again.stdout.count(": 200 ") == 3 and "duplicate" in again.stdout
        # The banner's FHIR line, as printed, posts the example bundle.
        fhir_token = (tmp_path / "var" / "fhir-token").read_text().strip()
        bundle = PROJECT_ROOT / "examples" / "fhir" / "visit-bundle.json"
        posted = httpx.post(f"{base}/fhir/r4/notify", content=bundle.read_bytes(), headers={
            "Content-Type": "application/fhir+json", "Authorization": f"Bearer {fhir_token}"})
        assert posted.status_code == 200, posted.text
    finally:
        dev.send_signal(signal.SIGINT)
        output = dev.communicate(timeout=30)[0]
    assert dev.returncode == 130  # Ctrl-C, said the shell's way, without a traceback
    assert f"listening on http://127.0.0.1:{port}" in output
    # Started as `python -m notifier` outside the checkout: commands say just that.
    assert f"{sys.executable} -m notifier send-event {EXAMPLE} --url {base}\n" in output
    assert f"{sys.executable} -m notifier notifications client-1 " in output
    assert f"curl -H 'Authorization: Bearer {token}' {read_url}\n" in output
    assert (f"Operator console: {base}/console/  (the first operator, once: "
            f"{sys.executable} -m notifier console add-operator NAME)\n") in output
    assert (f"FHIR intake: curl -H 'Content-Type: application/fhir+json' -H "
            f"'Authorization: Bearer {fhir_token}' --data-binary @") in output
    assert f"examples/fhir/visit-bundle.json {base}/fhir/r4/notify\n" in output
    assert "Traceback" not in output
    assert not EmbeddedRedis(tmp_path / "var").running()  # dev stops what it started


def test_dev_makes_an_api_token_once_and_keeps_it(tmp_path):
    unset = Settings.from_env({"NOTIFIER_VAR_DIR": str(tmp_path / "var")},
                              dotenv=Path("/nonexistent"))
    first = reveal(dev_secret(unset, "api_token").api_token)
    assert first is not None and len(first) >= 24
    assert reveal(dev_secret(unset, "api_token").api_token) == first
    # What it wrote is a token the settings themselves would accept.
    again = Settings.from_env({"NOTIFIER_API_TOKEN": first}, dotenv=Path("/nonexistent"))
    assert reveal(again.api_token) == first
    assert (tmp_path / "var" / "api-token").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "var").stat().st_mode & 0o777 == 0o700


def test_dev_uses_the_configured_api_token(tmp_path):
    token = "configured-token-" + "z" * 20
    configured = Settings.from_env({"NOTIFIER_VAR_DIR": str(tmp_path / "var"),
                                    "NOTIFIER_API_TOKEN": token}, dotenv=Path("/nonexistent"))
    assert reveal(dev_secret(configured, "api_token").api_token) == token
    assert not (tmp_path / "var" / "api-token").exists()


def test_a_bad_setting_stops_start_up_with_one_line(tmp_path):
    result = notifier("worker", cwd=tmp_path, env={"NOTIFIER_REDIS_URL": "localhost:6379"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "notifier: NOTIFIER_REDIS_URL: expected a URL starting with redis://, rediss://, "
        "unix://, or a cluster's redis+cluster://host:port,host:port (rediss+cluster:// "
        "with TLS), got 'localhost:6379'"]


def test_dotenv_in_the_working_directory_is_read(tmp_path):
    (tmp_path / ".env").write_text("NOTIFIER_SMS_BACKEND=carrier-pigeon\n")
    result = notifier("clock", cwd=tmp_path)
    assert result.returncode == 2
    assert "NOTIFIER_SMS_BACKEND" in result.stderr


def test_send_event_names_a_file_it_cannot_read(tmp_path):
    (tmp_path / "broken.json").write_text("{not json")
    result = notifier("send-event", str(tmp_path / "broken.json"), cwd=tmp_path)
    assert result.returncode == 2
    assert one_line(result).startswith(f"notifier: {tmp_path / 'broken.json'}: not valid JSON (")


def test_send_event_exits_non_zero_when_the_service_refuses(tmp_path, redis_url):
    port = free_port()
    env = {"NOTIFIER_REDIS_URL": redis_url,
           "NOTIFIER_WEBHOOK_SECRET": "whsec_" + "a" * 40}
    web = subprocess.Popen([sys.executable, "-m", "notifier", "web", "--port", str(port),
                            "--host", "127.0.0.1"], cwd=tmp_path,
                           env=this_checkout({**os.environ, **env}), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _up(port), timeout_s=30, what="notifier web")
        other_secret = {**env, "NOTIFIER_WEBHOOK_SECRET": "whsec_" + "b" * 40}
        result = notifier("send-event", str(EXAMPLE), "--url", f"http://127.0.0.1:{port}",
                          cwd=tmp_path, env=other_secret)
        assert result.returncode == 1
        assert result.stdout.count(": 401 ") == 3
    finally:
        web.terminate()
        web.wait(timeout=10)


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    except httpx.HTTPError:
        return False


def test_jobs_list_shows_the_next_digest_in_each_provider_zone(tmp_path, redis_url,
                                                               redis_client, policy):
    from notifier.ledger.store import Store
    from tests.kit import event_dict, store_and_apply

    now = datetime.now(UTC)
    store = Store(redis_client)
    for provider_id, zone in (("p-ny", "America/New_York"), ("p-ber", "Europe/Berlin")):
        store_and_apply(store, policy, event_dict("provider.upserted", {"provider": {
            "id": provider_id, "name": "Dr. X", "email": "x@example.com", "timezone": zone}},
            now), now)
    result = notifier("jobs", "list", cwd=tmp_path, env={"NOTIFIER_REDIS_URL": redis_url})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "provider-digest  cron '0 8 * * 1-5'  zone provider"
    assert [line.split()[0] for line in lines[1:]] == ["America/New_York", "Europe/Berlin"]
    assert all(" 08:00 " in line for line in lines[1:])


def test_jobs_run_refuses_an_unknown_job(tmp_path, redis_url):
    result = notifier("jobs", "run", "nightly-report", cwd=tmp_path,
                      env={"NOTIFIER_REDIS_URL": redis_url})
    assert result.returncode == 2
    assert "no job named 'nightly-report'" in result.stderr


def test_jobs_run_twice_plans_one_digest_and_says_so(tmp_path, redis_url, redis_client,
                                                     policy):
    """A manual run stands for the job's most recent fire in each provider zone, so running
    it again a moment later plans nothing new, and says so. The job here fires once a year
    (Jan 1, 09:00 provider-local), so the fire the runs stand for does not depend on the
    hour the test runs at."""
    import shutil

    from notifier.ledger.store import Store
    from notifier.policy.digest import digest_id
    from notifier.worker.cron import previous_fire
    from tests.kit import event_dict, message_received, store_and_apply

    schedules = tmp_path / "schedules"
    shutil.copytree(PROJECT_ROOT / "schedules", schedules)
    cron = "0 9 1 1 *"
    (schedules / "jobs.toml").write_text(
        f'[[job]]\nname = "provider-digest"\ncron = "{cron}"\nzone = "provider"\n')
    env = {"NOTIFIER_REDIS_URL": redis_url, "NOTIFIER_SCHEDULES_DIR": str(schedules)}

    nobody = notifier("jobs", "run", "provider-digest", cwd=tmp_path, env=env)
    assert nobody.returncode == 0, nobody.stderr
    assert nobody.stdout == "provider-digest: no providers known yet: nothing to plan\n"

    now = datetime.now(UTC)
    store = Store(redis_client)
    for provider_id, zone in (("prov-1", "Europe/Madrid"), ("prov-2", "America/New_York")):
        store_and_apply(store, policy, event_dict("provider.upserted", {"provider": {
            "id": provider_id, "name": "Dr. X", "email": f"{provider_id}@example.com",
            "timezone": zone}}, now), now)
    store_and_apply(store, policy, message_received("msg-1", "c1", now), now)  # for prov-1
    madrid = previous_fire(cron, now, ZoneInfo("Europe/Madrid"))
    new_york = previous_fire(cron, now, ZoneInfo("America/New_York"))
    madrid_fire = f"fire {madrid.astimezone(ZoneInfo('Europe/Madrid')):%a %Y-%m-%d} 09:00 CET"
    new_york_fire = f"fire {new_york.astimezone(ZoneInfo('America/New_York')):%a %Y-%m-%d}" \
        " 09:00 EST"

    first = notifier("jobs", "run", "provider-digest", cwd=tmp_path, env=env)
    second = notifier("jobs", "run", "provider-digest", cwd=tmp_path, env=env)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert first.stdout.splitlines() == [
        f"provider-digest: {new_york_fire} in America/New_York: nothing planned: no provider "
        "has open items",
        f"provider-digest: {madrid_fire} in Europe/Madrid: planned 1 digest, due now",
        "a running worker and clock send what was planned"]
    assert second.stdout.splitlines() == [
        f"provider-digest: {new_york_fire} in America/New_York: nothing planned: no provider "
        "has open items",
        f"provider-digest: {madrid_fire} in Europe/Madrid: nothing planned: 1 provider with "
        "open items already has a digest for that fire"]
    planned = [n.id for n in store.notifications_for("provider", "prov-1")]
    assert planned == [digest_id("prov-1", madrid)]


def test_preview_renders_a_kind_in_spanish(tmp_path):
    result = notifier("preview", "refill_due", "--locale", "es", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("--- sms (es) GSM-7, ")
    assert "--- email (es) ---" in result.stdout
    assert "Si está en peligro inmediato" in result.stdout


def test_preview_all_prints_what_every_sms_costs_and_the_worst_case(tmp_path):
    result = notifier("preview", "--all", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:-1]}
    renderer = Renderer(PROJECT_ROOT / "templates")
    expected = {f"{channel}/{kind}.{locale}" for channel in ("sms", "email")
                for kind in renderer.kinds(channel)
                for locale in (("en",) if kind in STAFF_KINDS else ("en", "es"))}
    assert set(rows) == expected
    for name, line in rows.items():
        if name.startswith("sms/") and name.split("/")[1].split(".")[0] not in STAFF_KINDS:
            # sample, then worst case: "GSM-7 2 (286)  GSM-7 2 (288)"
            sample, worst = re.findall(r"(GSM-7|UCS-2)\s+(\d+) \(\d+\)", line)
            assert sample[0] == worst[0] == "GSM-7", line
            assert int(sample[1]) <= int(worst[1]) <= 2, line
    # The long Teams link of the sample makes the join link fall back to the short link.
    assert "video link shortened" in rows["sms/appointment_join_link.es"]
    assert result.stdout.splitlines()[-1].endswith("every client SMS within it")


def test_preview_all_shows_a_practice_name_that_breaks_the_budget(tmp_path):
    env = {"NOTIFIER_PRACTICE_NAME": "The Riverbend Community Behavioral Health Partners "
                                     "of Greater Springfield"}
    result = notifier("preview", "--all", cwd=tmp_path, env=env)
    assert result.returncode == 1, "over the budget fails, as start-up would"
    assert "OVER BUDGET" in result.stdout
    assert not result.stdout.splitlines()[-1].endswith("every client SMS within it")


def test_preview_wants_a_kind_or_all(tmp_path):
    result = notifier("preview", cwd=tmp_path)
    assert result.returncode == 2
    assert "name a KIND, or give --all" in result.stderr


def test_preview_names_the_kinds_when_one_is_unknown(tmp_path):
    result = notifier("preview", "birthday_card", cwd=tmp_path)
    assert result.returncode == 2
    assert "no template for kind 'birthday_card'" in result.stderr
    assert "appointment_reminder" in result.stderr


def test_dev_stopped_by_sigterm_stops_the_redis_it_started(tmp_path):
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    dev = subprocess.Popen([sys.executable, "-m", "notifier", "dev", "--port", str(port)],
                           cwd=tmp_path, env=this_checkout(clean),
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _up(port), timeout_s=30, what="notifier dev to answer")
        assert EmbeddedRedis(tmp_path / "var").running()
    finally:
        dev.send_signal(signal.SIGTERM)
        dev.wait(timeout=30)
    assert dev.returncode == 128 + signal.SIGTERM
    assert not EmbeddedRedis(tmp_path / "var").running()


def test_a_practice_name_that_breaks_the_sms_budget_stops_start_up(tmp_path, redis_url):
    name = "The Riverbend Community Behavioral Health Partners of Greater Springfield"
    result = notifier("jobs", "list", cwd=tmp_path,
                      env={"NOTIFIER_REDIS_URL": redis_url, "NOTIFIER_PRACTICE_NAME": name})
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"notifier: NOTIFIER_PRACTICE_NAME: {name!r} is too long for the "
                           "SMS budget: sms/")
    assert "3 segments" in line
# --- one line for every error ----------------------------------------------------------------

def test_help_lists_every_command(tmp_path):
    from notifier.cli import build_parser

    result = notifier("--help", cwd=tmp_path)
    assert result.returncode == 0
    commands = [action for action in build_parser()._subparsers._group_actions  # type: ignore
                if action.choices][0].choices
    summary = result.stdout.split("\n\n")[1].replace("\n", " ")  # the description
    for name in commands:
        assert name in summary, name
        assert re.search(rf"\n    {name}\s", result.stdout), name  # listed, with its help
    assert {"jobs", "preview", "notifications"} <= set(commands)


@pytest.mark.parametrize(("args", "says"), [
    ((), "notifier: the following arguments are required: COMMAND (see notifier --help)"),
    (("serve",), "notifier: argument COMMAND: invalid choice: 'serve'"),
    (("dev", "--port", "abc"), "notifier dev: argument --port: 'abc' is not a port (1 to "
     "65535) (see notifier dev --help)"),
    (("dev", "--port", "99999"), "notifier dev: argument --port: '99999' is not a port"),
    (("web", "--port", "0"), "notifier web: argument --port: '0' is not a port"),
    (("worker", "--threads", "0"), "notifier worker: argument --threads: '0' is not a thread "
     "count (1 or more)"),
    (("worker", "--threads", "-1"), "notifier worker: argument --threads: '-1' is not a "
     "thread count"),
    (("jobs",), "notifier jobs: the following arguments are required: list|run"),
    (("jobs", "run"), "notifier jobs run: the following arguments are required: name"),
    (("preview",), "notifier: preview: name a KIND, or give --all (see notifier preview "
     "--help)"),
    (("preview", "refill_due", "--channel", "fax"), "notifier preview: argument --channel: "
     "invalid choice: 'fax'"),
    (("notifications",), "notifier notifications: the following arguments are required: "
     "client_id"),
    (("send-event",), "notifier send-event: the following arguments are required: files"),
    (("worker", "--threads", "four"), "notifier worker: argument --threads: 'four' is not a "
     "thread count"),
    (("worker", "--processes", "0"), "notifier worker: argument --processes: '0' is not a "
     "process count (1 or more)"),
])
def test_a_wrong_argument_is_one_line(tmp_path, args, says):
    result = notifier(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert one_line(result).startswith(says)
    assert not (tmp_path / "var").exists()  # refused before anything started


def test_send_event_with_nothing_listening_says_what_to_do(tmp_path):
    port = free_port()
    result = notifier("send-event", str(EXAMPLE), "--url", f"http://127.0.0.1:{port}",
                      cwd=tmp_path)
    line = one_line(result)
    assert line.startswith(f"notifier: nothing answers at http://127.0.0.1:{port} (")
    assert line.endswith("dev), or pass --url")
    assert result.stdout == ""


@pytest.mark.parametrize(("content", "says"), [
    ('{"type": "client.upserted", "data": {}}', "{path}: no \"id\": every event needs"),
    ('[{"id": "evt-1"}, {"id": ""}]', "{path}: event 2: no \"id\": every event needs"),
    ('[{"id": "evt-1"}, 7]', "{path}: event 2: not a JSON object"),
    ('{"id": 12}', "{path}: no \"id\""),
    ("{not json", "{path}: not valid JSON ("),
    ("", "{path}: not valid JSON ("),
    ('{"id": "evt-1", "id": "evt-2"}', "{path}: id: given more than once"),
    ('[{"id": "evt-1"}, {"id": "evt-2", "data": {"a": 1, "a": 2}}]',
     "{path}: 1.data.a: given more than once"),
])
def test_send_event_checks_every_event_before_sending_any(tmp_path, content, says):
    """Checked before anything is sent: the URL has nothing listening, yet the answer is
    about the file, and the first, good file was not sent either."""
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text('{"id": "evt-0", "type": "client.upserted"}')
    bad.write_text(content)
    result = notifier("send-event", str(good), str(bad), "--url",
                      f"http://127.0.0.1:{free_port()}", cwd=tmp_path)
    assert result.returncode == 2
    assert one_line(result).startswith("notifier: " + says.format(path=bad))
    assert result.stdout == ""


def test_send_event_refuses_an_empty_list_and_a_url_that_is_not_one(tmp_path):
    (tmp_path / "empty.json").write_text("[]")
    result = notifier("send-event", "empty.json", cwd=tmp_path)
    assert result.returncode == 2
    assert one_line(result) == ("notifier: empty.json: an empty list: a file holds one event "
                                "or a JSON list of them")
    (tmp_path / "one.json").write_text('{"id": "evt-1"}')
    result = notifier("send-event", "one.json", "--url", "notaurl", cwd=tmp_path)
    assert result.returncode == 2
    assert one_line(result) == ("notifier: --url 'notaurl' is not an http(s) URL: pass the "
                                "service's base URL, such as http://127.0.0.1:8000")


def test_send_event_names_a_file_that_is_not_there(tmp_path):
    result = notifier("send-event", "nowhere.json", cwd=tmp_path)
    assert result.returncode == 2
    assert one_line(result) == ("notifier: nowhere.json: cannot read it (No such file or "
                                "directory): check the path")


@pytest.mark.parametrize(("args", "says"), [
    (("refill_due", "--locale", "fr"), "notifier: preview: no locale 'fr'; templates exist "
     "in en, es (pass --locale en)"),
    (("refill_due", "--locale", "fr", "--channel", "sms"), "notifier: preview: no locale 'fr'"),
    (("provider_digest", "--channel", "sms"), "notifier: provider_digest is not sent by sms: "
     "pass --channel email, or no --channel"),
    (("birthday_card",), "notifier: no template for kind 'birthday_card'; kinds: "),
])
def test_preview_errors_are_one_line(tmp_path, args, says):
    result = notifier("preview", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert one_line(result).startswith(says)


@pytest.mark.parametrize("args", [("jobs", "list"), ("jobs", "run", "provider-digest"),
                                  ("notifications", "client-1"), ("worker",), ("clock",)])
def test_a_stopped_redis_is_one_line(tmp_path, args):
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    result = notifier(*args, cwd=tmp_path, env={"NOTIFIER_REDIS_URL": url})
    assert result.returncode == 2
    line = one_line(result)
    assert line.startswith("notifier: cannot reach Redis at redis://:***@127.0.0.1:")
    assert line.endswith("start it, or point NOTIFIER_REDIS_URL at one that runs (unset, "
                         "the embedded one is used)")
    assert "hunter2" not in result.stderr


def test_a_log_level_that_does_not_exist_is_one_line(tmp_path):
    result = notifier("jobs", "list", cwd=tmp_path, env={"NOTIFIER_LOG_LEVEL": "verbose"})
    assert result.returncode == 2
    assert one_line(result) == ("notifier: NOTIFIER_LOG_LEVEL: expected one of debug, info, "
                                "warning, error, critical, got 'verbose'")


def test_a_log_level_in_dotenv_that_does_not_exist_is_one_line(tmp_path):
    (tmp_path / ".env").write_text("NOTIFIER_LOG_LEVEL=verbose\n")
    result = notifier("jobs", "list", cwd=tmp_path)
    assert result.returncode == 2
    assert one_line(result) == ("notifier: NOTIFIER_LOG_LEVEL: expected one of debug, info, "
                                "warning, error, critical, got 'verbose'")


@pytest.mark.parametrize(("level", "at_least", "server"), [
    ("INFO", "DEBUG", "info"), ("WARNING", "DEBUG", "warning"), ("DEBUG", "DEBUG", "debug"),
    ("INFO", "WARNING", "warning"), ("DEBUG", "WARNING", "warning"),
    ("ERROR", "WARNING", "error"),
])
def test_the_web_server_logs_at_the_configured_level(level, at_least, server):
    """NOTIFIER_LOG_LEVEL=warning quiets uvicorn's access log too; `notifier dev` never
    logs each request under its banner."""
    assert server_log_level(level, at_least) == server


def test_notifications_of_an_unknown_client_says_to_send_its_events(tmp_path, redis_url):
    result = notifier("notifications", "client-9", cwd=tmp_path,
                      env={"NOTIFIER_REDIS_URL": redis_url})
    assert result.returncode == 2
    assert one_line(result) == (
        f"notifier: no client 'client-9' known yet: send its events first, e.g. "
        f"{sys.executable} -m notifier send-event {EXAMPLE}")


# --- the embedded Redis: started for a command, stopped after it ------------------------------

def assert_no_embedded_redis(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "var")
    assert redis_servers_under(tmp_path) == []
    assert not server.pidfile.exists() and not server.socket.exists()


@pytest.mark.parametrize("args", [("jobs", "list"), ("jobs", "run", "provider-digest"),
                                  ("notifications", "client-1"),
                                  ("jobs", "run", "nightly-report")])
def test_a_command_that_starts_the_embedded_redis_stops_it(tmp_path, args):
    result = notifier(*args, cwd=tmp_path)
    assert "Traceback" not in result.stderr
    assert_no_embedded_redis(tmp_path)
    # It did run one (its data is there), owner-only: the AOF holds contact details.
    redis_dir = tmp_path / "var" / "redis"
    for directory in (tmp_path / "var", redis_dir, tmp_path / "var" / "outbox"):
        assert directory.stat().st_mode & 0o777 == 0o700, directory
    for name in ("appendonly.aof", "redis.log"):
        assert (redis_dir / name).stat().st_mode & 0o777 == 0o600, name


def test_a_command_that_found_the_embedded_redis_running_leaves_it(tmp_path):
    with EmbeddedRedis(tmp_path / "var") as server:
        assert server.process is not None  # this test started it
        result = notifier("jobs", "list", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert server.running() and server.process.poll() is None
        assert redis_servers_under(tmp_path) == [server.process.pid]
    assert_no_embedded_redis(tmp_path)


def test_the_last_user_stops_a_server_its_starter_left_to_others(tmp_path):
    """The command that started it ends while another still uses it: it stays up for
    that one, which stops it when it ends (nothing is left behind either way)."""
    starter, other = EmbeddedRedis(tmp_path / "var"), EmbeddedRedis(tmp_path / "var")
    starter.ensure()
    other.ensure()
    assert other.process is None
    pid = starter.process.pid if starter.process else 0
    starter.release()
    assert other.running() and redis_servers_under(tmp_path) == [pid]
    other.release()
    assert_no_embedded_redis(tmp_path)


def test_a_stray_server_nobody_started_for_this_run_is_left(tmp_path):
    """One found running with no mark (left by an older version, say): not ours to stop."""
    stray = EmbeddedRedis(tmp_path / "var")
    stray.ensure()
    try:
        stray.process = None  # as if its starter were gone without handing it over
        stray.release()
        assert stray.running()
        result = notifier("notifications", "client-1", cwd=tmp_path)
        assert result.returncode == 2  # unknown client, said in one line
        assert stray.running()
    finally:
        stray.shutdown()
    assert_no_embedded_redis(tmp_path)


def test_make_clean_stops_the_embedded_redis_before_deleting_var(tmp_path):
    shutil.copy(PROJECT_ROOT / "Makefile", tmp_path / "Makefile")
    server = EmbeddedRedis(tmp_path / "var")
    server.ensure()
    assert server.process is not None
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    # The shared venv's python stands in for .venv/ (VENV points where nothing is deleted).
    result = subprocess.run(["make", "clean", f"VENV={tmp_path / 'no-venv'}",
                             f"BIN={Path(sys.executable).parent}"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "stopped the embedded redis-server" in result.stdout
    assert server.process.wait(timeout=10) == 0  # a clean shutdown, not a kill
    assert not (tmp_path / "var").exists()
    assert redis_servers_under(tmp_path) == []
    server.release()  # its directory is gone: nothing to do, and no error


def test_make_clean_without_a_server_just_deletes(tmp_path):
    shutil.copy(PROJECT_ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "var" / "outbox").mkdir(parents=True)
    result = subprocess.run(["make", "clean", f"VENV={tmp_path / 'no-venv'}",
                             f"BIN={Path(sys.executable).parent}"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "var").exists()


# --- a second dev on a busy port ---------------------------------------------------------------

def test_dev_on_a_busy_port_says_so_before_starting_anything(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = notifier("dev", "--port", str(port), cwd=tmp_path)
    assert result.returncode == 2
    assert one_line(result) == (f"notifier: port {port} is in use: another notifier dev or "
                                f"web may be running; stop it, or pass --port {port + 1}")
    assert result.stdout == ""  # no banner
    assert not (tmp_path / "var").exists()  # no Redis, clock, worker or secret started
    assert redis_servers_under(tmp_path) == []


def test_web_on_a_busy_port_says_so_too(tmp_path, redis_url):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = notifier("web", "--port", str(port), "--host", "127.0.0.1", cwd=tmp_path,
                          env={"NOTIFIER_REDIS_URL": redis_url})
    assert result.returncode == 2
    assert one_line(result).startswith(f"notifier: port {port} is in use: ")


def test_dev_on_an_address_it_cannot_have_says_so(tmp_path):
    result = notifier("dev", "--host", "192.0.2.1", "--port", str(free_port()), cwd=tmp_path)
    assert result.returncode == 2
    assert one_line(result).startswith("notifier: cannot listen on 192.0.2.1:")
    assert result.stdout == ""


# --- first steps: commands that work as printed, at any hour ----------------------------------

def quick_start_commands() -> list[str]:
    """The commands of README's quick start to run beside `make run` (its second block)."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    return [line for line in blocks[1].splitlines() if line.strip()]


def venv_script(checkout: Path) -> Path:
    """`.venv/bin/notifier` as pip writes it (a Python script whose argv[0] is its path),
    for the code under test, in a directory laid out like a checkout."""
    script = checkout / ".venv" / "bin" / "notifier"
    script.parent.mkdir(parents=True)
    script.write_text(f"#!{sys.executable}\nimport sys\nfrom notifier.cli import main\n"
                      "sys.exit(main())\n")
    script.chmod(0o755)
    (checkout / "examples").symlink_to(PROJECT_ROOT / "examples")
    return script


def test_the_readme_quick_start_works_as_written_at_any_hour(tmp_path):
    """`make run` is `.venv/bin/notifier dev`; beside it, README's commands run as written
    (only the port is a free one, not 8000) and each shows something, day or night."""
    venv_script(tmp_path)
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    env = {**clean, "PYTHONPATH": str(PROJECT_ROOT),
           "NOTIFIER_PUBLIC_URL": f"http://localhost:{port}"}
    dev = subprocess.Popen([".venv/bin/notifier", "dev", "--port", str(port)], cwd=tmp_path,
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    results = []
    try:
        wait_for(lambda: _up(port), timeout_s=30, what="notifier dev to answer")
        for command in quick_start_commands():
            results.append(subprocess.run(["bash", "-c", command.replace(":8000", f":{port}")],
                                          cwd=tmp_path, env=env, capture_output=True,
                                          text=True, timeout=60))
            if command.startswith(".venv/bin/notifier send-event"):
                # what the worker does with it, before the next command looks
                wait_for(lambda: "appointment_confirmation" in notifier(
                    "notifications", "client-1", cwd=tmp_path).stdout,
                    what="the confirmation planned")
    finally:
        dev.send_signal(signal.SIGINT)
        banner = dev.communicate(timeout=30)[0]
    for command, result in zip(quick_start_commands(), results, strict=True):
        assert result.returncode == 0, (command, result.stderr)
        assert "Traceback" not in result.stderr + result.stdout
    send, listing, tail, curl = results
    assert send.stdout.count(": 202 ") == 3
    planned = [line for line in listing.stdout.splitlines() if "appointment_confirmation" in line]
    assert len(planned) == 2, listing.stdout
    assert all(line.split()[0] in ("scheduled", "sent") for line in planned)
    assert '"notifications"' in curl.stdout
    # The banner prints the same commands, in the form the user started it with.
    assert ".venv/bin/notifier send-event examples/appointment-scheduled.json\n" in banner
    assert ".venv/bin/notifier notifications client-1 " in banner
    assert "tail var/outbox/messages.jsonl " in banner
    assert redis_servers_under(tmp_path) == []


def test_commands_are_printed_as_the_user_can_run_them(tmp_path, monkeypatch):
    from notifier.cli.common import invocation, shell_path

    script = venv_script(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert invocation(".venv/bin/notifier") == ".venv/bin/notifier"
    assert invocation(str(script)) == ".venv/bin/notifier"  # found through PATH elsewhere
    (tmp_path / "sub").mkdir()
    assert invocation(str(script), cwd=tmp_path / "sub") == str(script)
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin:/bin")  # an activated venv
    assert invocation(str(script)) == "notifier"
    assert invocation("/x/notifier/__main__.py", executable="/opt/py 3/bin/python") == \
        "'/opt/py 3/bin/python' -m notifier"
    assert shell_path(tmp_path / "var" / "outbox" / "messages.jsonl") == \
        "var/outbox/messages.jsonl"
    assert shell_path(tmp_path / "events.json") == "./events.json"


def test_notifications_says_what_is_planned_and_why_at_any_hour(tmp_path, redis_url,
                                                                  redis_client, policy):
    """Two clients booked now: one where it is 23:00, one where it is noon. The first's
    confirmation is held by quiet hours until 08:00 its time, the second's is due now; a
    cancelled booking's notices say what cancelled them."""
    from notifier.ledger.store import Store
    from tests.kit import (
        appointment,
        client_upserted,
        event_dict,
        store_and_apply,
        zone_at_hour,
    )

    now = datetime.now(UTC)
    store = Store(redis_client)
    night, day = zone_at_hour(now, 23), zone_at_hour(now, 12)
    start = now + timedelta(days=30)
    for client_id, zone in (("c-night", night), ("c-day", day)):
        store_and_apply(store, policy, client_upserted(client_id, zone, now), now)
        store_and_apply(store, policy, appointment("appointment.scheduled", f"a-{client_id}",
                                                   client_id, start, now), now)
    env = {"NOTIFIER_REDIS_URL": redis_url}

    held = notifier("notifications", "c-night", cwd=tmp_path, env=env)
    assert held.returncode == 0, held.stderr
    header, *lines = held.stdout.splitlines()
    assert header.startswith(f"c-night: {len(lines)} notifications due from 30 days ago on "
                             f"(times {night}, now ")
    confirmations = [line for line in lines if "appointment_confirmation" in line]
    assert len(confirmations) == 2
    for line in confirmations:
        state, _, _day, clock, *_ = line.split()
        assert (state, clock) == ("scheduled", "08:00")
        assert re.search(r"due in (8|9) h \d+ min, held by quiet hours \(21:00-08:00 "
                         r"client-local\)$", line), line

    due = notifier("notifications", "c-day", cwd=tmp_path, env=env)
    assert due.returncode == 0, due.stderr
    confirmations = [line for line in due.stdout.splitlines()
                     if "appointment_confirmation" in line]
    assert len(confirmations) == 2
    assert all(line.endswith("due now: a running worker and clock send it")
               for line in confirmations)
    reminders = [line for line in due.stdout.splitlines() if "appointment_reminder" in line]
    assert reminders and all(re.search(r"due in \d+ d \d+ h$", line) for line in reminders)

    later = now + timedelta(seconds=1)
    store_and_apply(store, policy, event_dict("appointment.cancelled", {
        "appointment_id": "a-c-day", "cancelled_by": "client"}, later), later)
    cancelled = notifier("notifications", "c-day", cwd=tmp_path, env=env)
    reminders = [line for line in cancelled.stdout.splitlines()
                 if "appointment_reminder" in line]
    assert reminders and all(line.split()[0] == "cancelled" and not line.endswith(" -")
                             for line in reminders), cancelled.stdout


def test_an_unexpected_error_is_one_line_unless_debugging(tmp_path):
    """Something no check foresaw (here a policy.toml that is a directory): one line that
    says how to see more; with NOTIFIER_LOG_LEVEL=DEBUG, the traceback itself."""
    schedules = tmp_path / "schedules"
    shutil.copytree(PROJECT_ROOT / "schedules", schedules)
    (schedules / "policy.toml").unlink()
    (schedules / "policy.toml").mkdir()
    env = {"NOTIFIER_SCHEDULES_DIR": str(schedules)}
    result = notifier("preview", "refill_due", cwd=tmp_path, env=env)
    assert result.returncode == 1
    line = one_line(result)
    assert line.startswith("notifier: unexpected error: IsADirectoryError: ")
    assert line.endswith("(NOTIFIER_LOG_LEVEL=DEBUG shows the traceback)")
    debugging = notifier("preview", "refill_due", cwd=tmp_path,
                         env={**env, "NOTIFIER_LOG_LEVEL": "debug"})
    assert debugging.returncode == 1
    assert "Traceback (most recent call last)" in debugging.stderr


def test_dev_with_a_local_twilio_stand_in_starts_and_its_sdk_keeps_quiet(tmp_path):
    """A staging set-up: Twilio is a stand-in on this machine, so a localhost public URL
    is fine (no real Twilio must reach it); the SDK's per-request INFO lines stay out of
    the log, and the SMS does go through it."""
    from tests.fakes import FakeTwilio
    from tests.kit import client_upserted, daytime_zone, event_dict, provider_upserted

    now = datetime.now(UTC)
    events = [client_upserted("client-7", daytime_zone(now), now),
              provider_upserted("prov-1", now),
              event_dict("appointment.scheduled", {"appointment": {
                       "id": "appt-7", "client_id": "client-7", "provider_id": "prov-1",
                       "start": (now + timedelta(days=20)).isoformat(),
                       "end": (now + timedelta(days=20, minutes=30)).isoformat(),
                       "kind": "medication_management"}}, now)]
    (tmp_path / "events.json").write_text(json.dumps(events))
    port = free_port()
    sid = "AC" + "7" * 32
    with FakeTwilio(account_sid=sid, auth_token="stand-in-token") as twilio:
        clean = {k: v for k, v in os.environ.items()
                 if not k.startswith(("NOTIFIER_", "TWILIO_", "SENDGRID_"))}
        env = {**clean, "PYTHONPATH": str(PROJECT_ROOT), "TWILIO_ACCOUNT_SID": sid,
               "TWILIO_AUTH_TOKEN": "stand-in-token", "TWILIO_FROM": "+15005550006",
               "NOTIFIER_TWILIO_BASE_URL": twilio.url,
               "NOTIFIER_PUBLIC_URL": f"http://localhost:{port}"}
        dev = subprocess.Popen([sys.executable, "-m", "notifier", "dev", "--port", str(port)],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
        try:
            wait_for(lambda: _up(port), timeout_s=30, what="notifier dev to answer")
            sent = subprocess.run([sys.executable, "-m", "notifier", "send-event", "events.json"],
                                  cwd=tmp_path, env=env, capture_output=True, text=True,
                                  timeout=60)
            assert sent.returncode == 0, sent.stderr
            wait_for(lambda: twilio.sent_messages(), what="the confirmation SMS at the stand-in")
        finally:
            dev.send_signal(signal.SIGINT)
            output = dev.communicate(timeout=30)[0]
    assert "listening on" in output
    assert "twilio.http_client" not in output and "Twilio API Request" not in output
    assert "Traceback" not in output


@pytest.mark.parametrize("reason", ["", "quiet hours"])
def test_a_hold_for_quiet_hours_is_said_once_whoever_held_it(policy, reason):
    """Planned at night, or held by the worker when it came up (which records "quiet
    hours"): the line says it once either way."""
    from notifier.cli.tools import notification_lines
    from notifier.ledger.reading import NotificationRow

    zone = ZoneInfo("America/New_York")
    now = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)  # 01:00 in New York
    morning = datetime(2026, 11, 30, 13, 0, tzinfo=UTC)  # 08:00 there
    row = NotificationRow(id="n1", kind="appointment_confirmation", channel="sms",
                          due_at=morning, expires_at=morning + timedelta(days=9),
                          state="scheduled", reason=reason, sent_at=None, code=None)
    [line] = notification_lines([row], zone, now, policy.quiet_hours)
    assert line.endswith("due in 7 h 0 min, held by quiet hours (21:00-08:00 client-local)")


def test_notifications_of_a_client_with_none_in_the_window_says_so(redis_url, redis_client,
                                                                   policy, tmp_path):
    """A client on record with nothing due in the window (just upserted; or everything
    older, or retired past the retention): its header, no rows, exit 0 (found by QA: it
    failed on the widest cell of no rows)."""
    from notifier.ledger.store import Store
    from tests.kit import client_upserted, store_and_apply

    now = datetime.now(UTC)
    store_and_apply(Store(redis_client), policy, client_upserted("c-quiet", "UTC", now), now)
    listed = notifier("notifications", "c-quiet", cwd=tmp_path,
                      env=service_env(redis_url, tmp_path))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("c-quiet: 0 notifications due from 30 days ago on")
    assert len(listed.stdout.splitlines()) == 1


@pytest.mark.slow
def test_output_piped_into_a_reader_that_stops_early_ends_quietly(tmp_path):
    """QA (issue 17 session): `notifier … | head` ended with "unexpected error:
    BrokenPipeError" on stderr and exit 1. A reader that is gone before the first line
    (`true`) makes every write fail: exit 141 (as a shell shows a SIGPIPE), stderr
    empty."""
    reader = subprocess.Popen(["true"], stdin=subprocess.PIPE)
    reader.wait(timeout=30)
    writer = subprocess.run(
        [sys.executable, "-m", "notifier", "preview", "--all"], stdin=subprocess.DEVNULL,
        stdout=reader.stdin, stderr=subprocess.PIPE, cwd=PROJECT_ROOT, timeout=120,
        env={**os.environ, "NOTIFIER_VAR_DIR": str(tmp_path / "var")})
    assert reader.stdin is not None
    reader.stdin.close()
    assert writer.returncode == 141, writer.stderr
    assert writer.stderr == b""


def test_help_names_each_command_once_with_its_subcommands():
    """`notifier --help`'s first paragraph: every command once, and a command whose
    subcommands it lists with all of them (QA found a merge had left two lines, one
    stale)."""
    import argparse

    from notifier.cli import DESCRIPTION, build_parser

    summary = " ".join(DESCRIPTION.split("\n\n")[0].split())
    [commands] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    for name, parser in commands.choices.items():
        assert len(re.findall(rf"\b{re.escape(name)}\b(?!-)", summary)) == 1, (name, summary)
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        for sub in subs:
            if f"{name} (" in summary:
                assert f"{name} ({', '.join(sub.choices)})" in summary, (name, summary)
