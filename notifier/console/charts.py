"""Small bar charts drawn on the server as SVG (the CSP allows no script): numbers in, an
`<svg role="img">` with a `<title>` and a `<desc>` listing every value out. Pure: no I/O,
no clock.

The drawing is `WIDTH` x `HEIGHT` user units in its viewBox; the stylesheet scales it to
its container (`svg { max-width: 100% }`), so it fits a 390 px screen and never scrolls.
Colours come from console.css (`.chart .bar`, ...), not from attributes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

#: The viewBox's size, user units: a 390 px wide phone shows it at 1:1.
WIDTH = 390
HEIGHT = 150
#: Room above the bars (the largest value's label) and below them (the tick labels).
TOP = 18
BOTTOM = 22
SIDE = 4
#: The share of its slot a bar fills; the rest is the gap between bars.
FILL = 0.8


@dataclass(frozen=True)
class Bar:
    """One bar: what it counts (`label`, said in the description and the bar's tooltip),
    its value (>= 0; a negative one is drawn as 0), and the tick under it ("" for none:
    24 hours cannot all be labelled in 390 units)."""

    label: str
    value: float
    tick: str = ""


@dataclass(frozen=True)
class Rect:
    """A bar's rectangle in the viewBox's units (y grows downwards)."""

    x: float
    y: float
    width: float
    height: float


def layout(values: Sequence[float], width: float = WIDTH, height: float = HEIGHT
           ) -> list[Rect]:
    """The rectangles of bars of `values`, left to right in equal slots, each as tall as
    its value over the largest one times the plot's height (every bar 0 high when no value
    is above 0). Every rectangle lies inside `width` x `height`."""
    if not values:
        return []
    plot_h = height - TOP - BOTTOM
    slot = (width - 2 * SIDE) / len(values)
    top = max(max(values), 0.0)
    rects = []
    for i, value in enumerate(values):
        h = plot_h * max(value, 0.0) / top if top > 0 else 0.0
        rects.append(Rect(x=SIDE + i * slot + slot * (1 - FILL) / 2, y=TOP + plot_h - h,
                          width=slot * FILL, height=h))
    return rects


def _n(value: float) -> str:
    """A number as an attribute: two decimals at most, no trailing zeros."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _value(value: float, units: tuple[str, str]) -> str:
    """`value` and its unit: `units[0]` after exactly 1, else `units[1]`."""
    shown = f"{value:g}" if value != int(value) else str(int(value))
    return f"{shown}{units[0] if value == 1 else units[1]}"


def bar_chart(chart_id: str, title: str, bars: Sequence[Bar],
              units: tuple[str, str] = ("", "")) -> Markup:
    """`bars` as an SVG bar chart named `title` (its `<title>`, which screen readers say),
    with a `<desc>` giving every bar's label and value (with its unit after it, singular
    or plural: `(" send", " sends")`); `chart_id` makes the ids of both unique on the
    page. No bar, or only zeros: an empty baseline and "no data" / all-zero description.
    Text is escaped."""
    values = [max(b.value, 0.0) for b in bars]
    rects = layout(values)
    desc = "; ".join(f"{b.label}: {_value(v, units)}" for b, v in zip(bars, values, strict=True))
    if not bars:
        desc = "No data."
    elif not any(values):
        desc = f"All zero. {desc}"
    base = HEIGHT - BOTTOM
    parts = [
        f'<svg class="chart" role="img" aria-labelledby="{escape(chart_id)}-t '
        f'{escape(chart_id)}-d" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
        f'height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{escape(chart_id)}-t">{escape(title)}</title>',
        f'<desc id="{escape(chart_id)}-d">{escape(desc)}</desc>',
        f'<line class="axis" x1="{SIDE}" y1="{base}" x2="{WIDTH - SIDE}" y2="{base}"/>',
    ]
    if values and max(values) > 0:
        parts.append(f'<text class="scale" x="{SIDE}" y="{TOP - 6}">max '
                     f'{escape(_value(max(values), units))}</text>')
    for bar, value, rect in zip(bars, values, rects, strict=True):
        parts.append(f'<rect class="bar" x="{_n(rect.x)}" y="{_n(rect.y)}" '
                     f'width="{_n(rect.width)}" height="{_n(rect.height)}">'
                     f'<title>{escape(bar.label)}: {escape(_value(value, units))}</title></rect>')
        if bar.tick:
            parts.append(f'<text class="tick" x="{_n(rect.x + rect.width / 2)}" '
                         f'y="{HEIGHT - 6}" text-anchor="middle">{escape(bar.tick)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
