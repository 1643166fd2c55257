"""Charts of the reports as inline SVG, drawn on the server (no JavaScript, prints as is):
bars (energy per day or per building) and lines (load profile over a day). Pure: numbers in,
SVG text out; every label is escaped."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

W, H = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 52, 10, 24, 36
COLOURS = ("#2f6f4f", "#d08c2c", "#4a78b5")


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    mag = 10 ** len(str(int(v))) / 10
    for step in (1, 2, 2.5, 5, 10):
        if v <= step * mag:
            return step * mag
    return v


def _fmt(v: float) -> str:
    return f"{v:,.0f}".replace(",", " ") if v >= 100 else f"{v:.3g}"


def _frame(title: str, unit: str, top: float) -> list[str]:
    ih = H - TOP - BOTTOM
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
        f'role="img" aria-label="{escape(title)}" font-family="sans-serif" font-size="10">',
        f'<text x="{LEFT}" y="14" font-size="12" font-weight="bold">{escape(title)}</text>',
    ]
    for k in range(5):
        y = TOP + ih - ih * k / 4
        parts.append(
            f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
        )
        parts.append(
            f'<text x="{LEFT - 4}" y="{y + 3:.1f}" text-anchor="end">{_fmt(top * k / 4)}</text>'
        )
    parts.append(
        f'<text x="4" y="{TOP + ih / 2:.1f}" transform="rotate(-90 10 {TOP + ih / 2:.1f})">'
        f"{escape(unit)}</text>"
    )
    return parts


def bar_chart(title: str, unit: str, labels: Sequence[str], values: Sequence[float | None]) -> str:
    """Bars; a None value (no data) is drawn as a grey stub labelled 'n/a'."""
    iw, ih = W - LEFT - RIGHT, H - TOP - BOTTOM
    top = _nice_max(max((v for v in values if v is not None), default=0.0))
    parts = _frame(title, unit, top)
    n = max(len(values), 1)
    slot = iw / n
    every = max(1, n // 16)
    for i, (lbl, v) in enumerate(zip(labels, values, strict=True)):
        x = LEFT + i * slot + slot * 0.1
        if v is None:
            parts.append(
                f'<rect x="{x:.1f}" y="{TOP + ih - 2}" width="{slot * 0.8:.1f}" height="2" fill="#bbb"/>'
            )
        else:
            h = ih * max(v, 0.0) / top
            parts.append(
                f'<rect x="{x:.1f}" y="{TOP + ih - h:.1f}" width="{slot * 0.8:.1f}" '
                f'height="{h:.1f}" fill="{COLOURS[0]}"><title>{escape(lbl)}: {_fmt(v)} '
                f"{escape(unit)}</title></rect>"
            )
        if i % every == 0:
            parts.append(
                f'<text x="{x + slot * 0.4:.1f}" y="{H - BOTTOM + 12}" text-anchor="middle">'
                f"{escape(lbl)}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def line_chart(
    title: str, unit: str, x_labels: Sequence[str], series: dict[str, Sequence[float | None]]
) -> str:
    """Lines over the same x positions (e.g. the 96 quarter hours of a day); gaps where None."""
    iw, ih = W - LEFT - RIGHT, H - TOP - BOTTOM
    values = [v for s in series.values() for v in s if v is not None]
    top = _nice_max(max(values, default=0.0))
    parts = _frame(title, unit, top)
    n = max(len(x_labels), 2)
    for k, (name, ys) in enumerate(series.items()):
        colour = COLOURS[k % len(COLOURS)]
        path: list[str] = []
        for i, v in enumerate(ys):
            if v is None:
                if path:
                    parts.append(
                        f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{" ".join(path)}"/>'
                    )
                path = []
                continue
            path.append(f"{LEFT + iw * i / (n - 1):.1f},{TOP + ih - ih * v / top:.1f}")
        if path:
            parts.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{" ".join(path)}"/>'
            )
        parts.append(
            f'<text x="{W - RIGHT - 150 + 0}" y="{TOP + 12 + 12 * k}" fill="{colour}">'
            f"\u25a0 {escape(name)}</text>"
        )
    every = max(1, n // 12)
    for i in range(0, len(x_labels), every):
        parts.append(
            f'<text x="{LEFT + iw * i / (n - 1):.1f}" y="{H - BOTTOM + 12}" text-anchor="middle">'
            f"{escape(x_labels[i])}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
