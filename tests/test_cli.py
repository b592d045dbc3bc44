"""The `notifier` command as a user runs it: `dev` on the embedded Redis, `send-event`,
and start-up errors that name the bad setting."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx

from notifier.cli import dev_api_token
from notifier.compose import STAFF_KINDS
from notifier.config import PROJECT_ROOT, Settings
from notifier.policy.timing import hold_for_quiet_hours
from notifier.redis_server import EmbeddedRedis, free_port
from notifier.render import Renderer
from tests.service import wait_for

EXAMPLE = PROJECT_ROOT / "examples" / "appointment-scheduled.json"


def notifier(*args: str, cwd: Path, env: dict[str, str] | None = None,
             **kw) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFIER_", "TWILIO_",
                                                                        "SENDGRID_"))}
    # The code under test, not whatever checkout the environment has installed.
    path = os.pathsep.join(filter(None, [str(PROJECT_ROOT), clean.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "notifier", *args], cwd=cwd,
                          env={**clean, "PYTHONPATH": path, **(env or {})},
                          capture_output=True, text=True, timeout=60, **kw)


def test_dev_runs_on_the_embedded_redis_and_send_event_reaches_it(tmp_path, policy):
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    dev = subprocess.Popen([sys.executable, "-m", "notifier", "dev", "--port", str(port)],
                           cwd=tmp_path, env=clean, stdout=subprocess.PIPE,
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
        outbox = tmp_path / "var" / "outbox" / "messages.jsonl"
        if morning == now:  # daytime in New York: the confirmation goes out at once
            wait_for(lambda: outbox.exists() and len(outbox.read_text().splitlines()) == 2,
                     what="the confirmation in the outbox")
            kinds = {json.loads(line)["kind"] for line in outbox.read_text().splitlines()}
            assert kinds == {"appointment_confirmation"}
            assert list((tmp_path / "var" / "outbox").glob("*.ics"))
        else:  # night there: held until 08:00 client-local
            def planned() -> dict[str, dict[str, str]]:
                answer = httpx.get(read_url, headers=auth).json()
                return {n["id"]: n for n in answer["notifications"]}

            wait_for(lambda: "appointment_confirmation:appt-1:booked:sms" in planned(),
                     what="the planned confirmation")
            held = planned()["appointment_confirmation:appt-1:booked:sms"]
            assert datetime.fromisoformat(held["due_at"]) == morning
            assert not outbox.exists()

        again = notifier("send-event", str(EXAMPLE), "--url", base, cwd=tmp_path)
        assert again.stdout.count(": 200 ") == 3 and "duplicate" in again.stdout
    finally:
        dev.send_signal(signal.SIGINT)
        output = dev.communicate(timeout=30)[0]
    assert f"listening on http://127.0.0.1:{port}" in output
    assert "notifier send-event examples/appointment-scheduled.json" in output
    assert f"curl -H 'Authorization: Bearer {token}' {read_url}\n" in output
    assert not EmbeddedRedis(tmp_path / "var").running()  # dev stops what it started


def test_dev_makes_an_api_token_once_and_keeps_it(tmp_path):
    unset = Settings.from_env({"NOTIFIER_VAR_DIR": str(tmp_path / "var")},
                              dotenv=Path("/nonexistent"))
    first = dev_api_token(unset).api_token
    assert first is not None and len(first) >= 24
    assert dev_api_token(unset).api_token == first
    # What it wrote is a token the settings themselves would accept.
    again = Settings.from_env({"NOTIFIER_API_TOKEN": first}, dotenv=Path("/nonexistent"))
    assert again.api_token == first
    assert (tmp_path / "var" / "api-token").stat().st_mode & 0o777 == 0o600


def test_dev_uses_the_configured_api_token(tmp_path):
    token = "configured-token-" + "z" * 20
    configured = Settings.from_env({"NOTIFIER_VAR_DIR": str(tmp_path / "var"),
                                    "NOTIFIER_API_TOKEN": token}, dotenv=Path("/nonexistent"))
    assert dev_api_token(configured).api_token == token
    assert not (tmp_path / "var" / "api-token").exists()


def test_a_bad_setting_stops_start_up_with_one_line(tmp_path):
    result = notifier("worker", cwd=tmp_path, env={"NOTIFIER_REDIS_URL": "localhost:6379"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "notifier: NOTIFIER_REDIS_URL: expected a URL starting with redis://, rediss://, "
        "unix://, got 'localhost:6379'"]


def test_dotenv_in_the_working_directory_is_read(tmp_path):
    (tmp_path / ".env").write_text("NOTIFIER_SMS_BACKEND=carrier-pigeon\n")
    result = notifier("clock", cwd=tmp_path)
    assert result.returncode == 2
    assert "NOTIFIER_SMS_BACKEND" in result.stderr


def test_send_event_names_a_file_it_cannot_read(tmp_path):
    (tmp_path / "broken.json").write_text("{not json")
    result = notifier("send-event", str(tmp_path / "broken.json"), cwd=tmp_path)
    assert result.returncode == 2
    assert "broken.json: cannot read an event from it" in result.stderr


def test_send_event_exits_non_zero_when_the_service_refuses(tmp_path, redis_url):
    port = free_port()
    env = {"NOTIFIER_REDIS_URL": redis_url,
           "NOTIFIER_WEBHOOK_SECRET": "whsec_" + "a" * 40}
    web = subprocess.Popen([sys.executable, "-m", "notifier", "web", "--port", str(port),
                            "--host", "127.0.0.1"], cwd=tmp_path,
                           env={**os.environ, **env}, stdout=subprocess.DEVNULL,
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
    from notifier.store import Store
    from tests.helpers import event, store_and_apply

    now = datetime.now(UTC)
    store = Store(redis_client)
    for provider_id, zone in (("p-ny", "America/New_York"), ("p-ber", "Europe/Berlin")):
        store_and_apply(store, policy, event("provider.upserted", {"provider": {
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

    from notifier.jobs import previous_fire
    from notifier.policy.digest import digest_id
    from notifier.store import Store
    from tests.helpers import event, message_received, store_and_apply

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
        store_and_apply(store, policy, event("provider.upserted", {"provider": {
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
    assert result.returncode == 0, result.stderr
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
                           cwd=tmp_path, env=clean, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _up(port), timeout_s=30, what="notifier dev to answer")
        assert EmbeddedRedis(tmp_path / "var").running()
    finally:
        dev.send_signal(signal.SIGTERM)
        dev.wait(timeout=30)
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
