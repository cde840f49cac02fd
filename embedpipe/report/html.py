"""`embedpipe report RUN.json`: one self-contained HTML page with a run's figures and charts.

Charts are inline SVG drawn here (no script, no CDN: the page opens on a machine without
internet): the token-length histogram, throughput over time and padding efficiency over time.
Every data point carries `data-*` attributes and a `<title>` tooltip.
"""

from __future__ import annotations

import datetime
import itertools
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from embedpipe.report.svg import (
    PAD_B,
    PAD_L,
    PAD_R,
    PAD_T,
    H,
    W,
    axis_titles,
    duration,
    empty,
    esc,
    nice_max,
    si,
    svg,
    ticks,
    x_axis,
    x_label,
    y_grid,
)

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


def render_file(
    report_json: str | Path, out: str | Path | None = None, *, stdout: bool = False
) -> Path | None:
    """Render RUN.json to HTML on stdout, or into `out` (default: RUN.html next to it); return
    the path written (None for stdout)."""
    src = Path(report_json)
    page = render(json.loads(src.read_text(encoding="utf-8")))
    if stdout:
        sys.stdout.write(page)
        sys.stdout.flush()
        return None
    target = Path(out) if out else src.with_suffix(".html")
    target.write_text(page, encoding="utf-8")
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
        f"<h1>embedpipe run <span class='badge {badge}' id='outcome'>{esc(outcome)}</span></h1>",
        f"<p class='sub'>{esc(r.get('source', ''))} → {esc(r.get('sink', ''))} / "
        f"<b>{esc(r.get('collection', ''))}</b> · {esc(when)} · {esc(r.get('model', ''))} on "
        f"{esc(r.get('device', ''))} ({esc(r.get('precision', ''))})</p>",
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
        _figure(
            "Where the time went",
            phases_svg(r),
            "wall time: start-up (checking the source, loading the model), then each phase",
        ),
        "</div>",
        _promotion(r),
        _notes(r),
        _errors(r),
        _details(r),
    ]
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{esc(title)}</title><style>{CSS}</style></head>"
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
        (
            "throughput",
            f"{n('tokens_per_second'):,.0f}",
            f"tokens/s · {n('chunks_per_second'):,.1f} chunks/s",
        ),
        (
            "duration",
            duration(n("startup_seconds") + n("seconds")),
            f"start-up {duration(n('startup_seconds'))} + run {duration(n('seconds'))}",
        ),
        ("padding efficiency", f"{n('padding_efficiency'):.1%}", "real / padded tokens"),
        ("record errors", f"{len(r.get('errors') or []):,}", "skipped files, lines, rows"),
    ]
    items = "".join(
        f"<div class='card' data-key='{esc(k)}'><div class='k'>{esc(k)}</div>"
        f"<div class='v'>{esc(v)}</div><div class='d'>{esc(d)}</div></div>"
        for k, v, d in cards
    )
    return f"<section class='cards'>{items}</section>"


def _figure(title: str, chart: str, caption: str) -> str:
    return f"<figure><h2>{esc(title)}</h2>{chart}<figcaption>{esc(caption)}</figcaption></figure>"


def _promotion(r: dict[str, Any]) -> str:
    """A new generation's verdict: live and staged side by side (documents, then the metrics)."""
    p = r.get("promotion")
    if not isinstance(p, dict):
        return ""
    live, staged = p.get("live") or {}, p.get("staged") or {}
    keys = [k for k in ("documents", "recall", "mrr", "ndcg") if k in live or k in staged]
    cell = lambda v: "" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    rows = "".join(
        f"<tr><th>{esc(k)}</th><td>{esc(cell(live.get(k)))}</td><td>{esc(cell(staged.get(k)))}</td></tr>"
        for k in keys
    )
    verdict = "promoted" if p.get("promoted") else "held"
    return (
        f"<h2>Promotion: {verdict}</h2><p id='promotion-reason'>{esc(p.get('reason', ''))}</p>"
        f"<table id='promotion'><tr><th></th><th>live</th><th>staged</th></tr>{rows}</table>"
    )


def _notes(r: dict[str, Any]) -> str:
    """What the run noted (precision chosen, engine details): information, not errors."""
    notes = r.get("notes") or []
    if not notes:
        return ""
    items = "".join(f"<li class='note'>{esc(n)}</li>" for n in notes)
    return f"<h2>Notes</h2><ul id='notes' class='notes'>{items}</ul>"


def _errors(r: dict[str, Any]) -> str:
    errors = r.get("errors") or []
    if not errors:
        return ""
    rows = "".join(
        f"<tr class='error'><td class='mono'>{esc(e.get('source', ''))}</td>"
        f"<td class='mono'>{esc(e.get('record', ''))}</td><td>{esc(e.get('reason', ''))}</td></tr>"
        for e in errors[:MAX_ERRORS]
    )
    more = len(errors) - MAX_ERRORS
    if more > 0:
        rows += f"<tr><td colspan='3'>… and {more:,} more in the JSON report</td></tr>"
    return (
        f"<h2>Record errors ({len(errors):,}: skipped)</h2><table id='errors'>"
        f"<tr><th>source</th><th>record</th><th>reason</th></tr>{rows}</table>"
    )


