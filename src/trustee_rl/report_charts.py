"""Inline SVG line charts and small visual primitives for the HTML run report.

Everything returned here is markup to paste into the page as is: no scripts, no external assets.
All text that reaches the markup passes through `html.escape`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

PALETTE = ("#2f6fde", "#d9822b", "#1a7f37", "#8250df", "#cf222e", "#0a8a8a")

# Geometry in SVG user units; the SVG itself scales to the width of its container.
WIDTH, HEIGHT = 440, 240
LEFT, RIGHT, TOP, BOTTOM = 54, 14, 34, 42
# Keeps the first and last points off the y axis.
X_INSET = 8
# Above this many points a series gets plain dots instead of circles with hover tooltips.
MAX_TOOLTIPS = 150
_LEGEND_CHAR_W = 6.3


@dataclass(frozen=True)
class Series:
    """One named line (or scatter, with `line=False`). Points with a None/NaN y are skipped."""

    name: str
    points: Sequence[tuple[float, float | None]]
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
) -> str:
    """An SVG line chart with a title, axes, ticks, grid lines, axis labels and a legend."""
    drawn = [(item, item.finite()) for item in series]
    points = [point for _, finite in drawn for point in finite]
    head = (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img"'
        f' aria-label="{escape(title)}"><title>{escape(title)}</title>'
        f'<text class="chart-title" x="{LEFT}" y="18">{escape(title)}</text>'
    )
    if not points:
        empty = f'<text class="chart-empty" x="{WIDTH / 2}" y="{HEIGHT / 2}">no data</text>'
        return head + empty + "</svg>"
    frame = _Frame.fit(points, integer_x)
    body = [_axes(frame, x_label, y_label)]
    for item, finite in drawn:
        body.append(_series(frame, item, finite))
    body.append(_legend([item for item, _ in drawn]))
    return head + "".join(body) + "</svg>"


def _axes(frame: _Frame, x_label: str, y_label: str) -> str:
    parts = []
    y_step = frame.y_ticks[1] - frame.y_ticks[0]
    for tick in frame.y_ticks:
        y = frame.y(tick)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{y + 3.5:.1f}" text-anchor="end">'
            f"{format_number(tick, y_step)}</text>"
        )
    base = HEIGHT - BOTTOM
    for tick in frame.x_ticks:
        x = frame.x(tick)
        parts.append(
            f'<line class="axis" x1="{x:.1f}" x2="{x:.1f}" y1="{base}" y2="{base + 4}"/>'
            f'<text class="tick" x="{x:.1f}" y="{base + 16}" text-anchor="middle">'
            f"{format_number(tick, frame.x_step)}</text>"
        )
    parts.append(
        f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{base}" y2="{base}"/>'
        f'<line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{base}"/>'
        f'<text class="axis-label" x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 6}"'
        f' text-anchor="middle">{escape(x_label)}</text>'
    )
    if y_label:
        middle = (TOP + base) / 2
        parts.append(
            f'<text class="axis-label" transform="translate(13 {middle}) rotate(-90)"'
            f' text-anchor="middle">{escape(y_label)}</text>'
        )
    return "".join(parts)


def _series(frame: _Frame, item: Series, points: list[tuple[float, float]]) -> str:
    coords = [(frame.x(x), frame.y(y)) for x, y in points]
    parts = []
    if item.line and len(coords) > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        parts.append(f'<polyline class="line" points="{path}" stroke="{item.color}"/>')
    if item.markers and len(coords) <= MAX_TOOLTIPS:
        radius = 2.8 if len(coords) <= 40 else 1.8
        for (x, y), (px, py) in zip(points, coords, strict=True):
            parts.append(
                f'<circle class="dot" cx="{px:.1f}" cy="{py:.1f}" r="{radius}" fill="{item.color}">'
                f"<title>{escape(item.name)} at {format_number(x)}: {format_number(y)}</title>"
                "</circle>"
            )
    elif item.markers:
        # One path of zero-length segments with round caps: a scatter of many points stays small.
        dots = "".join(f"M{px:.1f} {py:.1f}h0" for px, py in coords)
        parts.append(f'<path class="dots" d="{dots}" stroke="{item.color}"/>')
    return "".join(parts)


def _legend(series: Sequence[Series]) -> str:
    parts = []
    right: float = WIDTH - RIGHT
    for item in reversed(series):
        text_x = right - len(item.name) * _LEGEND_CHAR_W
        swatch_x = text_x - 20
        parts.append(
            f'<line x1="{swatch_x:.1f}" x2="{swatch_x + 14:.1f}" y1="14" y2="14"'
            f' stroke="{item.color}" stroke-width="2.5"/>'
            f'<text class="legend" x="{text_x:.1f}" y="18">{escape(item.name)}</text>'
        )
        right = swatch_x - 12
    return "".join(parts)


def bar(fraction: float, color: str = PALETTE[0]) -> str:
    """A small horizontal bar filled to `fraction` (clamped to [0, 1])."""
    width = 100 * min(1.0, max(0.0, fraction))
    return f'<span class="bar"><span style="width:{width:.1f}%;background:{color}"></span></span>'


def rate_color(rate: float) -> str:
    """A pale background from red (0) through amber to green (1), for heatmap cells."""
    hue = 120 * min(1.0, max(0.0, rate))
    return f"hsl({hue:.0f} 62% 86%)"
