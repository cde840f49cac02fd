"""What the operator reads: the run summary, status, reconcile and query output (the progress
bar is cli/progress.py). Notes in the normal colour, warnings (skipped records) in yellow.

Rendering only; the CLI decides what to show and where (stdout or stderr).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from embedpipe.sinks.base import Hit
from embedpipe.types import NOT_LOADED, RecordError, RunReport

ERRORS_SHOWN = 20  # distinct reasons shown; the rest are in the JSON report
RECORDS_NAMED = 3  # records named per reason


def print_summary(console: Console, r: RunReport) -> None:
    """The run's figures as a table, then the skipped records and the notes."""
    table = Table(
        title=f"embedpipe: {r.outcome}" + (" (dry run: counts are planned)" if r.dry_run else "")
    )
    table.add_column("", style="bold")
    table.add_column("")
    unloaded = r.device == NOT_LOADED
    why = "a dry run only counts" if r.dry_run else "nothing needed embedding"
    rows = [
        (
            "documents",
            f"{r.docs_read:,} read, {r.docs_skipped:,} unchanged, {r.docs_failed:,} failed",
        ),
        (
            "chunks",
            f"{r.chunks_total:,} total, {r.chunks_embedded:,} embedded, {r.chunks_skipped:,} skipped, "
            f"{r.chunks_deleted:,} deleted"
            + (
                f" ({r.chunks_copied:,} dense vectors copied, not encoded)"
                if r.chunks_copied
                else ""
            ),
        ),
        ("throughput", f"{r.tokens_per_second:,.0f} tokens/s, {r.chunks_per_second:,.1f} chunks/s"),
        (
            "time",
            f"{r.wall_seconds:.1f}s: start-up {r.startup_seconds:.1f}s{'' if unloaded else ' (model load)'} + run {r.seconds:.1f}s",
        ),
        ("padding efficiency", f"{r.padding_efficiency:.1%}"),
        (
            "model",
            f"{r.model}, not loaded: {why}"
            if unloaded
            else f"{r.model} on {r.device} ({r.precision})",
        ),
        (
            "sink",
            f"{r.sink} / {r.collection}"
            + (f", with sparse vectors ({r.sparse})" if r.sparse else ""),
        ),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    groups = by_reason(r.errors)
    for reason, errors in list(groups.items())[:ERRORS_SHOWN]:
        named = ", ".join(f"{e.source} :: {e.record}" for e in errors[:RECORDS_NAMED])
        more = f" and {len(errors) - RECORDS_NAMED:,} more" if len(errors) > RECORDS_NAMED else ""
        count = f"{len(errors):,} records" if len(errors) > 1 else "1 record"
        console.print(
            f"[yellow]skipped {count}: {escape(reason)} ({escape(named)}{more})[/]",
            soft_wrap=True,
            highlight=False,
        )
    if len(groups) > ERRORS_SHOWN:
        console.print(
            f"[yellow]... and {len(groups) - ERRORS_SHOWN} other reasons (see --report)[/]"
        )
    for note in r.notes:
        if not (r.reason and note.endswith(r.reason)):  # the reason is printed as the error
            console.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)


def by_reason(errors: Sequence[RecordError]) -> dict[str, list[RecordError]]:
    """Record errors grouped by reason, in the order each reason first came."""
    groups: dict[str, list[RecordError]] = {}
    for e in errors:
        groups.setdefault(e.reason, []).append(e)
    return groups


