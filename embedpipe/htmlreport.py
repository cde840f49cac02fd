"""`embedpipe report RUN.json`: one self-contained HTML page with a run's figures and charts.

Charts are inline SVG drawn here (no script, no CDN: the page opens on a machine without
internet): the token-length histogram, throughput over time and padding efficiency over time.
Every data point carries `data-*` attributes and a `<title>` tooltip.
"""

from __future__ import annotations

import datetime
import html
import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

W, H = 640, 260  # chart size in SVG units
PAD_L, PAD_R, PAD_T, PAD_B = 64, 16, 16, 44
MAX_BARS = 48  # histogram bins shown; finer histograms are merged
MAX_ERRORS = 100

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2430}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:16px;margin:0 0 8px}
.sub{color:#5b6575;margin:0 0 20px}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;font-size:13px;font-weight:600;vertical-align:middle}
.ok{background:#d8f3e3;color:#11643a}.bad{background:#fde0e0;color:#9b1c1c}.dry{background:#e5e9f5;color:#2b3f7a}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:12px;margin-bottom:20px}
.card{background:#fff;border:1px solid #e3e6eb;border-radius:8px;padding:12px 14px}
.card .v{font-size:22px;font-weight:650} .card .k{color:#5b6575;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .d{color:#5b6575;font-size:12px}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:16px;margin-bottom:20px}
figure{margin:0;background:#fff;border:1px solid #e3e6eb;border-radius:8px;padding:12px 14px}
figcaption{color:#5b6575;font-size:12px;margin-top:4px}
svg.chart{width:100%;height:auto;display:block}
svg .grid{stroke:#e7eaee;stroke-width:1} svg .axis{stroke:#9aa3af;stroke-width:1}
svg text{font-size:11px;fill:#5b6575} svg .bar{fill:#4c78a8} svg .bar:hover{fill:#2f5b8a}
svg .line{fill:none;stroke:#4c78a8;stroke-width:2} svg .point{fill:#4c78a8}
svg .line.eff{stroke:#54a24b} svg .point.eff{fill:#54a24b} svg .mean{stroke:#e45756;stroke-dasharray:4 3}
svg .empty{font-size:13px}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #e3e6eb;border-radius:8px;margin-bottom:20px}
td,th{text-align:left;padding:6px 10px;border-bottom:1px solid #eef0f3;vertical-align:top;font-size:13px}
th{color:#5b6575;font-weight:600} td.mono{font-family:ui-monospace,Menlo,Consolas,monospace;word-break:break-all}
"""


def render_file(report_json: str | Path, out: str | Path | None = None) -> Path:
    """Render RUN.json to HTML (default: same name, .html) and return the path written."""
    src = Path(report_json)
    data = json.loads(src.read_text(encoding="utf-8"))
    target = Path(out) if out else src.with_suffix(".html")
    target.write_text(render(data), encoding="utf-8")
    return target


def render(r: dict[str, Any]) -> str:
    """The HTML page for a run report given as the dict `RunReport.to_dict()` writes."""
    outcome = str(r.get("outcome", "?"))
    badge = {"done": "ok", "dry-run": "dry"}.get(outcome, "bad")
    started = r.get("started_at")
    when = (
        datetime.datetime.fromtimestamp(started, tz=datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M:%S UTC"
        )
        if isinstance(started, int | float)
        else "time unknown"
    )
    title = f"embedpipe run: {r.get('collection', '')} ({outcome})"
    body = [
        f"<h1>embedpipe run <span class='badge {badge}' id='outcome'>{_e(outcome)}</span></h1>",
        f"<p class='sub'>{_e(r.get('source', ''))} → {_e(r.get('sink', ''))} / "
        f"<b>{_e(r.get('collection', ''))}</b> · {_e(when)} · {_e(r.get('model', ''))} on "
        f"{_e(r.get('device', ''))} ({_e(r.get('precision', ''))})</p>",
        _cards(r),
        "<div class='charts'>",
        _figure(
            "Token lengths of embedded chunks", histogram_svg(r), "chunks per token-length bin"
        ),
        _figure(
            "Throughput over time",
            throughput_svg(r),
            "tokens encoded per second between timeline points; dashed: run average",
        ),
        _figure(
            "Padding efficiency over time",
            padding_svg(r),
            "real tokens / padded tokens per interval (batches padded to their longest chunk)",
        ),
        "</div>",
        _errors(r),
        _details(r),
    ]
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{_e(title)}</title><style>{CSS}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )


# -- figures ---------------------------------------------------------------------------------


def _cards(r: dict[str, Any]) -> str:
    def n(key: str) -> float:
        value = r.get(key)
        return value if isinstance(value, int | float) else 0

    cards = [
        ("documents", f"{n('docs_read'):,.0f}", f"{n('docs_failed'):,.0f} failed"),
        ("chunks embedded", f"{n('chunks_embedded'):,.0f}", f"of {n('chunks_total'):,.0f} total"),
        ("chunks skipped", f"{n('chunks_skipped'):,.0f}", "already embedded"),
        ("chunks deleted", f"{n('chunks_deleted'):,.0f}", "stale"),
        ("throughput", f"{n('tokens_per_second'):,.0f}", f"tokens/s · {n('chunks_per_second'):,.1f} chunks/s"),
        ("duration", _duration(n("seconds")), f"{n('batches'):,.0f} batches"),
        ("padding efficiency", f"{n('padding_efficiency'):.1%}", "real / padded tokens"),
        ("record errors", f"{len(r.get('errors') or []):,}", "skipped files, lines, rows"),
    ]  # fmt: skip
    items = "".join(
        f"<div class='card' data-key='{_e(k)}'><div class='k'>{_e(k)}</div>"
        f"<div class='v'>{_e(v)}</div><div class='d'>{_e(d)}</div></div>"
        for k, v, d in cards
    )
    return f"<section class='cards'>{items}</section>"


def _figure(title: str, svg: str, caption: str) -> str:
    return f"<figure><h2>{_e(title)}</h2>{svg}<figcaption>{_e(caption)}</figcaption></figure>"


def _errors(r: dict[str, Any]) -> str:
    errors = r.get("errors") or []
    notes = r.get("notes") or []
    if not errors and not notes:
        return ""
    rows = "".join(f"<tr class='note'><td colspan='3'>{_e(n)}</td></tr>" for n in notes)
    rows += "".join(
        f"<tr class='error'><td class='mono'>{_e(e.get('source', ''))}</td>"
        f"<td class='mono'>{_e(e.get('record', ''))}</td><td>{_e(e.get('reason', ''))}</td></tr>"
        for e in errors[:MAX_ERRORS]
    )
    more = len(errors) - MAX_ERRORS
    if more > 0:
        rows += f"<tr><td colspan='3'>… and {more:,} more in the JSON report</td></tr>"
    return (
        f"<h2>Errors and notes ({len(errors):,} record errors)</h2><table id='errors'>"
        f"<tr><th>source</th><th>record</th><th>reason</th></tr>{rows}</table>"
    )


def _details(r: dict[str, Any]) -> str:
    keys = ("fingerprint", "model", "sink", "source", "collection", "mode", "device", "precision",
            "max_batch_tokens", "tokens_embedded", "real_tokens", "padded_tokens", "dry_run")  # fmt: skip
    rows = "".join(
        f"<tr><th>{_e(k)}</th><td class='mono'>{_e(r.get(k, ''))}</td></tr>" for k in keys
    )
    return f"<h2>Run details</h2><table id='details'>{rows}</table>"


# -- charts ----------------------------------------------------------------------------------


def histogram_svg(r: dict[str, Any]) -> str:
    """Bars of chunk counts per token-length bin (bins merged to at most MAX_BARS)."""
    counts = [int(c) for c in r.get("token_hist") or []]
    width = int(r.get("token_hist_width") or 1)
    if not any(counts):
        return _empty("token-histogram", "no chunks were encoded in this run")
    merge = math.ceil(len(counts) / MAX_BARS)
    bins = [sum(counts[i : i + merge]) for i in range(0, len(counts), merge)]
    step = width * merge
    top = _nice_max(max(bins))
    plot_w, plot_h = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    bar_w = plot_w / len(bins)
    parts = [_y_grid(top, lambda v: f"{v:,.0f}"), _x_axis()]
    for i, count in enumerate(bins):
        lo, hi = i * step, (i + 1) * step - 1
        h = plot_h * count / top
        x, y = PAD_L + i * bar_w, PAD_T + plot_h - h
        parts.append(
            f"<rect class='bar' x='{x + 1:.1f}' y='{y:.1f}' width='{max(bar_w - 2, 1):.1f}' "
            f"height='{h:.1f}' data-tokens='{lo}-{hi}' data-count='{count}'>"
            f"<title>{lo}–{hi} tokens: {count:,} chunks</title></rect>"
        )
    ticks = _ticks(0, len(bins) * step, 6)
    for t in ticks:
        x = PAD_L + plot_w * t / (len(bins) * step)
        parts.append(_x_label(x, f"{t:,.0f}"))
    parts.append(_axis_titles("tokens per chunk", "chunks"))
    return _svg("token-histogram", "Histogram of chunk token lengths", parts)


def _intervals(r: dict[str, Any]) -> list[tuple[float, float, float]]:
    """(end seconds, tokens/s, padding efficiency) between consecutive timeline points."""
    line = [p for p in r.get("timeline") or [] if isinstance(p, list | tuple) and len(p) >= 4]
    out = []
    for (t0, _, real0, pad0), (t1, _, real1, pad1) in itertools.pairwise(line):
        dt, dp = t1 - t0, pad1 - pad0
        if dt > 0 and dp > 0:
            out.append((float(t1), (real1 - real0) / dt, (real1 - real0) / dp))
    return out


def throughput_svg(r: dict[str, Any]) -> str:
    """Tokens/s per timeline interval over run time, with the run's average as a dashed line."""
    points = [(t, tps) for t, tps, _ in _intervals(r)]
    if not points:
        return _empty("throughput", "run too short for a time series (fewer than two batches)")
    mean = r.get("tokens_per_second")
    top = _nice_max(max([p[1] for p in points] + [mean if isinstance(mean, int | float) else 0]))
    return _line_chart("throughput", "Tokens per second over time", points, top,
                       lambda v: _si(v), "tokens/s", "", mean)  # fmt: skip


def padding_svg(r: dict[str, Any]) -> str:
    """Real/padded tokens per timeline interval, 0-100 %, with the run's overall figure dashed."""
    points = [(t, eff) for t, _, eff in _intervals(r)]
    if not points:
        return _empty("padding", "run too short for a time series (fewer than two batches)")
    overall = r.get("padding_efficiency")
    return _line_chart("padding", "Padding efficiency over time", points, 1.0,
                       lambda v: f"{v:.0%}", "real / padded", " eff", overall)  # fmt: skip


def _line_chart(
    chart_id: str,
    label: str,
    points: Sequence[tuple[float, float]],
    top: float,
    fmt: Any,
    y_title: str,
    css: str,
    mean: Any,
) -> str:
    plot_w, plot_h = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    t_max = max(p[0] for p in points) or 1.0

    def xy(t: float, v: float) -> tuple[float, float]:
        return PAD_L + plot_w * t / t_max, PAD_T + plot_h * (1 - min(v, top) / top)

    parts = [_y_grid(top, fmt), _x_axis()]
    coords = [xy(t, v) for t, v in points]
    parts.append(
        f"<polyline class='line{css}' points='{' '.join(f'{x:.1f},{y:.1f}' for x, y in coords)}'/>"
    )
    if isinstance(mean, int | float) and mean > 0:
        _, y = xy(0, mean)
        parts.append(
            f"<line class='mean' x1='{PAD_L}' x2='{W - PAD_R}' y1='{y:.1f}' y2='{y:.1f}'/>"
        )
    for (t, v), (x, y) in zip(points, coords, strict=True):
        parts.append(
            f"<circle class='point{css}' cx='{x:.1f}' cy='{y:.1f}' r='2.5' data-t='{t:.3f}' "
            f"data-value='{v:.4f}'><title>{_duration(t)}: {fmt(v)}</title></circle>"
        )
    for t in _ticks(0, t_max, 6):
        parts.append(_x_label(PAD_L + plot_w * t / t_max, _duration(t)))
    parts.append(_axis_titles("time since the run started", y_title))
    return _svg(chart_id, label, parts)


# -- SVG plumbing ----------------------------------------------------------------------------


def _svg(chart_id: str, label: str, parts: list[str]) -> str:
    return (
        f"<svg class='chart' id='{chart_id}' viewBox='0 0 {W} {H}' role='img' "
        f"aria-label='{_e(label)}' xmlns='http://www.w3.org/2000/svg'>{''.join(parts)}</svg>"
    )


def _empty(chart_id: str, message: str) -> str:
    return _svg(
        chart_id,
        message,
        [f"<text class='empty' x='{W / 2}' y='{H / 2}' text-anchor='middle'>{_e(message)}</text>"],
    )


def _y_grid(top: float, fmt: Any) -> str:
    plot_h = H - PAD_T - PAD_B
    out = []
    for v in _ticks(0, top, 5):
        y = PAD_T + plot_h * (1 - v / top)
        out.append(f"<line class='grid' x1='{PAD_L}' x2='{W - PAD_R}' y1='{y:.1f}' y2='{y:.1f}'/>")
        out.append(f"<text x='{PAD_L - 6}' y='{y + 4:.1f}' text-anchor='end'>{_e(fmt(v))}</text>")
    return "".join(out)


def _x_axis() -> str:
    y = H - PAD_B
    return f"<line class='axis' x1='{PAD_L}' x2='{W - PAD_R}' y1='{y}' y2='{y}'/>"


def _x_label(x: float, text: str) -> str:
    return f"<text x='{x:.1f}' y='{H - PAD_B + 16}' text-anchor='middle'>{_e(text)}</text>"


def _axis_titles(x_title: str, y_title: str) -> str:
    return (
        f"<text x='{PAD_L + (W - PAD_L - PAD_R) / 2}' y='{H - 6}' text-anchor='middle'>{_e(x_title)}</text>"
        f"<text transform='translate(14 {PAD_T + (H - PAD_T - PAD_B) / 2}) rotate(-90)' "
        f"text-anchor='middle'>{_e(y_title)}</text>"
    )


def _ticks(lo: float, hi: float, count: int) -> list[float]:
    """Round tick values (1, 2, 5 x 10^n steps) from lo to hi inclusive."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    n = math.floor((hi - lo) / step + 1e-9)
    return [lo + i * step for i in range(n + 1)]


def _nice_max(value: float) -> float:
    """The smallest 1/2/5 x 10^n step multiple at or above value (so the top gridline is round)."""
    if value <= 0:
        return 1.0
    ticks = _ticks(0, value, 5)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else value
    return ticks[-1] if ticks[-1] >= value else ticks[-1] + step


def _si(value: float) -> str:
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.3g}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.3g}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes, sec = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)
