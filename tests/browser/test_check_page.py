"""`check_page` itself: a page that scrolls sideways, breaks axe-core's serious rules, is
refused by its CSP or misses a resource it loads fails it, each problem named; a plain
page passes. (Served by the browser's own routing: no service needed.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page

from tests.browser.conftest import ARTIFACTS, check_page, watched

pytestmark = pytest.mark.browser

GOOD = ("<!doctype html><html lang=en><head><title>Fine</title></head><body><main>"
        "<h1>Fine</h1><p>Nothing wrong here.</p></main></body></html>")
BAD = ("<!doctype html><html lang=en><head><title>Broken</title>"
       "<style>.wide { width: 900px; }</style></head><body><main><h1>Broken</h1>"
       "<img src=photo.png><div class=wide>too wide for a phone</div>"
       "<p style='color: #bbb; background: #fff'>hard to read</p></main></body></html>")
#: The same page again, under a CSP like the console's: its inline style is refused.
STRICT = {"Content-Security-Policy": "default-src 'self'"}


@pytest.fixture
def local_page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    context.route("http://checks.example/good", lambda r: r.fulfill(
        content_type="text/html", body=GOOD))
    context.route("http://checks.example/bad", lambda r: r.fulfill(
        content_type="text/html", body=BAD))
    context.route("http://checks.example/strict", lambda r: r.fulfill(
        content_type="text/html", body=GOOD.replace("<main>", "<main style='x: 1'>"),
        headers=STRICT))
    context.route("http://checks.example/photo.png", lambda r: r.fulfill(status=404))
    try:
        with watched(context.new_page()) as page:
            yield page
    finally:
        context.close()


def test_a_plain_page_passes_and_leaves_its_screenshots(local_page: Page) -> None:
    local_page.goto("http://checks.example/good")
    check_page(local_page, "self-check-good")
    for width in (1280, 390):
        assert (ARTIFACTS / f"self-check-good-{width}.png").stat().st_size > 0


def test_sideways_scrolling_and_serious_accessibility_faults_fail_a_page(
        local_page: Page) -> None:
    local_page.goto("http://checks.example/bad")
    with pytest.raises(AssertionError) as failed:
        check_page(local_page, "self-check-bad")
    report = str(failed.value)
    assert "390 px: scrolls sideways (the page is 9" in report
    assert "div.wide" in report
    assert "1280 px: scrolls sideways" not in report
    assert "axe image-alt (critical)" in report
    assert "axe color-contrast (serious)" in report
    assert "logged: Failed to load resource" in report and "photo.png" in report


def test_an_inline_style_refused_by_the_csp_fails_a_page(local_page: Page) -> None:
    local_page.goto("http://checks.example/strict")
    with pytest.raises(AssertionError, match="logged: .*Content Security Policy"):
        check_page(local_page, "self-check-strict")
