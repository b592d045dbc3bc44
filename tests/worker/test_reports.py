"""The clock's repair job for delivery reports (`notifier.worker.reports`): real Redis, the
real Twilio and SendGrid SDKs sending to and asking the stand-ins of `tests.fakes`, and the
job run in-process, by the clock's message through a real dramatiq worker."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dramatiq
import pytest

from notifier.config import Settings
from notifier.errors import StoreContention
from notifier.ledger.reading import shown_state
from notifier.ledger.store import Store
from notifier.runtime import Runtime
from notifier.web.ops import LedgerCollector
from notifier.worker import reports
from notifier.worker.actors import JOBS_QUEUE, RUN_JOB, build_broker, declare_actors
from notifier.worker.clock import Clock
from notifier.worker.reports import (
    EVERY_S,
    LOOKUPS_PER_RUN,
    QUEUED_S,
    REPORT_LOOKUPS,
    REPORTS_RUNNING,
    REPORTS_STARTED,
    REPORTS_TURN,
    RUN_BUDGET_S,
    LookupOutcome,
    end_run,
    run_report_lookups,
    start_run,
)
from tests.fakes import FakeSendGrid, FakeTwilio, Scripted
from tests.kit import (
    appointment,
    client_upserted,
    counted_pipelines,
    provider_upserted,
    store_and_apply,
)
from tests.ledger_keys import awaiting_scores, notif_key
from tests.service import wait_for

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # 10:00 in New York
WAIT_S = 600
LATER = NOW + timedelta(seconds=WAIT_S + 5)
SID = "AC" + "0" * 32
PHONE = "+14155550123"
SMS = "appointment_confirmation:{}:booked:sms"
EMAIL = "appointment_confirmation:{}:booked:email"
JOB_MESSAGES = f"notifier-dq:{JOBS_QUEUE}.msgs"


@pytest.fixture
def fakes() -> Iterator[tuple[FakeTwilio, FakeSendGrid]]:
    with FakeTwilio(account_sid=SID, auth_token="test-token") as twilio, \
            FakeSendGrid() as sendgrid:
        yield twilio, sendgrid


@pytest.fixture
def twilio(fakes) -> FakeTwilio:
    return fakes[0]


@pytest.fixture
def runtime(redis_url, redis_client, fakes, tmp_path: Path) -> Runtime:
    twilio, sendgrid = fakes
    settings = Settings.from_env({
        "NOTIFIER_REDIS_URL": redis_url, "NOTIFIER_VAR_DIR": str(tmp_path / "var"),
        "TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": "test-token",
        "TWILIO_FROM": "+15005550006", "NOTIFIER_TWILIO_BASE_URL": twilio.url,
        "SENDGRID_API_KEY": "SG.test-key", "SENDGRID_API_HOST": sendgrid.url,
        "NOTIFIER_PUBLIC_URL": "https://notifier.test", "NOTIFIER_SMS_RATE_PER_S": "1000",
        "NOTIFIER_LEASE_S": "30", "NOTIFIER_DELIVERY_REPORT_WAIT_S": str(WAIT_S),
    }, dotenv=Path("/nonexistent"))
    return Runtime.build(settings, redis_url)


def book(runtime: Runtime, policy, *appointments: str, join: bool = False,
         email: bool = True) -> None:
    """Client c1 (New York) books `appointments` 30 minutes ahead; what is due is sent
    through the providers (at NOW, the SMS paced within a second, and the join links at
    NOW + 15 min)."""
    store = runtime.store
    booked = NOW - timedelta(minutes=1)
    store_and_apply(store, policy, client_upserted("c1", "America/New_York", booked,
                                                   email=email), booked)
    store_and_apply(store, policy, provider_upserted("prov-1", booked), booked)
    for appt in appointments:
        store_and_apply(store, policy, appointment(
            "appointment.scheduled", appt, "c1", NOW + timedelta(minutes=30), booked,
            join_url="https://video.example.com/r/1" if join else None), booked)
    for at in (NOW, NOW + timedelta(seconds=1), NOW + timedelta(minutes=15)):
        runtime.deliverer.deliver_batch(store.schedule.claim(at, 100, 30), at)


def sid(store: Store, notification_id: str) -> str:
    return store.notification(notification_id)["receipt"]


def shown(store: Store, notification_id: str) -> tuple[str, str, str]:
    fields = store.notification(notification_id)
    return shown_state(fields), fields.get("delivery", ""), fields.get("code", "")


def awaiting(store: Store) -> set[str]:
    return set(awaiting_scores(store.redis, store.keys))


def look_ups(twilio: FakeTwilio) -> list[str]:
    return [r.path for r in twilio.requests if r.method == "GET"]


def run(runtime: Runtime, at: datetime = LATER, **bounds) -> Counter[LookupOutcome]:
    return run_report_lookups(runtime.store, runtime.channels, at, **bounds)


def test_after_the_wait_the_sms_is_looked_up_and_its_delivery_recorded(runtime, policy,
                                                                      twilio):
    book(runtime, policy, "a1")
    store = runtime.store
    sms, email = SMS.format("a1"), EMAIL.format("a1")
    assert awaiting(store) == {sms, email}
    twilio.set_status(sid(store, sms), "delivered")
    just_before = NOW + timedelta(seconds=WAIT_S - 1)
    assert run(runtime, just_before) == Counter(), "the wait is not over"
    assert look_ups(twilio) == []
    assert run(runtime) == Counter({LookupOutcome.DELIVERED: 1, LookupOutcome.UNKNOWN: 1})
    assert look_ups(twilio) == [f"/2010-04-01/Accounts/{SID}/Messages/{sid(store, sms)}.json"]
    assert shown(store, sms) == ("delivered", "delivered", "")
    # SendGrid cannot be asked: unknown, and still `sent` to the read API.
    assert shown(store, email) == ("sent", "unknown", "")
    assert awaiting(store) == set()
    assert run(runtime, LATER + timedelta(hours=1)) == Counter(), "nothing is asked twice"
    assert len(look_ups(twilio)) == 1


def test_the_read_api_shows_unknown_as_sent_with_its_delivery(runtime, policy):
    book(runtime, policy, "a1")
    run(runtime)
    rows = {n.id: n for n in runtime.store.notifications_for("client", "c1")}
    assert (rows[EMAIL.format("a1")].state, rows[EMAIL.format("a1")].delivery) == (
        "sent", "unknown")


def test_the_outbox_reports_nothing_so_nothing_waits(redis_url, redis_client, policy,
                                                     tmp_path):
    outbox = Runtime.build(Settings.from_env({
        "NOTIFIER_REDIS_URL": redis_url, "NOTIFIER_VAR_DIR": str(tmp_path / "var"),
        "NOTIFIER_OUTBOX_DIR": str(tmp_path / "outbox")}, dotenv=Path("/nonexistent")),
        redis_url)
    book(outbox, policy, "a1")
    assert outbox.store.notification(SMS.format("a1"))["state"] == "sent"
    assert awaiting(outbox.store) == set()


def test_the_bounds_are_the_documented_ones():
    """The README's figures: 200 look-ups a run, a run a minute, no new call after 60 s."""
    assert (LOOKUPS_PER_RUN, EVERY_S, RUN_BUDGET_S) == (200, 60.0, 60.0)
    assert Clock.reports_every_s == EVERY_S


