"""Inline SVG for the HTML report: the chart frame, axes, round ticks and labels (no script,
no CDN: the page opens on a machine without internet)."""

from __future__ import annotations

import html
import math
from typing import Any

W, H = 640, 260  # chart size in SVG units
PAD_L, PAD_R, PAD_T, PAD_B = 64, 16, 16, 44


def svg(chart_id: str, label: str, parts: list[str]) -> str:
    """A chart: `parts` in a W x H viewBox, labelled for screen readers."""
    return (
        f"<svg class='chart' id='{chart_id}' viewBox='0 0 {W} {H}' role='img' "
        f"aria-label='{esc(label)}' xmlns='http://www.w3.org/2000/svg'>{''.join(parts)}</svg>"
    )


def empty(chart_id: str, message: str) -> str:
    """A chart slot that says why there is nothing to draw."""
    return svg(
        chart_id,
        message,
        [f"<text class='empty' x='{W / 2}' y='{H / 2}' text-anchor='middle'>{esc(message)}</text>"],
    )


def y_grid(top: float, fmt: Any, *, integer: bool = False) -> str:
    """Horizontal grid lines with their labels, 0 to `top`."""
    plot_h = H - PAD_T - PAD_B
    out = []
    for v in ticks(0, top, 5, integer=integer):
        y = PAD_T + plot_h * (1 - v / top)
        out.append(f"<line class='grid' x1='{PAD_L}' x2='{W - PAD_R}' y1='{y:.1f}' y2='{y:.1f}'/>")
        out.append(f"<text x='{PAD_L - 6}' y='{y + 4:.1f}' text-anchor='end'>{esc(fmt(v))}</text>")
    return "".join(out)


def x_axis() -> str:
    """The x axis line."""
    y = H - PAD_B
    return f"<line class='axis' x1='{PAD_L}' x2='{W - PAD_R}' y1='{y}' y2='{y}'/>"


def x_label(x: float, text: str) -> str:
    """A label under the x axis at `x`."""
    return f"<text x='{x:.1f}' y='{H - PAD_B + 16}' text-anchor='middle'>{esc(text)}</text>"


def axis_titles(x_title: str, y_title: str) -> str:
    """The titles of both axes."""
    return (
        f"<text x='{PAD_L + (W - PAD_L - PAD_R) / 2}' y='{H - 6}' text-anchor='middle'>{esc(x_title)}</text>"
        f"<text transform='translate(14 {PAD_T + (H - PAD_T - PAD_B) / 2}) rotate(-90)' "
        f"text-anchor='middle'>{esc(y_title)}</text>"
    )


def ticks(lo: float, hi: float, count: int, *, integer: bool = False) -> list[float]:
    """Round tick values (1, 2, 5 x 10^n steps) from lo to hi inclusive; whole numbers only
    when `integer` (counts: no 0.5 labelled '0' or '1')."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    step = max(step, 1) if integer else step
    n = math.floor((hi - lo) / step + 1e-9)
    return [lo + i * step for i in range(n + 1)]


def nice_max(value: float, *, integer: bool = False) -> float:
    """The smallest 1/2/5 x 10^n step multiple at or above value (so the top gridline is round)."""
    if value <= 0:
        return 1.0
    marks = ticks(0, value, 5, integer=integer)
    step = marks[1] - marks[0] if len(marks) > 1 else value
    return marks[-1] if marks[-1] >= value else marks[-1] + step


def si(value: float) -> str:
    """1234567 -> '1.23M'."""
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.3g}"


def duration(seconds: float) -> str:
    """Seconds as '4.2s', '1m34s' or '2h05m'."""
    if seconds < 60:
        return f"{seconds:.3g}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes, sec = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def esc(value: Any) -> str:
    """`value` as HTML text (quotes escaped too)."""
    return html.escape(str(value), quote=True)