def print_status(out: Console, rows: list[dict[str, Any]]) -> None:
    """Per index: the live generation, staged ones, and the last runs with their times."""
    if not rows:
        out.print("The ledger holds nothing yet: run `embedpipe backfill SOURCE` first.")
    for row in rows:
        out.print(
            f"[bold]{escape(row['target'])}[/] model {escape(row['model_name'])}, dim {row['dim']}, "
            f"fingerprint {row['fingerprint'][:12]}: {row['chunks']:,} chunks, {row['documents']:,} documents"
            + (f", sparse vectors ({row['sparse']})" if row.get("sparse") else "")
        )
        if row.get("served_differs"):
            out.print(
                f"  [yellow]the sink serves generation {row['served'][:12]}, not the ledger's "
                f"{row['fingerprint'][:12]}[/] (a switch or run killed after its swap): "
                "`embedpipe reconcile --repair` makes the ledger follow the sink"
            )
        elif row.get("served_error"):
            out.print(
                f"  [yellow]what the sink serves could not be read:[/] {escape(row['served_error'])}"
            )
        for g in row.get("generations", []):
            if g["state"] != "live":
                out.print(
                    f"  {g['state']} generation {g['fingerprint'][:12]}: model {escape(g['model_name'])}, "
                    f"{g['chunks']:,} chunks, {g['documents']:,} documents, created {when(g['created'])}"
                )
        for r in row["runs"]:
            out.print(
                f"  run {r['id']} {r['outcome']}: {run_times(r)}; embedded {r['chunks_embedded']}, "
                f"skipped {r['chunks_skipped']}, deleted {r['chunks_deleted']}, failed {r['docs_failed']}"
            )


def run_times(r: dict[str, Any]) -> str:
    """'started 2025-01-02 03:04:05, ended 03:05:10 (65.0s)', or the last commit of a run that
    has not ended."""
    text = f"started {when(r['started'])}"
    ended = r.get("ended")
    if ended is not None:
        same_day = time.localtime(ended)[:3] == time.localtime(r["started"])[:3]
        shown = time.strftime("%H:%M:%S", time.localtime(ended)) if same_day else when(ended)
        text += f", ended {shown} ({duration(ended - r['started'])})"
    if r.get("committed"):
        text += f", last commit {when(r['committed'])}"
    return text


def duration(seconds: float) -> str:
    """'42.0s', '3m05s' or '2h07m'."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(round(seconds), 60)
    return f"{minutes}m{sec:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def print_reconcile(out: Console, result: dict[str, Any]) -> None:
    """Drift per generation, and what a repair did."""
    out.print(
        f"{result['target']}:"
        + (f" (sparse vectors: {result['sparse']})" if result.get("sparse") else "")
    )
    if result["relink"]:
        out.print(
            f"  the sink serves generation {result['relink'][:12]}, the ledger's live pointer "
            "names another (a crash mid-swap): --repair relinks the ledger"
        )
    for fingerprint in result.get("dropping", []):
        out.print(
            f"  generation {fingerprint[:12]} was being dropped when its process died: "
            + ("the drop is finished" if result["repaired"] else "--repair finishes the drop")
        )
    for g in result["generations"]:
        name = "live" if g["live"] else _ledger_state(g.get("state"))
        out.print(
            f"  {name} {g['fingerprint'][:12]}: ledger {g['in_ledger']}, sink {g['in_sink']}, "
            f"pending {g['pending']}"
        )
        out.print(f"    missing from the sink: {len(g['missing'])} {g['missing'][:10]}")
        out.print(f"    orphaned in the sink: {len(g['orphaned'])} {g['orphaned'][:10]}")
    if result["repaired"]:
        out.print(
            "repaired" + (" and re-embedded" if "run" in result else ": run backfill to re-embed")
        )


def _ledger_state(state: str | None) -> str:
    """A generation the sink does not serve, as the ledger names it (staged, previous...)."""
    if state == "live":
        return "live in the ledger, not served"
    return state or "staged"


def hits_table(text: str, hits: Sequence[Hit]) -> Table:
    """Query hits: score, document, chunk and a one-line snippet."""
    table = Table(title=f"top {len(hits)} for: {text}")
    for col in ("score", "doc id", "chunk", "snippet"):
        table.add_column(col, overflow="fold")
    for h in hits:
        table.add_row(f"{h.score:.3f}", h.doc_id, str(h.chunk_index), snippet(h.text))
    return table


def when(ts: float | None) -> str:
    """A Unix time as local 'YYYY-MM-DD HH:MM:SS'."""
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def snippet(text: str, width: int = 160) -> str:
    """`text` on one line, cut to `width` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
