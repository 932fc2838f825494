"""Line charts for the report, as geometry: `templates/chart.html.j2` turns a `Chart` into SVG.

Everything here is numbers and plain strings; the template escapes the strings, so a metric name
from the store can never become markup.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

PALETTE = ("#2f6fde", "#d9822b", "#1a7f37", "#8250df", "#cf222e", "#0a8a8a")

# Geometry in SVG user units; the SVG itself scales to the width of its container.
WIDTH, HEIGHT = 440, 240
LEFT, RIGHT, TOP, BOTTOM = 54, 14, 34, 42
# Keeps the first and last points off the y axis.
X_INSET = 8
# Above this many points a series gets plain dots instead of circles with hover tooltips.
MAX_TOOLTIPS = 150
_LEGEND_CHAR_W = 6.3

Point = tuple[float, float | None]


@dataclass(frozen=True)
class Series:
    """One named line (or scatter, with `line=False`). Points with a None/NaN y are skipped."""

    name: str
    points: Sequence[Point]
    color: str
    line: bool = True
    markers: bool = True

    def finite(self) -> list[tuple[float, float]]:
        return [
            (x, y)
            for x, y in self.points
            if y is not None and math.isfinite(x) and math.isfinite(y)
        ]


@dataclass(frozen=True)
class Tick:
    at: float
    label: str


@dataclass(frozen=True)
class Dot:
    x: float
    y: float
    tip: str


@dataclass(frozen=True)
class DrawnSeries:
    """A series in SVG coordinates: a polyline, circles with tooltips, or (when there are many
    points) one path of zero-length segments with round caps, which keeps a big scatter small."""

    name: str
    color: str
    polyline: str | None
    dots: list[Dot]
    radius: float
    scatter: str | None


@dataclass(frozen=True)
class LegendEntry:
    name: str
    color: str
    swatch_x: float
    swatch_end: float
    text_x: float


@dataclass(frozen=True)
class Chart:
    """Everything `chart.html.j2` draws. An empty `series` draws "no data"."""

    width: ClassVar[int] = WIDTH
    height: ClassVar[int] = HEIGHT
    left: ClassVar[int] = LEFT
    right_edge: ClassVar[int] = WIDTH - RIGHT
    top: ClassVar[int] = TOP
    base: ClassVar[int] = HEIGHT - BOTTOM

    title: str
    x_label: str
    y_label: str
    x_ticks: list[Tick] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    series: list[DrawnSeries] = field(default_factory=list)
    legend: list[LegendEntry] = field(default_factory=list)


@dataclass(frozen=True)
class _Frame:
    """Maps data coordinates into the plot area.

    The x axis spans exactly the data (steps and indices have no natural round end); the y axis
    spans its outermost ticks.
    """

    x_range: tuple[float, float]
    x_ticks: list[float]
    x_step: float
    y_ticks: list[float]

    @classmethod
    def fit(cls, points: Sequence[tuple[float, float]], integer_x: bool) -> _Frame:
        low, high = min(x for x, _ in points), max(x for x, _ in points)
        if high == low:
            low, high = low - 1, high + 1
        x_ticks = nice_ticks(low, high, 6, integer_x)
        return cls(
            x_range=(low, high),
            x_ticks=[tick for tick in x_ticks if low <= tick <= high],
            x_step=x_ticks[1] - x_ticks[0],
            y_ticks=nice_ticks(min(y for _, y in points), max(y for _, y in points), 5),
        )

    def x(self, value: float) -> float:
        low, high = self.x_range
        inner = WIDTH - LEFT - RIGHT - 2 * X_INSET
        return LEFT + X_INSET + (value - low) / (high - low) * inner

    def y(self, value: float) -> float:
        low, high = self.y_ticks[0], self.y_ticks[-1]
        return HEIGHT - BOTTOM - (value - low) / (high - low) * (HEIGHT - TOP - BOTTOM)


def nice_ticks(low: float, high: float, count: int = 5, integer: bool = False) -> list[float]:
    """Round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) covering [low, high]."""
    if high <= low:
        pad = 1.0 if integer or low == 0 else abs(low) * 0.1
        low, high = low - pad, high + pad
    raw = (high - low) / max(1, count - 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * 0.999)
    if integer:
        step = max(1.0, round(step))
    start, end = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    return [round(i * step, 10) for i in range(start, end + 1)]


def format_number(value: float, step: float = 0.0) -> str:
    """`value` with as many decimals as a tick `step` (or the value itself) needs."""
    if not math.isfinite(value):
        return str(value)
    size = step or abs(value)
    if abs(value) >= 10_000_000:
        return f"{value:.3g}"
    if abs(value) >= 10_000:
        return format_number(value / 1000, size / 1000) + "k"
    decimals = 0 if size == 0 or size >= 1 else min(6, -math.floor(math.log10(size)) + 1)
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def line_chart(
    title: str,
    series: Sequence[Series],
    *,
    x_label: str,
    y_label: str = "",
    integer_x: bool = True,
) -> Chart:
    """A line chart with a title, axes, ticks, grid lines, axis labels and a legend."""
    drawn = [(item, item.finite()) for item in series]
    points = [point for _, finite in drawn for point in finite]
    if not points:
        return Chart(title=title, x_label=x_label, y_label=y_label)
    frame = _Frame.fit(points, integer_x)
    y_step = frame.y_ticks[1] - frame.y_ticks[0]
    return Chart(
        title=title,
        x_label=x_label,
        y_label=y_label,
        x_ticks=[Tick(_at(frame.x(t)), format_number(t, frame.x_step)) for t in frame.x_ticks],
        y_ticks=[Tick(_at(frame.y(t)), format_number(t, y_step)) for t in frame.y_ticks],
        series=[_draw(frame, item, finite) for item, finite in drawn],
        legend=_legend([item for item, _ in drawn]),
    )


def _at(coordinate: float) -> float:
    """A coordinate as drawn: tenths of a unit are finer than any screen shows."""
    return round(coordinate, 1)


def _draw(frame: _Frame, item: Series, points: list[tuple[float, float]]) -> DrawnSeries:
    coords = [(frame.x(x), frame.y(y)) for x, y in points]
    polyline = None
    if item.line and len(coords) > 1:
        polyline = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    dots: list[Dot] = []
    scatter = None
    if item.markers and len(coords) <= MAX_TOOLTIPS:
        dots = [
            Dot(_at(px), _at(py), f"{item.name} at {format_number(x)}: {format_number(y)}")
            for (x, y), (px, py) in zip(points, coords, strict=True)
        ]
    elif item.markers:
        scatter = "".join(f"M{px:.1f} {py:.1f}h0" for px, py in coords)
    return DrawnSeries(
        name=item.name,
        color=item.color,
        polyline=polyline,
        dots=dots,
        radius=2.8 if len(coords) <= 40 else 1.8,
        scatter=scatter,
    )


def _legend(series: Sequence[Series]) -> list[LegendEntry]:
    """Entries right-aligned at the top, laid out from the last series leftwards."""
    entries = []
    right: float = WIDTH - RIGHT
    for item in reversed(series):
        text_x = right - len(item.name) * _LEGEND_CHAR_W
        swatch_x = text_x - 20
        entries.append(
            LegendEntry(item.name, item.color, _at(swatch_x), _at(swatch_x + 14), _at(text_x))
        )
        right = swatch_x - 12
    return entries


def rate_color(rate: float) -> str:
    """A pale background from red (0) through amber to green (1), for heatmap cells."""
    hue = 120 * min(1.0, max(0.0, rate))
    return f"hsl({hue:.0f} 62% 86%)"
