"""The client page's time line (`notifier.console.timeline`), pure: one link per
notification, every mark inside the viewBox, now marked, states told apart by shape, and
the times the page shows in two zones, across a DST change."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.console.timeline import (
    LANES,
    SHAPES,
    WIDTH,
    legend_items,
    notification_href,
    timeline_svg,
)
from notifier.console.times import local_text, time_left
from notifier.ledger.reading import NotificationRow

SVG = "{http://www.w3.org/2000/svg}"
NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
STATES = [*SHAPES, "some-new-state"]


def row(notification_id: str, due: datetime, state: str = "scheduled",
        kind: str = "appointment_reminder") -> NotificationRow:
    return NotificationRow(id=notification_id, kind=kind, channel="sms", due_at=due,
                           expires_at=due + timedelta(hours=4), state=state, reason="",
                           sent_at=None, code=None)


def parsed(markup: str) -> ET.Element:
    """The SVG as XML: it must be well formed to be parsed at all."""
    return ET.fromstring(markup)


def marks(svg: ET.Element) -> list[tuple[str, str, float, float]]:
    """(href, title, x, y) of each mark."""
    found = []
    for link in svg.iter(SVG + "a"):
        group = link.find(SVG + "g")
        assert group is not None
        x, y = map(float, re.fullmatch(r"translate\(([-\d.]+) ([-\d.]+)\)",
                                       group.attrib["transform"]).groups())  # type: ignore[union-attr]
        title = link.find(SVG + "title")
        assert title is not None and title.text
        found.append((link.attrib["href"], title.text, x, y))
    return found


def view_box(svg: ET.Element) -> tuple[float, float]:
    _, _, width, height = map(float, svg.attrib["viewBox"].split())
    return width, height


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-30 * 24 * 60, 120 * 24 * 60), st.sampled_from(STATES)),
                max_size=40))
def test_every_notification_gets_one_link_and_every_mark_is_inside_the_view_box(due):
    rows = [row(f"n-{i}", NOW + timedelta(minutes=m), state) for i, (m, state) in enumerate(due)]
    svg = parsed(timeline_svg(rows, NOW, ZoneInfo("America/New_York")))
    found = marks(svg)
    assert sorted(href for href, *_ in found) == sorted(notification_href(r.id) for r in rows)
    width, height = view_box(svg)
    assert width == WIDTH
    for _, _, x, y in found:
        assert 8 <= x <= width - 8 and 8 <= y <= height - 8
    now_line = next(e for e in svg.iter(SVG + "line") if e.attrib.get("class") == "now")
    assert 0 <= float(now_line.attrib["x1"]) <= width


def test_the_svg_names_itself_and_scales_to_the_page():
    svg = parsed(timeline_svg([row("n-1", NOW + timedelta(days=1))], NOW, ZoneInfo("UTC")))
    assert svg.attrib["class"] == "timeline" and svg.attrib["role"] == "group"
    assert svg.attrib["width"] == "100%"
    title_id, desc_id = svg.attrib["aria-labelledby"].split()
    title = svg.find(SVG + "title")
    desc = svg.find(SVG + "desc")
    assert title is not None and title.attrib["id"] == title_id
    assert desc is not None and desc.attrib["id"] == desc_id
    assert desc.text == ("1 notification from Mon 30 Nov 11:31 UTC to Tue 1 Dec 12:28 UTC, "
                         "now marked; the table below lists the same.")


def test_marks_are_placed_in_time_order_and_now_between_past_and_coming():
    rows = [row("late", NOW + timedelta(days=5)), row("early", NOW - timedelta(days=10),
                                                       "delivered")]
    svg = parsed(timeline_svg(rows, NOW, ZoneInfo("UTC")))
    x = {href.rsplit("/", 1)[1]: x for href, _, x, _ in marks(svg)}
    now_x = float(next(e for e in svg.iter(SVG + "line")
                       if e.attrib.get("class") == "now").attrib["x1"])
    assert x["early"] < now_x < x["late"]
    # 10 days before now, 5 after: now at two thirds of the axis.
    assert abs((now_x - x["early"]) / (x["late"] - x["early"]) - 2 / 3) < 0.01


def test_an_empty_time_line_marks_now_and_says_there_is_nothing():
    markup = timeline_svg([], NOW, ZoneInfo("UTC"))
    svg = parsed(markup)
    assert marks(svg) == []
    assert "nothing due in this time" in markup
    assert svg.find(SVG + "desc").text == "No notifications in this time; now is marked."  # type: ignore[union-attr]
    width, _ = view_box(svg)
    now_line = next(e for e in svg.iter(SVG + "line") if e.attrib.get("class") == "now")
    assert float(now_line.attrib["x1"]) == width / 2


def test_marks_at_the_same_time_take_separate_lanes_up_to_the_limit():
    rows = [row(f"n-{i}", NOW) for i in range(LANES + 2)]
    ys = {y for *_, y in marks(parsed(timeline_svg(rows, NOW, ZoneInfo("UTC"))))}
    assert len(ys) == LANES


def test_each_state_has_its_own_shape_and_the_key_names_it():
    assert len(set(SHAPES.values())) == len(SHAPES)
    legend = dict(legend_items())
    assert list(legend) == list(SHAPES)
    for state, shape in SHAPES.items():
        assert shape in legend[state] and 'aria-hidden="true"' in legend[state]


def test_the_title_says_kind_channel_state_and_due_time_and_text_is_escaped():
    evil = row("id/with?odd&chars", NOW + timedelta(hours=2), kind="<b>kind</b>")
    markup = timeline_svg([evil], NOW, ZoneInfo("America/New_York"))
    (href, title, _, _), = marks(parsed(markup))
    assert href == "/console/notifications/id%2Fwith%3Fodd%26chars"
    assert title == "<b>kind</b>, sms, scheduled, due Mon 30 Nov 09:00 EST"
    assert "<b>" not in markup


def test_times_are_shown_in_each_zone_across_the_change_of_daylight_saving_time():
    # New York leaves daylight saving time at 06:00 UTC on 1 November 2026; London did on
    # 25 October.
    new_york, london = ZoneInfo("America/New_York"), ZoneInfo("Europe/London")
    before, after = datetime(2026, 11, 1, 5, 30, tzinfo=UTC), datetime(2026, 11, 1, 6, 30,
                                                                       tzinfo=UTC)
    assert local_text(before, new_york) == "Sun 1 Nov 2026 01:30 EDT"
    assert local_text(after, new_york) == "Sun 1 Nov 2026 01:30 EST"
    assert local_text(after, london) == "Sun 1 Nov 2026 06:30 GMT"
    assert local_text(None, london) == "—"


def test_time_left_counts_down_then_says_how_long_overdue():
    assert time_left(NOW + timedelta(days=1, hours=3, minutes=20), NOW) == "1 d 3 h"
    assert time_left(NOW + timedelta(hours=2, minutes=5), NOW) == "2 h 5 min"
    assert time_left(NOW - timedelta(minutes=90), NOW) == "overdue by 1 h 30 min"
    assert time_left(None, NOW) == "—"
