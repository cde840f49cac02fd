"""The `embedpipe` command: parses flags into a config and calls the library. No logic of its own.

Exit codes: 0 done (bad records skipped and reported), 1 the run failed, 2 usage error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
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

from embedpipe import api, logs
from embedpipe.config import RunConfig, flat_overrides, load_config
from embedpipe.configdoc import help_for
from embedpipe.errors import ConfigError, EmbedpipeError
from embedpipe.sinks import rebuild_sink
from embedpipe.types import RunReport

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Batch embeddings into Qdrant or FAISS."
)
console = Console(stderr=True)
DEBUG = False  # --debug: tracebacks for errors, which are otherwise one line
log = logging.getLogger("embedpipe.cli")
out = Console()


def _help(key: str, more: str = "") -> str:
    """An option's help: the description of the config key it sets (configs/default.yaml)."""
    return escape(help_for(key, more))  # escaped: typer renders help as rich markup


FLAG = ""  # metavar of a boolean flag: it takes no value, so show none
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config (see configs/default.yaml)")
]
SinkOpt = Annotated[str | None, typer.Option(help=_help("sink.uri"))]
CollectionOpt = Annotated[str | None, typer.Option(help=_help("sink.collection"))]
ModelOpt = Annotated[str | None, typer.Option(help=_help("model.name"))]
StateOpt = Annotated[str | None, typer.Option(help=_help("state"))]
ReportOpt = Annotated[Path | None, typer.Option(help=_help("report"))]
MetricsOpt = Annotated[Path | None, typer.Option(help=_help("metrics"))]
LogFormatOpt = Annotated[
    str,
    typer.Option(
        envvar="EMBEDPIPE_LOG_FORMAT", help="text | json (one JSON object per event on stderr)"
    ),
]
EngineOpt = Annotated[str | None, typer.Option(help=_help("engine"))]
RayAddressOpt = Annotated[str | None, typer.Option(help=_help("ray.address"))]
DryRunOpt = Annotated[
    bool,
    typer.Option("--dry-run", metavar=FLAG, help="plan only: count what would be embedded/deleted"),
]
ForceOpt = Annotated[
    bool,
    typer.Option(
        "--force",
        metavar=FLAG,
        help="promote a new generation below promote.min_fraction; allow a delete wave above "
        "max_delete_fraction",
    ),
]
StrictOpt = Annotated[
    bool | None, typer.Option("--strict/--no-strict", metavar=FLAG, help=_help("strict"))
]


@app.callback()
def _options(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug", metavar=FLAG, help="print tracebacks (errors are otherwise one line)"
        ),
    ] = False,
) -> None:
    """Batch embeddings into Qdrant or FAISS."""
    global DEBUG
    DEBUG = debug


