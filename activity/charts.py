"""Charts as SVG geometry, drawn on the server: no script, no library, nothing from another site.

The plot area is an SVG that stretches to the page's width (its strokes keep
their width); the labels sit outside it at fixed pixel sizes, placed by
percentage, so that they stay readable on a phone. The template
(activity/dashboard.html) writes the elements; this module only computes them.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

# The plot's own coordinates (viewBox): as wide as convenient, as tall as drawn in pixels.
WIDTH = 1000
HEIGHT = 160
# The labels around it, in pixels of the outer SVG.
TOP = 12
BOTTOM = 24
# Distinct colours for this many rooms; the others are drawn together as one.
ROOM_COLOURS = 6


@dataclass(frozen=True)
class Tick:
    percent: float
    label: str

    @property
    def anchor(self) -> str:
        # The first and last labels stay inside the chart.
        if self.percent < 2:
            return "start"
        if self.percent > 98:
            return "end"
        return "middle"


@dataclass(frozen=True)
class Gridline:
    y: float  # in the plot's coordinates
    label: str

    @property
    def label_y(self) -> float:
        """Where its label sits in the outer SVG: just above the line."""
        return TOP + self.y - 3


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    series: str  # a CSS class
    title: str


@dataclass
class Chart:
    label: str  # what a screen reader says of it
    ticks: list[Tick]
    gridlines: list[Gridline]
    line: str = ""  # path data
    area: str = ""
    bars: list[Bar] = field(default_factory=list)

    width = WIDTH
    height = HEIGHT
    top = TOP
    outer_height = TOP + HEIGHT + BOTTOM
    tick_y = TOP + HEIGHT + 17


def counted(n: int, noun: str) -> str:
    """'1 message', '1,200 messages'."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def nice_ceiling(value: float) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, … that is at least value."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def gridlines(top: int) -> list[Gridline]:
    values = [top // 2, top] if top >= 2 and top % 2 == 0 else [top]
    return [Gridline(y=HEIGHT - HEIGHT * value / top, label=f"{value:,}") for value in [0, *values]]


def _y(value: float, top: int) -> float:
    return round(HEIGHT - HEIGHT * value / top, 2)


def line_chart(
    points: Sequence[tuple[datetime, float]],
    *,
    start: datetime,
    end: datetime,
    gap: float,
    ticks: list[Tick],
    label: str,
) -> Chart:
    """A line with the area under it, from (time, value) points; a hole wider than `gap` seconds breaks it."""
    top = nice_ceiling(max((value for _, value in points), default=0))
    span = (end - start).total_seconds()
    segments: list[list[tuple[float, float]]] = []
    previous: datetime | None = None
    for at, value in points:
        if previous is None or (at - previous).total_seconds() > gap:
            segments.append([])
        segments[-1].append((round(WIDTH * (at - start).total_seconds() / span, 2), _y(value, top)))
        previous = at
    # A segment of one point is drawn as a dot: a zero-length line with round caps.
    line = " ".join(
        "M" + " L".join(f"{x},{y}" for x, y in (segment if len(segment) > 1 else segment * 2)) for segment in segments
    )
    area = " ".join(
        f"M{segment[0][0]},{HEIGHT} L" + " L".join(f"{x},{y}" for x, y in segment) + f" L{segment[-1][0]},{HEIGHT} Z"
        for segment in segments
    )
    return Chart(label=label, ticks=ticks, gridlines=gridlines(top), line=line, area=area)


def _slots(days: Sequence[date]) -> tuple[float, float]:
    slot = WIDTH / max(len(days), 1)
    return slot, slot * 0.7


def day_ticks(days: Sequence[date], *, every: int, fmt: Callable[[date], str]) -> list[Tick]:
    """A label under every `every`-th bar, counted back from the last (today)."""
    slot = 100 / max(len(days), 1)
    last = len(days) - 1
    return [Tick(percent=slot * (i + 0.5), label=fmt(day)) for i, day in enumerate(days) if (last - i) % every == 0]


def bar_chart(days: Sequence[date], values: dict[date, int], *, ticks: list[Tick], label: str, noun: str) -> Chart:
    """One bar a day; noun is what a bar counts, in the singular."""
    top = nice_ceiling(max(values.values(), default=0))
    slot, width = _slots(days)
    bars = [
        Bar(
            x=round(i * slot + (slot - width) / 2, 2),
            y=_y(values.get(day, 0), top),
            width=round(width, 2),
            height=round(HEIGHT - _y(values.get(day, 0), top), 2),
            series="series-total",
            title=f"{day:%a %d %b}: {counted(values.get(day, 0), noun)}",
        )
        for i, day in enumerate(days)
        if values.get(day, 0)
    ]
    return Chart(label=label, ticks=ticks, gridlines=gridlines(top), bars=bars)


@dataclass(frozen=True)
class Series:
    name: str
    css: str
    total: int


def stacked_bar_chart(
    days: Sequence[date], values: dict[date, dict[str, int]], *, ticks: list[Tick], label: str, noun: str
) -> tuple[Chart, list[Series]]:
    """One bar a day, stacked by room: the busiest rooms in colours of their own, the others together."""
    totals: dict[str, int] = {}
    for day in days:
        for name, count in values.get(day, {}).items():
            totals[name] = totals.get(name, 0) + count
    ranked = sorted(totals, key=lambda name: (-totals[name], name))
    own = ranked[:ROOM_COLOURS]
    others = [name for name in ranked if name not in own]
    legend = [Series(name, f"series-{i}", totals[name]) for i, name in enumerate(own)]
    if others:
        legend.append(Series(f"{len(others)} other rooms", "series-other", sum(totals[name] for name in others)))
    top = nice_ceiling(max((sum(values.get(day, {}).values()) for day in days), default=0))
    slot, width = _slots(days)
    bars = []
    for i, day in enumerate(days):
        counts = values.get(day, {})
        stack = [(series, counts.get(series.name, 0)) for series in legend[: len(own)]]
        if others:
            stack.append((legend[-1], sum(counts.get(name, 0) for name in others)))
        base = 0
        for series, count in stack:
            if not count:
                continue
            bars.append(
                Bar(
                    x=round(i * slot + (slot - width) / 2, 2),
                    y=_y(base + count, top),
                    width=round(width, 2),
                    height=round(_y(base, top) - _y(base + count, top), 2),
                    series=series.css,
                    title=f"{series.name}, {day:%a %d %b}: {counted(count, noun)}",
                )
            )
            base += count
    return Chart(label=label, ticks=ticks, gridlines=gridlines(top), bars=bars), legend
