"""The quality gate of a promotion: the live and the staged generation are scored on the same
queries, each through its own model, and the staged one goes live only if no metric drops more
than `promote.eval.max_drop` below live's (evaluation.py defines the metrics)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from embedpipe.config import ModelConfig, RunConfig
from embedpipe.encoder import Encoder
from embedpipe.errors import ConfigError
from embedpipe.evaluation import Scores, answerable, drops, evaluate, known_documents, load_queries
from embedpipe.lazymodel import AnyEncoder
from embedpipe.ledger import Ledger, Target
from embedpipe.promotion import Verdict
from embedpipe.sinks.base import Sink
from embedpipe.types import RunReport

LoadEncoder = Callable[[ModelConfig], Encoder]


def query_model(run_model: ModelConfig, generation: dict[str, Any]) -> ModelConfig:
    """The settings that encode queries for a generation: its model and width, in fp32."""
    return ModelConfig(
        name=generation["model"], precision="fp32", device=run_model.device,
        truncate_dim=generation["dim"], query_prefix=run_model.query_prefix,
    )  # fmt: skip


def score_generation(
    sink: Sink, fingerprint: str, encoder: AnyEncoder, cfg: RunConfig, k: int, queries: Any
) -> Scores:
    """One generation's scores, read through a pinned view of the sink."""
    view = sink.pinned(fingerprint)
    try:  # the configured query prompt, else the one the generation was built with
        stored = view.manifest().get("prompts") or {}
        prefix = cfg.model.query_prefix or str(stored.get("query") or "")
        return evaluate(view, lambda texts: encoder.encode_texts(texts, prefix=prefix), queries, k)
    finally:
        view.abort()


def judge(
    v: Verdict, *, sink: Sink, ledger: Ledger, target: Target, encoder: AnyEncoder, cfg: RunConfig,
    load: LoadEncoder, report: RunReport,
) -> Verdict:  # fmt: skip
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
    live_model = load(query_model(cfg.model, live))
    live_scores = score_generation(sink, live["fingerprint"], live_model, cfg, gate.k, queries)
    staged = score_generation(sink, target.fingerprint, encoder, cfg, gate.k, queries)
    worse = drops(live_scores, staged, gate.max_drop)
    reason = (
        "; ".join(worse) if worse else f"retrieves no worse than live on {len(queries)} queries"
    )
    return replace(
        v, promote=not worse, reason=f"{v.reason}; {reason}" if not worse else reason,
        live_metrics=live_scores.metrics(), staged_metrics=staged.metrics(),
    )  # fmt: skip