@app.command()
def backfill(
    source: Annotated[str, typer.Argument(help=_help("source.uri"))],
    sink: SinkOpt = None,
    collection: CollectionOpt = None,
    model: ModelOpt = None,
    config: ConfigOpt = None,
    report: ReportOpt = None,
    max_batch_tokens: Annotated[
        int | None, typer.Option(help=_help("batching.max_batch_tokens"))
    ] = None,
    precision: Annotated[str | None, typer.Option(help=_help("model.precision"))] = None,
    device: Annotated[str | None, typer.Option(help=_help("model.device"))] = None,
    truncate_dim: Annotated[int | None, typer.Option(help=_help("model.truncate_dim"))] = None,
    quantization: Annotated[str | None, typer.Option(help=_help("model.quantization"))] = None,
    chunk_tokens: Annotated[int | None, typer.Option(help=_help("chunking.chunk_tokens"))] = None,
    overlap_tokens: Annotated[
        int | None, typer.Option(help=_help("chunking.overlap_tokens"))
    ] = None,
    text_field: Annotated[str | None, typer.Option(help=_help("source.text_field"))] = None,
    id_field: Annotated[str | None, typer.Option(help=_help("source.id_field"))] = None,
    index_factory: Annotated[str | None, typer.Option(help=_help("sink.index_factory"))] = None,
    mode: Annotated[str | None, typer.Option(help=_help("mode"))] = None,
    state: StateOpt = None,
    strict: StrictOpt = None,
    engine: EngineOpt = None,
    ray_address: RayAddressOpt = None,
    text_template: Annotated[str | None, typer.Option(help=_help("source.text_template"))] = None,
    include: Annotated[
        list[str] | None, typer.Option(help=_help("source.include", "repeatable"))
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option(help=_help("source.exclude", "repeatable"))
    ] = None,
    metrics: MetricsOpt = None,
    log_format: LogFormatOpt = "text",
    dry_run: DryRunOpt = False,
    force: ForceOpt = False,
) -> None:
    """Embed SOURCE into a sink, skipping what is already there, with a progress bar and a summary."""
    overrides = flat_overrides(
        source=source, sink=sink, collection=collection, model=model, report=str(report) if report else None,
        max_batch_tokens=max_batch_tokens, precision=precision, device=device, chunk_tokens=chunk_tokens,
        truncate_dim=truncate_dim, quantization=quantization,
        overlap_tokens=overlap_tokens, text_field=text_field, id_field=id_field, index_factory=index_factory,
        text_template=text_template, include=include or None, exclude=exclude or None,
        metrics=str(metrics) if metrics else None,
        mode=mode, state=state, strict=strict, engine=engine, ray_address=ray_address,
    )  # fmt: skip
    _execute(_config(config, overrides), dry_run=dry_run, force=force, log_format=log_format)


@app.command()
def run(
    config: Annotated[
        Path,
        typer.Argument(help="YAML config naming source, sink and model (configs/nightly.yaml)"),
    ],
    report: ReportOpt = None,
    state: StateOpt = None,
    strict: StrictOpt = None,
    engine: EngineOpt = None,
    ray_address: RayAddressOpt = None,
    metrics: MetricsOpt = None,
    log_format: LogFormatOpt = "text",
    dry_run: DryRunOpt = False,
    force: ForceOpt = False,
) -> None:
    """The nightly job: everything from CONFIG, incremental, resumable, atomic on model change."""
    cfg = _config(
        config,
        flat_overrides(
            report=str(report) if report else None,
            state=state,
            strict=strict,
            engine=engine,
            ray_address=ray_address,
        ),
    )
    if metrics:
        cfg.metrics = str(metrics)
    if not cfg.source.uri:
        _usage(f"{config} has no source.uri: name the corpus to embed")
    _execute(cfg, dry_run=dry_run, force=force, log_format=log_format)


@app.command()
def query(
    text: Annotated[str, typer.Argument(help="the question or text to search for")],
    sink: SinkOpt = None,
    collection: CollectionOpt = None,
    model: ModelOpt = None,
    config: ConfigOpt = None,
    state: StateOpt = None,
    k: Annotated[int, typer.Option("-k", "--top-k", help="number of hits")] = 5,
    as_json: Annotated[
        bool, typer.Option("--json", metavar=FLAG, help="print hits as JSON")
    ] = False,
    nprobe: Annotated[int | None, typer.Option(help=_help("sink.nprobe"))] = None,
    ef: Annotated[int | None, typer.Option(help=_help("sink.ef_search"))] = None,
) -> None:
    """Search a sink with the model it was built with; prints score, doc id and a snippet."""
    cfg = _config(
        config,
        flat_overrides(
            sink=sink, collection=collection, model=model, state=state, nprobe=nprobe, ef=ef
        ),
    )
    hits = _guard(lambda: api.query(text, k=k, config=cfg))
    if as_json:
        out.print_json(json.dumps([dataclasses.asdict(h) for h in hits], ensure_ascii=False))
        return
    table = Table(title=f"top {len(hits)} for: {text}")
    for col in ("score", "doc id", "chunk", "snippet"):
        table.add_column(col, overflow="fold")
    for h in hits:
        table.add_row(f"{h.score:.3f}", h.doc_id, str(h.chunk_index), _snippet(h.text))
    out.print(table)


