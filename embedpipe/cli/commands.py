"""The `embedpipe` command: parses flags into a config and calls the library. No logic of its own.

Exit codes: 0 done (bad records skipped and reported), 1 the run failed, 2 usage error.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from embedpipe import api
from embedpipe.cli import export, generations, render, running
from embedpipe.cli.options import (
    FLAG,
    AlphaOpt,
    CollectionOpt,
    ConfigOpt,
    DryRunOpt,
    EngineOpt,
    EvalQueriesOpt,
    ForceOpt,
    LogFormatOpt,
    MetricsOpt,
    ModelOpt,
    ProgressEveryOpt,
    QuietOpt,
    RayAddressOpt,
    RebuildableSinkOpt,
    ReportOpt,
    RetrievalModeOpt,
    SinkOpt,
    StateOpt,
    StrictOpt,
    flag_help,
)
from embedpipe.cli.running import HelpGroup, console, out
from embedpipe.cli.running import error as _error
from embedpipe.cli.running import execute as _execute
from embedpipe.cli.running import guard as _guard
from embedpipe.cli.running import load as _config
from embedpipe.cli.running import usage as _usage
from embedpipe.config import flat_overrides
from embedpipe.sinks import rebuild_sink
from embedpipe.sinks.registry import LIBRARIES

app = typer.Typer(
    cls=HelpGroup,
    add_completion=False,
    no_args_is_help=True,
    help="Batch embeddings into Qdrant, FAISS or Parquet.",
)


def _version(asked: bool) -> None:
    if asked:
        from embedpipe.cli.version import versions

        out.print(versions(), highlight=False)
        raise typer.Exit()


@app.callback()
def _options(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug", metavar=FLAG, help="print tracebacks (errors are otherwise one line)"
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            metavar=FLAG,
            is_eager=True,
            callback=_version,
            help="print the versions of embedpipe, torch, sentence-transformers and the sink "
            f"libraries ({', '.join(name for name, _ in LIBRARIES)}), and the device, then exit",
        ),
    ] = False,
) -> None:
    """Batch embeddings into Qdrant, FAISS or Parquet."""
    running.DEBUG = debug


@app.command()
def backfill(
    source: Annotated[str, typer.Argument(help=flag_help("source.uri"))],
    sink: SinkOpt = None,
    collection: CollectionOpt = None,
    model: ModelOpt = None,
    config: ConfigOpt = None,
    report: ReportOpt = None,
    max_batch_tokens: Annotated[
        int | None, typer.Option(help=flag_help("batching.max_batch_tokens"))
    ] = None,
    precision: Annotated[str | None, typer.Option(help=flag_help("model.precision"))] = None,
    backend: Annotated[str | None, typer.Option(help=flag_help("model.backend"))] = None,
    device: Annotated[str | None, typer.Option(help=flag_help("model.device"))] = None,
    truncate_dim: Annotated[int | None, typer.Option(help=flag_help("model.truncate_dim"))] = None,
    quantization: Annotated[str | None, typer.Option(help=flag_help("model.quantization"))] = None,
    prefix: Annotated[str | None, typer.Option(help=flag_help("model.prefix"))] = None,
    query_prefix: Annotated[str | None, typer.Option(help=flag_help("model.query_prefix"))] = None,
    chunk_tokens: Annotated[
        int | None, typer.Option(help=flag_help("chunking.chunk_tokens"))
    ] = None,
    overlap_tokens: Annotated[
        int | None, typer.Option(help=flag_help("chunking.overlap_tokens"))
    ] = None,
    text_field: Annotated[str | None, typer.Option(help=flag_help("source.text_field"))] = None,
    id_field: Annotated[str | None, typer.Option(help=flag_help("source.id_field"))] = None,
    index_factory: Annotated[str | None, typer.Option(help=flag_help("sink.index_factory"))] = None,
    sparse: Annotated[str | None, typer.Option(help=flag_help("sink.sparse.kind"))] = None,
    mode: Annotated[str | None, typer.Option(help=flag_help("mode"))] = None,
    state: StateOpt = None,
    strict: StrictOpt = None,
    engine: EngineOpt = None,
    ray_address: RayAddressOpt = None,
    text_template: Annotated[
        str | None, typer.Option(help=flag_help("source.text_template"))
    ] = None,
    include: Annotated[
        list[str] | None, typer.Option(help=flag_help("source.include", "repeatable"))
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option(help=flag_help("source.exclude", "repeatable"))
    ] = None,
    metrics: MetricsOpt = None,
    log_format: LogFormatOpt = "text",
    dry_run: DryRunOpt = False,
    force: ForceOpt = False,
    eval_queries: EvalQueriesOpt = None,
    quiet: QuietOpt = False,
    progress_every: ProgressEveryOpt = 10.0,
) -> None:
    """Embed SOURCE into a sink, skipping what is already there, with a progress bar and a summary."""
    overrides = flat_overrides(
        source=source,
        sink=sink,
        collection=collection,
        model=model,
        report=str(report) if report else None,
        max_batch_tokens=max_batch_tokens,
        precision=precision,
        backend=backend,
        device=device,
        chunk_tokens=chunk_tokens,
        truncate_dim=truncate_dim,
        quantization=quantization,
        prefix=prefix,
        query_prefix=query_prefix,
        overlap_tokens=overlap_tokens,
        text_field=text_field,
        id_field=id_field,
        index_factory=index_factory,
        text_template=text_template,
        include=include or None,
        exclude=exclude or None,
        metrics=str(metrics) if metrics else None,
        mode=mode,
        state=state,
        strict=strict,
        engine=engine,
        ray_address=ray_address,
        eval_queries=str(eval_queries) if eval_queries else None,
        sparse=sparse,
    )
    _execute(
        _config(config, overrides),
        dry_run=dry_run,
        force=force,
        log_format=log_format,
        quiet=quiet,
        every=progress_every,
    )


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
    eval_queries: EvalQueriesOpt = None,
    quiet: QuietOpt = False,
    progress_every: ProgressEveryOpt = 10.0,
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
            eval_queries=str(eval_queries) if eval_queries else None,
        ),
    )
    if metrics:
        cfg.metrics = str(metrics)
    if not cfg.source.uri:
        _usage(f"{config} has no source.uri: name the corpus to embed")
    _execute(
        cfg, dry_run=dry_run, force=force, log_format=log_format, quiet=quiet, every=progress_every
    )


@app.command()
def query(
    text: Annotated[str, typer.Argument(help="the question or text to search for")],
    sink: SinkOpt = None,
    collection: CollectionOpt = None,
    model: ModelOpt = None,
    config: ConfigOpt = None,
    state: StateOpt = None,
    k: Annotated[int, typer.Option("-k", "--top-k", min=1, help="number of hits")] = 5,
    as_json: Annotated[
        bool, typer.Option("--json", metavar=FLAG, help="print hits as JSON")
    ] = False,
    nprobe: Annotated[int | None, typer.Option(help=flag_help("sink.nprobe"))] = None,
    ef: Annotated[int | None, typer.Option(help=flag_help("sink.ef_search"))] = None,
    where: Annotated[
        list[str] | None,
        typer.Option(
            metavar="COND",
            help="only chunks that pass COND, on a payload KEY (doc_id, chunk_index, start, "
            "end, metadata.NAME): KEY=V1,V2 (any of), KEY!=V1,V2 (none of), KEY>V, KEY>=V, "
            "KEY<V, KEY<=V (a number or an ISO date), A|B (either), !COND (not), or a JSON "
            "filter ('{\"$or\": [...]}'); repeat for AND",
        ),
    ] = None,
    query_prefix: Annotated[
        str | None,
        typer.Option(
            help=flag_help("model.query_prefix", "default: the index's stored query prompt")
        ),
    ] = None,
    retrieval_mode: RetrievalModeOpt = "dense",
    alpha: AlphaOpt = None,
) -> None:
    """Search a sink with the model it was built with; prints score, doc id and a snippet."""
    cfg = _config(
        config,
        flat_overrides(
            sink=sink, collection=collection, model=model, state=state, nprobe=nprobe, ef=ef
        ),
    )
    hits = _guard(
        lambda: api.query(
            text,
            k=k,
            filter=api.parse_where(where or []),
            query_prefix=query_prefix,
            config=cfg,
            mode=retrieval_mode,
            alpha=alpha,
        )
    )
    if as_json:
        out.print_json(json.dumps([dataclasses.asdict(h) for h in hits], ensure_ascii=False))
        return
    out.print(render.hits_table(text, hits))


@app.command()
def rebuild(
    sink: RebuildableSinkOpt = None,
    collection: CollectionOpt = None,
    config: ConfigOpt = None,
    index_factory: Annotated[
        str | None, typer.Option(help=flag_help("sink.index_factory", "re-trained as this"))
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
    render.print_status(out, rows)


@app.command("report")
def report_html(
    run_json: Annotated[Path, typer.Argument(help="a JSON run report (--report FILE)")],
    output: Annotated[
        str | None,
        typer.Option(
            "-o",
            "--output",
            metavar="FILE|-",
            help="where the HTML goes; - is stdout [default: stdout when it is not a terminal, "
            "else RUN.html next to RUN.json]",
        ),
    ] = None,
) -> None:
    """Render a run report as one self-contained HTML page: figures, charts, where time went."""
    from embedpipe.report.html import render_file

    if not run_json.is_file():
        _usage(f"No run report at {run_json}: pass the file a run wrote with --report")
    if output is None and not sys.stdout.isatty():
        output = "-"
    try:
        written = render_file(run_json, None if output == "-" else output, stdout=output == "-")
    except (ValueError, OSError) as exc:  # json.JSONDecodeError is a ValueError
        _usage(f"Cannot render {run_json}: {exc}")
    if written is not None:
        console.print(f"wrote {written}", highlight=False, soft_wrap=True)


@app.command()
def init(
    source: Annotated[str | None, typer.Option(help=flag_help("source.uri"))] = None,
    sink: SinkOpt = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="write here instead of stdout")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", metavar=FLAG, help="overwrite an existing file")
    ] = False,
) -> None:
    """Write a commented config for a source and a sink, ready for `embedpipe run`."""
    from embedpipe.config.template import render_config

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
    from embedpipe.runs.reconcile import drifted

    result = _guard(lambda: api.reconcile(cfg, repair=repair))
    if as_json:
        out.print_json(json.dumps(result, ensure_ascii=False))
    else:
        render.print_reconcile(out, result)
    if drifted(result) and not result["repaired"]:
        raise typer.Exit(1)


# Scoring and switching generations (cli/generations.py): champion / challenger.
app.command("eval")(generations.eval_command)
app.command("promote")(generations.promote_command)
app.command("rollback")(generations.rollback_command)
app.command("export")(export.export_command)  # copy to another sink (cli/export.py)


def main() -> None:
    """Console-script entry point."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except KeyboardInterrupt:
        _error("interrupted")
        sys.exit(130)
    except Exception as exc:  # a bug or an error not yet given words: one line, unless --debug
        if running.DEBUG:
            raise
        _error(f"{type(exc).__name__}: {exc} (re-run with --debug for the traceback)")
        sys.exit(1)


if __name__ == "__main__":
    main()
