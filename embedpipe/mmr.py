"""Maximal marginal relevance: re-rank search candidates so the results are both close to the
query and unlike each other.

Each step picks the candidate with the best `lambda_mult * sim(query, c) - (1 - lambda_mult) *
max(sim(c, s) for s already picked)`, cosine similarities throughout, the first pick being the
candidate nearest to the query; ties go to the earlier (nearer) candidate. This is LangChain's
`maximal_marginal_relevance` and Qdrant's MMR; LlamaIndex's own simple store discounts by the
last pick only, embedpipe by every pick. Vectorised: one matrix-vector product per pick.
"""

from __future__ import annotations

import numpy as np


def mmr_order(query: np.ndarray, candidates: np.ndarray, k: int, lambda_mult: float) -> list[int]:
    """Positions of up to `k` rows of `candidates` (n, dim) in MMR order for `query` (dim,).
    `lambda_mult` 1 ranks by relevance alone, 0 by diversity alone."""
    if not 0.0 <= lambda_mult <= 1.0:
        raise ValueError(f"lambda_mult={lambda_mult}: MMR takes a number from 0 to 1")
    n = len(candidates)
    if n == 0 or k <= 0:
        return []
    rows = _unit(np.asarray(candidates, dtype=np.float32).reshape(n, -1))
    relevance = rows @ _unit(np.asarray(query, dtype=np.float32).reshape(1, -1))[0]
    redundancy = np.full(n, -np.inf, dtype=np.float32)  # max similarity to what was picked
    picked: list[int] = []
    free = np.ones(n, dtype=bool)
    for _ in range(min(k, n)):
        if picked:
            score = lambda_mult * relevance - (1.0 - lambda_mult) * redundancy
        else:
            score = relevance.copy()
        score[~free] = -np.inf
        best = int(np.argmax(score))
        picked.append(best)
        free[best] = False
        redundancy = np.maximum(redundancy, rows @ rows[best])
    return picked


def _unit(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms == 0, 1.0, norms)