@pytest.mark.parametrize(("status", "code"), [("undelivered", 30003), ("failed", 30008)])
def test_a_failure_found_by_the_look_up_is_recorded_with_its_code(runtime, policy, twilio,
                                                                  status, code):
    book(runtime, policy, "a1")
    sms = SMS.format("a1")
    twilio.set_status(sid(runtime.store, sms), status, error_code=code)
    assert run(runtime)[LookupOutcome.FAILED] == 1
    assert shown(runtime.store, sms) == ("failed", status, str(code))


def test_a_number_that_opted_out_at_twilio_is_opted_out_here_too(runtime, policy, twilio):
    """As a status callback with 21610 does (`fallback.after_reported_failure`)."""
    book(runtime, policy, "a1")
    twilio.set_status(sid(runtime.store, SMS.format("a1")), "undelivered", error_code=21610)
    run(runtime)
    assert runtime.store.sms_opted_out(PHONE)


def test_an_sms_that_never_arrived_goes_by_email_as_after_a_failed_callback(runtime, policy,
                                                                            twilio):
    book(runtime, policy, "a1", join=True)
    store = runtime.store
    [join] = [n.id for n in store.notifications_for("client", "c1")
              if n.kind == "appointment_join_link"]
    assert store.notification(join)["state"] == "sent"
    twilio.set_status(sid(store, join), "undelivered", error_code=30003)
    run(runtime, LATER + timedelta(minutes=15))
    sibling = store.notification(join.removesuffix(":sms") + ":email")
    assert sibling["state"] in ("scheduled", "expired")
    assert sibling["reason"].startswith("instead of sms: sms undelivered (30003)")


