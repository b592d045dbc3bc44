"""Cron jobs (notifier/worker/cron.py) and the digest plan (notifier/policy/digest.py).

`next_fire` / `previous_fire` are pure and tested with tables of (after, expected), DST dates
included: a wall-clock fire time that does not exist moves to the first valid minute after
it, one that occurs twice fires once, at the first.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notifier.errors import ConfigError
from notifier.intake.events import Provider
from notifier.ledger.records import OpenItem, ProviderQueueRecord, ProviderRecord
from notifier.ledger.store import Store
from notifier.policy.digest import digest_id, fire_occasion, plan_digests
from notifier.policy.timing import local_time
from notifier.worker.cron import Job, load_jobs, next_fire, previous_fire
from notifier.worker.digests import DigestRun, run_manually, run_provider_digest
from tests.kit import event_dict, message_received, store_and_apply

NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
KOLKATA = ZoneInfo("Asia/Kolkata")
WEEKDAYS_8 = "0 8 * * 1-5"
TWICE_DAILY = "0 8,16 * * 1-5"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0,
        second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# --- next_fire / previous_fire ------------------------------------------------------------

NEXT_CASES = {
    # New York, weekdays 08:00.
    "NY: Monday 07:00 EDT -> 08:00 EDT the same day": (
        WEEKDAYS_8, NEW_YORK, utc(2026, 6, 1, 11, 0), utc(2026, 6, 1, 12, 0)),
    "NY: a second before the fire": (
        WEEKDAYS_8, NEW_YORK, utc(2026, 6, 1, 11, 59, 59), utc(2026, 6, 1, 12, 0)),
    "NY: at the fire itself -> the next day (strictly after)": (
        WEEKDAYS_8, NEW_YORK, utc(2026, 6, 1, 12, 0), utc(2026, 6, 2, 12, 0)),
    "NY: half a minute after the fire -> the next day": (
        WEEKDAYS_8, NEW_YORK, utc(2026, 6, 1, 12, 0, 30), utc(2026, 6, 2, 12, 0)),
    "NY: Friday's fire -> Monday": (
        WEEKDAYS_8, NEW_YORK, utc(2026, 6, 5, 12, 0), utc(2026, 6, 8, 12, 0)),
    "NY: Friday 19:00 EDT (Saturday in UTC) -> Monday": (
        WEEKDAYS_8, NEW_YORK, utc(2026, 6, 6, 1, 0), utc(2026, 6, 8, 12, 0)),
    "NY: Saturday -> Monday": (
        WEEKDAYS_8, NEW_YORK, utc(2026, 6, 6, 15, 0), utc(2026, 6, 8, 12, 0)),
    "NY: Friday 08:00 EST, spring-forward weekend -> Monday 08:00 EDT": (
        WEEKDAYS_8, NEW_YORK, utc(2026, 3, 6, 13, 0), utc(2026, 3, 9, 12, 0)),
    "NY: Friday 08:00 EDT, fall-back weekend -> Monday 08:00 EST": (
        WEEKDAYS_8, NEW_YORK, utc(2026, 10, 30, 12, 0), utc(2026, 11, 2, 13, 0)),
    "NY: the fall-back Sunday itself -> Monday 08:00 EST": (
        WEEKDAYS_8, NEW_YORK, utc(2026, 11, 1, 6, 0), utc(2026, 11, 2, 13, 0)),
    # Berlin, weekdays 08:00; its changes are 2026-03-29 and 2026-10-25.
    "Berlin: Monday 07:00 CEST -> 08:00 CEST": (
        WEEKDAYS_8, BERLIN, utc(2026, 6, 1, 5, 0), utc(2026, 6, 1, 6, 0)),
    "Berlin: Friday 08:00 CET, spring-forward weekend -> Monday 08:00 CEST": (
        WEEKDAYS_8, BERLIN, utc(2026, 3, 27, 7, 0), utc(2026, 3, 30, 6, 0)),
    "Berlin: Friday 08:00 CEST, fall-back weekend -> Monday 08:00 CET": (
        WEEKDAYS_8, BERLIN, utc(2026, 10, 23, 6, 0), utc(2026, 10, 26, 7, 0)),
    "Berlin: in the weeks New York is already on EDT, still CET": (
        WEEKDAYS_8, BERLIN, utc(2026, 3, 10, 8, 0), utc(2026, 3, 11, 7, 0)),
    # Kolkata, weekdays 08:00 IST = 02:30Z, no DST.
    "Kolkata: Monday 05:30 IST -> 08:00 IST": (
        WEEKDAYS_8, KOLKATA, utc(2026, 6, 1, 0, 0), utc(2026, 6, 1, 2, 30)),
    "Kolkata: Friday's fire -> Monday": (
        WEEKDAYS_8, KOLKATA, utc(2026, 6, 5, 2, 30), utc(2026, 6, 8, 2, 30)),
    "Kolkata: Sunday 22:00Z is Monday 03:30 IST -> that Monday": (
        WEEKDAYS_8, KOLKATA, utc(2026, 6, 7, 22, 0), utc(2026, 6, 8, 2, 30)),
    # A wall-clock time that does not exist: 02:30 on 2026-03-08 in New York.
    "NY 02:30 daily: the spring-forward day fires at 03:00 EDT": (
        "30 2 * * *", NEW_YORK, utc(2026, 3, 7, 12, 0), utc(2026, 3, 8, 7, 0)),
    "NY 02:30 daily: from 01:45 EST that night -> 03:00 EDT": (
        "30 2 * * *", NEW_YORK, utc(2026, 3, 8, 6, 45), utc(2026, 3, 8, 7, 0)),
    "NY 02:30 daily: after the moved fire -> 02:30 EDT the next day": (
        "30 2 * * *", NEW_YORK, utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30)),
    # A wall-clock time that occurs twice: 01:30 on 2026-11-01 in New York.
    "NY 01:30 daily: the fall-back day fires at 01:30 EDT": (
        "30 1 * * *", NEW_YORK, utc(2026, 11, 1, 4, 0), utc(2026, 11, 1, 5, 30)),
    "NY 01:30 daily: after it, not again at 01:30 EST": (
        "30 1 * * *", NEW_YORK, utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)),
    "NY 01:30 daily: from 01:00 EST (the repeated hour) -> the next day": (
        "30 1 * * *", NEW_YORK, utc(2026, 11, 1, 6, 0), utc(2026, 11, 2, 6, 30)),
    "NY 01:30 daily: the day before -> the first 01:30": (
        "30 1 * * *", NEW_YORK, utc(2026, 10, 31, 5, 30), utc(2026, 11, 1, 5, 30)),
}


@pytest.mark.parametrize(("expr", "zone", "after", "expected"), list(NEXT_CASES.values()),
                         ids=list(NEXT_CASES))
def test_next_fire(expr: str, zone: ZoneInfo, after: datetime, expected: datetime) -> None:
    fire = next_fire(expr, after, zone)
    assert fire == expected
    assert fire.tzinfo is UTC


PREVIOUS_CASES = {
    "NY: at the fire itself -> that fire": (
        WEEKDAYS_8, NEW_YORK, utc(2026, 6, 1, 12, 0), utc(2026, 6, 1, 12, 0)),
    "NY: half a minute after it -> that fire": (
        WEEKDAYS_8, NEW_YORK, utc(2026, 6, 1, 12, 0, 30), utc(2026, 6, 1, 12, 0)),
    "NY: Monday 07:59 EDT -> Friday": (
        WEEKDAYS_8, NEW_YORK, utc(2026, 6, 1, 11, 59), utc(2026, 5, 29, 12, 0)),
    "NY: Monday 07:59 EDT after spring-forward -> Friday 08:00 EST": (
        WEEKDAYS_8, NEW_YORK, utc(2026, 3, 9, 11, 59), utc(2026, 3, 6, 13, 0)),
    "NY: Monday 07:59 EST after fall-back -> Friday 08:00 EDT": (
        WEEKDAYS_8, NEW_YORK, utc(2026, 11, 2, 12, 59), utc(2026, 10, 30, 12, 0)),
    "NY: Monday 08:00 EST -> itself": (
        WEEKDAYS_8, NEW_YORK, utc(2026, 11, 2, 13, 0), utc(2026, 11, 2, 13, 0)),
    "Berlin: Monday 08:00 CEST -> itself": (
        WEEKDAYS_8, BERLIN, utc(2026, 3, 30, 6, 0), utc(2026, 3, 30, 6, 0)),
    "Berlin: Monday 07:59 CEST -> Friday 08:00 CET": (
        WEEKDAYS_8, BERLIN, utc(2026, 3, 30, 5, 59), utc(2026, 3, 27, 7, 0)),
    "Berlin: Monday 07:59 CET -> Friday 08:00 CEST": (
        WEEKDAYS_8, BERLIN, utc(2026, 10, 26, 6, 59), utc(2026, 10, 23, 6, 0)),
    "Kolkata: Monday 08:00 IST -> itself": (
        WEEKDAYS_8, KOLKATA, utc(2026, 6, 8, 2, 30), utc(2026, 6, 8, 2, 30)),
    "NY 02:30 daily: at 03:00 EDT on the spring-forward day -> that moved fire": (
        "30 2 * * *", NEW_YORK, utc(2026, 3, 8, 7, 0), utc(2026, 3, 8, 7, 0)),
    "NY 02:30 daily: at 01:59 EST that night -> the day before": (
        "30 2 * * *", NEW_YORK, utc(2026, 3, 8, 6, 59), utc(2026, 3, 7, 7, 30)),
    "NY 02:30 daily: later that day -> the moved fire": (
        "30 2 * * *", NEW_YORK, utc(2026, 3, 8, 12, 0), utc(2026, 3, 8, 7, 0)),
    "NY every 20 min: at 01:30 EST on the fall-back day -> 01:40 EDT, the first pass's last": (
        "*/20 * * * *", NEW_YORK, utc(2026, 11, 1, 6, 30), utc(2026, 11, 1, 5, 40)),
    "Chatham every 20 min: at 02:45 CHAST, the fall-back -> 03:40 CHADT": (
        "*/20 * * * *", ZoneInfo("Pacific/Chatham"), utc(2028, 4, 1, 14, 0),
        utc(2028, 4, 1, 13, 55)),
    "NY 01:30 daily: at 01:30 EST on the fall-back day -> 01:30 EDT": (
        "30 1 * * *", NEW_YORK, utc(2026, 11, 1, 6, 30), utc(2026, 11, 1, 5, 30)),
    "NY 01:30 daily: a minute before 01:30 EDT -> the day before": (
        "30 1 * * *", NEW_YORK, utc(2026, 11, 1, 5, 29), utc(2026, 10, 31, 5, 30)),
    "NY 01:30 daily: later that day -> 01:30 EDT": (
        "30 1 * * *", NEW_YORK, utc(2026, 11, 1, 12, 0), utc(2026, 11, 1, 5, 30)),
}


@pytest.mark.parametrize(("expr", "zone", "at", "expected"), list(PREVIOUS_CASES.values()),
                         ids=list(PREVIOUS_CASES))
def test_previous_fire(expr: str, zone: ZoneInfo, at: datetime, expected: datetime) -> None:
    assert previous_fire(expr, at, zone) == expected


def test_two_providers_in_two_zones_each_get_their_own_0800() -> None:
    after = utc(2026, 6, 1, 0, 0)
    fires = {zone.key: next_fire(WEEKDAYS_8, after, zone) for zone in (NEW_YORK, BERLIN)}
    assert fires == {"America/New_York": utc(2026, 6, 1, 12, 0),
                     "Europe/Berlin": utc(2026, 6, 1, 6, 0)}
    for key, fire in fires.items():
        assert fire.astimezone(ZoneInfo(key)).strftime("%a %H:%M") == "Mon 08:00"


@pytest.mark.parametrize("zone", [NEW_YORK, BERLIN, KOLKATA], ids=lambda z: z.key)
def test_a_year_of_weekday_digests_fires_once_a_weekday_at_0800_local(zone: ZoneInfo) -> None:
    fire, fires = utc(2026, 1, 1, 0, 0), []
    while True:
        fire = next_fire(WEEKDAYS_8, fire, zone)
        if fire >= utc(2027, 1, 1, 0, 0):
            break
        fires.append(fire.astimezone(zone))
    assert len(fires) == 261   # weekdays in 2026
    assert len({f.date() for f in fires}) == 261
    assert {(f.hour, f.minute) for f in fires} == {(8, 0)}
    assert {f.weekday() for f in fires} == {0, 1, 2, 3, 4}


EXPRESSIONS = [WEEKDAYS_8, "30 2 * * *", "30 1 * * *", "*/20 * * * *", "0 0 1 * *"]
ZONES = [NEW_YORK, BERLIN, KOLKATA, ZoneInfo("Australia/Lord_Howe"),
         ZoneInfo("Pacific/Chatham"), ZoneInfo("UTC")]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expr=st.sampled_from(EXPRESSIONS), zone=st.sampled_from(ZONES),
       at=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2028, 12, 31),
                       timezones=st.just(UTC)))
def test_previous_and_next_fire_bracket_an_instant_with_nothing_between(
    expr: str, zone: ZoneInfo, at: datetime,
) -> None:
    before, after = previous_fire(expr, at, zone), next_fire(expr, at, zone)
    assert before <= at < after
    assert next_fire(expr, before, zone) == after
    assert previous_fire(expr, after, zone) == after
    assert (before.second, before.microsecond, after.second, after.microsecond) == (0, 0, 0, 0)


# --- load_jobs ----------------------------------------------------------------------------

def test_the_shipped_jobs(project_root: Path) -> None:
    assert load_jobs(project_root / "schedules") == [
        Job(name="provider-digest", cron=WEEKDAYS_8, zone="provider")]


def write_jobs(tmp_path: Path, text: str) -> Path:
    (tmp_path / "jobs.toml").write_text(text)
    return tmp_path


def test_a_job_in_a_named_zone_and_one_without_a_zone(tmp_path: Path) -> None:
    text = ('[[job]]\nname = "provider-digest"\ncron = "0 8 * * 1-5"\nzone = "Europe/Berlin"\n'
            '[[job]]\nname = "provider-digest"\ncron = "0 9 * * 1-5"\n')
    assert load_jobs(write_jobs(tmp_path, text)) == [
        Job(name="provider-digest", cron="0 8 * * 1-5", zone="Europe/Berlin"),
        Job(name="provider-digest", cron="0 9 * * 1-5", zone="UTC")]


def job(name: str = '"provider-digest"', cron: str = '"0 8 * * 1-5"',
        zone: str = '"provider"', extra: str = "") -> str:
    return f"[[job]]\nname = {name}\ncron = {cron}\nzone = {zone}\n{extra}"


BAD_JOBS = {
    "unknown job name": (job(name='"nightly-report"'), "unknown job 'nightly-report'"),
    "no job name": ('[[job]]\ncron = "0 8 * * 1-5"\n', "unknown job None"),
    "cron with four fields": (job(cron='"0 8 * *"'), "cron '0 8 * *' is not a cron"),
    "cron minute out of range": (job(cron='"61 8 * * *"'), "is not a cron expression"),
    "cron that is not a string": (job(cron="8"), "cron 8 is not a cron expression"),
    "no cron": ('[[job]]\nname = "provider-digest"\n', "cron None is not a cron expression"),
    "unknown zone": (job(zone='"Mars/Olympus"'), "zone 'Mars/Olympus' is unknown"),
    "a zone-database directory": (job(zone='"America"'), "zone 'America' is unknown"),
    "an empty zone": (job(zone='""'), "zone '' is unknown"),
    "a zone that is not a string": (job(zone="5"), "zone 5 is unknown"),
    "a misspelt key in a job": (job(extra='timezone = "Europe/Berlin"\n'), "'timezone'"),
    "a misspelt table name": (job().replace("[[job]]", "[[jobs]]"), "'jobs'"),
    "a table instead of an array of tables": (job().replace("[[job]]", "[job]"), "[[job]]"),
    "a list of names instead of tables": ('job = ["provider-digest"]\n', "[[job]]"),
    "invalid TOML": ('[[job]\nname = "provider-digest"\n', "not valid TOML"),
}


@pytest.mark.parametrize(("text", "message"), list(BAD_JOBS.values()), ids=list(BAD_JOBS))
def test_a_bad_jobs_file_stops_start_up(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_jobs(write_jobs(tmp_path, text))
    assert message in str(raised.value)
    assert str(raised.value).startswith("jobs file")


def test_a_missing_jobs_file_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="NOTIFIER_SCHEDULES_DIR: no jobs.toml in "):
        load_jobs(tmp_path)


# --- the digest plan ----------------------------------------------------------------------

NOW = utc(2026, 11, 2, 13, 0)   # Monday 08:00 EST
OPENED = utc(2026, 10, 30, 14, 0)


def provider(provider_id: str, zone: str = "America/New_York") -> ProviderRecord:
    return ProviderRecord(updated_at=OPENED, provider=Provider(
        id=provider_id, name="Dr. Rivera", email=f"{provider_id}@example.com", timezone=zone))


def queue(*refs: str) -> ProviderQueueRecord:
    return ProviderQueueRecord(updated_at=OPENED, items={
        ref: OpenItem(kind="message" if ref.startswith("message:") else "refill_request",
                      client_id="cl-1", opened_at=OPENED,
                      escalates_at=OPENED + timedelta(hours=48))
        for ref in refs})


def test_one_digest_per_provider_with_open_items() -> None:
    result = plan_digests([
        (provider("prov-a"), queue("refill_request:rq-1", "message:msg-1")),
        (provider("prov-b"), queue()),
        (provider("prov-c"), None),
        (provider("prov-d", "Europe/Berlin"), queue("message:msg-2")),
    ], NOW, NOW)
    assert (result.outcome, result.reason, result.cancel, result.records) == (
        "applied", "2 digests", (), {})
    assert [(n.id, n.kind, n.channel, n.recipient, n.recipient_id, n.entity, n.due_at,
             n.expires_at, n.params, n.state) for n in result.add] == [
        ("provider_digest:prov-a:20261102T130000Z:email", "provider_digest", "email", "provider",
         "prov-a", "provider:prov-a", NOW, NOW + timedelta(hours=12), {"open": 2}, "scheduled"),
        ("provider_digest:prov-d:20261102T130000Z:email", "provider_digest", "email", "provider",
         "prov-d", "provider:prov-d", NOW, NOW + timedelta(hours=12), {"open": 1}, "scheduled"),
    ]


def test_nothing_open_plans_nothing() -> None:
    result = plan_digests([(provider("prov-b"), queue()), (provider("prov-c"), None)],
                          NOW, NOW)
    assert (result.outcome, result.reason, result.add) == ("applied", "0 digests", ())
    assert plan_digests([], NOW, NOW).add == ()


def test_one_digest_is_said_in_the_singular() -> None:
    result = plan_digests([(provider("prov-a"), queue("message:msg-1"))], NOW, NOW)
    assert (result.reason, len(result.add)) == ("1 digest", 1)


def test_the_digest_id_is_stable_per_fire() -> None:
    pairs: list[tuple[ProviderRecord, ProviderQueueRecord | None]] = [
        (provider("prov-a"), queue("message:msg-1"))]
    first = plan_digests(pairs, NOW, NOW)
    claimed_again = plan_digests(pairs, NOW, NOW + timedelta(minutes=3))
    tomorrow = plan_digests(pairs, NOW + timedelta(days=1), NOW + timedelta(days=1))
    assert [n.id for n in claimed_again.add] == [n.id for n in first.add] == [
        "provider_digest:prov-a:20261102T130000Z:email"]
    assert [n.id for n in tomorrow.add] == ["provider_digest:prov-a:20261103T130000Z:email"]


# --- the digest's id names the job's fire -------------------------------------------------

OCCASION_CASES = {
    # (zone, the instant the job runs, the fire it stands for (local), the digest's id)
    "NY summer Monday 08:00:00 EDT: the morning fire": (
        NEW_YORK, utc(2026, 6, 1, 12, 0), "Mon 2026-06-01 08:00 EDT",
        "provider_digest:prov-a:20260601T120000Z:email"),
    "NY 08:40 EDT, the same fire claimed late: the same id": (
        NEW_YORK, utc(2026, 6, 1, 12, 40), "Mon 2026-06-01 08:00 EDT",
        "provider_digest:prov-a:20260601T120000Z:email"),
    "NY 16:00:05 EDT: the afternoon fire, its own id": (
        NEW_YORK, utc(2026, 6, 1, 20, 0, 5), "Mon 2026-06-01 16:00 EDT",
        "provider_digest:prov-a:20260601T200000Z:email"),
    "NY 23:00 EDT (Tuesday in UTC): still Monday's afternoon fire": (
        NEW_YORK, utc(2026, 6, 2, 3, 0), "Mon 2026-06-01 16:00 EDT",
        "provider_digest:prov-a:20260601T200000Z:email"),
    "NY Friday 16:00 EDT before the fall-back weekend": (
        NEW_YORK, utc(2026, 10, 30, 20, 0), "Fri 2026-10-30 16:00 EDT",
        "provider_digest:prov-a:20261030T200000Z:email"),
    "NY the fall-back Sunday: still Friday's afternoon fire": (
        NEW_YORK, utc(2026, 11, 1, 15, 0), "Fri 2026-10-30 16:00 EDT",
        "provider_digest:prov-a:20261030T200000Z:email"),
    "NY Monday 08:00 EST after fall-back: an hour later in UTC": (
        NEW_YORK, utc(2026, 11, 2, 13, 0), "Mon 2026-11-02 08:00 EST",
        "provider_digest:prov-a:20261102T130000Z:email"),
    "NY Monday 16:00 EST after fall-back": (
        NEW_YORK, utc(2026, 11, 2, 21, 0), "Mon 2026-11-02 16:00 EST",
        "provider_digest:prov-a:20261102T210000Z:email"),
    "Berlin Friday 16:00 CET before spring-forward": (
        BERLIN, utc(2026, 3, 27, 15, 0), "Fri 2026-03-27 16:00 CET",
        "provider_digest:prov-a:20260327T150000Z:email"),
    "Berlin Monday 08:00 CEST after spring-forward": (
        BERLIN, utc(2026, 3, 30, 6, 0), "Mon 2026-03-30 08:00 CEST",
        "provider_digest:prov-a:20260330T060000Z:email"),
    "Berlin Monday 16:00 CEST after spring-forward": (
        BERLIN, utc(2026, 3, 30, 14, 0), "Mon 2026-03-30 16:00 CEST",
        "provider_digest:prov-a:20260330T140000Z:email"),
}


@pytest.mark.parametrize(("zone", "at", "local_fire", "expected"),
                         list(OCCASION_CASES.values()), ids=list(OCCASION_CASES))
def test_the_digest_id_of_a_twice_daily_fire(zone: ZoneInfo, at: datetime, local_fire: str,
                                             expected: str) -> None:
    fire = previous_fire(TWICE_DAILY, at, zone)
    assert f"{fire.astimezone(zone):%a %Y-%m-%d %H:%M %Z}" == local_fire
    plan = plan_digests([(provider("prov-a", zone.key), queue("message:msg-1"))], fire, at)
    assert [n.id for n in plan.add] == [expected] == [digest_id("prov-a", fire)]
    assert fire_occasion(fire) == expected.split(":")[2]


@pytest.mark.parametrize(("zone", "day"), [
    (NEW_YORK, date(2026, 6, 1)), (NEW_YORK, date(2026, 11, 2)),  # EDT; the Monday after DST
    (BERLIN, date(2026, 3, 30)), (KOLKATA, date(2026, 6, 1))])
def test_a_twice_daily_cron_plans_two_digests_a_day_each_once(zone: ZoneInfo, day: date
                                                             ) -> None:
    pairs: list[tuple[ProviderRecord, ProviderQueueRecord | None]] = [
        (provider("prov-a", zone.key), queue("message:msg-1"))]
    morning = [time(8, 0), time(8, 0, 30), time(12, 0), time(15, 59, 59)]
    afternoon = [time(16, 0), time(16, 0, 5), time(23, 59)]
    ids = []
    for at in morning + afternoon:
        now = local_time(day, at, zone)
        [digest] = plan_digests(pairs, previous_fire(TWICE_DAILY, now, zone), now).add
        ids.append(digest.id)
    assert len(set(ids[:len(morning)])) == len(set(ids[len(morning):])) == 1
    assert ids[0] != ids[-1]


# --- running the job against Redis ---------------------------------------------------------

CHICAGO = ZoneInfo("America/Chicago")
# Monday 2026-11-30, 08:00 and 16:00 in Chicago (CST).
MORNING = utc(2026, 11, 30, 14, 0)
AFTERNOON = utc(2026, 11, 30, 22, 0)


@pytest.fixture
def open_store(redis_client, policy) -> Store:
    """prov-1 (America/Chicago) with one open message; prov-2 (Berlin) with nothing open."""
    store = Store(redis_client)
    before = MORNING - timedelta(days=3)
    for provider_id, zone in (("prov-1", "America/Chicago"), ("prov-2", "Europe/Berlin")):
        store_and_apply(store, policy, event_dict("provider.upserted", {"provider": {
            "id": provider_id, "name": "Dr. X", "email": f"{provider_id}@example.com",
            "timezone": zone}}, before), before)
    store_and_apply(store, policy, message_received("msg-1", "c1", before), before)
    return store


def digests(store: Store, provider_id: str = "prov-1") -> list[str]:
    return [n.id for n in store.notifications_for("provider", provider_id)
            if n.kind == "provider_digest"]


def test_running_the_job_twice_for_one_fire_plans_one_digest(open_store: Store) -> None:
    first = run_provider_digest(open_store, MORNING + timedelta(seconds=2), "America/Chicago",
                                MORNING)
    again = run_provider_digest(open_store, MORNING + timedelta(minutes=5), "America/Chicago",
                                MORNING)
    assert (first.due, first.planned) == (1, 1)
    assert (again.due, again.planned) == (1, 0)
    assert digests(open_store) == ["provider_digest:prov-1:20261130T140000Z:email"]
    # The afternoon fire of the same day is a digest of its own.
    afternoon = run_provider_digest(open_store, AFTERNOON, "America/Chicago", AFTERNOON)
    assert (afternoon.due, afternoon.planned) == (1, 1)
    assert digests(open_store) == ["provider_digest:prov-1:20261130T140000Z:email",
                                   "provider_digest:prov-1:20261130T220000Z:email"]


def test_a_manual_run_stands_for_the_latest_fire_in_each_zone(open_store: Store) -> None:
    jobs = [Job(name="provider-digest", cron=TWICE_DAILY, zone="provider")]
    # 10:00:59 and 10:01:02 in Chicago: two runs a few seconds apart, across a minute.
    ten = MORNING + timedelta(hours=2)
    first = run_manually(open_store, jobs, "provider-digest", ten + timedelta(seconds=59))
    second = run_manually(open_store, jobs, "provider-digest", ten + timedelta(seconds=62))
    berlin_fire = utc(2026, 11, 30, 15, 0)   # Monday 16:00 CET, an hour before
    assert first == [
        DigestRun(zone="America/Chicago", fire=MORNING, due=1, planned=1),
        DigestRun(zone="Europe/Berlin", fire=berlin_fire, due=0, planned=0)]
    assert second == [
        DigestRun(zone="America/Chicago", fire=MORNING, due=1, planned=0),
        DigestRun(zone="Europe/Berlin", fire=berlin_fire, due=0, planned=0)]
    # The clock's run of the afternoon fire, then a manual run after it: one digest.
    assert run_provider_digest(open_store, AFTERNOON, "America/Chicago", AFTERNOON).planned == 1
    [chicago, _] = run_manually(open_store, jobs, "provider-digest", AFTERNOON
                                + timedelta(minutes=20))
    assert (chicago.fire, chicago.due, chicago.planned) == (AFTERNOON, 1, 0)
    assert digests(open_store) == ["provider_digest:prov-1:20261130T140000Z:email",
                                   "provider_digest:prov-1:20261130T220000Z:email"]


def test_a_manual_run_takes_the_latest_fire_of_jobs_sharing_a_name(open_store: Store) -> None:
    jobs = [Job(name="provider-digest", cron=WEEKDAYS_8, zone="provider"),
            Job(name="provider-digest", cron="0 16 * * 1-5", zone="America/Chicago")]
    runs = run_manually(open_store, jobs, "provider-digest", AFTERNOON + timedelta(hours=1))
    assert [(r.zone, r.fire, r.planned) for r in runs] == [
        ("America/Chicago", AFTERNOON, 1), ("Europe/Berlin", utc(2026, 11, 30, 7, 0), 0)]


def test_no_providers_no_manual_runs(redis_client) -> None:
    jobs = [Job(name="provider-digest", cron=TWICE_DAILY, zone="provider")]
    assert run_manually(Store(redis_client), jobs, "provider-digest", MORNING) == []


DESCRIBED = {
    "one planned": (DigestRun("America/Chicago", MORNING, 1, 1),
                    "fire Mon 2026-11-30 08:00 CST in America/Chicago: planned 1 digest, "
                    "due now"),
    "three planned": (DigestRun("America/Chicago", MORNING, 3, 3),
                      "fire Mon 2026-11-30 08:00 CST in America/Chicago: planned 3 digests, "
                      "due now"),
    "some planned before": (DigestRun("America/Chicago", MORNING, 3, 1),
                            "fire Mon 2026-11-30 08:00 CST in America/Chicago: planned 1 "
                            "digest, due now (2 providers with open items already have one)"),
    "all planned before, one": (DigestRun("America/Chicago", MORNING, 1, 0),
                                "fire Mon 2026-11-30 08:00 CST in America/Chicago: nothing "
                                "planned: 1 provider with open items already has a digest "
                                "for that fire"),
    "all planned before, two": (DigestRun("America/Chicago", MORNING, 2, 0),
                                "fire Mon 2026-11-30 08:00 CST in America/Chicago: nothing "
                                "planned: 2 providers with open items already have a digest "
                                "for that fire"),
    "nothing open": (DigestRun("Europe/Berlin", utc(2026, 11, 30, 7, 0), 0, 0),
                     "fire Mon 2026-11-30 08:00 CET in Europe/Berlin: nothing planned: no "
                     "provider has open items"),
    "every zone": (DigestRun(None, MORNING, 1, 1),
                   "fire Mon 2026-11-30 14:00 UTC: planned 1 digest, due now"),
}


@pytest.mark.parametrize(("run", "line"), list(DESCRIBED.values()), ids=list(DESCRIBED))
def test_what_a_run_says_it_planned(run: DigestRun, line: str) -> None:
    assert run.describe() == line
