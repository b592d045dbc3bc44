"""The console's client pages on the real app and Redis: finding a client by id, number or
address (exactly), the client page (details, opt-out, time line, notifications in both
zones, appointments, prescriptions, open requests), their audit, their errors; the
indexes they read, kept with the records and filled by `notifier console reindex`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient

from notifier.cli import build_parser
from notifier.config import Settings
from notifier.console.audit import AuditLog
from notifier.console.client_data import load_client_file
from notifier.console.routes import Console, console_routes
from notifier.console.sessions import SessionCodec
from notifier.ledger.store import Store
from tests.console.conftest import CONSOLE_SECRET, NAME, console_env
from tests.console.test_routes import audited, sign_in
from tests.kit import (
    appointment,
    client_upserted,
    counted_pipelines,
    event_dict,
    message_received,
    prescription_filled,
    provider_upserted,
    refill_requested,
    store_and_apply,
    utc,
)
from tests.ledger_keys import KEYS, client_entities, email_clients, record_key

#: Two days before New York leaves daylight saving time (1 November 2026, 06:00 UTC);
#: London left it on 25 October.
NOW = utc(2026, 10, 30, 14)
START = utc(2026, 11, 2, 15)  # 10:00 in New York (EST), 15:00 in London (GMT)
PHONE = "+14155550123"


@pytest.fixture
def app(operators_file: Path, redis_client: redis.Redis) -> Iterator[tuple[Any, list[datetime]]]:
    """The console alone on a clock the test moves (`now[0]`), operators in London."""
    settings = Settings.from_env(console_env(operators_file,
                                             NOTIFIER_CONSOLE_TIMEZONE="Europe/London"),
                                 dotenv=Path("/nonexistent"))
    now = [NOW]

    def clock() -> datetime:
        return now[0]

    console = Console(settings, Store(redis_client),
                      SessionCodec(CONSOLE_SECRET, 1800, clock),
                      AuditLog(redis_client, 1, keys=KEYS),
                      clock=clock)
    fastapi = FastAPI()
    fastapi.include_router(console_routes(console))
    with TestClient(fastapi, base_url="https://testserver") as client:
        yield client, now


@pytest.fixture
def web(app: tuple[Any, list[datetime]]) -> Any:
    client, _ = app
    assert sign_in(client).status_code == 303
    return client


@pytest.fixture
def store(redis_client: redis.Redis) -> Store:
    return Store(redis_client)


def upsert(store: Store, policy: Any, client_id: str, *, phone: str | None = PHONE,
           email: str | None = None, zone: str = "America/New_York",
           at: datetime = NOW) -> None:
    evt = client_upserted(client_id, zone, at, phone=phone)
    if email is not None:
        evt["data"]["client"]["email"] = email
    store_and_apply(store, policy, evt, at)


def booked(store: Store, policy: Any, client_id: str = "c1", start: datetime = START) -> None:
    """A client in New York with an appointment at `start`, booked at NOW."""
    store_and_apply(store, policy, provider_upserted("prov-1", NOW), NOW)
    upsert(store, policy, client_id)
    store_and_apply(store, policy, appointment("appointment.scheduled", f"a-{client_id}",
                                               client_id, start, NOW), NOW)


def search(web: Any, query: str) -> Any:
    return web.get("/console/clients", params={"q": query}, follow_redirects=False)


def cells(html: str, table_id: str) -> list[list[str]]:
    """The text of each cell of each body row of the table `table_id`."""
    table = re.search(rf'<table id="{table_id}".*?<tbody>(.*?)</tbody>', html, re.S)
    assert table, f"no table {table_id}"
    return [[re.sub(r"<[^>]+>", "", cell).strip()
             for cell in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)]
            for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", table.group(1), re.S)]


# Search ---------------------------------------------------------------------------------
@pytest.mark.parametrize("query", ["c1", " c1 ", "(415) 555-0123", "415 555 0123",
                                   "+1 415-555-0123", "C1@Example.COM", " c1@example.com"])
def test_one_client_found_by_id_number_or_address_answers_with_their_page(
        web, store, policy, redis_client, query):
    upsert(store, policy, "c1")  # c1@example.com
    answer = search(web, query)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/console/clients/c1"
    operator, action, subject = audited(redis_client)[-1]
    assert (operator, action) == (NAME, "search")
    assert subject.endswith(": client:c1")
    assert "415" not in subject and "@" not in subject


def test_a_family_sharing_a_number_is_listed_and_only_them(web, store, policy, redis_client):
    upsert(store, policy, "parent")
    upsert(store, policy, "child")
    upsert(store, policy, "neighbour", phone="+14155550199")
    answer = search(web, "(415) 555-0123")
    assert answer.status_code == 200
    listed = re.search(r'<ul id="matches">(.*?)</ul>', answer.text, re.S)
    assert listed
    assert re.findall(r'href="([^"]+)"', listed.group(1)) == [
        "/console/clients/child", "/console/clients/parent"]
    assert "neighbour" not in answer.text
    assert audited(redis_client)[-1] == (NAME, "search", "phone: client:child client:parent")


@pytest.mark.parametrize("query", ["c9", "+14155550100", "nobody@example.com", "c"])
def test_nothing_found_says_so_and_keeps_the_query(web, store, policy, redis_client, query):
    upsert(store, policy, "c1")
    answer = search(web, query)
    assert answer.status_code == 200
    assert "No client has this id, phone number or email address." in answer.text
    assert f'value="{query}"' in answer.text
    assert audited(redis_client)[-1][1:] in {("search", "id: (none)"),
                                             ("search", "phone: (none)"),
                                             ("search", "id+phone: (none)"),
                                             ("search", "email: (none)")}


def test_a_prefix_of_an_id_or_address_finds_no_one(web, store, policy):
    upsert(store, policy, "client-1")
    for query in ("client", "client-", "client-1@example", "+1415555012"):
        assert search(web, query).status_code in (200, 400)
        assert "/console/clients/client-1" not in search(web, query).text


@pytest.mark.parametrize("query", ["", "   ", "x" * 255, "Ana Smith", "not a number 123"])
def test_an_empty_overlong_or_unreadable_query_is_refused(web, redis_client, query):
    before = audited(redis_client)
    answer = search(web, query)
    assert answer.status_code == 400
    assert "Type a client&#39;s id, phone number or email address, whole" in answer.text
    assert 'id="q"' in answer.text
    assert audited(redis_client) == before  # nothing looked up, nothing to audit


def test_without_a_session_the_client_pages_answer_401(app, store, policy, redis_client):
    client, _ = app
    upsert(store, policy, "c1")
    for path in ("/console/clients?q=c1", "/console/clients/c1", "/console/clients/a%20b"):
        answer = client.get(path, follow_redirects=False)
        assert answer.status_code == 401, path
        assert "c1@example.com" not in answer.text
    assert audited(redis_client) == []


def test_the_email_index_follows_a_change_of_address(web, store, policy, redis_client):
    upsert(store, policy, "c1", email="old@example.com")
    assert search(web, "old@example.com").status_code == 303
    upsert(store, policy, "c1", email="New@Example.com", at=NOW + timedelta(minutes=1))
    assert search(web, "OLD@example.com").status_code == 200
    assert search(web, "new@example.com").headers["location"] == "/console/clients/c1"
    assert email_clients(redis_client, "old@example.com") == set()
    # Only the case changes: the client stays in the set, found either way.
    upsert(store, policy, "c1", email="new@example.com", at=NOW + timedelta(minutes=2))
    assert email_clients(redis_client, "new@example.com") == {b"c1"}
    assert search(web, "NEW@EXAMPLE.COM").status_code == 303


# The client page ------------------------------------------------------------------------
def test_an_unknown_client_is_a_404_page_and_the_attempt_is_audited(web, redis_client):
    answer = web.get("/console/clients/c404")
    assert answer.status_code == 404
    assert "There is no client with the id &#39;c404&#39;." in answer.text
    assert 'id="q"' in answer.text
    assert audited(redis_client)[-1] == (NAME, "view", "client:c404")
    not_an_id = web.get("/console/clients/" + quote("a b/../c", safe=""))
    assert not_an_id.status_code == 404
    assert audited(redis_client)[-1] == (NAME, "view", "client:c404")


def test_a_booked_client_page_shows_details_reminders_in_both_zones_and_the_time_line(
        web, store, policy, redis_client):
    booked(store, policy)
    page = web.get("/console/clients/c1")
    assert page.status_code == 200, page.text
    assert audited(redis_client)[-1] == (NAME, "view", "client:c1")
    html = page.text
    assert "<script" not in html and "style=" not in html
    for fact in (PHONE, "c1@example.com", "America/New_York", "not opted out",
                 "no email opt-out kept"):
        assert fact in html, fact
    assert "Re-enable SMS" not in html

    # The client's wall clock (New York, EDT until 1 November, EST after) and the
    # operator's (London, GMT since 25 October): four hours apart, then five.
    planned = store.notifications_for("client", "c1", since=NOW - timedelta(days=30))
    assert [row[:5] for row in cells(html, "notifications")] == [
        ["appointment_confirmation", "email", "Fri 30 Oct 2026 10:00 EDT",
         "Fri 30 Oct 2026 14:00 GMT", "scheduled"],
        ["appointment_confirmation", "sms", "Fri 30 Oct 2026 10:00 EDT",
         "Fri 30 Oct 2026 14:00 GMT", "scheduled"],
        ["appointment_reminder", "email", "Fri 30 Oct 2026 11:00 EDT",
         "Fri 30 Oct 2026 15:00 GMT", "scheduled"],
        ["appointment_reminder", "sms", "Fri 30 Oct 2026 11:00 EDT",
         "Fri 30 Oct 2026 15:00 GMT", "scheduled"],
        ["appointment_reminder", "email", "Sun 1 Nov 2026 10:00 EST",
         "Sun 1 Nov 2026 15:00 GMT", "scheduled"],
        ["appointment_reminder", "sms", "Sun 1 Nov 2026 10:00 EST",
         "Sun 1 Nov 2026 15:00 GMT", "scheduled"]]
    assert len(planned) == 6

    # One link per notification in the table and in the time line, to the same pages.
    links = {f"/console/notifications/{quote(n.id, safe='')}" for n in planned}
    table_links = re.findall(r'<td data-label="Details"><a href="([^"]+)"', html)
    svg = re.search(r'<svg class="timeline" role="group".*?</svg>', html, re.S)
    assert svg
    svg_links = re.findall(r'<a href="([^"]+)">', svg.group(0))
    assert sorted(table_links) == sorted(svg_links) == sorted(links)

    appointments = cells(html, "appointments")
    assert appointments == [[
        "a-c1 (medication_management)", "Mon 2 Nov 2026 10:00 to 10:30 EST",
        "Mon 2 Nov 2026 15:00 to 15:30 GMT", "scheduled", "not confirmed",
        "Resend the invite for a-c1"]]
    assert 'href="/console/appointments/a-c1/resend-invite"' in html


def test_the_due_times_read_in_both_zones_before_and_after_the_change(web, store, policy):
    # Booked for 1 November 05:30 UTC (01:30 EDT) and 06:30 UTC (01:30 EST): the same
    # wall-clock time in New York, an hour apart; the first ends at 01:00 EST.
    store_and_apply(store, policy, provider_upserted("prov-1", NOW), NOW)
    upsert(store, policy, "c1")
    for appt, start in (("early", utc(2026, 11, 1, 5, 30)), ("late", utc(2026, 11, 1, 6, 30))):
        store_and_apply(store, policy, appointment("appointment.scheduled", appt, "c1", start,
                                                   NOW), NOW)
    rows = cells(web.get("/console/clients/c1").text, "appointments")
    assert [row[1:3] for row in rows] == [
        ["Sun 1 Nov 2026 01:30 EDT to Sun 1 Nov 2026 01:00 EST",
         "Sun 1 Nov 2026 05:30 to 06:00 GMT"],
        ["Sun 1 Nov 2026 01:30 to 02:00 EST", "Sun 1 Nov 2026 06:30 to 07:00 GMT"]]


def test_an_opted_out_number_shows_it_and_the_way_back(web, store, policy):
    upsert(store, policy, "c1")
    store.set_sms_opt_out(PHONE, True)
    html = web.get("/console/clients/c1").text
    assert "<strong>opted out</strong>" in html
    assert '<a href="/console/clients/c1/sms-enable">Re-enable SMS</a>' in html


def test_a_client_without_notifications_has_an_empty_time_line(web, store, policy):
    upsert(store, policy, "c1", phone=None)
    html = web.get("/console/clients/c1").text
    assert 'id="no-notifications"' in html and 'id="notifications"' not in html
    assert "nothing due in this time" in html
    assert '<dd id="sms-opt-out">no number</dd>' in html


def test_prescriptions_show_their_run_out_and_open_requests_the_time_left(web, app, store,
                                                                          policy):
    _, now = app
    booked(store, policy)
    store_and_apply(store, policy, prescription_filled("rx-1", "c1", date(2026, 10, 20), NOW,
                                                       days_supply=30), NOW)
    store_and_apply(store, policy, refill_requested("rr-1", "rx-1", "c1", NOW), NOW)
    store_and_apply(store, policy, message_received("m-1", "c1", NOW), NOW)
    store_and_apply(store, policy, message_received("m-2", "c1", NOW), NOW)
    store_and_apply(store, policy, event_dict("message.answered", {"message_id": "m-2"},
                                              NOW + timedelta(minutes=1)), NOW)
    # Another client's prescription is not this one's.
    upsert(store, policy, "c2", phone="+14155550199")
    store_and_apply(store, policy, prescription_filled("rx-2", "c2", date(2026, 10, 1), NOW),
                    NOW)
    now[0] = NOW + timedelta(hours=10)
    assert sign_in(web).status_code == 303  # the session of NOW is over
    html = web.get("/console/clients/c1").text
    assert cells(html, "prescriptions") == [
        ["Sertraline 50 mg", "rx-1", "2026-10-20", "30", "2026-11-19", "2", "active"]]
    requests = cells(html, "requests")
    assert [row[0].split(" (")[0] for row in requests] == ["message m-1", "refill request rr-1"]
    assert policy.response_window.window == timedelta(hours=48)  # schedules/policy.toml
    assert {row[4] for row in requests} == {"1 d 14 h"}
    assert all(row[2].endswith(("EST", "EDT")) and row[3].endswith(("GMT", "BST"))
               for row in requests)
    now[0] = NOW + timedelta(days=10)
    assert sign_in(web).status_code == 303
    late = cells(web.get("/console/clients/c1").text, "requests")
    assert all(row[4].startswith("overdue by ") for row in late)


def test_the_page_reads_in_the_same_round_trips_however_long_the_history(store, policy):
    booked(store, policy)
    with counted_pipelines(store.redis) as one:
        assert load_client_file(store, "c1", NOW) is not None
    for i in range(6):
        store_and_apply(store, policy, appointment("appointment.scheduled", f"more-{i}", "c1",
                                                   START + timedelta(days=i + 1), NOW), NOW)
        store_and_apply(store, policy, prescription_filled(f"rx-{i}", "c1", date(2026, 10, 1),
                                                           NOW), NOW)
    with counted_pipelines(store.redis) as many:
        file = load_client_file(store, "c1", NOW)
    assert file is not None and len(file.appointments) == 7 and len(file.prescriptions) == 6
    assert len(many) == len(one) <= 6


# The indexes ----------------------------------------------------------------------------
def test_records_join_their_client_s_entities_when_written(store, policy, redis_client):
    booked(store, policy)
    store_and_apply(store, policy, prescription_filled("rx-1", "c1", date(2026, 10, 20), NOW),
                    NOW)
    store_and_apply(store, policy, refill_requested("rr-1", "rx-1", "c1", NOW), NOW)
    store_and_apply(store, policy, message_received("m-1", "c1", NOW), NOW)
    assert client_entities(redis_client, "c1") == {
        b"appointment:a-c1", b"prescription:rx-1", b"refill_request:rr-1", b"message:m-1"}
    # A confirmation by SMS reply rewrites the appointment (`update_record`): still listed.
    assert store.client_entity_refs(["c1", "c9"]) == {
        "c1": ["appointment:a-c1", "message:m-1", "prescription:rx-1", "refill_request:rr-1"],
        "c9": []}


def test_reindex_fills_the_indexes_of_records_stored_before_them_and_can_run_again(
        store, policy, redis_client, redis_url, capsys):
    booked(store, policy)
    upsert(store, policy, "c2", phone="+14155550199", email="Two@Example.com")
    store_and_apply(store, policy, prescription_filled("rx-1", "c1", date(2026, 10, 20), NOW),
                    NOW)
    store_and_apply(store, policy, message_received("m-1", "c1", NOW), NOW)
    # A closed message seen before its opening names no client: nothing to index.
    store_and_apply(store, policy, event_dict("message.answered", {"message_id": "m-9"}, NOW),
                    NOW)
    def indexes() -> list[set[bytes]]:
        return [client_entities(redis_client, "c1"),
                email_clients(redis_client, "c1@example.com"),
                email_clients(redis_client, "two@example.com")]

    indexed = indexes()
    old = [k for k in redis_client.scan_iter("n:{*}:email-clients:*")] + \
        [k for k in redis_client.scan_iter("n:{*}:client-entities:*")]
    redis_client.delete(*old)
    # The command as `notifier console reindex` runs it (without `main`'s logging set-up).
    args = build_parser().parse_args(["console", "reindex"])
    settings = Settings.from_env({"NOTIFIER_REDIS_URL": redis_url}, dotenv=Path("/nonexistent"))
    for _ in range(2):
        args.func(args, settings)
        assert capsys.readouterr().out == (
            "indexed 2 client email addresses and 3 appointment, prescription, refill "
            "request and message records\n")
        assert indexes() == indexed
    assert sorted([*redis_client.scan_iter("n:{*}:email-clients:*"),
                   *redis_client.scan_iter("n:{*}:client-entities:*")]) == sorted(old)
    assert [r.client.id for r in store.clients_for_email("TWO@example.com")] == ["c2"]


def test_reindex_skips_a_record_that_no_longer_parses(store, policy, redis_client):
    upsert(store, policy, "c1")
    redis_client.set(record_key("prescription:broken"), b'{"not": "a prescription"}')
    redis_client.delete(KEYS.email_clients(KEYS.of_ref("client:c1"), "c1@example.com"))
    assert store.reindex_clients() == (1, 0, 1)
    assert email_clients(redis_client, "c1@example.com") == {b"c1"}
