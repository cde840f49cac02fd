"""The quality gate of a promotion: the live and the staged generation are scored on the same
queries, each through its own model, and the staged one goes live only if no metric drops more
than `promote.eval.max_drop` below live's (promotion/quality.py defines the metrics)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from embedpipe.config import ModelConfig, RunConfig
from embedpipe.encoding.encoder import Encoder
from embedpipe.encoding.lazy import AnyEncoder
from embedpipe.errors import ConfigError
from embedpipe.promotion import Verdict
from embedpipe.promotion.quality import (
    Scores,
    answerable,
    drops,
    evaluate,
    known_documents,
    load_queries,
)
from embedpipe.sinks.base import Sink
from embedpipe.sinks.sparse import settings_of
from embedpipe.state.ledger import Ledger, Target
from embedpipe.types import RunReport

LoadEncoder = Callable[[ModelConfig], Encoder]


def query_model(
    run_model: ModelConfig, generation: dict[str, Any], built: Mapping[str, Any] | None = None
) -> ModelConfig:
    """The settings that encode queries for a generation: its model and width, in fp32, with
    the model settings and query prompt it was built with (`built`: its manifest) when known,
    never another generation's."""
    stored = dict(((built or {}).get("settings") or {}).get("model") or {})
    prompts = (built or {}).get("prompts") or {}
    keep = {k: stored[k] for k in ("normalize", "max_seq_length") if stored.get(k) is not None}
    return ModelConfig(
        name=generation["model"],
        precision="fp32",
        device=run_model.device,
        truncate_dim=generation["dim"],
        query_prefix=str(prompts.get("query") or ""),
        **keep,
    )


def built_manifest(sink: Sink, fingerprint: str) -> dict[str, Any]:
    """What the generation built under `fingerprint` records of its making (its manifest)."""
    view = sink.pinned(fingerprint)
    try:
        return view.manifest()
    finally:
        view.abort()


def score_generation(
    sink: Sink,
    fingerprint: str,
    encoder: AnyEncoder,
    k: int,
    queries: Any,
    *,
    query_prefix: str | None = None,
    mode: str = "dense",
) -> Scores:
    """One generation's scores, read through a pinned view of the sink, each query encoded
    with `query_prefix`, else the query prompt the generation was built with; in `mode`
    (dense, sparse, hybrid; auto: hybrid when the generation keeps sparse vectors, else dense)."""
    view = sink.pinned(fingerprint)
    try:
        manifest = view.manifest()
        stored = manifest.get("prompts") or {}
        prefix = str(stored.get("query") or "") if query_prefix is None else query_prefix
        sparse = settings_of(manifest.get("settings") or {})
        if mode == "auto":
            mode = "dense" if sparse is None else "hybrid"
        return evaluate(
            view,
            lambda texts: encoder.encode_texts(texts, prefix=prefix),
            queries,
            k,
            mode=mode,
            sparse=sparse,
        )
    finally:
        view.abort()


def judge(
    v: Verdict,
    *,
    sink: Sink,
    ledger: Ledger,
    target: Target,
    encoder: AnyEncoder,
    cfg: RunConfig,
    load: LoadEncoder,
    report: RunReport,
) -> Verdict:
    """The verdict once both generations were scored: held when the staged one retrieves worse."""
    gate = cfg.promote.eval
    live = ledger.live(target.key)
    if gate is None or live is None or not v.promote:
        return v
    queries, errors = load_queries(gate.queries)
    try:  # queries naming no document score 0 for both: they judge nothing
        queries, unknown = answerable(queries, str(gate.queries), known_documents(ledger, target))
    except ConfigError as exc:
        return replace(v, promote=False, reason=f"the quality gate cannot judge: {exc}")
    for e in errors + unknown:
        report.notes.append(f"eval: skipped {e.source} :: {e.record}: {e.reason}")
    # Each generation is queried with the model and prompts it was built with, never the
    # challenger's: live's own query prompt could score it worse than it serves.
    built = built_manifest(sink, live["fingerprint"])
    live_model = load(query_model(cfg.model, live, built))
    live_scores = score_generation(
        sink, live["fingerprint"], live_model, gate.k, queries, mode=gate.mode
    )
    staged = score_generation(sink, target.fingerprint, encoder, gate.k, queries, mode=gate.mode)
    worse = drops(live_scores, staged, gate.max_drop)
    reason = (
        "; ".join(worse) if worse else f"retrieves no worse than live on {len(queries)} queries"
    )
    return replace(
        v,
        promote=not worse,
        reason=f"{v.reason}; {reason}" if not worse else reason,
        live_metrics=live_scores.metrics(),
        staged_metrics=staged.metrics(),
    )
