"""Retrieval quality of one generation on a query set, and the quality gate of a promotion.

A queries file is JSON Lines: `{"query": "...", "relevant": ["doc_id", ...]}` per line
(`"doc_id": "..."` for one relevant document). Each query is encoded with the generation's own
model and searched for its top k chunks; the documents of those chunks, in the order first met,
are the ranking (a document counts as found when any of its chunks is in the top k). Scores are
means over the queries, with binary relevance:

- recall@k: the share of a query's relevant documents in the ranking;
- MRR@k: 1 / the rank of the first relevant document (0 when none is found);
- nDCG@k: sum over found relevant documents of 1/log2(rank + 1), divided by the same sum for an
  ideal ranking (min(|relevant|, k) relevant documents first).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedpipe.config import SparseConfig
from embedpipe.errors import ConfigError
from embedpipe.sinks.base import Hit, Retriever, Sink
from embedpipe.sinks.sparse import Bm25Encoder, Retrieval, check_mode
from embedpipe.state.ledger import LEDGER_FILE, Ledger, Target
from embedpipe.types import RecordError

METRICS = ("recall", "mrr", "ndcg")
Encode = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True, slots=True)
class Query:
    """One evaluation query and the documents that answer it."""

    text: str
    relevant: frozenset[str]


@dataclass
class Scores:
    """A generation's metrics at k, and each query's ranking of its relevant documents."""

    k: int
    recall: float = 0.0
    mrr: float = 0.0
    ndcg: float = 0.0
    per_query: list[dict[str, Any]] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        return {name: round(getattr(self, name), 6) for name in METRICS}

    def to_dict(self, *, per_query: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"k": self.k, "queries": len(self.per_query), **self.metrics()}
        if per_query:
            out["per_query"] = self.per_query
        return out


def load_queries(path: str | Path) -> tuple[list[Query], list[RecordError]]:
    """The queries of a JSON Lines file; a bad line is a RecordError naming it, not a failure."""
    source = str(path)
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"Cannot read the queries file {source}: {exc.strerror or exc}") from exc
    queries: list[Query] = []
    errors: list[RecordError] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parsed = _query(line)
        if isinstance(parsed, str):
            errors.append(RecordError(source, f"line {number}", parsed))
        else:
            queries.append(parsed)
    if not queries:
        raise ConfigError(
            f"The queries file {source} has no valid query: see `embedpipe eval --help`"
        )
    return queries, errors


def answerable(
    queries: Sequence[Query], source: str, known: Callable[[str], bool]
) -> tuple[list[Query], list[RecordError]]:
    """The queries with a relevant id that is a document of the index, and a RecordError for
    each other one (it would score 0 for every generation, so a gate on it judges nothing); a
    ConfigError when none is left."""
    kept: list[Query] = []
    errors: list[RecordError] = []
    unknown: list[str] = []
    for query in queries:
        if any(known(doc_id) for doc_id in query.relevant):
            kept.append(query)
            continue
        unknown.append(", ".join(sorted(query.relevant)))
        reason = f"no relevant id is a document of the index ({unknown[-1]})"
        errors.append(RecordError(source, f"query {query.text!r}", reason))
    if not kept:
        raise ConfigError(
            f"No query in {source} names a document of the index as relevant (e.g. "
            f"{unknown[0]}): use the document ids `embedpipe query` shows"
        )
    return kept, errors


def known_documents(ledger: Ledger, target: Target) -> Callable[[str], bool]:
    """Whether a document id has chunks in a generation, by the ledger."""
    return lambda doc_id: bool(ledger.doc_chunks(target, doc_id))


def check_gate_queries(path: str | Path, state_dir: str | Path, key: str) -> None:
    """Before a run loads its model: the gate's queries file is readable, holds valid queries,
    and (when there is a live generation) names some of its documents; else a ConfigError."""
    queries, _ = load_queries(path)
    ledger_file = Path(state_dir) / LEDGER_FILE
    if not ledger_file.is_file():
        return
    ledger = Ledger(ledger_file)
    try:
        live = ledger.live(key)
        if live is not None:
            answerable(
                queries, str(path), known_documents(ledger, Target(key, live["fingerprint"]))
            )
    finally:
        ledger.close()


def _query(line: str) -> Query | str:
    """A Query from one line, or what is wrong with it."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        return f"not valid JSON: {exc.msg}"
    if not isinstance(row, dict) or not isinstance(row.get("query"), str) or not row["query"]:
        return 'expected an object with a non-empty "query" string'
    relevant = row.get("relevant", [row["doc_id"]] if "doc_id" in row else None)
    if (
        not isinstance(relevant, list)
        or not relevant
        or not all(isinstance(r, str) for r in relevant)
    ):
        return 'expected "relevant": a non-empty list of document ids (or "doc_id": one id)'
    return Query(row["query"], frozenset(relevant))