@app.command()
def rebuild(
    sink: SinkOpt = None,
    collection: CollectionOpt = None,
    config: ConfigOpt = None,
    index_factory: Annotated[
        str | None, typer.Option(help=_help("sink.index_factory", "re-trained as this"))
    ] = None,
) -> None:
    """Re-train and rebuild a FAISS index from its stored vectors, without re-encoding."""
    cfg = _config(
        config, flat_overrides(sink=sink, collection=collection, index_factory=index_factory)
    )
    _guard(lambda: rebuild_sink(cfg.sink))
    out.print(f"rebuilt {cfg.sink.collection} in {cfg.sink.uri}")


@app.command()
def status(
    sink: SinkOpt = None,
    config: ConfigOpt = None,
    state: StateOpt = None,
    as_json: Annotated[bool, typer.Option("--json", metavar=FLAG, help="print as JSON")] = False,
) -> None:
    """What the ledger holds per collection: chunks, documents, fingerprint, last runs."""
    cfg = _config(config, flat_overrides(sink=sink, state=state))
    rows = _guard(lambda: api.status(cfg))
    if as_json:
        out.print_json(json.dumps(rows))
        return
    if not rows:
        out.print("The ledger holds nothing yet: run `embedpipe backfill SOURCE` first.")
    for row in rows:
        out.print(f"[bold]{row['target']}[/] model={row['model'] or 'default'} dim={row['dim']} "
                  f"fingerprint={row['fingerprint'][:12]} chunks={row['chunks']} documents={row['documents']}")  # fmt: skip
        for g in row.get("generations", []):
            if g["state"] != "live":
                out.print(f"  {g['state']} generation {g['fingerprint'][:12]}: model={g['model'] or 'default'} "
                          f"chunks={g['chunks']} documents={g['documents']} created {_when(g['created'])}")  # fmt: skip
        for r in row["runs"]:
            committed = f", last commit {_when(r['committed'])}" if r.get("committed") else ""
            out.print(f"  run {r['id']} ({_when(r['started'])}): {r['outcome']}{committed} "
                      f"embedded={r['chunks_embedded']} skipped={r['chunks_skipped']} "
                      f"deleted={r['chunks_deleted']} failed={r['docs_failed']}")  # fmt: skip


@app.command("report")
def report_html(
    run_json: Annotated[Path, typer.Argument(help="a JSON run report (--report FILE)")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="HTML file; default RUN.html")
    ] = None,
) -> None:
    """Render a run report as a self-contained HTML page: figures, token-length histogram,
    throughput and padding efficiency over time."""
    from embedpipe.htmlreport import render_file

    if not run_json.is_file():
        _usage(f"No run report at {run_json}: pass the file a run wrote with --report")
    try:
        written = render_file(run_json, output)
    except (ValueError, OSError) as exc:  # json.JSONDecodeError is a ValueError
        _usage(f"Cannot render {run_json}: {exc}")
        return
    out.print(str(written))


@app.command()
def init(
    source: Annotated[str | None, typer.Option(help=_help("source.uri"))] = None,
    sink: SinkOpt = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="write here instead of stdout")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", metavar=FLAG, help="overwrite an existing file")
    ] = False,
) -> None:
    """Write a commented config for a source and a sink, ready for `embedpipe run`."""
    from embedpipe.init import render_config

    text = _guard(lambda: render_config(source=source, sink=sink))
    if output is None:
        sys.stdout.write(text)
        return
    if output.exists() and not force:
        _usage(f"{output} exists: pass --force to overwrite it, or another -o path")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    console.print(f"wrote {output}: check it, then `embedpipe run {output}`")


