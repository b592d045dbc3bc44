"""The console's server-side bar charts (`notifier.console.charts`): pure, so checked on
any numbers."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notifier.console.charts import BOTTOM, HEIGHT, TOP, WIDTH, Bar, bar_chart, layout

SVG = "{http://www.w3.org/2000/svg}"
values = st.lists(st.floats(min_value=0, max_value=1e9, allow_nan=False), max_size=60)


@given(values)
def test_every_bar_lies_inside_the_viewbox(numbers):
    for rect in layout(numbers):
        assert rect.x >= 0 and rect.x + rect.width <= WIDTH
        assert rect.y >= 0 and rect.y + rect.height <= HEIGHT - BOTTOM + 1e-9
        assert rect.width > 0 and rect.height >= 0


@given(values)
def test_heights_are_proportional_to_the_values_the_largest_filling_the_plot(numbers):
    rects = layout(numbers)
    top = max(numbers, default=0)
    for value, rect in zip(numbers, rects, strict=True):
        expected = (HEIGHT - TOP - BOTTOM) * value / top if top else 0
        assert rect.height == pytest.approx(expected, abs=1e-6)
    if top:
        assert max(r.height for r in rects) == pytest.approx(HEIGHT - TOP - BOTTOM)


@given(st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=30))
def test_the_svg_is_one_labelled_image_with_a_bar_per_value(numbers):
    svg = ET.fromstring(bar_chart("c", "Sends", [Bar(f"h{i}", n) for i, n in
                                                 enumerate(numbers)], (" send", " sends")))
    assert svg.get("role") == "img" and svg.get("viewBox") == f"0 0 {WIDTH} {HEIGHT}"
    assert svg.get("aria-labelledby") == "c-t c-d"
    assert svg.find(f"{SVG}title").text == "Sends"  # type: ignore[union-attr]
    bars = svg.findall(f"{SVG}rect")
    assert len(bars) == len(numbers)
    for i, (bar, n) in enumerate(zip(bars, numbers, strict=True)):
        unit = "send" if n == 1 else "sends"
        assert bar.find(f"{SVG}title").text == f"h{i}: {n} {unit}"  # type: ignore[union-attr]
        assert 0 <= float(bar.get("y", "")) <= HEIGHT


def test_no_data_or_only_zeros_draws_a_baseline_and_says_so():
    empty = ET.fromstring(bar_chart("e", "Nothing", []))
    assert empty.find(f"{SVG}desc").text == "No data."  # type: ignore[union-attr]
    assert empty.findall(f"{SVG}rect") == [] and empty.find(f"{SVG}line") is not None
    zeros = ET.fromstring(bar_chart("z", "Zeros", [Bar("a", 0), Bar("b", 0)]))
    assert zeros.find(f"{SVG}desc").text == "All zero. a: 0; b: 0"  # type: ignore[union-attr]
    assert {r.get("height") for r in zeros.findall(f"{SVG}rect")} == {"0"}
    assert zeros.find(f"{SVG}text") is None  # no "max" label over nothing


def test_text_is_escaped_and_ticks_drawn_under_their_bar():
    svg = bar_chart("x", "<b>&", [Bar("<i>", 2, tick="06"), Bar("y", 4)])
    assert "<b>" not in svg and "&lt;b&gt;&amp;" in svg and "&lt;i&gt;: 2" in svg
    tree = ET.fromstring(svg)
    ticks = [t.text for t in tree.findall(f"{SVG}text")]
    assert ticks == ["max 4", "06"]
    assert [r.get("height") for r in tree.findall(f"{SVG}rect")] == ["55", "110"]