def ranked_documents(hits: Sequence[Hit]) -> list[str]:
    """The documents of ranked chunk hits, each at the rank of its best chunk."""
    return list(dict.fromkeys(h.doc_id for h in hits))


def score(queries: Sequence[Query], rankings: Sequence[list[str]], k: int) -> Scores:
    """recall@k, MRR@k and nDCG@k (see the module docstring) of document rankings."""
    out = Scores(k)
    for query, ranking in zip(queries, rankings, strict=True):
        ranks = {doc: i + 1 for i, doc in enumerate(ranking[:k]) if doc in query.relevant}
        ideal = sum(1 / math.log2(i + 2) for i in range(min(len(query.relevant), k)))
        dcg = sum(1 / math.log2(rank + 1) for rank in ranks.values())
        out.recall += len(ranks) / len(query.relevant)
        out.mrr += 1 / min(ranks.values()) if ranks else 0.0
        out.ndcg += dcg / ideal
        out.per_query.append(
            {"query": query.text, "relevant": sorted(query.relevant), "ranks": ranks}
        )
    n = max(len(queries), 1)
    out.recall, out.mrr, out.ndcg = out.recall / n, out.mrr / n, out.ndcg / n
    return out


def evaluate(
    sink: Sink,
    encode: Encode,
    queries: Sequence[Query],
    k: int,
    *,
    mode: str = "dense",
    sparse: SparseConfig | None = None,
) -> Scores:
    """Search every query in `sink` (a generation's view, or the live index) and score it:
    `dense`, or `sparse`/`hybrid` with the BM25 settings the generation was built with."""
    texts = [q.text for q in queries]
    if mode == "dense":
        rankings = [ranked_documents(sink.search(vector, k)) for vector in encode(texts)]
        return score(queries, rankings, k)
    if sparse is None or not isinstance(sink, Retriever):
        raise ConfigError(
            f"{sink.uri}: the generation keeps no sparse vectors, so it cannot be scored in "
            f"{mode} mode: score it --mode dense (or build it with --sparse bm25)"
        )
    bm25 = Bm25Encoder(sparse)
    dense: list[Any] = list(encode(texts)) if mode == "hybrid" else [None] * len(texts)
    rankings = [
        ranked_documents(
            sink.retrieve(Retrieval(check_mode(mode), vector, bm25.query(t), text=t), k, None)
        )
        for t, vector in zip(texts, dense, strict=True)
    ]
    return score(queries, rankings, k)


def drops(live: Scores, staged: Scores, max_drop: float) -> list[str]:
    """The metrics on which `staged` falls more than `max_drop` below `live`, in words."""
    out = []
    for name in METRICS:
        ours, theirs = getattr(staged, name), getattr(live, name)
        if ours < theirs - max_drop:
            out.append(
                f"{name}@{live.k} {ours:.3f} vs live {theirs:.3f} (drop {theirs - ours:.3f} > "
                f"max_drop {max_drop:g})"
            )
    return out