@app.command()
def reconcile(
    sink: SinkOpt = None,
    collection: CollectionOpt = None,
    config: ConfigOpt = None,
    state: StateOpt = None,
    repair: Annotated[
        bool,
        typer.Option("--repair", metavar=FLAG, help="re-embed what is missing, delete orphans"),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", metavar=FLAG, help="print as JSON")] = False,
) -> None:
    """Compare ledger and sink ids; report drift both ways; --repair makes them agree."""
    cfg = _config(config, flat_overrides(sink=sink, collection=collection, state=state))
    from embedpipe.reconcile import drifted

    result = _guard(lambda: api.reconcile(cfg, repair=repair))
    if as_json:
        out.print_json(json.dumps(result, ensure_ascii=False))
    else:
        _print_reconcile(result)
    if drifted(result) and not result["repaired"]:
        raise typer.Exit(1)


def _print_reconcile(result: dict[str, Any]) -> None:
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


# -- plumbing ------------------------------------------------------------------------------------


def _config(path: Path | None, overrides: dict[str, Any]) -> RunConfig:
    try:
        return load_config(path, overrides)
    except ConfigError as exc:
        _usage(str(exc))
        raise  # unreachable


def _usage(message: str) -> None:
    _error(message)
    raise typer.Exit(2)


def _guard(fn: Any) -> Any:
    try:
        return fn()
    except ConfigError as exc:
        _usage(str(exc))
    except EmbedpipeError as exc:
        if DEBUG:
            console.print_exception()
        _error(str(exc))
        raise typer.Exit(1) from None


def _error(message: str) -> None:
    if logs.json_enabled():
        logs.event(log, "error", message, level=logging.ERROR)
    else:
        # One line however wide the terminal (grep-able in cron logs); the message is not markup.
        console.print(f"[red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)


def _execute(cfg: RunConfig, *, dry_run: bool, force: bool, log_format: str = "text") -> None:
    if log_format not in ("text", "json"):
        _usage(f"Unknown --log-format {log_format!r}: use text or json")
    logs.configure("json" if log_format == "json" else "text")
    stop = threading.Event()
    _stop_on_signals(stop)
    started = time.monotonic()
    with _progress_bar() as (bar, task):

        def update(r: RunReport) -> None:
            rate = r.tokens_embedded / max(time.monotonic() - started, 1e-9)
            info = f"{r.chunks_embedded:,} chunks · {rate:,.0f} tok/s"
            bar.update(task, completed=r.docs_read + r.docs_failed, total=r.docs_total, info=info)

        report = _guard(
            lambda: api.run(
                cfg,
                progress=update,
                dry_run=dry_run,
                force=force,
                stop=stop,
                raise_on_failure=False,
            )
        )
    began = report.run_id is not None  # else it failed before the run began: a lock, the ledger
    if began and not logs.json_enabled():  # JSON mode: the run_end event carries the summary
        _summary(report)
    if report.outcome not in ("done", "dry-run"):
        _error(report.reason or f"the run ended {report.outcome}")
        raise typer.Exit(1)
    if report.errors and (cfg.strict or report.docs_read == 0):
        _error(f"{len(report.errors)} record(s) failed and --strict or nothing was read: exit 1")
        raise typer.Exit(1)


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        console.print(
            f"[yellow]{signal.Signals(signum).name}: finishing the batch in flight, then stopping[/]"
        )
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


@contextlib.contextmanager
def _progress_bar() -> Iterator[tuple[Progress, Any]]:
    bar = Progress(
        TextColumn("[bold]embedding"), BarColumn(), MofNCompleteColumn(), TextColumn("docs"),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, transient=True, disable=not console.is_terminal or logs.json_enabled(),
    )  # fmt: skip
    with bar:
        yield bar, bar.add_task("embed", total=None, info="loading model")


def _summary(r: RunReport) -> None:
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
    for e in r.errors[:20]:
        console.print(f"[yellow]skipped[/] {e.source} :: {e.record}: {e.reason}")
    if len(r.errors) > 20:
        console.print(f"... and {len(r.errors) - 20} more (see --report)")
    for note in r.notes:
        if not (r.reason and note.endswith(r.reason)):  # the reason is printed as the error
            console.print(f"[red]{note}[/]")


def _when(ts: float | None) -> str:
    """A Unix time as local 'YYYY-MM-DD HH:MM:SS'."""
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _snippet(text: str, width: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def main() -> None:
    """Console-script entry point."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]")
        sys.exit(130)
    except Exception as exc:  # a bug or an error not yet given words: one line, unless --debug
        if DEBUG:
            raise
        _error(f"{type(exc).__name__}: {exc} (re-run with --debug for the traceback)")
        sys.exit(1)


if __name__ == "__main__":
    main()
