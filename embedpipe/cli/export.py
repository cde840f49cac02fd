"""The `export` command (cli/commands.py registers it): copy a collection to another sink without
re-encoding, with progress on stderr and one line saying what was copied."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from embedpipe import api
from embedpipe.cli import running
from embedpipe.cli.options import CollectionOpt, ConfigOpt, ForceOpt, QuietOpt, SinkOpt, StateOpt
from embedpipe.cli.progress import RunProgress
from embedpipe.config import flat_overrides
from embedpipe.sinks.registry import ACCEPTED

Layout = Literal["embedpipe", "langchain", "llama-index"]  # sinks/layouts.py


def export_command(
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help=f"the sink to copy into: {ACCEPTED}",
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
    layout: Annotated[
        Layout | None,
        typer.Option(
            help="a Qdrant destination's payload layout: embedpipe (default), or langchain / "
            "llama-index to add the keys that framework's stock QdrantVectorStore reads"
        ),
    ] = None,
    config: ConfigOpt = None,
    state: StateOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Copy a collection's vectors and payloads to another sink without re-encoding (same point
    ids), with the destination's ledger written so incremental runs go on against it. An
    interrupted export resumes; a repeated one copies only what changed."""
    cfg = running.load(config, flat_overrides(sink=sink, collection=collection, state=state))
    with RunProgress(running.console, running.progress_mode(quiet=quiet)) as shown:
        report = running.guard(
            lambda: api.export(
                cfg,
                to=to,
                to_collection=to_collection,
                to_state=to_state,
                layout=layout,
                progress=shown.update,
                force=force,
            )
        )
    running.console.print(report.notes[-1], highlight=False, soft_wrap=True)
