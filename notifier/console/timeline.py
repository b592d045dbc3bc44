"""A client's notifications on a time line, as inline SVG drawn on the server (no script):
`timeline_svg(rows, now, zone)` is pure, its markup the same for the same input.

Shape: `<svg class="timeline" role="group" viewBox="0 0 720 H" width="100%">` with a
`<title>` and a `<desc>` (what it shows, in words), a horizontal axis from the earliest
to the latest of the due times and `now` (padded), `now` marked by a dashed line and the
word "now", and one mark per notification: `<a href="/console/notifications/{id,
url-quoted}"><title>kind, channel, state, due time</title><g class="mark state-{state}"
transform="translate(x y)">shape</g></a>`. A state is told by its shape as well as its
colour (`SHAPES`; `legend_items` draws each for the page's key), so the line reads in
grey. Marks close in time go to other lanes (at most `LANES`, then they overlap).

Units: the viewBox is `WIDTH` units wide; at 390 px it is scaled to about half, so text
is `FONT` units (about 11 px there, 21 px at the page's widest). Every mark's translate
is inside the viewBox.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote
from zoneinfo import ZoneInfo

from markupsafe import Markup, escape

from notifier.console.times import short_time
from notifier.ledger.reading import NotificationRow

WIDTH = 720
#: Room at each end of the axis, in viewBox units: a mark at an end stays whole.
PAD = 24
FONT = 20
#: Marks closer than this (viewBox units) go to different lanes.
MIN_GAP = 22
#: Enough for a day's confirmations, reminders and their copies at one instant (a
#: booking processed late plans them all at once); past it marks overlap.
LANES = 16
LANE_H = 30
#: The first lane's centre, below the "now" label.
TOP = 60
#: The axis's span when there is nothing to show, either side of now.
EMPTY_SPAN = timedelta(days=1)

#: The shape of each state shown, around (0, 0), about 16 units across. Filled: it went;
#: hollow: still to come; crossed or grey-outlined: it did not go.
SHAPES: dict[str, str] = {
    "scheduled": '<circle r="8" class="hollow"/>',
    "sent": '<circle r="8"/>',
    "delivered": '<rect x="-8" y="-8" width="16" height="16"/>',
    "failed": '<path d="M-8-8L8 8M8-8L-8 8" class="cross"/>',
    "expired": '<path d="M-9-7H9L0 9Z" class="hollow"/>',
    "suppressed": '<path d="M0-9L9 0 0 9-9 0Z" class="hollow"/>',
    "cancelled": '<circle r="8" class="hollow"/><path d="M-6 6L6-6" class="cross"/>',
}
#: The shape of a state not in `SHAPES` (none today; a later version's).
OTHER_SHAPE = '<rect x="-4" y="-8" width="8" height="16"/>'

TIMELINE_TITLE_ID = "timeline-title"
TIMELINE_DESC_ID = "timeline-desc"


@dataclass(frozen=True)
class Placed:
    """A notification's mark: its row and where it goes (viewBox units)."""

    row: NotificationRow
    x: float
    y: float


def notification_href(notification_id: str) -> str:
    """The console's page of a notification: `/console/notifications/{id}`, the id
    url-quoted (ids are our own, but quoting costs nothing)."""
    return "/console/notifications/" + quote(notification_id, safe="")


def axis_bounds(rows: Sequence[NotificationRow], now: datetime) -> tuple[datetime, datetime]:
    """(start, end) of the axis: the earliest and latest of the due times and `now`,
    padded by a fiftieth of the span; `now` ± `EMPTY_SPAN` when they are all one instant."""
    instants = [r.due_at for r in rows] + [now]
    start, end = min(instants), max(instants)
    if end - start < timedelta(minutes=1):
        return start - EMPTY_SPAN, end + EMPTY_SPAN
    pad = (end - start) / 50
    return start - pad, end + pad


def x_of(instant: datetime, start: datetime, end: datetime) -> float:
    """Where `instant` (between `start` and `end`) goes on the axis, in viewBox units."""
    share = (instant - start) / (end - start)
    return round(PAD + min(max(share, 0.0), 1.0) * (WIDTH - 2 * PAD), 1)


