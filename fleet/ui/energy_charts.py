"""SVG bar charts of the energy pages over categories (the days of a month, the buildings of a
municipality) rather than a time axis: fleet/ui/charts.py's frame, classes and accessibility
(title, desc), a bar per category, partial data marked by a class and said in the bar's title.
No data access."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

from fleet.ui.charts import HEIGHT, LEFT, RIGHT, WIDTH, _svg, axes, value_axis
from fleet.ui.web import fmt_num

MAX_LABELS = 16  # more categories: every n-th label, so they do not overlap


def category_bars(
    labels: Sequence[str],
    values: Sequence[float | None],
    unit: str,
    title: str,
    desc: str,
    lang: str,
    notes: Sequence[str] | None = None,
    partial: Sequence[bool] | None = None,
) -> Markup:
    """A bar per category (value None: no bar, e.g. no data at all); notes[i] is added to the
    bar's tooltip title, partial[i] gives the bar the class "partial" (lighter, dashed outline)."""
    shown = [v for v in values if v is not None]
    if not labels or not shown:
        return _svg("bar", title, desc, [], 0)
    plot_w = WIDTH - LEFT - RIGHT
    parts, y = value_axis(min(0.0, min(shown)), max(0.0, max(shown)), lang)
    step = plot_w / len(labels)
    every = max(1, -(-len(labels) // MAX_LABELS))
    base = y(0.0)
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        x0 = LEFT + i * step
        if i % every == 0:
            parts.append(
                f'<text class="tick" x="{x0 + step / 2:.1f}" y="{HEIGHT - 12}" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
        if v is None:
            continue
        top = y(v)
        cls = "bar partial" if partial and partial[i] else "bar"
        note = f" ({notes[i]})" if notes and notes[i] else ""
        parts.append(
            f'<rect class="{cls}" x="{x0 + step * 0.1:.1f}" y="{min(top, base):.1f}" '
            f'width="{max(1.0, step * 0.8):.1f}" height="{abs(base - top):.1f}"><title>'
            f"{escape(label)}: {escape(fmt_num(lang, round(v, 1)))} {escape(unit)}{escape(note)}"
            f"</title></rect>"
        )
    parts.append(axes(unit))
    return _svg("bar", title, desc, parts, len(shown))