def test_a_fallback_redis_kept_from_being_planned_is_tried_again_next_run(
        runtime, policy, twilio, monkeypatch):
    book(runtime, policy, "a1", join=True)
    store = runtime.store
    [join] = [n.id for n in store.notifications_for("client", "c1")
              if n.kind == "appointment_join_link"]
    twilio.set_status(sid(store, join), "undelivered", error_code=30003)
    sibling = join.removesuffix(":sms") + ":email"
    planned = reports.after_reported_failure

    def contended(*args, **kwargs):
        monkeypatch.setattr(reports, "after_reported_failure", planned)
        raise StoreContention("the plan lost to concurrent writers")

    monkeypatch.setattr(reports, "after_reported_failure", contended)
    at = LATER + timedelta(minutes=15)
    assert run(runtime, at)[LookupOutcome.FAILED] == 1
    assert shown(store, join)[0] == "failed" and not store.notification(sibling)
    assert join in awaiting(store)
    run(runtime, at + timedelta(minutes=1))
    assert store.notification(sibling)["reason"].startswith("instead of sms: sms undelivered")
    assert awaiting(store) == set()


def test_twilio_still_saying_sent_is_unknown_and_a_real_report_later_still_counts(
        runtime, policy, twilio):
    book(runtime, policy, "a1")
    store = runtime.store
    sms = SMS.format("a1")
    twilio.set_status(sid(store, sms), "sent")
    assert run(runtime)[LookupOutcome.UNKNOWN] == 2
    assert shown(store, sms) == ("sent", "unknown", "")
    # A late non-final report leaves `unknown`; the carrier's final one replaces it.
    store.record_delivery(sms, "sent", "", LATER)
    assert shown(store, sms) == ("sent", "unknown", "")
    store.record_delivery(sms, "delivered", "", LATER)
    assert shown(store, sms) == ("delivered", "delivered", "")


def test_a_message_twilio_does_not_know_is_unknown_and_not_asked_again(runtime, policy,
                                                                       twilio):
    book(runtime, policy, "a1")
    store = runtime.store
    sms = SMS.format("a1")
    store.redis.hset(notif_key(sms), "receipt", "SM" + "f" * 32)  # not one Twilio gave
    assert run(runtime) == Counter({LookupOutcome.UNKNOWN: 2})
    assert shown(store, sms) == ("sent", "unknown", ""), "the look-up's 20404 is no failure"
    assert awaiting(store) == set()
    run(runtime, LATER + timedelta(hours=1))
    assert len(look_ups(twilio)) == 1


@pytest.mark.parametrize("answer", [FakeTwilio.error(20429, status=429, retry_after_s=30),
                                    Scripted(status=503, body=b"busy")])
def test_a_look_up_twilio_cannot_answer_now_is_asked_again_next_run(runtime, policy, twilio,
                                                                    answer):
    """And the run makes no further call: a struggling provider is left be until then."""
    book(runtime, policy, "a1", "a2")
    store = runtime.store
    first, second = SMS.format("a1"), SMS.format("a2")
    for notification_id in (first, second):
        twilio.set_status(sid(store, notification_id), "delivered")
    twilio.script(answer)
    claims = []
    claim = store.reports.claim
    store.reports.claim = lambda *args: claims.append(claim(*args)) or claims[-1]
    try:
        done = run(runtime)
    finally:
        del store.reports.claim
    assert (done[LookupOutcome.RETRY], len(look_ups(twilio))) == (1, 1)
    assert [len(c) for c in claims] == [4], "once it stops calling, a run claims no more"
    assert {first, second} <= awaiting(store)
    assert shown(store, first)[1] == shown(store, second)[1] == ""
    # The next run (a minute later) asks again, and hears.
    assert run(runtime, LATER + timedelta(minutes=1))[LookupOutcome.DELIVERED] == 2
    assert shown(store, first)[0] == shown(store, second)[0] == "delivered"
    assert awaiting(store) == set()