def place(rows: Sequence[NotificationRow], start: datetime, end: datetime) -> list[Placed]:
    """Each row's mark, soonest first: in the first lane whose last mark is `MIN_GAP`
    away, else in the lane whose last mark is furthest left (they overlap)."""
    last = [float("-inf")] * LANES
    placed = []
    for row in sorted(rows, key=lambda r: (r.due_at, r.id)):
        x = x_of(row.due_at, start, end)
        lane = next((i for i, seen in enumerate(last) if x - seen >= MIN_GAP),
                    min(range(LANES), key=lambda i: last[i]))
        last[lane] = x
        placed.append(Placed(row, x, TOP + lane * LANE_H))
    return placed


def mark_title(row: NotificationRow, zone: ZoneInfo) -> str:
    """What a mark says when pointed at: `reminder_24h, sms, scheduled, due Tue 3 Nov
    14:00 EST` (in `zone`)."""
    return f"{row.kind}, {row.channel}, {row.state}, due {short_time(row.due_at, zone)}"


def _label(x: float, y: float, text: str, css: str = "") -> str:
    """A text at (x, y), anchored so that it stays inside the viewBox."""
    anchor = "start" if x < 80 else "end" if x > WIDTH - 80 else "middle"
    css_attr = f' class="{css}"' if css else ""
    return (f'<text x="{x}" y="{y}" text-anchor="{anchor}" font-size="{FONT}"{css_attr}>'
            f'{escape(text)}</text>')


def timeline_svg(rows: Sequence[NotificationRow], now: datetime, zone: ZoneInfo) -> Markup:
    """The time line of `rows` (a client's notifications) at `now` (aware), its labels
    in `zone` (the operator's), as safe markup for a template. Empty `rows` draw the axis
    around now and say there is nothing."""
    start, end = axis_bounds(rows, now)
    placed = place(rows, start, end)
    lanes = max((int((p.y - TOP) / LANE_H) + 1 for p in placed), default=1)
    axis_y = TOP + (lanes - 1) * LANE_H + 22
    height = axis_y + 40
    now_x = x_of(now, start, end)
    count = f"{len(rows)} notification{'' if len(rows) == 1 else 's'}"
    desc = (f"{count} from {short_time(start, zone)} to {short_time(end, zone)}, "
            f"now marked; the table below lists the same." if rows else
            "No notifications in this time; now is marked.")
    parts = [
        # A group, not an image: its marks are links, which an image's would hide from
        # assistive technology (axe-core: nested-interactive).
        f'<svg class="timeline" role="group" viewBox="0 0 {WIDTH} {height}" width="100%" '
        f'xmlns="http://www.w3.org/2000/svg" '
        f'aria-labelledby="{TIMELINE_TITLE_ID} {TIMELINE_DESC_ID}">',
        f'<title id="{TIMELINE_TITLE_ID}">Time line of the notifications</title>',
        f'<desc id="{TIMELINE_DESC_ID}">{escape(desc)}</desc>',
        f'<line class="axis" x1="{PAD}" y1="{axis_y}" x2="{WIDTH - PAD}" y2="{axis_y}"/>',
        f'<line class="now" x1="{now_x}" y1="{FONT + 8}" x2="{now_x}" y2="{axis_y + 6}"/>',
        _label(now_x, FONT, "now", "now-label"),
        _label(PAD, axis_y + 32, short_time(start, zone)),
        _label(WIDTH - PAD, axis_y + 32, short_time(end, zone)),
    ]
    if not rows:
        parts.append(_label(WIDTH / 2, TOP, "nothing due in this time", "muted"))
    for p in placed:
        parts.append(
            f'<a href="{escape(notification_href(p.row.id))}">'
            f'<title>{escape(mark_title(p.row, zone))}</title>'
            f'<g class="mark state-{escape(p.row.state)}" transform="translate({p.x} {p.y})">'
            f'{SHAPES.get(p.row.state, OTHER_SHAPE)}</g></a>')
    parts.append("</svg>")
    return Markup("".join(parts))


def legend_items() -> list[tuple[str, Markup]]:
    """(state, a small SVG of its shape, `aria-hidden`) for the key under the line: the
    shape beside the state's name, so neither colour nor shape alone tells it."""
    return [(state, Markup(
        f'<svg class="key" viewBox="-10 -10 20 20" width="16" height="16" aria-hidden="true" '
        f'xmlns="http://www.w3.org/2000/svg"><g class="mark state-{state}">{shape}</g></svg>'))
        for state, shape in SHAPES.items()]
