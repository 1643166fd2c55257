"""Small server-side SVG charts for the UI (a line over time, bars per interval): markup with
presentation attributes only (the CSP allows no inline styles), a <title> and <desc> for
screen readers, and a data attribute the live-update script may use. No data access."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from markupsafe import Markup, escape

from fleet.ui.web import ZONE, fmt_num

WIDTH, HEIGHT = 800, 260
LEFT, RIGHT, TOP, BOTTOM = 70, 12, 12, 34


def _nice_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    v = start
    while v <= hi + step * 0.001:
        ticks.append(round(v, 10))
        v += step
    return ticks


def _time_label(ts_ms: int, span_ms: int, lang: str) -> str:
    when = datetime.fromtimestamp(ts_ms / 1000, UTC).astimezone(ZONE)
    if span_ms <= 2 * 86_400_000:
        return when.strftime("%H:%M")
    return when.strftime("%d.%m." if lang == "de" else "%m-%d")


def value_axis(lo: float, hi: float, lang: str) -> tuple[list[str], Callable[[float], float]]:
    """The value axis of every chart: grid lines and labels at nice ticks spanning lo..hi, and
    the function from a value to its y coordinate."""
    ticks = _nice_ticks(lo, hi)
    lo, hi = min(lo, ticks[0]), max(hi, ticks[-1])
    plot_h = HEIGHT - TOP - BOTTOM

    def y(v: float) -> float:
        return TOP + plot_h - (v - lo) / (hi - lo or 1) * plot_h

    parts = []
    for v in ticks:
        yy = y(v)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{yy:.1f}" y2="{yy:.1f}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{yy + 4:.1f}" text-anchor="end">'
            f"{escape(fmt_num(lang, v))}</text>"
        )
    return parts, y


def _frame(
    t0: int, t1: int, lo: float, hi: float, unit: str, lang: str
) -> tuple[list[str], object, object]:
    span = max(1, t1 - t0)
    plot_w = WIDTH - LEFT - RIGHT

    def x(ts: float) -> float:
        return LEFT + (ts - t0) / span * plot_w

    parts, y = value_axis(lo, hi, lang)
    for i in range(5):
        ts = t0 + span * i / 4
        parts.append(
            f'<text class="tick" x="{x(ts):.1f}" y="{HEIGHT - 12}" text-anchor="middle">'
            f"{escape(_time_label(int(ts), span, lang))}</text>"
        )
    parts.append(axes(unit))
    return parts, x, y


def axes(unit: str) -> str:
    """The two axis lines and the unit's label, drawn over the plot."""
    return (
        f'<text class="unit" x="4" y="{TOP + 10}">{escape(unit)}</text>'
        f'<line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{HEIGHT - BOTTOM}"/>'
        f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{HEIGHT - BOTTOM}" '
        f'y2="{HEIGHT - BOTTOM}"/>'
    )


def _svg(kind: str, title: str, desc: str, body: Sequence[str], points: int) -> Markup:
    return Markup(
        f'<svg class="chart chart-{kind}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'data-points="{points}" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
        f"<desc>{escape(desc)}</desc>{''.join(body)}</svg>"
    )


def line_chart(
    points: Sequence[tuple[int, float]],
    t0: int,
    t1: int,
    unit: str,
    title: str,
    desc: str,
    lang: str,
) -> Markup:
    """A line through (ts_ms, value) points over [t0, t1); gaps over 10 % of the range or
    longer than six typical intervals break the line, so an outage does not look like data."""
    if not points:
        return _svg("line", title, desc, [], 0)
    values = [v for _, v in points]
    parts, x, y = _frame(t0, t1, min(values), max(values), unit, lang)
    steps = sorted(b[0] - a[0] for a, b in zip(points, points[1:], strict=False))
    typical = steps[len(steps) // 2] if steps else 0
    gap = max((t1 - t0) / 10, typical * 6)
    runs: list[list[str]] = [[]]
    prev = None
    for ts, v in points:
        if prev is not None and ts - prev > gap:
            runs.append([])
        runs[-1].append(f"{x(ts):.1f},{y(v):.1f}")  # type: ignore[operator]
        prev = ts
    for run in runs:
        if len(run) == 1:
            cx, cy = run[0].split(",")
            parts.append(f'<circle class="dot" cx="{cx}" cy="{cy}" r="2.5"/>')
        else:
            parts.append(f'<polyline class="line" fill="none" points="{" ".join(run)}"/>')
    return _svg("line", title, desc, parts, len(points))


def bar_chart(
    bars: Sequence[tuple[int, float]],
    t0: int,
    t1: int,
    bar_ms: int,
    unit: str,
    title: str,
    desc: str,
    lang: str,
) -> Markup:
    """Bars of value per interval starting at ts_ms, each bar_ms wide."""
    if not bars:
        return _svg("bar", title, desc, [], 0)
    values = [v for _, v in bars]
    parts, x, y = _frame(t0, t1, min(0.0, min(values)), max(0.0, max(values)), unit, lang)
    base = y(0.0)  # type: ignore[operator]
    for ts, v in bars:
        x0, x1 = x(ts), x(ts + bar_ms)  # type: ignore[operator]
        top = y(v)  # type: ignore[operator]
        w = max(1.0, x1 - x0 - 1)
        parts.append(
            f'<rect class="bar" x="{x0:.1f}" y="{min(top, base):.1f}" width="{w:.1f}" '
            f'height="{abs(base - top):.1f}"><title>{escape(fmt_num(lang, v))} {escape(unit)}'
            f"</title></rect>"
        )
    return _svg("bar", title, desc, parts, len(bars))