def test_an_expired_notification_is_dropped_from_the_index_unasked(runtime, policy, twilio):
    book(runtime, policy, "a1")
    store = runtime.store
    for notification_id in (SMS.format("a1"), EMAIL.format("a1")):
        store.redis.pexpire(notif_key(notification_id), 1)
    wait_for(lambda: not store.redis.exists(notif_key(SMS.format("a1"))),
             what="the hash to expire")
    assert run(runtime) == Counter({LookupOutcome.GONE: 2})
    assert awaiting(store) == set() and look_ups(twilio) == []


def test_a_run_handles_at_most_its_bound_in_batches_and_a_backlog_drains(runtime, policy,
                                                                         twilio):
    book(runtime, policy, *(f"a{i}" for i in range(12)), email=False)
    store = runtime.store
    assert len(awaiting(store)) == 12  # a confirmation by SMS each
    with counted_pipelines(store.redis) as pipelines:
        done = run(runtime, limit=10, batch=4)
    assert sum(done.values()) == 10 and len(awaiting(store)) == 2
    assert len(look_ups(twilio)) == 10, "one call per send, the run's bound"
    # per batch of 4, 4, 2: the claim (the shards' counts due, then their claims), the
    # facts and the writes
    assert len(pipelines) == 4 * 3, "two for the claim, a read and a write per batch"
    assert sum(run(runtime, LATER + timedelta(minutes=1), limit=10).values()) == 2
    assert awaiting(store) == set() and len(look_ups(twilio)) == 12


def test_a_run_stops_calling_the_provider_when_its_time_is_spent(runtime, policy, twilio):
    book(runtime, policy, *(f"a{i}" for i in range(4)), email=False)
    store = runtime.store
    ticks = itertools.count(0, 25)  # every reading of the clock 25 s on: 2 calls in 60 s
    done = run(runtime, budget_s=60, monotonic=lambda: next(ticks))
    assert len(look_ups(twilio)) == 2 and done == Counter({LookupOutcome.UNKNOWN: 2})
    assert len(awaiting(store)) == 2
    assert store.reports.overdue(LATER) == 0, "not for this run again"
    assert store.reports.overdue(LATER + timedelta(seconds=1)) == 2, (
        "the SMS not asked are due for the next run")


def test_metrics_count_the_look_ups_and_show_what_awaits_a_report(runtime, policy, twilio):
    book(runtime, policy, "a1", "a2")
    store = runtime.store
    twilio.set_status(sid(store, SMS.format("a1")), "delivered")
    twilio.set_status(sid(store, SMS.format("a2")), "failed", error_code=30005)

    def families() -> dict:
        return {f.name: f for f in LedgerCollector(store).collect()}

    before = families()
    assert before["notifier_awaiting_report"].samples[0].value == 4
    zero = {(s.labels["outcome"], s.labels["channel"]): s.value
            for s in before["notifier_report_lookups"].samples}
    assert set(zero.values()) == {0} and ("retry", "sms") in zero and ("gone", "email") in zero
    run(runtime)
    after = families()
    lookups = {(s.labels["outcome"], s.labels["channel"]): s.value
               for s in after["notifier_report_lookups"].samples if s.value}
    assert lookups == {("delivered", "sms"): 1, ("failed", "sms"): 1, ("unknown", "email"): 2}
    assert after["notifier_awaiting_report"].samples[0].value == 0
    assert after["notifier_awaiting_report_overdue"].samples[0].value == 0


# The clock starts it, a worker runs it ---------------------------------------------------------

def test_the_clock_enqueues_the_job_once_per_interval_across_clocks_when_any_is_overdue(
        runtime, policy, redis_url):
    store = runtime.store
    first = Clock(store, build_broker(redis_url))
    second = Clock(store, build_broker(redis_url))
    assert not first.start_report_lookups(LATER), "nothing sent: nothing to look up"
    book(runtime, policy, "a1")
    assert not first.start_report_lookups(NOW), "sent, but the wait is not over"
    assert first.start_report_lookups(LATER)
    assert not second.start_report_lookups(LATER), "another clock started this interval's"
    assert 0 < store.redis.ttl(REPORTS_TURN) <= QUEUED_S, "held while the run is queued"
    messages = store.redis.hvals(JOB_MESSAGES)
    assert len(messages) == 1 and REPORT_LOOKUPS.encode() in messages[0]