def _details(r: dict[str, Any]) -> str:
    keys = (
        "fingerprint",
        "model",
        "sink",
        "source",
        "collection",
        "mode",
        "device",
        "precision",
        "max_batch_tokens",
        "tokens_embedded",
        "real_tokens",
        "padded_tokens",
        "dry_run",
    )
    rows = "".join(
        f"<tr><th>{esc(k)}</th><td class='mono'>{esc(r.get(k, ''))}</td></tr>" for k in keys
    )
    return f"<h2>Run details</h2><table id='details'>{rows}</table>"


# -- charts ----------------------------------------------------------------------------------


def histogram_svg(r: dict[str, Any]) -> str:
    """Bars of chunk counts per token-length bin (bins merged to at most MAX_BARS)."""
    counts = [int(c) for c in r.get("token_hist") or []]
    width = int(r.get("token_hist_width") or 1)
    if not any(counts):
        return empty("token-histogram", "no chunks were encoded in this run")
    merge = math.ceil(len(counts) / MAX_BARS)
    bins = [sum(counts[i : i + merge]) for i in range(0, len(counts), merge)]
    step = width * merge
    top = nice_max(max(bins), integer=True)
    plot_w, plot_h = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    bar_w = plot_w / len(bins)
    parts = [y_grid(top, lambda v: f"{v:,.0f}", integer=True), x_axis()]
    for i, count in enumerate(bins):
        lo, hi = i * step, (i + 1) * step - 1
        h = plot_h * count / top
        x, y = PAD_L + i * bar_w, PAD_T + plot_h - h
        parts.append(
            f"<rect class='bar' x='{x + 1:.1f}' y='{y:.1f}' width='{max(bar_w - 2, 1):.1f}' "
            f"height='{h:.1f}' data-tokens='{lo}-{hi}' data-count='{count}'>"
            f"<title>{lo}–{hi} tokens: {count:,} chunks</title></rect>"
        )
    for t in ticks(0, len(bins) * step, 6):
        x = PAD_L + plot_w * t / (len(bins) * step)
        parts.append(x_label(x, f"{t:,.0f}"))
    parts.append(axis_titles("tokens per chunk", "chunks"))
    return svg("token-histogram", "Histogram of chunk token lengths", parts)


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
        return empty("throughput", "run too short for a time series (fewer than two batches)")
    mean = r.get("tokens_per_second")
    top = nice_max(max([p[1] for p in points] + [mean if isinstance(mean, int | float) else 0]))
    return _line_chart(
        "throughput",
        "Tokens per second over time",
        points,
        top,
        lambda v: si(v),
        "tokens/s",
        "",
        mean,
    )


def padding_svg(r: dict[str, Any]) -> str:
    """Real/padded tokens per timeline interval, 0-100 %, with the run's overall figure dashed."""
    points = [(t, eff) for t, _, eff in _intervals(r)]
    if not points:
        return empty("padding", "run too short for a time series (fewer than two batches)")
    overall = r.get("padding_efficiency")
    return _line_chart(
        "padding",
        "Padding efficiency over time",
        points,
        1.0,
        lambda v: f"{v:.0%}",
        "real / padded",
        " eff",
        overall,
    )


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

    parts = [y_grid(top, fmt), x_axis()]
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
            f"data-value='{v:.4f}'><title>{duration(t)}: {fmt(v)}</title></circle>"
        )
    for t in ticks(0, t_max, 6):
        parts.append(x_label(PAD_L + plot_w * t / t_max, duration(t)))
    parts.append(axis_titles("time since the run started", y_title))
    return svg(chart_id, label, parts)


def phase_times(r: dict[str, Any]) -> list[tuple[str, float]]:
    """(part, seconds) of the wall time: start-up, opening (lock, ledger, sink), then each phase
    as entered (types.PHASES), the last one lasting until the run's end."""
    marks = [(str(m[0]), float(m[1])) for m in r.get("phases") or [] if len(m) >= 2]
    if not marks:
        return []
    end = max(float(r.get("seconds") or 0), marks[-1][1])
    parts = [("start-up", float(r.get("startup_seconds") or 0)), ("opening", marks[0][1])]
    ends = [at for _, at in marks[1:]] + [end]
    totals: dict[str, float] = {}
    for (name, start), stop in zip(marks, ends, strict=True):
        totals[name] = totals.get(name, 0.0) + max(stop - start, 0.0)
    return parts + list(totals.items())


def phases_svg(r: dict[str, Any]) -> str:
    """One horizontal bar per part of the wall time, with its seconds."""
    parts = phase_times(r)
    if not parts:
        return empty("phases", "no phase timings in this report (an older embedpipe wrote it)")
    top = max(max(t for _, t in parts), 1e-3)
    row = (H - PAD_T - PAD_B) / len(parts)
    left, width = 120, W - 120 - 80
    out = []
    for i, (name, t) in enumerate(parts):
        y = PAD_T + i * row
        out.append(
            f"<text x='{left - 8}' y='{y + row / 2 + 4:.1f}' text-anchor='end'>{esc(name)}</text>"
            f"<rect class='bar' x='{left}' y='{y + row * 0.15:.1f}' width='{max(width * t / top, 1):.1f}' "
            f"height='{row * 0.7:.1f}' data-phase='{esc(name)}' data-seconds='{t:.3f}'>"
            f"<title>{esc(name)}: {duration(t)}</title></rect>"
            f"<text x='{left + max(width * t / top, 1) + 6:.1f}' y='{y + row / 2 + 4:.1f}'>{duration(t)}</text>"
        )
    wall = float(r.get("startup_seconds") or 0) + float(r.get("seconds") or 0)
    out.append(axis_titles(f"wall time {duration(wall)}", ""))
    return svg("phases", "Where the time went", out)
