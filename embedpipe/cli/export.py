"""The `export` command (cli/commands.py registers it): copy a collection to another sink without
re-encoding, with progress on stderr and one line saying what was copied."""

from __future__ import annotations

from typing import Annotated

import typer

from embedpipe import api
from embedpipe.cli import running as clirun
from embedpipe.cli.options import CollectionOpt, ConfigOpt, ForceOpt, QuietOpt, SinkOpt, StateOpt
from embedpipe.cli.progress import RunProgress
from embedpipe.config import flat_overrides


def export_command(
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="the sink to copy into: qdrant:PATH, qdrant+http(s)://HOST:PORT, "
            "qdrant-edge:PATH, faiss:DIR or parquet:DIR",
        ),
    ],
    sink: SinkOpt = None,
    collection: CollectionOpt = None,
    to_collection: Annotated[
        str | None, typer.Option(help="the collection to copy into; default: the same name")
    ] = None,
    to_state: Annotated[
        str | None,
        typer.Option(help="the destination's state directory; default: next to a local sink"),
    ] = None,
    config: ConfigOpt = None,
    state: StateOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Copy a collection's vectors and payloads to another sink without re-encoding (same point
    ids), with the destination's ledger written so incremental runs go on against it. An
    interrupted export resumes; a repeated one copies only what changed."""
    cfg = clirun.load(config, flat_overrides(sink=sink, collection=collection, state=state))
    with RunProgress(clirun.console, clirun.progress_mode(quiet=quiet)) as shown:
        report = clirun.guard(
            lambda: api.export(
                cfg,
                to=to,
                to_collection=to_collection,
                to_state=to_state,
                progress=shown.update,
                force=force,
            )
        )
    clirun.console.print(report.notes[-1], highlight=False, soft_wrap=True)
