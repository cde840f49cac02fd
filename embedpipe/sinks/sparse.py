"""BM25 sparse vectors beside the dense ones, and the three ways a query retrieves.

A chunk's BM25 vector is a pure function of its text and the `SparseConfig` (Qdrant Edge's
in-process `Bm25`: term frequencies with k1, b and avg_len; no model, no download); the engine
applies the IDF at query time (`Modifier.Idf`), so nothing here needs corpus statistics and an
incremental run writes a chunk's sparse vector in the same point as its dense one. A sink that
supports sparse vectors (`Capabilities.sparse`) computes them itself when it writes: export and
remote writers get them from the chunk text the same way.

Queries: `dense` (the model's vector, as always), `sparse` (the BM25 query vector alone: no
model is loaded), `hybrid` (both, fused by reciprocal rank fusion in the engine; `alpha` weighs
them as LlamaIndex does: 1 = dense only, 0 = sparse only, None = equal weights).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, cast

import numpy as np

from embedpipe.config import SparseConfig
from embedpipe.errors import ConfigError
from embedpipe.sinks.base import Hit

SPARSE_VECTOR = "bm25"  # the name of the sparse vector in a Qdrant collection or Edge shard
Mode = Literal["dense", "sparse", "hybrid"]
MODES: tuple[Mode, ...] = ("dense", "sparse", "hybrid")
RRF_K = 60  # the usual reciprocal-rank-fusion constant
MIN_CANDIDATES = 50  # each side of a hybrid query fetches at least this many before fusion


def check_mode(mode: str) -> Mode:
    """`mode` when it is one of MODES, else a ConfigError saying which are."""
    if mode not in MODES:
        raise ConfigError(f"unknown retrieval mode {mode!r}: use {', '.join(MODES)}")
    return cast(Mode, mode)


def identity(cfg: SparseConfig) -> dict[str, Any]:
    """What the sparse settings add to a run's fingerprint: nothing when they are off (so an
    index built before sparse vectors existed keeps its fingerprint), else every setting."""
    return {"sparse": cfg.model_dump()} if cfg.on else {}


def settings_of(manifest_settings: Mapping[str, Any]) -> SparseConfig | None:
    """The sparse settings a generation was built with (its manifest's `settings.sparse`), or
    None when it holds no sparse vectors."""
    stored = manifest_settings.get("sparse")
    if not stored:
        return None
    cfg = SparseConfig.model_validate(stored)
    return cfg if cfg.on else None


def sparse_kind(manifest: Mapping[str, Any]) -> str | None:
    """The kind of sparse vectors ("bm25") a generation's manifest says it keeps, or None."""
    settings = settings_of(manifest.get("settings") or {})
    return None if settings is None else settings.kind


@dataclass(frozen=True)
class SparseVector:
    """A sparse vector as the engines take it: term ids and their weights."""

    indices: list[int]
    values: list[float]


class Bm25Encoder:
    """Chunk and query texts as BM25 sparse vectors (Qdrant Edge's Bm25, in-process)."""

    def __init__(self, cfg: SparseConfig) -> None:
        self.cfg = cfg
        self._model = _model(cfg.model_dump_json())

    def documents(self, texts: Sequence[str]) -> list[Any]:
        """One qdrant_edge.SparseVector per chunk text (term-frequency weights)."""
        embed = self._model.embed_document
        return [embed(text) for text in texts]

    def query(self, text: str) -> SparseVector:
        """The query's vector: each distinct term once (the engine weighs it by IDF)."""
        vector = self._model.embed_query(text)
        return SparseVector(list(vector.indices), list(vector.values))


@lru_cache(maxsize=8)
def _model(cfg_json: str) -> Any:
    """One Bm25 model per settings (it is immutable and thread-safe)."""
    import qdrant_edge as qe

    cfg = SparseConfig.model_validate_json(cfg_json)
    tokenizer = getattr(qe.TokenizerType, cfg.tokenizer.capitalize())
    try:
        return qe.Bm25(
            qe.Bm25Config(
                k=cfg.k1, b=cfg.b, avg_len=cfg.avg_len, tokenizer=tokenizer, language=cfg.language
            )
        )
    except ValueError as exc:
        raise ConfigError(f"sink.sparse: {exc} (e.g. language: english)") from exc


@dataclass(frozen=True)
class Retrieval:
    """One query as a sink that supports sparse vectors runs it: the mode, the dense vector
    (dense and hybrid), the BM25 vector (sparse and hybrid), hybrid's weighting, and the query
    text (what a sink that ranks text itself, Postgres, searches instead of the BM25 vector)."""

    mode: Mode
    dense: np.ndarray | None = None
    sparse: SparseVector | None = None
    alpha: float | None = None
    text: str | None = None

    def weights(self) -> list[float] | None:
        """RRF weights (dense, sparse), or None for equal ones."""
        return None if self.alpha is None else [self.alpha, 1.0 - self.alpha]

    def candidates(self, k: int) -> int:
        """How many hits each side of a hybrid query fetches before fusion, and how many a sparse
        or hybrid query asks the engine for before `settled` keeps k."""
        return max(MIN_CANDIDATES, 4 * k)


def settled(hits: Sequence[Hit], k: int) -> list[Hit]:
    """The first k hits, those of equal scores in chunk-id order. BM25 scores and reciprocal
    rank fusion tie often (two chunks the same words as often; ranks 1 and 3 against 3 and 1),
    and an engine returns ties in the order it meets its points, which differs between two
    queries, and between copies of an index (a read snapshot, an export): without this, one
    query on one generation could answer (and score in the quality gate) one way, then another."""
    return sorted(hits, key=lambda h: (-h.score, h.chunk_id))[:k]


def check_alpha(alpha: float | None) -> float | None:
    """`alpha` when it is None or within [0, 1]."""
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha {alpha} is outside [0, 1] (1 = dense only, 0 = sparse only)")
    return alpha
