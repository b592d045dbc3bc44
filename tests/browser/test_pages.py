"""The console's pages in a real browser with the data that stretches them (QA, issue 15):
an id without a hyphen, an email of a video visit (its HTML and `.ics` in scrolling
blocks), a one-word first name of 28 and of 100 letters. Each page must pass `check_page`
at 1280 and 390 px: no sideways scrolling, no serious accessibility fault."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import ConsoleService, check_page, sign_in
from tests.browser.test_flow import event_status
from tests.kit import appointment, client_upserted, daytime_zone, provider_upserted
from tests.service import wait_for

pytestmark = pytest.mark.browser


def booked(service: ConsoleService, client_id: str, appointment_id: str,
           **extra: Any) -> dict[str, dict[str, Any]]:
    """A client with an appointment in 4 days, applied; its notifications by id."""
    now = datetime.now(UTC)
    events = [client_upserted(client_id, daytime_zone(now), now),
              provider_upserted("prov-1", now),
              appointment("appointment.scheduled", appointment_id, client_id,
                          now + timedelta(days=4), now, **extra)]
    for event in events:
        assert service.post(event).status_code == 202
    wait_for(lambda: all(event_status(service, e["id"]) == "applied" for e in events),
             what="the booking's events to be applied")
    return dict(service.notifications(client_id))


def test_the_cancel_confirmation_of_an_id_without_hyphens_fits_390_px(
        page: Page, service: ConsoleService) -> None:
    """The cancel confirmation writes the notification's id in running text; with an
    appointment id such as `A10023` it is one unbreakable word of about 470 px."""
    reminder = next(n for n, v in booked(service, "c10023", "A10023").items()
                    if v["kind"] == "appointment_reminder" and v["state"] == "scheduled")
    sign_in(page)
    expect(page).to_have_url(f"{service.base_url}/console/")
    page.goto(f"/console/notifications/{quote(reminder, safe='')}/cancel")
    expect(page.get_by_role("button", name="Confirm")).to_be_visible()
    check_page(page, "confirm-cancel-unhyphenated-id")
    page.goto(f"/console/notifications/{quote(reminder, safe='')}")
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    check_page(page, "notification-unhyphenated-id")


def test_an_email_notification_page_passes_axe_at_390_px(
        page: Page, service: ConsoleService) -> None:
    """An email of a video visit shows its HTML and `.ics` in blocks that scroll: each is
    a named region the keyboard can reach (axe's `scrollable-region-focusable`)."""
    confirmation = next(
        n for n, v in booked(service, "c20", "appt-1",
                             join_url="https://video.example.com/r/appt-1").items()
        if v["kind"] == "appointment_confirmation" and v["channel"] == "email")
    sign_in(page)
    expect(page).to_have_url(f"{service.base_url}/console/")
    page.goto(f"/console/notifications/{quote(confirmation, safe='')}")
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    expect(page.get_by_role("region", name="Email HTML source")).to_contain_text(
        "https://video.example.com/r/appt-1")
    expect(page.get_by_role("region", name="Calendar invite, invite.ics")).to_be_visible()
    check_page(page, "email-notification")


@pytest.mark.parametrize("first_name", ["Venkatanarasimharajuvaripeta", "Ab" * 50],
                         ids=["28-letters", "100-letters"])
def test_the_client_page_of_a_long_single_word_first_name_fits_390_px(
        page: Page, service: ConsoleService, first_name: str) -> None:
    """The client page's heading is the first name in large type: a one-word name of 28
    letters (a real Telugu name), or of 100 (the most allowed), wraps at 390 and 1280 px."""
    now = datetime.now(UTC)
    event = client_upserted("c28", daytime_zone(now), now, first_name=first_name)
    assert service.post(event).status_code == 202
    wait_for(lambda: event_status(service, event["id"]) == "applied",
             what="the client's event to be applied")
    sign_in(page)
    expect(page).to_have_url(f"{service.base_url}/console/")
    page.goto("/console/clients/c28")
    expect(page.get_by_role("heading", level=1)).to_contain_text(first_name)
    check_page(page, f"client-long-name-{len(first_name)}")


def test_today_with_events_refused_at_the_door_fits_390_px(
        page: Page, service: ConsoleService) -> None:
    """Today's table of events refused at the door (422), by type, with the web's real
    counter behind it: one client event in no IANA zone."""
    now = datetime.now(UTC)
    event = client_upserted("c-bad", daytime_zone(now), now)
    event["data"]["client"]["timezone"] = "Mars/Olympus_Mons"
    assert service.post(event).status_code == 422
    sign_in(page)
    expect(page).to_have_url(f"{service.base_url}/console/")
    page.goto("/console/today")
    refused = page.locator("table.today-refused")
    expect(refused).to_contain_text("client.upserted")
    expect(refused.locator("td[data-label=Refused]")).to_have_text(["1"])
    check_page(page, "today-refused")