def test_a_clock_tick_starts_the_job_at_most_once_an_interval(runtime, policy, redis_url):
    book(runtime, policy, "a1")
    store = runtime.store
    clock = Clock(store, build_broker(redis_url), reports_every_s=60)
    started = []
    clock.start_report_lookups = lambda now: started.append(now) or True  # type: ignore
    for seconds in range(0, 150, 10):
        clock.tick(LATER + timedelta(seconds=seconds))
    assert started == [LATER, LATER + timedelta(seconds=60), LATER + timedelta(seconds=120)]


def test_the_job_started_by_the_clock_runs_in_a_real_worker(runtime, policy, twilio, redis_url,
                                                            redis_client):
    """Clock -> jobs queue -> `run_job` in a dramatiq worker -> Twilio asked, the report
    recorded, the message acknowledged (the sends are days old by the real clock)."""
    book(runtime, policy, "a1")
    store = runtime.store
    sms = SMS.format("a1")
    twilio.set_status(sid(store, sms), "delivered")
    broker = build_broker(redis_url)
    declare_actors(broker, runtime)
    assert broker.get_actor(RUN_JOB)
    worker = dramatiq.Worker(broker, queues={JOBS_QUEUE}, worker_threads=2, worker_timeout=50)
    worker.start()
    try:
        assert Clock(store, build_broker(redis_url)).start_report_lookups(datetime.now(UTC))
        wait_for(lambda: shown(store, sms)[0] == "delivered", what="the look-up in the worker")
        wait_for(lambda: redis_client.hlen(JOB_MESSAGES) == 0, what="the job message's ack")
    finally:
        worker.stop()
        broker.close()
    assert shown(store, EMAIL.format("a1"))[1] == "unknown"
    assert awaiting(store) == set()


def test_runs_queued_while_no_worker_takes_them_do_not_pile_up_or_start_together(
        runtime, policy, redis_url):
    """Found by QA: the clock queued a run a minute whether or not the last had started, so
    after workers were away the queued runs started together (195 look-ups in a second).
    A queued run holds the turn; a run that finds another started under a minute ago does
    nothing; the next run is queued a minute after this one started."""
    book(runtime, policy, "a1")
    store = runtime.store
    clock = Clock(store, build_broker(redis_url))
    assert clock.start_report_lookups(LATER)
    for minute in range(1, 4):  # no worker meanwhile: nothing more is queued
        assert not clock.start_report_lookups(LATER + timedelta(minutes=minute))
    assert len(store.redis.hvals(JOB_MESSAGES)) == 1
    assert start_run(store), "the queued run starts"
    assert not store.redis.exists(REPORTS_TURN), "no longer queued: the clock's next try queues"
    assert not start_run(store), "another queued before the outage does nothing"
    end_run(store)
    assert not start_run(store), "nor one queued after it ended, under a minute after it began"


def test_runs_start_once_a_minute_and_never_two_at_once(runtime, policy, redis_url):
    """Found by QA: the run held the turn for a minute from its own start, so the clock's
    try a minute after queueing it was refused (runs two minutes apart); and a run still
    calling past a minute had the next one start beside it."""
    book(runtime, policy, "a1")
    store = runtime.store
    clock = Clock(store, build_broker(redis_url))
    assert clock.start_report_lookups(LATER)
    assert start_run(store)
    assert clock.start_report_lookups(LATER + timedelta(seconds=EVERY_S)), "a minute on"
    store.redis.delete(REPORTS_STARTED)  # a minute has passed since the first began
    assert not start_run(store), "the first is still calling: the second does nothing"
    assert clock.start_report_lookups(LATER + timedelta(seconds=2 * EVERY_S))
    end_run(store)
    assert start_run(store), "the first over and a minute gone: the next runs"
    assert 0 < store.redis.ttl(REPORTS_RUNNING) <= RUN_BUDGET_S + 50
