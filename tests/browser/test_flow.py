"""The console's main flow in a real browser, against the whole service: a client booked
through signed events is found by id, their scheduled reminders are on the time line and
in the table, one is opened and cancelled (confirmed first), and the read API then shows
it cancelled. Every page on the way (and Today, Templates) is checked by `check_page`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.browser.conftest import ConsoleService, check_page, sign_in
from tests.kit import appointment, client_upserted, daytime_zone, provider_upserted
from tests.service import wait_for

pytestmark = pytest.mark.browser

CLIENT_ID = "client-browser-1"
FIRST_NAME = "Beatriz"
#: The start of the booked visit, from now: every reminder (start - 72 h, start - 24 h)
#: is still to come, so all are scheduled.
AHEAD = timedelta(days=4)


def book(service: ConsoleService, now: datetime) -> None:
    """The client, their provider and a visit `AHEAD`, posted as signed events; returns
    once the service has applied all three (`GET /v1/events/{id}`)."""
    events = [client_upserted(CLIENT_ID, daytime_zone(now), now, first_name=FIRST_NAME),
              provider_upserted("prov-1", now),
              appointment("appointment.scheduled", "appt-browser-1", CLIENT_ID,
                          now + AHEAD, now)]
    for event in events:
        answer = service.post(event)
        assert answer.status_code == 202, answer.text

    def applied() -> bool:
        return all(event_status(service, e["id"]) == "applied" for e in events)

    wait_for(applied, what="the booking's events to be applied")


def event_status(service: ConsoleService, event_id: str) -> str:
    answer = service.http.get(f"/v1/events/{event_id}", headers=bearer(service))
    assert answer.status_code in (200, 404), answer.text
    return str(answer.json().get("status", "")) if answer.status_code == 200 else ""


def bearer(service: ConsoleService) -> dict[str, str]:
    return {"Authorization": f"Bearer {service.api_token}"}


def read_api(service: ConsoleService) -> dict[str, dict[str, Any]]:
    """The client's notifications as the read API lists them, by id."""
    answer = service.http.get(f"/v1/clients/{CLIENT_ID}/notifications",
                              headers=bearer(service))
    assert answer.status_code == 200, answer.text
    return {n["id"]: n for n in answer.json()["notifications"]}


def page_of(notification_id: str) -> str:
    """The console's address of a notification (its id url-quoted)."""
    return "/console/notifications/" + quote(notification_id, safe="")


def state_shown(page: Page, state: str) -> Locator:
    """The first element of the page's main part reading just `state` (the state's own
    field or cell)."""
    return page.locator("main").get_by_text(state, exact=True).first


def test_a_booked_client_is_found_and_a_scheduled_reminder_cancelled(
        page: Page, service: ConsoleService) -> None:
    book(service, datetime.now(UTC))
    scheduled_sms_reminders = {
        n["id"] for n in read_api(service).values()
        if n["kind"] == "appointment_reminder" and n["channel"] == "sms"
        and n["state"] == "scheduled"}
    assert len(scheduled_sms_reminders) == 2  # start - 72 h and start - 24 h

    sign_in(page)
    page.locator("#q").fill(CLIENT_ID)
    page.get_by_role("button", name="Find").click()
    expect(page).to_have_url(f"{service.base_url}/console/clients/{CLIENT_ID}")
    expect(page.get_by_role("heading", level=1)).to_contain_text(FIRST_NAME)

    # The time line links each notification (scheduled reminders among them).
    timeline_links = page.locator('svg.timeline a[href^="/console/notifications/"]')
    expect(timeline_links.first).to_be_attached()
    linked = {timeline_links.nth(i).get_attribute("href")
              for i in range(timeline_links.count())}
    assert {page_of(n) for n in scheduled_sms_reminders} <= linked, linked

    # The table lists the scheduled reminders; open the first scheduled SMS one.
    rows = page.locator("#notifications tbody tr")
    reminders = rows.filter(has_text=re.compile("reminder", re.IGNORECASE)).filter(
        has=page.get_by_text("scheduled", exact=True)).filter(
        has=page.get_by_text(re.compile(r"^\s*sms\s*$", re.IGNORECASE)))
    expect(reminders).to_have_count(2)
    check_page(page, "client")

    link = reminders.first.locator('a[href^="/console/notifications/"]').first
    href = link.get_attribute("href")
    assert href is not None
    notification_id = unquote(href.removeprefix("/console/notifications/"))
    assert notification_id in scheduled_sms_reminders
    link.click()
    expect(page).to_have_url(f"{service.base_url}{href}")
    # The SMS as it would be sent (templates/sms/appointment_reminder.en.txt).
    expect(page.get_by_text(f"Reminder, {FIRST_NAME}: your appointment is").first
           ).to_be_visible()
    expect(state_shown(page, "scheduled")).to_be_visible()
    check_page(page, "notification")

    # Cancel it: a confirmation first, then back on its page, cancelled.
    cancel = page.get_by_role("link", name="Cancel this notification").or_(
        page.get_by_role("button", name="Cancel this notification"))
    cancel.click()
    confirm = page.get_by_role("button", name="Confirm")
    expect(confirm).to_be_visible()
    assert read_api(service)[notification_id]["state"] == "scheduled"  # nothing done yet
    check_page(page, "confirm-cancel")
    confirm.click()
    # Its page again (a query saying what was done is fine).
    expect(page).to_have_url(re.compile(re.escape(f"{service.base_url}{href}") + r"(\?.*)?$"))
    expect(page.locator(".notice")).to_be_visible()
    expect(state_shown(page, "cancelled")).to_be_visible()

    # The read API agrees; the other reminder is untouched.
    after = read_api(service)
    assert after[notification_id]["state"] == "cancelled"
    assert {n for n in scheduled_sms_reminders
            if after[n]["state"] == "scheduled"} == scheduled_sms_reminders - {notification_id}

    for name, path in (("today", "/console/today"), ("templates", "/console/templates")):
        answer = page.goto(path)
        assert answer is not None and answer.status == 200, path
        check_page(page, name)
