"""The options several `embedpipe` commands share, their help taken from the description of the
config key each sets (one source of documentation: embedpipe/config/sections.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from embedpipe.config.docs import default_text, help_for, sink_forms


def flag_help(key: str, more: str = "") -> str:
    """An option's help: the description of the config key it sets (configs/default.yaml),
    then the key's default (the option's own default is None: 'not given, use the config')."""
    default = default_text(key)
    shown = f" [default: {default}]" if default is not None else ""
    return escape(help_for(key, more) + shown)  # escaped: typer renders help as rich markup


FLAG = ""  # metavar of a boolean flag: it takes no value, so show none
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config (see configs/default.yaml)")
]
SinkOpt = Annotated[str | None, typer.Option(help=flag_help("sink.uri"))]
RebuildableSinkOpt = Annotated[
    str | None,
    typer.Option(
        help=escape(
            f"{sink_forms(rebuildable=True)}: the sinks that keep their vectors to re-train from"
        )
    ),
]
CollectionOpt = Annotated[str | None, typer.Option(help=flag_help("sink.collection"))]
ModelOpt = Annotated[str | None, typer.Option(help=flag_help("model.name"))]
StateOpt = Annotated[str | None, typer.Option(help=flag_help("state"))]
ReportOpt = Annotated[Path | None, typer.Option(help=flag_help("report"))]
MetricsOpt = Annotated[Path | None, typer.Option(help=flag_help("metrics"))]
LogFormatOpt = Annotated[
    str,
    typer.Option(
        envvar="EMBEDPIPE_LOG_FORMAT", help="text | json (one JSON object per event on stderr)"
    ),
]
EngineOpt = Annotated[str | None, typer.Option(help=flag_help("engine"))]
QuietOpt = Annotated[
    bool,
    typer.Option("--quiet", "-q", metavar=FLAG, help="no progress and no summary; errors only"),
]
ProgressEveryOpt = Annotated[
    float,
    typer.Option(
        envvar="EMBEDPIPE_PROGRESS_EVERY",
        metavar="SECONDS",
        min=0.1,
        help="when stderr is not a terminal (cron), a plain progress line at most this often",
    ),
]
RayAddressOpt = Annotated[str | None, typer.Option(help=flag_help("ray.address"))]
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
    bool | None, typer.Option("--strict/--no-strict", metavar=FLAG, help=flag_help("strict"))
]
EvalQueriesOpt = Annotated[
    Path | None,
    typer.Option(help=flag_help("promote.eval.queries", "gate the promotion of a new generation")),
]
RetrievalModeOpt = Annotated[
    str,
    typer.Option(
        "--mode",
        help="dense (the model's vectors) | sparse (BM25) | hybrid (both, fused by reciprocal "
        "rank); sparse and hybrid need an index built with --sparse bm25",
    ),
]
AlphaOpt = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        max=1.0,
        help="hybrid weighting: 1 = dense only, 0 = sparse only; default: equal weights",
    ),
]
