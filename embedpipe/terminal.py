"""What the operator reads: the run summary, the progress bar, status, reconcile and query output.

Rendering only; the CLI decides what to show and where (stdout or stderr).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from embedpipe.sinks.base import Hit
from embedpipe.types import RunReport

ERRORS_SHOWN = 20


@contextlib.contextmanager
def progress_bar(console: Console, *, disable: bool) -> Iterator[tuple[Progress, Any]]:
    """A transient progress bar on `console`, and its task."""
    bar = Progress(
        TextColumn("[bold]embedding"), BarColumn(), MofNCompleteColumn(), TextColumn("docs"),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, transient=True, disable=disable,
    )  # fmt: skip
    with bar:
        yield bar, bar.add_task("embed", total=None, info="loading model")


def print_summary(console: Console, r: RunReport) -> None:
    """The run's figures as a table, then the skipped records and the notes."""
    table = Table(
        title=f"embedpipe: {r.outcome}" + (" (dry run: counts are planned)" if r.dry_run else "")
    )
    table.add_column("", style="bold")
    table.add_column("")
    rows = [
        ("documents", f"{r.docs_read:,} read, {r.docs_failed:,} failed"),
        ("chunks", f"{r.chunks_total:,} total, {r.chunks_embedded:,} embedded, {r.chunks_skipped:,} skipped, "
                   f"{r.chunks_deleted:,} deleted"),
        ("throughput", f"{r.tokens_per_second:,.0f} tokens/s, {r.chunks_per_second:,.1f} chunks/s in {r.seconds:.1f}s"),
        ("padding efficiency", f"{r.padding_efficiency:.1%}"),
        ("model", f"{r.model} on {r.device} ({r.precision})"),
        ("sink", f"{r.sink} / {r.collection}"),
    ]  # fmt: skip
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for e in r.errors[:ERRORS_SHOWN]:
        console.print(f"[yellow]skipped[/] {escape(f'{e.source} :: {e.record}: {e.reason}')}")
    if len(r.errors) > ERRORS_SHOWN:
        console.print(f"... and {len(r.errors) - ERRORS_SHOWN} more (see --report)")
    for note in r.notes:
        if not (r.reason and note.endswith(r.reason)):  # the reason is printed as the error
            console.print(f"[red]{escape(note)}[/]")


def print_status(out: Console, rows: list[dict[str, Any]]) -> None:
    """Per index: the live generation, staged ones, and the last runs with their times."""
    if not rows:
        out.print("The ledger holds nothing yet: run `embedpipe backfill SOURCE` first.")
    for row in rows:
        out.print(f"[bold]{row['target']}[/] model={row['model'] or 'default'} dim={row['dim']} "
                  f"fingerprint={row['fingerprint'][:12]} chunks={row['chunks']} documents={row['documents']}")  # fmt: skip
        for g in row.get("generations", []):
            if g["state"] != "live":
                out.print(f"  {g['state']} generation {g['fingerprint'][:12]}: model={g['model'] or 'default'} "
                          f"chunks={g['chunks']} documents={g['documents']} created {when(g['created'])}")  # fmt: skip
        for r in row["runs"]:
            committed = f", last commit {when(r['committed'])}" if r.get("committed") else ""
            out.print(f"  run {r['id']} ({when(r['started'])}): {r['outcome']}{committed} "
                      f"embedded={r['chunks_embedded']} skipped={r['chunks_skipped']} "
                      f"deleted={r['chunks_deleted']} failed={r['docs_failed']}")  # fmt: skip


def print_reconcile(out: Console, result: dict[str, Any]) -> None:
    """Drift per generation, and what a repair did."""
    out.print(f"{result['target']}:")
    if result["relink"]:
        out.print(f"  the sink serves generation {result['relink'][:12]}, the ledger's live pointer "
                  "names another (a crash mid-swap): --repair relinks the ledger")  # fmt: skip
    for g in result["generations"]:
        name = "live" if g["live"] else "staged"
        out.print(f"  {name} {g['fingerprint'][:12]}: ledger {g['in_ledger']}, sink {g['in_sink']}, "
                  f"pending {g['pending']}")  # fmt: skip
        out.print(f"    missing from the sink: {len(g['missing'])} {g['missing'][:10]}")
        out.print(f"    orphaned in the sink: {len(g['orphaned'])} {g['orphaned'][:10]}")
    if result["repaired"]:
        out.print(
            "repaired" + (" and re-embedded" if "run" in result else ": run backfill to re-embed")
        )


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
