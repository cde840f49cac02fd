"""The commands that score and switch generations: `eval`, `promote`, `rollback` (cli/commands.py
registers them). A generation is named live, staged, previous, or by a fingerprint prefix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from embedpipe import api
from embedpipe.cli import running
from embedpipe.cli.options import FLAG, CollectionOpt, ConfigOpt, SinkOpt, StateOpt
from embedpipe.config import flat_overrides

GenerationOpt = Annotated[
    str | None,
    typer.Option(help="live | staged | previous | a fingerprint (prefix) from `embedpipe status`"),
]
ToOpt = Annotated[
    str | None,
    typer.Option(
        "--to",
        metavar="FINGERPRINT",
        help="the generation to make live, by fingerprint (prefix) from `embedpipe status`; "
        "already live: nothing to do, so a re-run of a killed switch finishes it",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", metavar=FLAG, help="print as JSON")]


def eval_command(
    queries: Annotated[
        Path,
        typer.Option(help='JSONL: {"query": "...", "relevant": ["doc_id", ...]} per line'),
    ],
    sink: SinkOpt = None,
    collection: CollectionOpt = None,
    config: ConfigOpt = None,
    state: StateOpt = None,
    k: Annotated[int, typer.Option("-k", min=1, help="hits per query scored")] = 10,
    generation: GenerationOpt = None,
    as_json: JsonOpt = False,
    retrieval_mode: Annotated[
        list[str] | None,
        typer.Option(
            "--mode",
            help="dense | sparse | hybrid | auto (hybrid where the generation keeps sparse "
            "vectors); repeat to compare modes side by side [default: dense]",
        ),
    ] = None,
) -> None:
    """Score a generation on a query set: recall@k, MRR@k, nDCG@k (per-query ranks with --json)."""
    cfg = running.load(config, flat_overrides(sink=sink, collection=collection, state=state))
    modes = retrieval_mode or ["dense"]
    result = running.guard(
        lambda: api.evaluate(cfg, queries=queries, k=k, generation=generation or "live", mode=modes)
    )
    if as_json:
        running.out.print_json(json.dumps(result, ensure_ascii=False))
        return
    for e in result["errors"]:
        running.warn(f"skipped {e['source']} :: {e['record']}: {e['reason']}")
    gen = result["generation"]
    if len(result["modes"]) == 1:
        running.out.print(
            f"{gen['state']} generation {gen['fingerprint'][:12]} (model "
            f"{gen['model'] or 'default'}), {result['queries']} queries: recall@{k} "
            f"{result['recall']:.3f}  MRR@{k} {result['mrr']:.3f}  nDCG@{k} {result['ndcg']:.3f}"
        )
        return
    running.out.print(
        f"{gen['state']} generation {gen['fingerprint'][:12]} (model {gen['model'] or 'default'}), "
        f"{result['queries']} queries, side by side:"
    )
    for mode, m in result["modes"].items():
        running.out.print(
            f"  {mode:<7} recall@{k} {m['recall']:.3f}  MRR@{k} {m['mrr']:.3f}  "
            f"nDCG@{k} {m['ndcg']:.3f}"
        )


def promote_command(
    sink: SinkOpt = None,
    collection: CollectionOpt = None,
    config: ConfigOpt = None,
    state: StateOpt = None,
    generation: GenerationOpt = None,
    to: ToOpt = None,
) -> None:
    """Make a staged (or kept previous) generation live, regardless of the promotion gate."""
    cfg = running.load(config, flat_overrides(sink=sink, collection=collection, state=state))
    _print(running.guard(lambda: api.promote(cfg, generation=generation or "staged", to=to)))


def rollback_command(
    sink: SinkOpt = None,
    collection: CollectionOpt = None,
    config: ConfigOpt = None,
    state: StateOpt = None,
    to: ToOpt = None,
) -> None:
    """Make the previous generation (or --to's) live again; the current one becomes previous,
    and no run promotes it again on its own (`promote` or `--force` does)."""
    cfg = running.load(config, flat_overrides(sink=sink, collection=collection, state=state))
    _print(running.guard(lambda: api.rollback(cfg, to=to)))


def _print(result: dict[str, Any]) -> None:
    replaced = result["replaced"]
    if result.get("already_live") and not replaced:
        running.out.print(
            f"{result['target']}: generation {result['live'][:12]} is already live; nothing changed"
        )
        return
    running.out.print(
        f"{result['target']}: generation {result['live'][:12]} (model "
        f"{result['model'] or 'default'}) is live"
        + (f"; {replaced[:12]} is kept as previous" if replaced else "")
    )
